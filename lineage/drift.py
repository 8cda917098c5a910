"""Schema drift: how a task's output schema changed since its last successful run, in the
vocabulary of `engine.core.schemachange` (added, dropped, renamed, widened, narrowed, changed,
nullability).

A rename is a column dropped and one added that lineage shows computed from the same sources:
the schemas alone cannot prove one, so without lineage it is reported as dropped + added. A
nullability change is reported and never breaking: DuckDB's Parquet writer marks a column
not-null when the rows it wrote had no nulls, so the flag follows the data of the day, not a
declared contract (`tests/lineage/test_drift.py` shows it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import pyarrow as pa

from engine.core.schemachange import ChangeKind, SchemaChange

if TYPE_CHECKING:
    from lineage.graph import LineageGraph

__all__ = [
    "compare_schemas",
    "is_widening",
    "lineage_renames",
]

_INT_ORDER = [pa.int8(), pa.int16(), pa.int32(), pa.int64()]
_UINT_ORDER = [pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]


def _rank(data_type: pa.DataType, order: list[pa.DataType]) -> int | None:
    return order.index(data_type) if data_type in order else None


def is_widening(old: pa.DataType, new: pa.DataType) -> bool:
    """True when every value of `old` is representable, unchanged, in `new`."""
    if old == new:
        return True
    for order in (_INT_ORDER, _UINT_ORDER):
        a, b = _rank(old, order), _rank(new, order)
        if a is not None and b is not None:
            return b > a
    u, i = _rank(old, _UINT_ORDER), _rank(new, _INT_ORDER)
    if u is not None and i is not None:
        return i > u  # uint32 fits in int64, not in int32
    if pa.types.is_integer(old) and pa.types.is_floating(new):
        return bool(new.bit_width == 64 and old.bit_width <= 32)
    if old == pa.float32() and new == pa.float64():
        return True
    if pa.types.is_decimal(old) and pa.types.is_decimal(new):
        whole_digits_fit = new.precision - new.scale >= old.precision - old.scale
        return bool(new.scale >= old.scale and whole_digits_fit)
    if pa.types.is_integer(old) and pa.types.is_decimal(new):
        digits = {8: 3, 16: 5, 32: 10, 64: 19}[old.bit_width]
        return bool(new.precision - new.scale >= digits)
    pairs = {
        (pa.string(), pa.large_string()),
        (pa.binary(), pa.large_binary()),
        (pa.date32(), pa.date64()),
    }
    return (old, new) in pairs


def compare_schemas(
    old: pa.Schema, new: pa.Schema, renames: Mapping[str, str] | None = None
) -> list[SchemaChange]:
    """The changes from `old` to `new`, in the new schema's column order. `renames`: new name ->
    old name, as lineage shows them (`lineage_renames`)."""
    from engine.core.types import format_type

    old_fields, new_fields = _by_name(old), _by_name(new)
    changes: list[SchemaChange] = []
    dropped = [n for n in old_fields if n not in new_fields]
    renamed = {
        after: before
        for after, before in (renames or {}).items()
        if before in dropped and after in new_fields and after not in old_fields
    }
    for name, field in new_fields.items():
        if name in renamed:
            changes.append(SchemaChange("renamed", name, renamed[name], name))
            previous = old_fields[renamed[name]]
            if previous.type != field.type:
                changes.append(_type_change(name, previous.type, field.type))
            continue
        if name not in old_fields:
            changes.append(SchemaChange("added", name, None, format_type(field.type)))
            continue
        previous = old_fields[name]
        if previous.type != field.type:
            changes.append(_type_change(name, previous.type, field.type))
        if previous.nullable != field.nullable:
            changes.append(
                SchemaChange(
                    "nullability",
                    name,
                    "nullable" if previous.nullable else "not null",
                    "nullable" if field.nullable else "not null",
                )
            )
    for name in dropped:
        if name not in renamed.values():
            changes.append(SchemaChange("dropped", name, format_type(old_fields[name].type), None))
    return changes


def _by_name(schema: pa.Schema) -> dict[str, pa.Field]:
    """Fields by name, the first of two with one name: outputs published before such names
    were refused can have them, and `Schema.field` raises on them."""
    fields: dict[str, pa.Field] = {}
    for field in schema:
        fields.setdefault(field.name, field)
    return fields


def _type_change(name: str, old: pa.DataType, new: pa.DataType) -> SchemaChange:
    from engine.core.types import format_type

    kind: ChangeKind = "changed"
    if is_widening(old, new):
        kind = "widened"
    elif is_widening(new, old):
        kind = "narrowed"
    return SchemaChange(kind, name, format_type(old), format_type(new))


def lineage_renames(
    task_id: str,
    old: pa.Schema,
    new: pa.Schema,
    before: LineageGraph | None,
    now: LineageGraph,
) -> dict[str, str]:
    """Added columns (new name -> old name) whose value sources in `now` are exactly those a
    dropped column had in `before`, the lineage recorded with the old output. Only a one-to-one
    match counts: two candidates are not a rename of either."""
    dropped = [n for n in old.names if n not in new.names]
    added = [n for n in new.names if n not in old.names]
    if before is None or not dropped or not added:
        return {}

    def sources(graph: LineageGraph, column: str) -> frozenset[str]:
        target = f"{task_id}.{column}"
        return frozenset(e.source for e in graph.edges if e.target == target and e.kind == "value")

    was = {column: sources(before, column) for column in dropped}
    now_sources = {column: sources(now, column) for column in added}
    renames = {}
    for column, found in now_sources.items():
        olds = [d for d, had in was.items() if found and had == found]
        twins = [a for a, other in now_sources.items() if other == found]
        if len(olds) == 1 and len(twins) == 1:
            renames[column] = olds[0]
    return renames

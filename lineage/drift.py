"""Schema drift: how a task's output schema changed since its last successful run.

Each change is one of

    added        a column that was not there
    dropped      a column that is gone
    renamed      one column dropped and one added at the same position with the same type
                 (a probable rename: the schema alone cannot prove it)
    widened      the type can hold every old value (int32 -> int64, float32 -> float64,
                 decimal(10,2) -> decimal(12,2), string -> large_string, ...)
    narrowed     the reverse of a widening: old values may not fit
    changed      any other type change
    nullability  a column became nullable, or stopped being nullable

`breaking` is true for dropped, renamed, narrowed and changed: the changes a downstream reader
or an existing table can trip over. A nullability change is reported and never breaking: DuckDB's
Parquet writer marks a column not-null when the rows it wrote had no nulls, so the flag follows
the data of the day, not a declared contract (`tests/lineage/test_drift.py` shows it).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

__all__ = ["SchemaChange", "compare_schemas", "is_widening"]

_INT_ORDER = [pa.int8(), pa.int16(), pa.int32(), pa.int64()]
_UINT_ORDER = [pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]


@dataclass(frozen=True)
class SchemaChange:
    change: str
    column: str
    before: str | None = None
    after: str | None = None

    @property
    def breaking(self) -> bool:
        return self.change in ("dropped", "renamed", "narrowed", "changed")

    def to_dict(self) -> dict[str, object]:
        return {
            "change": self.change,
            "column": self.column,
            "before": self.before,
            "after": self.after,
            "breaking": self.breaking,
        }


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


def compare_schemas(old: pa.Schema, new: pa.Schema) -> list[SchemaChange]:
    """The changes from `old` to `new`, in the new schema's column order."""
    from connectors.types import format_type

    old_names, new_names = old.names, new.names
    changes: list[SchemaChange] = []
    dropped = [n for n in old_names if n not in new_names]
    added = [n for n in new_names if n not in old_names]
    renamed: dict[str, str] = {}
    if len(dropped) == 1 and len(added) == 1:
        before, after = dropped[0], added[0]
        same_place = old_names.index(before) == new_names.index(after)
        if same_place and old.field(before).type == new.field(after).type:
            renamed[after] = before
    for name in new_names:
        field = new.field(name)
        if name in renamed:
            changes.append(SchemaChange("renamed", name, renamed[name], name))
            continue
        if name not in old_names:
            changes.append(SchemaChange("added", name, None, format_type(field.type)))
            continue
        previous = old.field(name)
        if previous.type != field.type:
            if is_widening(previous.type, field.type):
                kind = "widened"
            elif is_widening(field.type, previous.type):
                kind = "narrowed"
            else:
                kind = "changed"
            changes.append(
                SchemaChange(kind, name, format_type(previous.type), format_type(field.type))
            )
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
            changes.append(SchemaChange("dropped", name, format_type(old.field(name).type), None))
    return changes

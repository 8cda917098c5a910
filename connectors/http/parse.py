"""A page's records as an Arrow table: by Arrow's own JSON reader where the pages before have
shown the shape, else from the parsed body.

The usual way, `orjson.loads` then `pa.array(records)`, builds a Python dict per record and
holds the GIL throughout: about 7 ms of a 1,000-record page, during which neither the next
request nor the previous page's spill can move. Arrow's reader parses the body in C++ with the
GIL released, in about a third of that, but it guesses types of its own (ISO strings become
timestamps, dates shift to UTC). So it is given the types the earlier pages had, as
`pa.array` inferred them, as an explicit schema; a page that does not fit them (a new type, a
field that changed, a body of another shape, a record Arrow would type differently) is parsed
the usual way and teaches the parser its types. The results are the same either way: the
records' table and the body's other fields (the paginator reads those) as Python values.

Only bodies that are one JSON object whose records are a list under one key are read this
way; a top-level list, a `data_path` deeper than one key, and a fan-out's pages take the usual
way.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from engine.core.errors import DataError

__all__ = ["PageParser", "records_table"]

_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)


def records_table(records: list[Any], number: int, shown: str) -> pa.Table:
    """The records of page `number` (from 0) of `shown` as a table: every record's keys (a
    struct array takes them all; `from_pylist` would take the first record's)."""
    if not all(isinstance(r, dict) for r in records):
        kinds = sorted({type(r).__name__ for r in records})
        raise DataError(f"page {number + 1} of {shown}: records are {kinds}, not objects")
    try:
        return pa.Table.from_struct_array(pa.array(records))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        field = _mixed(records)
        raise DataError(
            f"page {number + 1} of {shown}: field {field!r} holds values of more "
            f"than one type: {exc}",
            hint="declare the field's type in columns",
        ) from None


def _mixed(records: list[dict[str, Any]]) -> str | None:
    """The first field whose values Arrow cannot give one type."""
    for key in dict.fromkeys(k for record in records for k in record):
        try:
            pa.array([record.get(key) for record in records])
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return key
    return None


class PageParser:
    """Parses pages of one resource with Arrow's JSON reader once earlier pages showed their
    types. `key`: the body's key that holds the records (None: the one list the first body
    holds, as `records_at` finds it)."""

    def __init__(self, key: str | None) -> None:
        self.key = key
        self.meta: pa.Schema | None = None
        """The body's fields besides the records, typed as `pa.array` typed them."""
        self.item: pa.StructType | None = None
        """The records' fields so far, typed as `pa.array` typed them."""
        self.off = False
        """A body of another shape than a JSON object with its records under one key."""
        self.parsed = 0
        """Pages parsed by Arrow's reader (the rest took the usual way)."""

    def parse(self, content: bytes) -> tuple[dict[str, Any], pa.Table] | None:
        """The body's other fields and its records' table; None when this body must take
        the usual way."""
        if self.off or self.meta is None or self.item is None or self.key is None:
            return None
        key = self.key
        schema = self.meta.append(pa.field(key, pa.list_(self.item)))
        options = pj.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="infer", newlines_in_values=True
        )
        try:
            body = pj.read_json(
                pa.py_buffer(content),
                read_options=pj.ReadOptions(block_size=max(1 << 20, len(content) + 1)),
                parse_options=options,
            )
        except _ARROW_ERRORS:
            return None
        if body.num_rows != 1 or body.schema.names != schema.names:
            return None  # not one object, or a field the first page did not have
        for field in self.meta:
            if body.schema.field(field.name).type != field.type:
                return None
        column = body.column(key)
        if column.null_count:
            return None  # null or absent: the usual way tells them apart
        found = column.type.value_type
        if found != self.item and _guessed(found):
            return None  # a new field Arrow typed as a date or time: pa.array would not
        records = pc.list_flatten(column).combine_chunks()
        table = pa.Table.from_struct_array(records)
        self.item = found
        self.parsed += 1
        meta = body.drop_columns([key]).to_pylist()[0]
        return meta, table

    def learn(self, body: Any, table: pa.Table) -> None:
        """The types of a page parsed the usual way: its body and its records' table."""
        if self.off:
            return
        if self.key is None:
            lists = [k for k, v in body.items() if isinstance(v, list)] if _object(body) else []
            if len(lists) != 1:
                self.off = True
                return
            self.key = lists[0]
        if not _object(body) or self.key not in body:
            self.off = True
            return
        try:
            meta = pa.array([{k: v for k, v in body.items() if k != self.key}]).type
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            self.off = True
            return
        item = pa.struct(list(table.schema))
        try:
            if self.meta is not None:
                before = pa.schema(list(self.meta))
                merged = pa.unify_schemas(
                    [before, pa.schema(list(meta))], promote_options="permissive"
                )
                meta = pa.struct(list(merged))
            if self.item is not None:
                merged = pa.unify_schemas(
                    [pa.schema(list(self.item)), table.schema], promote_options="permissive"
                )
                item = pa.struct(list(merged))
        except _ARROW_ERRORS:
            self.meta = self.item = None  # types that cannot meet: each page its own way
            return
        self.meta, self.item = pa.schema(list(meta)), item


def _object(body: Any) -> bool:
    return isinstance(body, dict)


def _guessed(kind: pa.DataType) -> bool:
    """A type anywhere inside `kind` that Arrow's reader guesses and `pa.array` never makes
    from JSON values (timestamps, dates, times)."""
    if pa.types.is_temporal(kind):
        return True
    if pa.types.is_struct(kind):
        return any(_guessed(kind.field(i).type) for i in range(kind.num_fields))
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _guessed(kind.value_type)
    return False

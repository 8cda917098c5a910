"""Compare a load's input with the target table, column by column, and decide per policy.

Shared by the PostgreSQL and DuckDB sinks. Types are compared by PostgreSQL's names
(`integer`, `numeric(12,2)`, `timestamp with time zone`); a sink whose database names them
otherwise translates into them (`duckdb_type_name`) and renders widened types back for its
ALTER statements.

Changes are said in `engine.core.schemachange`'s vocabulary, from the table's side:

    change   example                               evolve  fail_on_breaking  freeze
    added    the input has a new column            ADD     ADD               fail
    widened  bigint values into an integer column  ALTER   ALTER             fail
    dropped  a nullable table column not in input  NULLs   fail              fail
    changed  text values into an integer column    fail    fail              fail

Added columns are always nullable. A dropped column that is NOT NULL without a default fails
under every policy: there is no value to give it; nor can a column take a type it does not
hold. `fail` is accepted as `fail_on_breaking`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.core.errors import DataError
from engine.core.schemachange import SchemaChange
from engine.core.sqltext import quote_identifier

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "Column",
    "SchemaDiff",
    "arrow_type_name",
    "diff",
    "duckdb_type_name",
    "fit_batch",
    "replacing_policy",
    "sql_type_of_duckdb",
]


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    """As `format_type` prints it: 'integer', 'numeric(12,2)', 'timestamp with time zone'."""
    not_null: bool
    has_default: bool


def _said(change: SchemaChange) -> str:
    """A refused change, said from the load's side: its input against the table."""
    column = change.column
    return {
        "added": f"new column {column!r} ({change.after})",
        "widened": f"column {column!r} {change.before} -> {change.after}",
        "dropped": f"column {column!r} ({change.before}) is not in the input",
        "changed": f"column {column!r} is {change.before}, the input has {change.after}",
    }.get(change.change, change.describe())


@dataclass(frozen=True)
class SchemaDiff:
    changes: tuple[SchemaChange, ...]
    statements: tuple[str, ...]
    """ALTER TABLE statements that apply the accepted changes."""

    def report(self) -> list[dict[str, object]]:
        return [change.to_dict() for change in self.changes]


_INTEGERS = {"smallint": 1, "integer": 2, "bigint": 3}
_FLOATS = {"real": 1, "double precision": 2}
_TEXT = ("text", "character varying", "character", "bpchar", "json", "jsonb", "uuid", "citext")
_NUMERIC = re.compile(r"^numeric\((\d+),(\d+)\)$")
_SYNONYMS = {
    "timestamptz": "timestamp with time zone",
    "timestamp": "timestamp without time zone",
    "time": "time without time zone",
}


def _normal(type_name: str) -> str:
    text = type_name.strip().lower()
    return _SYNONYMS.get(text, text)


def _numeric(type_name: str) -> tuple[int, int] | None:
    match = _NUMERIC.match(type_name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def compatibility(column_type: str, input_type: str) -> tuple[str, str | None]:
    """('same' | 'fits' | 'widen' | 'incompatible', the widened column type)."""
    column, given = _normal(column_type), _normal(input_type)
    if column == given:
        return "same", None
    if column.endswith("[]") and given.endswith("[]"):
        return compatibility(column[:-2], given[:-2])
    if given in _INTEGERS:
        if column in _INTEGERS:
            if _INTEGERS[given] <= _INTEGERS[column]:
                return "fits", None
            return "widen", given
        if column in _FLOATS or column == "numeric" or column.startswith("numeric("):
            return "fits", None
    if given in _FLOATS and column in _FLOATS:
        return ("fits", None) if _FLOATS[given] <= _FLOATS[column] else ("widen", given)
    if given.startswith("numeric") and column.startswith("numeric"):
        target, source = _numeric(column), _numeric(given)
        if target is None:  # unconstrained numeric holds anything
            return "fits", None
        if source is None:
            return "widen", "numeric"
        (p1, s1), (p2, s2) = target, source
        if s2 <= s1 and p2 - s2 <= p1 - s1:
            return "fits", None
        scale = max(s1, s2)
        return "widen", f"numeric({max(p1 - s1, p2 - s2) + scale},{scale})"
    if given == "text" and column.startswith(_TEXT):
        return "fits", None  # varchar(n) too: a value that is too long fails with SQLSTATE 22001
    if given in ("jsonb", "json") and column in ("json", "jsonb", "text"):
        return "fits", None
    if given == "uuid" and column == "text":
        return "fits", None
    if given == "timestamp without time zone" and column == "timestamp with time zone":
        return "fits", None  # read as UTC
    if given == "date" and column.startswith("timestamp"):
        return "fits", None
    if column == "text" and given in ("uuid", "json", "jsonb"):
        return "fits", None
    return "incompatible", None


def diff(
    table: str,
    fields: Sequence[tuple[str, str]],
    columns: list[Column],
    policy: str,
    render: Callable[[str], str] = lambda type_name: type_name,
) -> SchemaDiff:
    """The changes between `columns` (the table) and `fields` (the input's (name, type)),
    under `policy`; `render` turns a type name into the target database's own for ALTERs.

    Raises DataError listing every refused change when the policy does not allow them.
    """
    policy = "fail_on_breaking" if policy == "fail" else policy
    existing = {c.name: c for c in columns}
    names = {name for name, _ in fields}
    changes: list[SchemaChange] = []
    statements: list[str] = []
    refused: list[SchemaChange] = []
    for name, wanted in fields:
        column = existing.get(name)
        quoted = quote_identifier(name)
        if column is None:
            change = SchemaChange("added", name, None, wanted)
            alter = f"add column {quoted} {render(wanted)}"
        else:
            verdict, widened = compatibility(column.type, wanted)
            if verdict == "incompatible":
                change = SchemaChange("changed", name, column.type, wanted)
                changes.append(change)
                refused.append(change)
                continue
            if verdict != "widen":
                continue
            assert widened is not None
            change = SchemaChange("widened", name, column.type, widened)
            alter = f"alter column {quoted} type {render(widened)}"
        changes.append(change)
        if policy == "freeze":
            refused.append(change)
        else:
            statements.append(f"alter table {table} {alter}")
    for column in columns:
        if column.name in names:
            continue
        change = SchemaChange("dropped", column.name, column.type, None)
        changes.append(change)
        fillable = not column.not_null or column.has_default
        if policy != "evolve" or not fillable:
            refused.append(change)
    if refused:
        lines = "; ".join(_said(change) for change in refused)
        hint = {
            "freeze": "schema_change: freeze refuses every difference; use fail_on_breaking or "
            "evolve, or change the table yourself",
            "fail_on_breaking": "dropped and changed columns break readers of the table; "
            "schema_change: evolve fills nullable columns the input lacks with NULL",
            "evolve": "evolve cannot fill NOT NULL columns or change a column's kind of type",
        }[policy]
        raise DataError(f"the input does not fit table {table}: {lines}", hint=hint)
    return SchemaDiff(tuple(changes), tuple(statements))


def replacing_policy(config: Any, *, view: bool) -> str | None:
    """The `schema_change` a load that makes the target exactly its input (mode: replace, or
    a view) enforces: only one the task writes down. Becoming the input is what such a load
    is for, so by default it takes any new shape; a policy set on purpose still protects the
    table's readers from the changes it refuses."""
    replacing = view or getattr(config, "mode", None) == "replace"
    said = "schema_change" in getattr(config, "model_fields_set", ())
    return config.schema_change if replacing and said else None


_FROM_DUCKDB = {
    "TINYINT": "smallint",
    "SMALLINT": "smallint",
    "INTEGER": "integer",
    "BIGINT": "bigint",
    "HUGEINT": "numeric(38,0)",
    "FLOAT": "real",
    "DOUBLE": "double precision",
    "VARCHAR": "text",
    "BOOLEAN": "boolean",
    "DATE": "date",
    "TIME": "time without time zone",
    "TIMESTAMP": "timestamp without time zone",
    "TIMESTAMP WITH TIME ZONE": "timestamp with time zone",
    "BLOB": "bytea",
    "UUID": "uuid",
    "INTERVAL": "interval",
    "JSON": "json",
}
_TO_DUCKDB = {
    "smallint": "SMALLINT",
    "integer": "INTEGER",
    "bigint": "BIGINT",
    "real": "FLOAT",
    "double precision": "DOUBLE",
    "text": "VARCHAR",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "time without time zone": "TIME",
    "timestamp without time zone": "TIMESTAMP",
    "timestamp with time zone": "TIMESTAMP WITH TIME ZONE",
    "bytea": "BLOB",
    "uuid": "UUID",
    "interval": "INTERVAL",
    "json": "JSON",
}
_DUCKDB_DECIMAL = re.compile(r"^DECIMAL\((\d+),\s*(\d+)\)$")


def duckdb_type_name(duckdb_type: str) -> str:
    """A DuckDB type as `compatibility` names it (unsigned and nested types keep their own
    names, so they only ever match themselves)."""
    text = duckdb_type.strip().upper()
    if text.endswith("[]"):
        return duckdb_type_name(text[:-2]) + "[]"
    decimal = _DUCKDB_DECIMAL.match(text)
    if decimal:
        return f"numeric({decimal.group(1)},{decimal.group(2)})"
    return _FROM_DUCKDB.get(text, text.lower())


def sql_type_of_duckdb(type_name: str) -> str:
    """The inverse of `duckdb_type_name`, for ALTER TABLE statements in DuckDB."""
    if type_name.endswith("[]"):
        return sql_type_of_duckdb(type_name[:-2]) + "[]"
    decimal = _NUMERIC.match(type_name)
    if decimal:
        return f"DECIMAL({decimal.group(1)},{decimal.group(2)})"
    return _TO_DUCKDB.get(type_name, type_name.upper())


def arrow_type_name(arrow_type: pa.DataType) -> str:
    """An Arrow type as `compatibility` names it, for sinks that store Arrow's types (Delta,
    Iceberg); types without a PostgreSQL name keep Arrow's, so they only ever match themselves."""
    import pyarrow as pa

    t = arrow_type
    if pa.types.is_dictionary(t):
        return arrow_type_name(t.value_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return arrow_type_name(t.value_type) + "[]"
    if pa.types.is_decimal(t):
        return f"numeric({t.precision},{t.scale})"
    if pa.types.is_timestamp(t):
        zone = "with" if t.tz is not None else "without"
        return f"timestamp {zone} time zone"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "text"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "bytea"
    simple = {
        pa.int8(): "smallint",
        pa.int16(): "smallint",
        pa.int32(): "integer",
        pa.int64(): "bigint",
        pa.float32(): "real",
        pa.float64(): "double precision",
        pa.bool_(): "boolean",
        pa.date32(): "date",
        pa.date64(): "date",
    }
    return simple.get(t, str(t))


def fit_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """`batch` in a table's shape (`schema`), for sinks that store Arrow's types: its columns
    found by name and cast (checked: a value that does not fit fails, naming the column), the
    table's other columns NULL."""
    import pyarrow as pa

    arrays = []
    for target in schema:
        index = batch.schema.get_field_index(target.name)
        if index < 0:
            arrays.append(pa.nulls(batch.num_rows, target.type))
            continue
        column = batch.column(index)
        try:
            arrays.append(column if column.type == target.type else column.cast(target.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataError(
                f"column {target.name!r}: {column.type} values do not fit the table's "
                f"{target.type} ({exc})"
            ) from None
    return pa.RecordBatch.from_arrays(arrays, schema=schema)

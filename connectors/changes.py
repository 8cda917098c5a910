"""Applying a change stream (a `cdc` extract's rows) to a table: `mode: apply`.

A change stream has the table's columns plus `_op` (snapshot, insert, update, delete,
truncate), `_lsn` and `_seq` (its order: the transaction's commit position, then the place in
the transaction) and `_unchanged_toast` (columns an update left as they were, whose values
the server did not send). Applying it in order is the same as applying, per key, its net
change, which is what the sinks do in one statement each instead of one per change:

- a truncate removes every row of the table, and only the changes after the last one count;
- a key whose last change is a delete is deleted;
- any other key is upserted with, per column, the value of its latest change that sent one;
  a column no change of this batch sent (an unchanged TOASTed value) keeps the table's value
  (`_keep_<n>`), never NULL.

`net_sql` computes that in DuckDB, over any relation DuckDB can read: the DuckDB sink merges
its result in the load's transaction, the PostgreSQL sink stages it, the Delta sink merges it
with delta-rs and the Iceberg sink rewrites the files holding its keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pyarrow as pa

from engine.core.errors import DataError
from engine.core.sqltext import quote_identifier, sql_literal
from engine.core.tables import InputTable

__all__ = [
    "CHANGE_COLUMNS",
    "CHANGE_SCHEMA",
    "DELETE",
    "check_stream",
    "keep_column",
    "net_sql",
    "table_columns",
    "table_input",
]

CHANGE_SCHEMA = pa.schema(
    [
        pa.field("_op", pa.string(), nullable=False),
        pa.field("_lsn", pa.int64(), nullable=False),
        pa.field("_seq", pa.int64(), nullable=False),
        pa.field("_xid", pa.int64()),
        pa.field("_commit_ts", pa.timestamp("us", "UTC")),
        pa.field("_unchanged_toast", pa.list_(pa.string())),
    ]
)
"""The columns a change carries besides the table's, in this order, after them."""

CHANGE_COLUMNS = tuple(CHANGE_SCHEMA.names)

DELETE = "delete"


def check_stream(names: Sequence[str], keys: Sequence[str], task: str) -> None:
    """Refuse an input that is not a change stream, or lacks a key."""
    missing = [c for c in ("_op", "_lsn", "_seq") if c not in names]
    if missing:
        raise DataError(
            f"mode: apply needs a change stream, and the output of {task!r} lacks {missing}",
            hint="load the output of a `cdc:` extract (or a task that keeps its _op, _lsn and "
            "_seq columns), or use mode: merge for plain rows",
        )
    absent = [k for k in keys if k not in names]
    if absent:
        raise DataError(f"apply keys {absent} are not columns of the change stream")


def table_input(stream: InputTable, keys: Sequence[str]) -> InputTable:
    """A change stream checked (check_stream), as the table it describes: the same files,
    the table's columns only (what a sink fits its target to)."""
    check_stream(stream.schema.names, keys, stream.task_id)
    kept = [stream.schema.field(name) for name in table_columns(stream.schema)]
    return dataclasses.replace(stream, schema=pa.schema(kept))


def table_columns(schema: pa.Schema) -> list[str]:
    """The columns of the table a change stream describes."""
    return [name for name in schema.names if name not in CHANGE_COLUMNS]


def keep_column(index: int) -> str:
    return f"_keep_{index}"


def net_sql(source: str, schema: pa.Schema, keys: Sequence[str]) -> str:
    """A query over `source` (a relation with the stream's columns) giving one row per key:
    the keys, `_op` ('delete' or 'upsert'), `_truncated` (a truncate came first: empty the
    table), each table column's latest sent value and, for columns an update may not send, a
    `_keep_<n>` flag."""
    columns = table_columns(schema)
    toast = "_unchanged_toast" in schema.names
    position = "(_lsn::hugeint << 32) + _seq"
    quoted_keys = ", ".join(quote_identifier(k) for k in keys)
    picks = []
    for index, column in enumerate(columns):
        quoted = quote_identifier(column)
        if column in keys:
            picks.append(quoted)
            continue
        if toast:
            sent = f"not list_contains(coalesce(_unchanged_toast, []), {sql_literal(column)})"
            picks.append(f"arg_max_null({quoted}, case when {sent} then _pos end) as {quoted}")
            picks.append(f"count(*) filter (where {sent}) = 0 as {keep_column(index)}")
        else:
            picks.append(f"arg_max_null({quoted}, _pos) as {quoted}")
            picks.append(f"false as {keep_column(index)}")
    return (
        f"with _ordered as (select *, {position} as _pos from {source}), "
        "_cut as (select coalesce(max(_pos) filter (where _op = 'truncate'), -1) as _at "
        "from _ordered), "
        "_live as (select o.* from _ordered o, _cut where o._pos > _cut._at "
        "and o._op <> 'truncate') "
        f"select {', '.join(picks)}, "
        f"case when arg_max(_op, _pos) = '{DELETE}' then '{DELETE}' else 'upsert' end as _op, "
        "(select _at from _cut) >= 0 as _truncated "
        f"from _live group by {quoted_keys} "
        "union all "  # a stream of nothing but a truncate still empties the table
        f"select {', '.join(_null_picks(columns, keys))}, '{DELETE}', true "
        "from _cut where _at >= 0 and not exists (select 1 from _live)"
    )


def _null_picks(columns: Sequence[str], keys: Sequence[str]) -> list[str]:
    picks = []
    for index, column in enumerate(columns):
        picks.append(f"null as {quote_identifier(column)}")
        if column not in keys:
            picks.append(f"true as {keep_column(index)}")
    return picks

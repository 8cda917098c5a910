"""`materialize: view` into PostgreSQL: the rows go to a new table named after the run, and the
target becomes a view of it, switched in the load's transaction.

Readers of the view see the previous run's rows until the commit and this run's after; nothing
is deleted in place, so no dead rows pile up for autovacuum, and no reader waits on an emptied
table (as `truncate: true` makes them). The table the view read before is dropped in the same
transaction. A view and a table of the same name replace each other when a load's
materialization changes.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

from connectors.postgres.connection import Session
from engine.core.sqltext import quote_identifier, quote_table, split_table

__all__ = ["VERSION_MARK", "drop_view", "relation_kind", "switch_view", "version_table"]

VERSION_MARK = "__arrowline_"
"""In the name of a table a view reads: `<table>__arrowline_<run>`."""
_LIMIT = 63  # PostgreSQL cuts longer identifiers, and two runs' tables would share a name


def version_table(table: str, run_id: str) -> str:
    """The (schema-qualified) name of the table holding `run_id`'s rows of `table`'s view."""
    schema, name = split_table(table)
    run = run_id.lower().replace("-", "_")
    suffix = f"{VERSION_MARK}{run}"
    if len((name + suffix).encode()) > _LIMIT:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        keep = _LIMIT - len(suffix.encode()) - len(digest) - 1
        name = name.encode()[:keep].decode(errors="ignore") + "_" + digest
    return f"{schema}.{name}{suffix}" if schema else f"{name}{suffix}"


def _quoted(schema: str, name: str) -> str:
    return f"{quote_identifier(schema)}.{quote_identifier(name)}"


def relation_kind(session: Session, table: str) -> str | None:
    """'v' for a view, 'r' (or 'p') for a table, None when nothing has the name."""
    rows = session.rows(
        "select c.relkind::text from pg_class c where c.oid = to_regclass($1)",
        (quote_table(table),),
        what=f"cannot look {table} up",
    )
    return str(rows[0][0]) if rows else None


def _read_by(session: Session, table: str) -> list[tuple[str, str]]:
    """The tables arrowline made for the view `table` that it reads now."""
    schema, name = split_table(table)
    rows = session.rows(
        "select distinct t.table_schema, t.table_name from information_schema.view_table_usage t "
        "where t.view_schema = coalesce($1, current_schema()) and t.view_name = $2",
        (schema, name),
        what=f"cannot read what the view {table} reads",
    )
    return [(str(s), str(n)) for s, n in rows if VERSION_MARK in str(n)]


def drop_view(session: Session, table: str) -> None:
    """Drop the view `table` and the table of rows arrowline made for it."""
    behind = _read_by(session, table)
    session.execute(f"drop view {quote_table(table)}", what=f"cannot drop the view {table}")
    for schema, name in behind:
        session.execute(f"drop table if exists {_quoted(schema, name)}")


def switch_view(
    session: Session, table: str, version: str, schema: pa.Schema, kind: str | None
) -> list[str]:
    """Point the view `table` at `version` (already filled); drops what it read before, or the
    table of that name a table load made. Returns the tables dropped."""
    behind = _read_by(session, table) if kind == "v" else []
    target = quote_table(table)
    if kind == "v":  # CREATE OR REPLACE cannot drop or retype columns: a new view
        session.execute(f"drop view {target}", what=f"cannot replace the view {table}")
    elif kind is not None:
        session.execute(f"drop table {target}", what=f"cannot replace the table {table}")
    columns = ", ".join(quote_identifier(field.name) for field in schema)
    session.execute(
        f"create view {target} as select {columns} from {quote_table(version)}",
        what=f"cannot create the view {table}",
    )
    dropped = []
    for schema_name, name in behind:
        if name != split_table(version)[1]:
            session.execute(f"drop table if exists {_quoted(schema_name, name)}")
            dropped.append(f"{schema_name}.{name}")
    return dropped

"""`materialize: view` into PostgreSQL: the rows go to a new table named after the run, and the
target becomes a view of it, switched in the load's transaction.

Readers of the view see the previous run's rows until the commit and this run's after; nothing
is deleted in place, so no dead rows pile up for autovacuum, and the target is never an emptied
table. While the columns stay (new ones may be added at the end) the view is replaced in place
with CREATE OR REPLACE, which keeps its grants, owner and the views built on it; otherwise it is
dropped and made again with its grants given back (a view built on it then fails the load, by
name). Each table of rows carries a comment naming its view, so one a dropped view left behind
is dropped by the next view load of that name. The switch takes the
view's lock, so it waits for queries reading the view to finish, and queries that start meanwhile
wait for the commit. The table the view read before is dropped in the same transaction.

A view arrowline makes carries a comment saying so; a view or table of the target's name that
arrowline did not make is never replaced by a view load, nor a view of it by a table load.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

from connectors.evolution import Column
from connectors.postgres.connection import Session
from engine.core.errors import DataError
from engine.core.sqltext import quote_identifier, quote_table, split_table, sql_literal

__all__ = [
    "VERSION_MARK",
    "drop_view",
    "relation_kind",
    "switch_view",
    "table_columns",
    "version_table",
]

VERSION_MARK = "__arrowline_"
"""In the name of a table a view reads: `<table>__arrowline_<run>`."""
VIEW_COMMENT = "arrowline: materialize: view"
"""The comment on a view arrowline made (its mark: it replaces no view it did not make)."""
_LIMIT = 63  # PostgreSQL cuts longer identifiers, and two runs' tables would share a name


def version_table(table: str, run_id: str) -> str:
    """The (schema-qualified) name of the table holding `run_id`'s rows of `table`'s view."""
    schema, name = split_table(table)
    if len(name.encode()) > _LIMIT:
        raise DataError(
            f"the table name {name!r} is longer than PostgreSQL's {_LIMIT} bytes; it would be "
            "cut, and the view could not be found again by its name"
        )
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


def _ours(session: Session, table: str) -> bool:
    rows = session.rows(
        "select obj_description(to_regclass($1), 'pg_class')",
        (quote_table(table),),
        what=f"cannot read the comment on {table}",
    )
    return bool(rows) and rows[0][0] == VIEW_COMMENT


def _refuse_theirs(session: Session, table: str, doing: str) -> None:
    if not _ours(session, table):
        raise DataError(
            f"{table} is a view that materialize: view did not make; {doing} would replace it",
            hint="load into another table, or drop the view yourself",
        )


def _read_by(session: Session, view: str) -> list[tuple[str, str]]:
    """The tables arrowline made for `view` that it reads now (by the view's rewrite rule:
    what it reads, whoever owns it)."""
    rows = session.rows(
        "select distinct n.nspname::text, c.relname::text from pg_rewrite r "
        "join pg_depend d on d.classid = 'pg_rewrite'::regclass and d.objid = r.oid "
        "join pg_class c on c.oid = d.refobjid join pg_namespace n on n.oid = c.relnamespace "
        "where r.ev_class = to_regclass($1) and c.oid <> r.ev_class and c.relkind in ('r', 'p')",
        (quote_table(view),),
        what=f"cannot read what the view {view} reads",
    )
    return [(str(s), str(n)) for s, n in rows if VERSION_MARK in str(n)]


def table_columns(session: Session, table: str) -> list[Column] | None:
    """A table's or view's columns (`table` quoted as SQL), or None when it does not exist."""
    rows = session.rows(
        "select a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef "
        "from pg_attribute a where a.attrelid = to_regclass($1) and a.attnum > 0 "
        "and not a.attisdropped order by a.attnum",
        (table,),
        what="cannot read the target table's columns",
    )
    if not rows:
        exists = session.rows("select to_regclass($1) is not null", (table,))[0][0]
        if not exists:
            return None
    return [
        Column(name, type_name, bool(not_null), bool(default))
        for name, type_name, not_null, default in rows
    ]


def drop_view(session: Session, table: str) -> None:
    """Drop the view `table` arrowline made and the table of rows it reads (a table load
    taking the target back)."""
    _refuse_theirs(session, table, "a table load")
    behind = _read_by(session, table)
    session.execute(f"drop view {quote_table(table)}", what=f"cannot drop the view {table}")
    for schema, name in behind:
        session.execute(f"drop table if exists {_quoted(schema, name)}")


def _rows_comment(table: str) -> str:
    return f"arrowline: rows of the view {table}"


def _grants(session: Session, table: str) -> list[str]:
    """GRANT statements that give back what others were granted on `table` (a view made
    again loses them)."""
    rows = session.rows(
        "select case when g.grantee = 0 then 'public' else g.grantee::regrole::text end, "
        "g.privilege_type, g.is_grantable from pg_class c, aclexplode(c.relacl) g "
        "where c.oid = to_regclass($1) and g.grantee <> c.relowner",
        (quote_table(table),),
        what=f"cannot read the grants on {table}",
    )
    target = quote_table(table)
    return [
        f"grant {privilege} on {target} to {grantee}" + (" with grant option" if grantable else "")
        for grantee, privilege, grantable in rows
    ]


def _leftovers(session: Session, table: str, version: str) -> list[tuple[str, str]]:
    """Tables of rows arrowline made for the view `table` other than `version`: what it read
    before, and any a dropped view left behind."""
    rows = session.rows(
        "select n.nspname::text, c.relname::text from pg_class c "
        "join pg_namespace n on n.oid = c.relnamespace "
        "where c.relkind in ('r', 'p') and obj_description(c.oid, 'pg_class') = $1",
        (_rows_comment(table),),
        what=f"cannot look for earlier tables of the view {table}",
    )
    current = split_table(version)[1]
    return [(str(s), str(n)) for s, n in rows if str(n) != current]


def switch_view(
    session: Session, table: str, version: str, schema: pa.Schema, kind: str | None
) -> list[str]:
    """Point the view `table` at `version` (already filled); drops the tables of rows it read
    before (or a dropped view of it left), or the table of that name a table load made.
    Returns the tables dropped."""
    target = quote_table(table)
    session.execute(
        f"comment on table {quote_table(version)} is {sql_literal(_rows_comment(table))}"
    )
    columns = ", ".join(quote_identifier(field.name) for field in schema)
    select = f"select {columns} from {quote_table(version)}"
    behind: list[tuple[str, str]] = []
    if kind == "v":
        _refuse_theirs(session, table, "this view load")
        behind = _read_by(session, table)
        before = [(c.name, c.type) for c in table_columns(session, quote_table(table)) or []]
        after = [(c.name, c.type) for c in table_columns(session, quote_table(version)) or []]
        if after[: len(before)] == before:  # same columns, maybe more at the end: in place
            session.execute(f"create or replace view {target} as {select}")
        else:  # made again: its grants are given back, a view built on it fails the load
            grants = _grants(session, table)
            session.execute(f"drop view {target}", what=f"cannot replace the view {table}")
            session.execute(f"create view {target} as {select}")
            for grant in grants:
                session.execute(grant, what=f"cannot grant again on {table}")
    else:
        if kind is not None:
            session.execute(f"drop table {target}", what=f"cannot replace the table {table}")
        session.execute(f"create view {target} as {select}", what=f"cannot create {table}")
    session.execute(f"comment on view {target} is {sql_literal(VIEW_COMMENT)}")
    dropped = []
    current = split_table(version)[1]
    for schema_name, name in dict.fromkeys([*behind, *_leftovers(session, table, version)]):
        if name != current:
            session.execute(f"drop table if exists {_quoted(schema_name, name)}")
            dropped.append(f"{schema_name}.{name}")
    return dropped

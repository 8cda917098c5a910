"""The server side of change capture: checks, the publication, the replication slot.

A slot's confirmed position is where the next read starts; the slot keeps the WAL from there
on. arrowline moves it only to a position a sink has committed (`advance`), so the slot never
runs ahead of the data, and moves it as soon as the sinks committed, so it pins as little WAL
as it can.

Positions are LSNs as integers. The watermark a CDC extract commits is the last position it
consumed, P: every transaction whose commit record starts at or before P is in the sink. The
slot then confirms P + 1, from which decoding skips exactly those transactions.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from connectors.postgres.connection import ResolvedPostgres, Session
from engine.core.errors import DefinitionError, TaskError
from engine.core.sqltext import sql_literal

__all__ = [
    "CdcError",
    "SlotState",
    "TableInfo",
    "advance",
    "check_server",
    "check_slot",
    "create_slot",
    "drop",
    "ensure_publication",
    "exported_slot",
    "lsn_literal",
    "lsn_text",
    "slot_lock",
    "slot_state",
    "table_info",
    "take_slot_lock",
]


class CdcError(TaskError):
    """Change capture cannot go on without someone's decision (a lost or invalidated slot,
    a slot ahead of the committed position)."""


def lsn_text(lsn: int) -> str:
    """An LSN as PostgreSQL writes it: 16/B374D848."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_literal(lsn: int) -> str:
    return f"'{lsn_text(lsn)}'::pg_lsn"


def check_server(session: Session, server: ResolvedPostgres) -> None:
    """wal_level must be logical, and the role must be allowed to use slots."""
    ((level, allowed, role),) = session.rows(
        "select current_setting('wal_level'), "
        "(select rolreplication or rolsuper from pg_roles where rolname = current_user), "
        "current_user",
        what="cannot read the server's settings",
    )
    if level != "logical":
        raise DefinitionError(
            f"change capture needs wal_level = logical; {server.describe()} runs with "
            f"wal_level = {level}",
            hint="set wal_level = logical in postgresql.conf (or ALTER SYSTEM SET wal_level = "
            "logical) and restart the server",
        )
    if not allowed:
        raise DefinitionError(
            f"role {role!r} may not use replication slots on {server.describe()}",
            hint=f"ALTER ROLE {role} REPLICATION (as a superuser), or connect as a role with it",
        )


@dataclass(frozen=True)
class TableInfo:
    oid: int
    schema: str
    name: str
    key: tuple[str, ...]
    """The primary key (else the replica identity index): what a delete carries; `("*",)`
    for REPLICA IDENTITY FULL without a primary key."""


def table_info(session: Session, table: str) -> TableInfo:
    from engine.core.sqltext import quote_table

    rows = session.rows(
        "select c.oid::int8, n.nspname, c.relname, c.relreplident::text, "
        "array(select a.attname::text from pg_index i join pg_attribute a "
        "on a.attrelid = c.oid and a.attnum = any(i.indkey) "
        "where i.indrelid = c.oid and ((c.relreplident in ('d', 'f') and i.indisprimary) "
        "or (c.relreplident = 'i' and i.indisreplident)) order by a.attnum) "
        f"from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        f"where c.oid = to_regclass({sql_literal(quote_table(table))})",
        what=f"cannot look up table {table!r}",
    )
    if not rows:
        raise DefinitionError(f"table {table!r} does not exist")
    oid, schema, name, identity, key = rows[0]
    if identity == "f" and not key:  # the whole row identifies it
        key = ["*"]
    if identity == "n" or not key:
        raise DefinitionError(
            f"table {table!r} has no primary key and no replica identity: its updates and "
            "deletes cannot be captured",
            hint=f"add a primary key, or ALTER TABLE {quote_table(table)} REPLICA IDENTITY FULL",
        )
    return TableInfo(int(oid), schema, name, tuple(key))


def ensure_publication(
    session: Session,
    name: str,
    table: TableInfo,
    create: bool,
    add: bool = False,
) -> None:
    """The publication exists and publishes the table (created when missing and allowed).
    With `add` (several tables through one slot, each a task of its own), a table it lacks
    is added when allowed: each task adds its own, so a table missing at the source fails
    its own task alone."""
    from engine.core.sqltext import quote_identifier

    found = session.rows(
        "select pubinsert and pubupdate and pubdelete and pubtruncate from pg_publication "
        f"where pubname = {sql_literal(name)}",
        what="cannot look up the publication",
    )
    qualified = f"{quote_identifier(table.schema)}.{quote_identifier(table.name)}"
    if not found:
        if not create:
            raise DefinitionError(
                f"publication {name!r} does not exist",
                hint=f"CREATE PUBLICATION {name} FOR TABLE {qualified}, or set cdc.create: true",
            )
        session.execute(  # for this table alone: the others' tasks add theirs
            f"create publication {quote_identifier(name)} for table {qualified}",
            what=f"cannot create publication {name!r}",
        )
        return
    if not found[0][0]:
        raise DefinitionError(
            f"publication {name!r} does not publish every insert, update, delete and truncate",
            hint=f"ALTER PUBLICATION {name} SET (publish = 'insert, update, delete, truncate')",
        )
    ((version,),) = session.rows("select current_setting('server_version_num')::int")
    where = (
        f"where p.pubname = {sql_literal(name)} and p.schemaname = {sql_literal(table.schema)} "
        f"and p.tablename = {sql_literal(table.name)}"
    )
    if version < 150000:  # PostgreSQL 15 added column lists and row filters
        query = f"select false, array[]::text[] from pg_publication_tables p {where}"
    else:
        query = (
            "select p.rowfilter is not null, array(select a.attname::text from pg_attribute a "
            "where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped "
            "and not a.attname = any(p.attnames)) "
            "from pg_publication_tables p join pg_namespace n on n.nspname = p.schemaname "
            f"join pg_class c on c.relnamespace = n.oid and c.relname = p.tablename {where}"
        )
    published = session.rows(
        query,
        what="cannot read the publication's tables",
    )
    if not published and create and add:
        session.execute(
            f"alter publication {quote_identifier(name)} add table {qualified}",
            what=f"cannot add {table.schema}.{table.name} to publication {name!r}",
        )
        return
    if not published:
        raise DefinitionError(
            f"publication {name!r} does not publish {table.schema}.{table.name}",
            hint=f"ALTER PUBLICATION {name} ADD TABLE {qualified}",
        )
    filtered, unpublished = published[0]
    if filtered or unpublished:
        what = "a row filter" if filtered else f"no column {', '.join(map(repr, unpublished))}"
        raise DefinitionError(
            f"publication {name!r} publishes {table.schema}.{table.name} with {what}: its "
            "changes would miss rows or values the table has",
            hint=f"ALTER PUBLICATION {name} SET TABLE {qualified} (every column, no WHERE), "
            "or leave columns out of the extract with `columns:` instead",
        )


@dataclass(frozen=True)
class SlotState:
    name: str
    plugin: str
    database: str
    confirmed: int
    """The confirmed flush position: where the next read starts."""
    restart: int | None
    wal_status: str | None
    active: bool
    current: int
    """The server's current WAL position."""
    here: str = ""
    """The database the session is connected to."""

    @property
    def lag_bytes(self) -> int:
        return max(0, self.current - self.confirmed)

    @property
    def retained_bytes(self) -> int:
        return max(0, self.current - (self.restart or self.confirmed))


def slot_state(session: Session, name: str) -> SlotState | None:
    rows = session.rows(
        "select plugin, database, (confirmed_flush_lsn - '0/0'::pg_lsn)::int8, "
        "(restart_lsn - '0/0'::pg_lsn)::int8, wal_status, active, "
        "(pg_current_wal_lsn() - '0/0'::pg_lsn)::int8, current_database()::text "
        "from pg_replication_slots "
        f"where slot_name = {sql_literal(name)} and slot_type = 'logical'",
        what=f"cannot read replication slot {name!r}",
    )
    if not rows:
        return None
    plugin, database, confirmed, restart, status, active, current, here = rows[0]
    return SlotState(
        name,
        plugin,
        database,
        int(confirmed or 0),
        restart,
        status,
        bool(active),
        int(current),
        here,
    )


def check_slot(slot: SlotState) -> None:
    if slot.plugin != "pgoutput" or slot.database != slot.here:
        raise DefinitionError(
            f"replication slot {slot.name!r} decodes with {slot.plugin!r} in database "
            f"{slot.database!r}; change capture needs a pgoutput slot in {slot.here!r}",
            hint="name another slot with cdc.slot",
        )
    if slot.wal_status == "lost":
        raise CdcError(
            f"replication slot {slot.name!r} was invalidated: the server removed WAL it still "
            "needed (max_slot_wal_keep_size), so changes were lost",
            hint="`arrowline state reset PIPELINE TASK --yes` drops the slot and reads the "
            "table again from a new snapshot",
        )
    if slot.active:
        raise CdcError(
            f"replication slot {slot.name!r} is in use by another session",
            hint="another run or consumer reads it; wait for it, or name another slot",
        )


def advance(session: Session, name: str, to: int) -> None:
    session.rows(
        "select (end_lsn - '0/0'::pg_lsn)::int8 from "
        f"pg_replication_slot_advance({sql_literal(name)}, {lsn_literal(to)})",
        what=f"cannot advance replication slot {name!r}",
    )


def create_slot(session: Session, name: str) -> None:
    """A pgoutput slot, without a snapshot (`exported_slot` makes one with)."""
    session.rows(
        f"select lsn from pg_create_logical_replication_slot({sql_literal(name)}, 'pgoutput')",
        what=f"cannot create replication slot {name!r}",
    )


def _slot_key(name: str) -> str:
    return f"select hashtextextended({sql_literal('arrowline slot ' + name)}, 0)"


def take_slot_lock(
    session: Session, name: str, cancelled: Callable[[], None] | None = None
) -> None:
    """Take the server's advisory lock of the slot `name` on `session` (kept until released,
    or the session ends): the tasks of the tables sharing a slot take turns at it (a slot
    serves one reader at a time, and two first runs must not both make it). Waits for the
    holder, asking `cancelled` (which raises when the task is to stop) between tries; the
    server frees a lock whose holder's connection died."""
    key = _slot_key(name)
    while not session.rows(f"select pg_try_advisory_lock(({key}))")[0][0]:
        if cancelled is not None:
            cancelled()
        time.sleep(0.1)


@contextlib.contextmanager
def slot_lock(
    session: Session, name: str, cancelled: Callable[[], None] | None = None
) -> Iterator[None]:
    """`take_slot_lock` for the block."""
    take_slot_lock(session, name, cancelled)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            session.rows(f"select pg_advisory_unlock(({_slot_key(name)}))")


def drop(session: Session, name: str) -> None:
    session.execute(
        f"select pg_drop_replication_slot(slot_name) from pg_replication_slots "
        f"where slot_name = {sql_literal(name)}",
        what=f"cannot drop replication slot {name!r}",
    )


@contextlib.contextmanager
def exported_slot(
    server: ResolvedPostgres, name: str, *, temporary: bool = False
) -> Iterator[tuple[int, str]]:
    """Create the slot on a replication connection, exporting its snapshot: yields (the
    slot's consistent point, the snapshot's name). The snapshot stays importable
    (`SET TRANSACTION SNAPSHOT`) until the block ends; a read under it sees exactly the
    transactions that committed before the slot's first change. A `temporary` slot is gone
    when the block ends (or its connection dies): it is made for its snapshot only."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg comes with the postgres extra
        raise DefinitionError(
            "change capture creates its slot through psycopg, which is not installed",
            hint="pip install 'arrowline[postgres]'",
        ) from None
    from connectors.postgres.errors import translate

    try:
        connection: Any = psycopg.connect(server.uri, replication="database", autocommit=True)
    except Exception as exc:
        raise translate(exc, "cannot open a replication connection", server) from None
    try:
        result = connection.pgconn.exec_(
            f"CREATE_REPLICATION_SLOT {name} {'TEMPORARY ' if temporary else ''}LOGICAL "
            "pgoutput (SNAPSHOT 'export')".encode()
        )
        if result.status != 2:  # TUPLES_OK
            message = (result.error_message or b"").decode(errors="replace").strip()
            raise translate(
                RuntimeError(message), f"cannot create replication slot {name!r}", server
            )
        point, snapshot = result.get_value(0, 1), result.get_value(0, 2)
        high, low = (int(part, 16) for part in point.decode().split("/"))
        yield (high << 32) | low, snapshot.decode()
    finally:
        with contextlib.suppress(Exception):
            connection.close()

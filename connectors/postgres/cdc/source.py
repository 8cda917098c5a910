"""A table's changes as Arrow batches: its snapshot on the first run, its change stream after.

The first run (or the first after a reset or a full refresh) creates the replication slot on a
replication connection, exporting the slot's snapshot, and reads the table under that snapshot
with the normal extract (partitioned reads included): every row committed before the slot's
first change, each marked `_op = 'snapshot'`. Later runs read the slot's changes from the
committed position up to the server's WAL position when the run started (`upto`), so a run
always ends, through `pg_logical_slot_peek_binary_changes`, streamed in batches by ADBC. The
slot is not moved by reading: it is advanced once the loads committed (`release`), and at the
start of the next run if the process died in between.

A snapshot starts with a `truncate` row, so a sink that held an earlier snapshot and its
changes (a full refresh, a reset) ends up with the table as it is, deleted rows gone. Every row
carries `_op` (snapshot, insert, update, delete, truncate), `_lsn` (its transaction's commit
LSN), `_seq` (its place in the transaction), `_xid`, `_commit_ts` (UTC) and
`_unchanged_toast` (columns whose TOASTed value the update left as it was and the server did
not send: they are NULL here, not cleared). An update that changes the primary key comes
with a delete of the old key at the same position (`_lsn`, `_seq`): the two concern different
keys, so their order does not matter. The table's columns have the types the
normal extract gives them; changes written before a column was added, dropped or retyped are
mapped by name onto the table's columns when the run starts, so the load's `schema_change`
policy sees, and reports, each column that differs from its target.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from loguru import logger

from connectors.base import ConnectorContext
from connectors.changes import CHANGE_SCHEMA
from connectors.postgres.cdc.pgoutput import Chunk, Decoder
from connectors.postgres.cdc.slot import (
    CdcError,
    SlotState,
    TableInfo,
    advance,
    check_server,
    check_slot,
    create_slot,
    drop,
    ensure_publication,
    exported_slot,
    lsn_literal,
    lsn_text,
    slot_lock,
    slot_state,
    table_info,
    take_slot_lock,
)
from connectors.postgres.cdc.text import SESSION_SETTINGS, Convert, converter
from connectors.postgres.config import PostgresSource, default_slot
from connectors.postgres.connection import ResolvedPostgres, Session
from connectors.postgres.errors import translate
from engine.core.errors import ArrowlineError, DataError
from engine.core.faults import fault_point
from engine.core.sizes import format_bytes
from engine.core.sqltext import sql_literal
from engine.core.watermark import Watermark

__all__ = ["default_slot", "open_cdc", "release", "status"]


def _names(config: PostgresSource, ctx: ConnectorContext) -> tuple[str, str]:
    assert config.cdc is not None
    slot = config.cdc.slot or default_slot(ctx.pipeline, ctx.task_id)
    return slot, config.cdc.publication or slot


def open_cdc(config: PostgresSource, ctx: ConnectorContext) -> list[pa.RecordBatchReader]:
    from connectors.postgres.source import base_query
    from connectors.postgres.types import SourceConversion

    assert config.cdc is not None
    assert config.table is not None
    server: ResolvedPostgres = ctx.connection(config.connection)
    slot_name, publication = _names(config, ctx)
    shared = config.cdc.tables is not None
    with Session(server, autocommit=True) as session:
        check_server(session, server)
        table = table_info(session, config.table)
        columns = SourceConversion.for_schema(
            session.schema(base_query(config)), config.unconstrained_numeric
        ).schema
        with (
            slot_lock(session, slot_name, ctx.raise_if_cancelled)
            if shared
            else contextlib.nullcontext()
        ):
            ensure_publication(session, publication, table, config.cdc.create, add=shared)
            slot = slot_state(session, slot_name)
            _warn_retained(config, ctx, slot)
            if shared:
                _prepare_shared(session, slot_name, slot, ctx)
            else:
                _prepare(session, slot_name, slot, ctx)
        if ctx.watermark is not None:
            ((upto, read_at),) = session.rows(
                "select (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::int8, now()",
                what="cannot read the server's WAL position",
            )
    if ctx.watermark is None:
        return _snapshot(config, ctx, server, slot_name, temporary=shared)
    start = int(ctx.watermark.cursor) + 1
    changes = _Changes(
        config, ctx, server, table, columns, slot_name, publication, int(upto), read_at, start
    )
    return [pa.RecordBatchReader.from_batches(changes.schema, changes.batches())]


def _prepare(
    session: Session, slot_name: str, slot: SlotState | None, ctx: ConnectorContext
) -> None:
    """A slot of one table: dropped before a first run (made again with its snapshot), moved
    to the committed position when the last run died before moving it."""
    if ctx.watermark is None:
        if slot is not None:  # a first run that died, a reset, a full refresh: start over
            if slot.wal_status != "lost":  # a lost slot is what a reset starts over from
                check_slot(slot)
            drop(session, slot_name)
        return
    start = _committed_start(slot_name, slot, ctx)
    if slot is not None and slot.confirmed < start:  # the loads committed, the slot not moved
        advance(session, slot_name, start)


def _prepare_shared(
    session: Session, slot_name: str, slot: SlotState | None, ctx: ConnectorContext
) -> None:
    """A slot of several tables (`cdc.tables`), each read by a task of its own: made when
    missing, never dropped for one table's first run (the others read on from it), never
    moved here (only `release` moves it, to the least position they all committed); a table
    whose position is ahead of the slot skips the changes it already holds."""
    if ctx.watermark is not None:
        _committed_start(slot_name, slot, ctx, shared=True)
        return
    if slot is not None and slot.wal_status == "lost":  # the other tables need a reset too
        logger.warning(
            "{}: replication slot {!r} was invalidated; it is made again, and the other "
            "tables read through it fail until they are reset",
            ctx.task_id,
            slot_name,
        )
        drop(session, slot_name)
        slot = None
    if slot is None:
        create_slot(session, slot_name)
    else:
        check_slot(slot)


def _committed_start(
    slot_name: str, slot: SlotState | None, ctx: ConnectorContext, *, shared: bool = False
) -> int:
    """Where a read goes on from: just past the committed position. The slot must still hold
    it: present, valid, not past it."""
    assert ctx.watermark is not None
    if slot is None:
        raise CdcError(
            f"replication slot {slot_name!r} is gone, so the changes after "
            f"{lsn_text(int(ctx.watermark.cursor))} cannot be read",
            hint="`arrowline state reset PIPELINE TASK --yes` reads the table again "
            "from a new snapshot",
        )
    check_slot(slot)
    start = int(ctx.watermark.cursor) + 1
    if slot.confirmed > start:
        raise CdcError(
            f"replication slot {slot_name!r} is at {lsn_text(slot.confirmed)}, past "
            f"the position the loads committed ({lsn_text(start)}): it was made again "
            "by a full refresh or reset that did not finish, or something else "
            "consumed its changes; either way the changes between are not in it",
            hint=f"`arrowline state reset {ctx.pipeline} {ctx.task_id} --yes` reads this table "
            "again from a new snapshot (the other tables of its slot read on)"
            if shared
            else "`arrowline run PIPELINE --full-refresh` reads the table again from a "
            "new snapshot, which replaces what the loads hold",
        )
    return start


def _snapshot(
    config: PostgresSource,
    ctx: ConnectorContext,
    server: ResolvedPostgres,
    slot_name: str,
    *,
    temporary: bool,
) -> list[pa.RecordBatchReader]:
    """The table's rows under the snapshot a new slot exports: the task's slot itself, or,
    for one of several tables sharing a slot, a temporary slot made after it (its changes
    from there on are in the shared slot, which is not past it)."""
    from connectors.postgres.source import open_postgres

    name = f"{slot_name[:50]}_s{secrets.token_hex(4)}" if temporary else slot_name
    try:
        with exported_slot(server, name, temporary=temporary) as (point, snapshot):
            readers = open_postgres(config, ctx, snapshot=snapshot)
    except BaseException:  # a slot no run will read would keep WAL until the next run
        if not temporary:
            with contextlib.suppress(Exception), Session(server, autocommit=True) as session:
                drop(session, slot_name)
        raise
    ctx.reached = Watermark(point - 1)
    _complete_as_of(ctx, point - 1, datetime.now(UTC))
    return [_snapshot_rows(r, point - 1, first=i == 0) for i, r in enumerate(readers)]


def _snapshot_rows(
    reader: pa.RecordBatchReader, position: int, *, first: bool
) -> pa.RecordBatchReader:
    """The table's rows as `snapshot` changes, after (in the first stream) a `truncate`: what
    a sink held before, from an earlier snapshot and its changes, is replaced, deleted rows
    included (a full refresh, a reset, a first run that one load did not finish)."""
    schema = pa.schema([*reader.schema, *CHANGE_SCHEMA])

    def stamped(columns: list[pa.Array], count: int, op: str, seq: int) -> pa.RecordBatch:
        values = [op, position, seq, None, None, None]  # no transaction: _xid ... NULL
        meta = [
            pa.repeat(pa.scalar(v, f.type), count)
            for f, v in zip(CHANGE_SCHEMA, values, strict=True)
        ]
        return pa.RecordBatch.from_arrays([*columns, *meta], schema=schema)

    def batches() -> Iterator[pa.RecordBatch]:
        if first:
            marker = [pa.nulls(1, field.type) for field in reader.schema]
            yield stamped(marker, 1, "truncate", 0)
        for batch in reader:
            fault_point("cdc.snapshot_read")  # the slot exists, no row committed anywhere
            yield stamped(batch.columns, batch.num_rows, "snapshot", 1)  # after the truncate

    return pa.RecordBatchReader.from_batches(schema, batches())


class _Changes:
    """One run's read of the slot, up to `upto`."""

    def __init__(
        self,
        config: PostgresSource,
        ctx: ConnectorContext,
        server: ResolvedPostgres,
        table: TableInfo,
        columns: pa.Schema,
        slot: str,
        publication: str,
        upto: int,
        read_at: datetime,
        start: int,
    ) -> None:
        self.config, self.ctx, self.server, self.table = config, ctx, server, table
        self.start = start
        """Changes committed before this position are in the sinks already (a slot several
        tables share stands at the least position any of them committed)."""
        self.shared = config.cdc is not None and config.cdc.tables is not None
        self.columns, self.slot, self.publication, self.upto = columns, slot, publication, upto
        self.schema = pa.schema([*columns, *CHANGE_SCHEMA])
        self.converters: dict[str, Convert] = {f.name: converter(f.name, f.type) for f in columns}
        assert config.cdc is not None
        self.limit = config.cdc.max_changes
        self.read_at = read_at
        """The server's time when it was at `upto`: every change committed before is read."""

    def _sql(self) -> str:
        limit = None if self.shared else self.limit  # shared: counted here (`_Cut`)
        return (
            "select (lsn - '0/0'::pg_lsn)::int8 as lsn, data from "
            f"pg_logical_slot_peek_binary_changes({sql_literal(self.slot)}, "
            f"{lsn_literal(self.upto)}, {limit if limit else 'null'}, 'proto_version', '1', "
            f"'publication_names', {sql_literal(self.publication)})"
        )

    def batches(self) -> Iterator[pa.RecordBatch]:
        decoder = Decoder(self.table.oid, self.table.key if self.table.key != ("*",) else ())
        messages = 0
        cut = _Cut(self.limit if self.shared else None)
        session = Session(self.server, autocommit=True)
        unregister = None
        try:
            for setting in SESSION_SETTINGS:
                session.execute(setting, what="cannot prepare the change reader's session")
            if self.shared:  # the other tables' tasks wait while this one reads the slot
                take_slot_lock(session, self.slot, self.ctx.raise_if_cancelled)
            statement, reader = session.query(
                self._sql(), batch_bytes=self.config.batch_bytes, what="reading changes failed"
            )
            if self.ctx.cancel is not None:
                unregister = self.ctx.cancel.on_cancel(statement.cancel)
            for batch in reader:
                messages += batch.num_rows
                for chunk in decoder.decode(batch.column(1)):
                    fault_point("cdc.changes_read")  # changes read, the slot not moved
                    made = self._batch(chunk)
                    if int(chunk.lsn[0]) < self.start:  # in the sinks already
                        made = made.filter(pc.greater_equal(made.column("_lsn"), self.start))
                    made = cut.kept(made)
                    if made.num_rows:
                        yield made
                    if cut.done:
                        break
                self.ctx.raise_if_cancelled()
                if cut.done:
                    break
        except ArrowlineError:
            raise
        except Exception as exc:
            self.ctx.raise_if_cancelled()
            raise translate(exc, "reading changes failed", self.server) from None
        finally:
            if unregister:
                unregister()
            session.close()  # and with it the slot's lock
        if self.shared:
            stopped = (cut.at, cut.at_us) if cut.done else None
        elif self.limit and messages >= self.limit:  # the server stopped at a commit
            stopped = (decoder.last_commit, decoder.commit_us)
        else:
            stopped = None
        if stopped is None:
            self.ctx.reached = Watermark(self.upto - 1)
            _complete_as_of(self.ctx, self.upto - 1, self.read_at)
        elif stopped[0] is not None and stopped[0] >= self.start:
            self._stopped(stopped[0], stopped[1])
        self.ctx.notes["changes"] = decoder.changes
        self.ctx.notes["read_to"] = lsn_text(self.upto)
        if len(decoder.redefined) > 1 or (
            decoder.redefined and decoder.redefined[-1].columns != tuple(self.columns.names)
        ):
            self.ctx.notes["source_columns"] = [list(r.columns) for r in decoder.redefined]

    def _stopped(self, position: int, commit_us: int) -> None:
        """The read stopped at max_changes, after the transaction committed at `position`."""
        self.ctx.reached = Watermark(position)
        _complete_as_of(self.ctx, position, datetime.fromtimestamp(commit_us / 1e6, UTC))
        behind = max(0, self.upto - 1 - position)
        self.ctx.notes["behind_bytes"] = behind
        logger.warning(
            "{}: stopped at max_changes ({}) at {}; the {} of WAL from there to {}, "
            "where this run was to stop, may hold more changes: the next run reads them",
            self.ctx.task_id,
            self.limit,
            lsn_text(position),
            format_bytes(behind),
            lsn_text(self.upto),
        )

    def _batch(self, chunk: Chunk) -> pa.RecordBatch:
        count = len(chunk)
        where = {name: i for i, name in enumerate(chunk.relation.columns)}
        arrays = []
        for field in self.columns:
            index = where.get(field.name)
            if index is None:
                arrays.append(pa.nulls(count, field.type))
                continue
            try:
                arrays.append(self.converters[field.name](chunk.texts[index]))
            except DataError as exc:
                raise DataError(
                    f"{exc.message} (a change of {self.table.schema}.{self.table.name} "
                    f"committed at {lsn_text(int(chunk.lsn[0]))} or after)",
                    hint=exc.hint,
                ) from None
        unchanged: list[Any] = [None] * count
        for index, mask in enumerate(chunk.unchanged):
            if mask is None:
                continue
            name = chunk.relation.columns[index]
            for row in np.flatnonzero(mask).tolist():
                unchanged[row] = [*(unchanged[row] or []), name]
        meta = [
            pa.array(chunk.op, pa.string()),
            pa.array(chunk.lsn, pa.int64()),
            pa.array(chunk.seq, pa.int64()),
            pa.array(chunk.xid, pa.int64()),
            pa.array(chunk.commit_us, pa.int64()).cast(pa.timestamp("us", "UTC")),
            pa.array(unchanged, pa.list_(pa.string())),
        ]
        return pa.RecordBatch.from_arrays([*arrays, *meta], schema=self.schema)


class _Cut:
    """max_changes for a table sharing its slot: the server's count (`upto_nchanges`) starts
    at the slot's position, the least any of the tables committed, and counts every table's
    messages, so a table ahead of the others could spend it all on changes it skips and never
    move. Here only the table's own changes count: once `limit` are kept, the rest of the
    transaction of the last one is kept too (its rows share its commit position, `_lsn`), and
    the read stops at the first row past it."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.kept_rows = 0
        self.at: int | None = None
        """The commit position the read stops after, once `limit` rows are kept."""
        self.at_us = 0
        self.done = False

    def kept(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The rows of `batch` the read keeps (all of them until `limit` is reached)."""
        if self.at is None and self.limit and self.kept_rows + batch.num_rows >= self.limit:
            last = self.limit - self.kept_rows - 1  # the limit-th row kept
            self.at = int(batch.column("_lsn")[last].as_py())
            self.at_us = batch.column("_commit_ts")[last].value
        if self.at is not None:
            inside = pc.less_equal(batch.column("_lsn"), self.at)
            if not pc.all(inside).as_py():
                batch, self.done = batch.filter(inside), True
        self.kept_rows += batch.num_rows
        return batch


def release(config: PostgresSource, ctx: ConnectorContext, watermark: Watermark | None) -> None:
    """The loads committed everything up to `watermark`: the slot may forget it. For a slot
    several tables share, `watermark` is the least any of their tasks committed (the engine
    asks `release_group`), or None when none did: each table then reads a snapshot of its own
    first, which skips the slot's changes from before it, so the slot forgets all it holds
    rather than keep WAL no table will read."""
    assert config.cdc is not None
    slot_name, _ = _names(config, ctx)
    server: ResolvedPostgres = ctx.connection(config.connection)
    shared = config.cdc.tables is not None
    with (
        Session(server, autocommit=True) as session,
        slot_lock(session, slot_name) if shared else contextlib.nullcontext(),
    ):
        slot = slot_state(session, slot_name)
        upto = slot.current if watermark is None and slot else None
        if watermark is not None:
            upto = int(watermark.cursor) + 1
        if slot is not None and upto is not None and slot.confirmed < upto:
            fault_point("cdc.before_release")  # the loads committed, the slot not moved
            advance(session, slot_name, upto)


def _over_limit(config: PostgresSource, slot: SlotState | None) -> int | None:
    """`max_retained_wal` when the slot keeps more WAL than that, else None."""
    assert config.cdc is not None
    limit = config.cdc.max_retained_wal
    if slot is None or limit is None or slot.retained_bytes <= limit:
        return None
    return limit


def _warn_retained(config: PostgresSource, ctx: ConnectorContext, slot: SlotState | None) -> None:
    limit = _over_limit(config, slot)
    if limit is None or slot is None:
        return
    said = (
        f"replication slot {slot.name!r} keeps {format_bytes(slot.retained_bytes)} of WAL on "
        f"the server, more than max_retained_wal ({format_bytes(limit)})"
    )
    logger.warning("{}: {}", ctx.task_id, said)
    ctx.notes["alert"] = said


def _complete_as_of(ctx: ConnectorContext, position: int, at: datetime) -> None:
    """What the run's details keep for `cdc status`: the loads that commit `position` hold
    every change of the table committed before `at`."""
    ctx.notes["complete_as_of"] = {"position": position, "at": at.astimezone(UTC).isoformat()}


def status(config: PostgresSource, ctx: ConnectorContext) -> dict[str, Any]:
    """The slot as the server sees it: where it is, how far behind, what WAL it keeps. Lag
    in time is told without touching the slot (a peek would take it from a run starting at
    that moment): the loads hold every change committed before `complete_as_of` (the
    committed run's start, or the last transaction a run bounded by max_changes read), so
    `lag_seconds` is at most the time since then; 0 when the server has written no WAL since
    the slot's position."""
    assert config.cdc is not None
    slot_name, publication = _names(config, ctx)
    server: ResolvedPostgres = ctx.connection(config.connection)
    committed = int(ctx.watermark.cursor) if ctx.watermark is not None else None
    with Session(server, autocommit=True) as session:
        slot = slot_state(session, slot_name)
    found: dict[str, Any] = {"slot": slot_name, "publication": publication}
    if committed is not None:
        found["committed"] = lsn_text(committed)
    if slot is None:
        return found | {"state": "missing"}
    state = "lost" if slot.wal_status == "lost" else ("active" if slot.active else "idle")
    found |= {
        "state": state,
        "confirmed": lsn_text(slot.confirmed),
        "server_at": lsn_text(slot.current),
        "lag_bytes": slot.lag_bytes,
        "retained_bytes": slot.retained_bytes,
    }
    complete = ctx.previous.get("complete_as_of")
    if isinstance(complete, dict) and complete.get("position") == committed:
        at = datetime.fromisoformat(str(complete["at"]))
        found["complete_as_of"] = at.isoformat()
        behind = (datetime.now(UTC) - at).total_seconds() if slot.lag_bytes else 0.0
        found["lag_seconds"] = max(0.0, behind)
    limit = _over_limit(config, slot)
    if limit is not None:
        found["alert"] = f"retains more than max_retained_wal ({format_bytes(limit)})"
    return found

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
import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
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
    drop,
    ensure_publication,
    exported_slot,
    lsn_literal,
    lsn_text,
    slot_state,
    table_info,
)
from connectors.postgres.cdc.text import SESSION_SETTINGS, Convert, converter
from connectors.postgres.config import PostgresSource
from connectors.postgres.connection import ResolvedPostgres, Session
from connectors.postgres.errors import translate
from engine.core.errors import ArrowlineError, DataError
from engine.core.faults import fault_point
from engine.core.sizes import format_bytes
from engine.core.sqltext import sql_literal
from engine.core.watermark import Watermark

__all__ = ["default_slot", "open_cdc", "release", "status"]


def default_slot(pipeline: str, task: str) -> str:
    """`arrowline_<pipeline>_<task>`, in the letters a slot name may have, at most 63. When a
    name has an underscore or a letter a slot cannot have, a hash of both names follows: the
    pipeline `x` with task `y_z` and the pipeline `x_y` with task `z` must not share a slot."""
    plain = f"arrowline_{pipeline}_{task}".lower()
    name = re.sub(r"[^a-z0-9_]", "_", plain)
    ambiguous = "_" in pipeline or "_" in task or name != plain
    if not ambiguous and len(name) <= 63:
        return name
    digest = hashlib.sha1(f"{pipeline}\0{task}".encode()).hexdigest()[:8]
    return f"{name[:54]}_{digest}"


def _names(config: PostgresSource, ctx: ConnectorContext) -> tuple[str, str]:
    assert config.cdc is not None
    slot = config.cdc.slot or default_slot(ctx.pipeline, ctx.task_id)
    return slot, config.cdc.publication or slot


def open_cdc(config: PostgresSource, ctx: ConnectorContext) -> list[pa.RecordBatchReader]:
    from connectors.postgres.source import base_query, open_postgres
    from connectors.postgres.types import SourceConversion

    assert config.cdc is not None
    assert config.table is not None
    server: ResolvedPostgres = ctx.connection(config.connection)
    slot_name, publication = _names(config, ctx)
    with Session(server, autocommit=True) as session:
        check_server(session, server)
        table = table_info(session, config.table)
        ensure_publication(session, publication, table, config.cdc.create)
        columns = SourceConversion.for_schema(
            session.schema(base_query(config)), config.unconstrained_numeric
        ).schema
        slot = slot_state(session, slot_name)
        _warn_retained(config, ctx, slot)
        if ctx.watermark is None:
            if slot is not None:  # a first run that died, a reset, a full refresh: start over
                if slot.wal_status != "lost":  # a lost slot is what a reset starts over from
                    check_slot(slot)
                drop(session, slot_name)
        else:
            if slot is None:
                raise CdcError(
                    f"replication slot {slot_name!r} is gone, so the changes after "
                    f"{lsn_text(int(ctx.watermark.cursor))} cannot be read",
                    hint="`arrowline state reset PIPELINE TASK --yes` reads the table again "
                    "from a new snapshot",
                )
            check_slot(slot)
            start = int(ctx.watermark.cursor) + 1
            if slot.confirmed < start:  # the loads committed, the slot was not moved yet
                advance(session, slot_name, start)
            elif slot.confirmed > start:
                raise CdcError(
                    f"replication slot {slot_name!r} is at {lsn_text(slot.confirmed)}, past "
                    f"the position the loads committed ({lsn_text(start)}): it was made again "
                    "by a full refresh or reset that did not finish, or something else "
                    "consumed its changes; either way the changes between are not in it",
                    hint="`arrowline run PIPELINE --full-refresh` reads the table again from a "
                    "new snapshot, which replaces what the loads hold",
                )
            ((upto, read_at),) = session.rows(
                "select (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::int8, now()",
                what="cannot read the server's WAL position",
            )
    if ctx.watermark is None:
        try:
            with exported_slot(server, slot_name) as (point, snapshot):
                readers = open_postgres(config, ctx, snapshot=snapshot)
        except BaseException:  # a slot no run will read would keep WAL until the next run
            with contextlib.suppress(Exception), Session(server, autocommit=True) as session:
                drop(session, slot_name)
            raise
        ctx.reached = Watermark(point - 1)
        _complete_as_of(ctx, point - 1, datetime.now(UTC))
        return [_snapshot_rows(r, point - 1, first=i == 0) for i, r in enumerate(readers)]
    changes = _Changes(
        config, ctx, server, table, columns, slot_name, publication, int(upto), read_at
    )
    return [pa.RecordBatchReader.from_batches(changes.schema, changes.batches())]


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
    ) -> None:
        self.config, self.ctx, self.server, self.table = config, ctx, server, table
        self.columns, self.slot, self.publication, self.upto = columns, slot, publication, upto
        self.schema = pa.schema([*columns, *CHANGE_SCHEMA])
        self.converters: dict[str, Convert] = {f.name: converter(f.name, f.type) for f in columns}
        assert config.cdc is not None
        self.limit = config.cdc.max_changes
        self.read_at = read_at
        """The server's time when it was at `upto`: every change committed before is read."""

    def _sql(self) -> str:
        limit = self.limit
        return (
            "select (lsn - '0/0'::pg_lsn)::int8 as lsn, data from "
            f"pg_logical_slot_peek_binary_changes({sql_literal(self.slot)}, "
            f"{lsn_literal(self.upto)}, {limit if limit else 'null'}, 'proto_version', '1', "
            f"'publication_names', {sql_literal(self.publication)})"
        )

    def batches(self) -> Iterator[pa.RecordBatch]:
        decoder = Decoder(self.table.oid, self.table.key if self.table.key != ("*",) else ())
        messages = 0
        session = Session(self.server, autocommit=True)
        unregister = None
        try:
            for setting in SESSION_SETTINGS:
                session.execute(setting, what="cannot prepare the change reader's session")
            statement, reader = session.query(
                self._sql(), batch_bytes=self.config.batch_bytes, what="reading changes failed"
            )
            if self.ctx.cancel is not None:
                unregister = self.ctx.cancel.on_cancel(statement.cancel)
            for batch in reader:
                messages += batch.num_rows
                for chunk in decoder.decode(batch.column(1)):
                    fault_point("cdc.changes_read")  # changes read, the slot not moved
                    yield self._batch(chunk)
                self.ctx.raise_if_cancelled()
        except ArrowlineError:
            raise
        except Exception as exc:
            self.ctx.raise_if_cancelled()
            raise translate(exc, "reading changes failed", self.server) from None
        finally:
            if unregister:
                unregister()
            session.close()
        if self.limit and messages >= self.limit:  # stopped at a transaction's end
            if decoder.last_commit is not None:
                self.ctx.reached = Watermark(decoder.last_commit)
                last = datetime.fromtimestamp(decoder.commit_us / 1e6, UTC)
                _complete_as_of(self.ctx, decoder.last_commit, last)
                behind = max(0, self.upto - 1 - decoder.last_commit)
                self.ctx.notes["behind_bytes"] = behind
                logger.warning(
                    "{}: stopped at max_changes ({}) at {}; the {} of WAL from there to {}, "
                    "where this run was to stop, may hold more changes: the next run reads them",
                    self.ctx.task_id,
                    self.limit,
                    lsn_text(decoder.last_commit),
                    format_bytes(behind),
                    lsn_text(self.upto),
                )
        else:
            self.ctx.reached = Watermark(self.upto - 1)
            _complete_as_of(self.ctx, self.upto - 1, self.read_at)
        self.ctx.notes["changes"] = decoder.changes
        self.ctx.notes["read_to"] = lsn_text(self.upto)
        if len(decoder.redefined) > 1 or (
            decoder.redefined and decoder.redefined[-1].columns != tuple(self.columns.names)
        ):
            self.ctx.notes["source_columns"] = [list(r.columns) for r in decoder.redefined]

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


def release(config: PostgresSource, ctx: ConnectorContext, watermark: Watermark) -> None:
    """The loads committed everything up to `watermark`: the slot may forget it."""
    slot_name, _ = _names(config, ctx)
    server: ResolvedPostgres = ctx.connection(config.connection)
    with Session(server, autocommit=True) as session:
        slot = slot_state(session, slot_name)
        if slot is not None and slot.confirmed < int(watermark.cursor) + 1:
            fault_point("cdc.before_release")  # the loads committed, the slot not moved
            advance(session, slot_name, int(watermark.cursor) + 1)


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

"""Stream a PostgreSQL table or query into Arrow, through ADBC's COPY path.

Memory is bounded by `batch_bytes` per connection: ADBC reads COPY output in batches of about
that size. (Bound parameters would make ADBC abandon COPY and return the whole result at once,
so values reach the statement as typed literals written here, never as text a user controls.)

`partition: {column, count}` reads `count` ranges of the column on as many connections. The
first connection exports its snapshot and every other one imports it (`SET TRANSACTION
SNAPSHOT`), so all ranges see the table as of one instant, even while it is being written.

`incremental: {cursor, key, lookback, nulls}` reads only rows past the watermark the run starts
from: `(cursor, key...) > (watermark)` compared as a row, so equal cursor values are neither
missed nor read twice; with a lookback, `cursor >= watermark - lookback`, re-reading late rows.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa

from connectors.base import ConnectorContext
from connectors.postgres.config import PostgresSource
from connectors.postgres.connection import ResolvedPostgres, Session
from connectors.postgres.errors import translate
from connectors.postgres.types import SourceConversion, numeric_rewrite
from engine.core.errors import ArrowlineError, DataError, DefinitionError
from engine.core.sqltext import quote_identifier, quote_table, sql_literal
from engine.core.watermark import Watermark

__all__ = [
    "PostgresPart",
    "base_query",
    "incremental_filter",
    "open_part",
    "open_postgres",
    "partition_ranges",
    "split_postgres",
]


def base_query(config: PostgresSource) -> str:
    if config.table is not None:
        columns = ", ".join(quote_identifier(c) for c in config.columns) if config.columns else "*"
        return f"select {columns} from {quote_table(config.table)}"
    assert config.query is not None
    statement = config.query.strip().rstrip(";")
    return f"select * from ({statement}) as arrowline_source"


def _literal(value: Any) -> str:
    if isinstance(value, Decimal):
        return f"{value}::numeric"
    return sql_literal(value)


def incremental_filter(config: PostgresSource, watermark: Watermark | None) -> str | None:
    """The WHERE condition of an incremental read from `watermark` (None: no condition)."""
    spec = config.incremental
    if spec is None:
        return None
    cursor = quote_identifier(spec.cursor)
    condition: str | None = None
    if watermark is not None:
        if spec.lookback is not None:
            if not isinstance(watermark.cursor, datetime | date):
                raise DefinitionError(
                    f"incremental.lookback needs a date or timestamp cursor; {spec.cursor!r} "
                    f"holds {type(watermark.cursor).__name__} values"
                )
            seconds = spec.lookback.total_seconds()
            condition = f"{cursor} >= {_literal(watermark.cursor)} - interval '{seconds:g} seconds'"
        elif spec.key and len(watermark.key) == len(spec.key):
            columns = ", ".join([cursor, *(quote_identifier(k) for k in spec.key)])
            values = ", ".join(_literal(v) for v in watermark.as_tuple())
            condition = f"({columns}) > ({values})"
        else:
            condition = f"{cursor} > {_literal(watermark.cursor)}"
    if spec.nulls == "include":
        return f"({condition}) or {cursor} is null" if condition else None
    return f"{cursor} is not null and ({condition})" if condition else f"{cursor} is not null"


def _where(query: str, conditions: list[str]) -> str:
    present = [c for c in conditions if c]
    if not present:
        return query
    return f"select * from ({query}) as arrowline_filtered where " + " and ".join(
        f"({c})" for c in present
    )


def partition_ranges(low: Any, high: Any, count: int) -> list[Any]:
    """`count - 1` inner boundaries splitting [low, high] into ranges of equal width."""
    if isinstance(low, bool) or not isinstance(low, int | datetime | date):
        raise DefinitionError(
            f"partition column values are {type(low).__name__}; partition on an integer, date "
            "or timestamp column"
        )
    if isinstance(low, int):
        width = (high - low + 1) / count
        bounds = [low + round(width * i) for i in range(1, count)]
    else:
        span: timedelta = high - low
        bounds = [low + span * i / count for i in range(1, count)]
    return sorted({b for b in bounds if low < b <= high})


def _range_conditions(column: str, bounds: list[Any]) -> list[str]:
    quoted = quote_identifier(column)
    if not bounds:
        return [""]
    conditions = [f"{quoted} < {_literal(bounds[0])} or {quoted} is null"]
    for lower, upper in itertools.pairwise(bounds):
        conditions.append(f"{quoted} >= {_literal(lower)} and {quoted} < {_literal(upper)}")
    conditions.append(f"{quoted} >= {_literal(bounds[-1])}")
    return conditions


def _stream(
    session: Session, sql: str, config: PostgresSource, ctx: ConnectorContext, finish: str | None
) -> pa.RecordBatchReader:
    """A reader over one query on one session; the session closes when the stream ends."""
    server = session.server
    scaled: dict[str, pa.DataType] = {}
    statement: Any = None
    unregister = None
    try:
        sql, scaled = numeric_rewrite(session.schema(sql), sql)
        statement, reader = session.query(
            sql, batch_bytes=config.batch_bytes, what=f"reading {config.table or 'query'} failed"
        )
        unregister = ctx.cancel.on_cancel(statement.cancel) if ctx.cancel else None
        conversion = SourceConversion.for_schema(
            reader.schema, config.unconstrained_numeric, scaled
        )
    except BaseException as exc:
        if unregister:
            unregister()
        session.close()
        if isinstance(exc, ArrowlineError):
            if ctx.cancel is not None and ctx.cancel.cancelled:
                ctx.raise_if_cancelled()
            raise
        ctx.raise_if_cancelled()
        raise translate(exc, f"reading {config.table or 'query'} failed", server) from None

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for batch in reader:
                yield conversion.apply(batch)
            if finish:
                session.execute(finish, what="cannot end the snapshot")
        except (DataError, DefinitionError):
            raise
        except Exception as exc:
            ctx.raise_if_cancelled()
            text = str(exc).lower()
            if scaled and "cannot convert" in text and ("nan" in text or "infinity" in text):
                columns = ", ".join(repr(name) for name in scaled)
                raise DataError(
                    f"a NUMERIC value in {columns} is NaN or Infinity, which a decimal cannot hold",
                    hint="filter those rows, or cast the column to float8 in a query",
                ) from None
            raise translate(exc, f"reading {config.table or 'query'} failed", server) from None
        finally:
            if unregister:
                unregister()
            session.close()

    return pa.RecordBatchReader.from_batches(conversion.schema, batches())


def _under(server: ResolvedPostgres, snapshot: str) -> Session:
    """A session in a read-only repeatable-read transaction that sees `snapshot`."""
    session = Session(server, autocommit=True)
    try:
        session.execute(_BEGIN, what="cannot start a snapshot")
        session.execute(
            f"set transaction snapshot {sql_literal(snapshot)}", what="cannot import the snapshot"
        )
    except BaseException:
        session.close()
        raise
    return session


_BEGIN = "begin transaction isolation level repeatable read read only"


@dataclass(frozen=True)
class PostgresPart:
    """One range of a partitioned read, as it may travel to another host: the snapshot every
    range reads and the range's statement (no secret: the host resolves its own connection)."""

    snapshot: str
    sql: str


@contextlib.contextmanager
def split_postgres(
    config: PostgresSource, ctx: ConnectorContext, *, snapshot: str | None = None
) -> Iterator[list[PostgresPart]]:
    """The ranges of a partitioned read, while a session of this process holds the snapshot
    they all read: exported here, or `snapshot`, exported by another session that keeps it. The
    ranges must have imported it before the context ends."""
    assert config.partition is not None
    server: ResolvedPostgres = ctx.connection(config.connection)
    query = _where(base_query(config), [incremental_filter(config, ctx.watermark) or ""])
    if snapshot is None:
        coordinator = Session(server, autocommit=True)
        try:
            coordinator.execute(_BEGIN, what="cannot start a snapshot")
            (snapshot,) = coordinator.rows(
                "select pg_export_snapshot()", what="cannot export a snapshot"
            )[0]
        except BaseException:
            coordinator.close()
            raise
    else:
        coordinator = _under(server, snapshot)
    try:
        column = quote_identifier(config.partition.column)
        low, high = coordinator.rows(
            f"select min({column}), max({column}) from ({query}) as s",
            what=f"cannot find the range of {config.partition.column!r}",
        )[0]
        bounds = partition_ranges(low, high, config.partition.count) if low is not None else []
        conditions = _range_conditions(config.partition.column, bounds)
        yield [PostgresPart(snapshot, _where(query, [condition])) for condition in conditions]
    finally:
        # Every range has imported the snapshot by now (or failed to): release the export.
        with contextlib.suppress(Exception):
            coordinator.execute("commit")
        coordinator.close()


def open_part(
    config: PostgresSource, piece: PostgresPart, ctx: ConnectorContext
) -> pa.RecordBatchReader:
    """One range of a split read, on whichever host it runs."""
    server: ResolvedPostgres = ctx.connection(config.connection)
    return _stream(_under(server, piece.snapshot), piece.sql, config, ctx, finish="commit")


def open_postgres(
    config: PostgresSource, ctx: ConnectorContext, *, snapshot: str | None = None
) -> list[pa.RecordBatchReader]:
    """One reader, or one per partition, all seeing the same snapshot: `snapshot` when given
    (exported by another session, which must keep it until this returns), else one of their
    own."""
    server: ResolvedPostgres = ctx.connection(config.connection)
    if config.partition is None:
        query = _where(base_query(config), [incremental_filter(config, ctx.watermark) or ""])
        if snapshot is not None:
            return [_stream(_under(server, snapshot), query, config, ctx, finish="commit")]
        return [_stream(Session(server), query, config, ctx, finish=None)]
    sessions: list[Session] = []
    try:
        with split_postgres(config, ctx, snapshot=snapshot) as pieces:
            readers = []
            for piece in pieces:
                session = _under(server, piece.snapshot)
                sessions.append(session)
                readers.append(_stream(session, piece.sql, config, ctx, finish="commit"))
            return readers
    except BaseException:
        for session in sessions:
            session.close()
        raise

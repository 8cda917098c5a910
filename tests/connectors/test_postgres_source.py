"""Partitioned and incremental reads from PostgreSQL."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from connectors.base import ConnectorContext
from connectors.postgres.config import PostgresConnection, PostgresSource
from connectors.postgres.connection import resolve
from connectors.postgres.source import incremental_filter, open_postgres, partition_ranges
from engine.core.errors import DefinitionError
from engine.core.watermark import Watermark
from tests.conftest import PgSchema


def readers(
    pg: PgSchema, tmp_path: Path, watermark: Watermark | None = None, **config: object
) -> list[pa.RecordBatchReader]:
    server = resolve("t", PostgresConnection(kind="postgres", uri=pg.uri), tmp_path)
    source = PostgresSource.model_validate({"from": "postgres", "connection": "t", **config})
    ctx = ConnectorContext(tmp_path, "p", "r", "e", connections={"t": server}, watermark=watermark)
    return open_postgres(source, ctx)


def read_all(streams: list[pa.RecordBatchReader]) -> pa.Table:
    return pa.Table.from_batches([b for s in streams for b in s], schema=streams[0].schema)


def test_partition_ranges_cover_everything_once() -> None:
    assert partition_ranges(1, 100, 4) == [26, 51, 76]
    assert partition_ranges(5, 5, 4) == []
    day = date(2024, 1, 1)
    assert partition_ranges(day, day + timedelta(days=4), 2) == [day + timedelta(days=2)]
    with pytest.raises(DefinitionError, match="partition on an integer, date or timestamp column"):
        partition_ranges("a", "z", 2)


@pytest.mark.parametrize("column", ["id", "day", "at"])
def test_partitioned_read_returns_every_row_once(pg: PgSchema, tmp_path: Path, column: str) -> None:
    table = pg.table("p")
    pg.execute(
        f"create table {table} as select g as id, date '2024-01-01' + (g % 90) as day, "
        f"timestamptz '2024-01-01 00:00+00' + g * interval '1 minute' as at from generate_series(1, 10000) g",
        f"insert into {table} values (null, null, null), (null, null, null)",
    )
    streams = readers(pg, tmp_path, table=table, partition={"column": column, "count": 4})
    assert len(streams) == 4
    parts = [s.read_all() for s in streams]
    assert all(p.num_rows > 0 for p in parts)
    whole = pa.concat_tables(parts)
    assert whole.num_rows == 10_002
    ids = pc.drop_null(whole.column("id"))
    assert len(pc.unique(ids)) == 10_000


def _start_writer(pg: PgSchema, table: str, stop: threading.Event) -> threading.Thread:
    """Moves money between random accounts, one transaction at a time: the total never changes."""

    def work() -> None:
        import adbc_driver_postgresql.dbapi as pgdb

        rng = random.Random(7)
        with pgdb.connect(pg.uri) as connection, connection.cursor() as cursor:
            while not stop.is_set():
                a, b = rng.randrange(1, 20_001), rng.randrange(1, 20_001)
                cursor.execute(f"update {table} set balance = balance - 7 where id = {a}")
                cursor.execute(f"update {table} set balance = balance + 7 where id = {b}")
                connection.commit()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_partitions_share_one_snapshot_under_concurrent_writes(
    pg: PgSchema, tmp_path: Path
) -> None:
    table = pg.table("accounts")
    pg.execute(
        f"create table {table} as select g as id, 100::bigint as balance from generate_series(1, 20000) g",
        f"alter table {table} add primary key (id)",
    )
    stop = threading.Event()
    writer = _start_writer(pg, table, stop)
    try:
        time.sleep(0.3)
        for _ in range(5):
            streams = readers(pg, tmp_path, table=table, partition={"column": "id", "count": 4})
            parts = []
            for stream in streams:  # read one part after another, slowly: time passes between them
                parts.append(stream.read_all())
                time.sleep(0.1)
            whole = pa.concat_tables(parts)
            assert whole.num_rows == 20_000
            assert pc.sum(whole.column("balance")).as_py() == 2_000_000

        # The control: the same ranges read without a shared snapshot do see a moving total,
        # so the assertion above is one that can fail.
        inconsistent = 0
        for _ in range(5):
            total = 0
            for low, high in ((1, 5000), (5001, 10000), (10001, 15000), (15001, 20000)):
                part = read_all(
                    readers(
                        pg,
                        tmp_path,
                        query=f"select balance from {table} where id between {low} and {high}",
                    )
                )
                total += pc.sum(part.column("balance")).as_py()
                time.sleep(0.1)
            inconsistent += total != 2_000_000
        assert inconsistent > 0
    finally:
        stop.set()
        writer.join()


def test_incremental_filter_text() -> None:
    config = PostgresSource.model_validate(
        {
            "from": "postgres",
            "connection": "c",
            "table": "t",
            "incremental": {"cursor": "updated_at", "key": ["id"]},
        }
    )
    mark = Watermark(datetime(2024, 1, 2, tzinfo=UTC), (42,))
    assert incremental_filter(config, None) == '"updated_at" is not null'
    expected = (
        '"updated_at" is not null and '
        '(("updated_at", "id") > (TIMESTAMPTZ \'2024-01-02 00:00:00+00:00\', 42))'
    )
    assert incremental_filter(config, mark) == expected


def test_incremental_reads_past_the_watermark_with_ties_lookback_and_nulls(
    pg: PgSchema, tmp_path: Path
) -> None:
    table = pg.table("events")
    pg.execute(
        f"create table {table} (id int, updated_at timestamptz)",
        f"insert into {table} values (1, '2024-01-01 10:00+00'), (2, '2024-01-01 10:00+00'), "
        f"(3, '2024-01-01 11:00+00'), (4, null)",
    )
    incremental = {"cursor": "updated_at", "key": ["id"]}
    mark = Watermark(datetime(2024, 1, 1, 10, tzinfo=UTC), (1,))
    ids = (
        read_all(readers(pg, tmp_path, mark, table=table, incremental=incremental))
        .column("id")
        .to_pylist()
    )
    assert sorted(ids) == [2, 3]  # id 2 shares the cursor value of the watermark: not lost
    with_nulls = read_all(
        readers(pg, tmp_path, mark, table=table, incremental={**incremental, "nulls": "include"})
    )
    assert sorted(with_nulls.column("id").to_pylist(), key=str) == [2, 3, 4]
    lookback = read_all(
        readers(
            pg,
            tmp_path,
            Watermark(datetime(2024, 1, 1, 11, tzinfo=UTC), (3,)),
            table=table,
            incremental={"cursor": "updated_at", "lookback": "1h"},
        )
    )
    assert sorted(lookback.column("id").to_pylist()) == [1, 2, 3]
    first_run = read_all(readers(pg, tmp_path, None, table=table, incremental=incremental))
    assert sorted(first_run.column("id").to_pylist()) == [1, 2, 3]  # nulls: exclude by default


def test_connection_options_with_spaces_reach_the_server_as_written(
    pg: PgSchema, tmp_path: Path
) -> None:
    # libpq reads a URI's query with percent-decoding only: a '+' for a space is a literal '+'
    spec = PostgresConnection(
        kind="postgres", uri=pg.uri, options={"options": "-c statement_timeout=4321"}
    )
    server = resolve("t", spec, tmp_path)
    source = PostgresSource.model_validate(
        {
            "from": "postgres",
            "connection": "t",
            "query": "select current_setting('statement_timeout') as s",
        }
    )
    ctx = ConnectorContext(tmp_path, "p", "r", "e", connections={"t": server})
    assert read_all(open_postgres(source, ctx)).column("s").to_pylist() == ["4321ms"]

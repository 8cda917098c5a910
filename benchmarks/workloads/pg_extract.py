"""PostgreSQL extraction: a generated table read into Arrow (or Parquet), side by side.

Table: id bigint, qty integer, amount numeric(12,2), created_at timestamp, name text, flag bool;
5,000,000 rows by default (`--rows`). Contenders, each in its own process:

    arrowline/stream        arrowline's source, one connection, batches consumed as they come
    arrowline/stream-x4     the same, four partitions sharing one snapshot
    arrowline/parquet       a whole arrowline run: extract task streamed into workspace Parquet
    adbc/stream             bare adbc_driver_postgresql fetch_record_batch (NUMERIC stays text)
    connectorx/arrow        connectorx.read_sql(return_type="arrow"), one connection
    connectorx/arrow-x4     the same with partition_on=id, partition_num=4
    pandas/read_sql         pandas.read_sql over SQLAlchemy + psycopg
    psql/copy-binary        psql COPY ... TO STDOUT (FORMAT binary) > /dev/null: the ceiling

Throughput uses the time each contender reports for its read (`read_s`), so interpreter start-up
does not count against Python contenders next to psql; peak RSS is the whole process.
Every contender reports rows and sum(id), and one that disagrees is marked wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Contender, Outcome

URI = os.environ.get("ARROWLINE_BENCH_PG_URI", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA = "arrowline_bench"


def dlt_uri() -> str:
    """URI with a password: dlt insists on one, and under trust authentication any will do."""
    user = URI.split("@")[0].removeprefix("postgresql://")
    return URI if ":" in user else URI.replace("@", ":unused@", 1)


NAMES = [
    "arrowline/stream",
    "arrowline/stream-x4",
    "arrowline/parquet",
    "adbc/stream",
    "connectorx/arrow",
    "connectorx/arrow-x4",
    "pandas/read_sql",
    "polars/read_database_uri",
    "dlt/sql_table",
    "psql/copy-binary",
]
NEEDS = {
    "connectorx/arrow": "connectorx",
    "connectorx/arrow-x4": "connectorx",
    "pandas/read_sql": "pandas",
    "polars/read_database_uri": "connectorx",
    "dlt/sql_table": "dlt",
}
"""Peers from `arrowline[bench]`; a missing one is reported as not installed."""


def table_name(rows: int) -> str:
    return f"{SCHEMA}.orders_{rows}"


def ensure_table(rows: int) -> str:
    """Create the table once per size (deterministic values), and ANALYZE it."""
    import adbc_driver_postgresql.dbapi as pgdb

    table = table_name(rows)
    with pgdb.connect(URI) as connection, connection.cursor() as cursor:
        cursor.execute(f"create schema if not exists {SCHEMA}")
        cursor.execute(f"select to_regclass('{table}') is not null")
        exists = cursor.fetchone()[0]
        if exists:
            cursor.execute(f"select count(*) from {table}")
            if cursor.fetchone()[0] == rows:
                return table
            cursor.execute(f"drop table {table}")
        cursor.execute(
            f"create table {table} as select g::bigint as id, "
            f"(g::bigint * 7 % 1000)::integer as qty, "
            f"((g::bigint * 7919 % 1000000) / 100.0)::numeric(12,2) as amount, "
            f"timestamp '2024-01-01' + g * interval '1 second' as created_at, "
            f"md5(g::text) as name, g % 2 = 0 as flag from generate_series(1, {rows}) g"
        )
        cursor.execute(f"alter table {table} add primary key (id)")
        cursor.execute(f"analyze {table}")
        connection.commit()
    return table


def _result(rows: int, id_sum: int, read_s: float, **extra: Any) -> dict[str, Any]:
    return {
        "checksum": f"{rows}:{id_sum}",
        "rows": rows,
        "read_s": read_s,
        "rows_per_s": rows / read_s if read_s else 0.0,
        **extra,
    }


def _arrowline_stream(table: str, partitions: int) -> dict[str, Any]:
    import threading

    import pyarrow.compute as pc

    from connectors.base import ConnectorContext
    from connectors.postgres.config import PostgresConnection, PostgresSource
    from connectors.postgres.connection import resolve
    from connectors.postgres.source import open_postgres

    server = resolve("bench", PostgresConnection(kind="postgres", uri=URI), Path.cwd())
    config: dict[str, Any] = {"from": "postgres", "connection": "bench", "table": table}
    if partitions > 1:
        config["partition"] = {"column": "id", "count": partitions}
    source = PostgresSource.model_validate(config)
    started = time.perf_counter()
    readers = open_postgres(
        source, ConnectorContext(Path.cwd(), "bench", "r", "e", connections={"bench": server})
    )
    totals = [[0, 0] for _ in readers]

    def consume(index: int) -> None:
        for batch in readers[index]:
            totals[index][0] += batch.num_rows
            totals[index][1] += pc.sum(batch.column("id")).as_py() or 0

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(len(readers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    read_s = time.perf_counter() - started
    amount_type = str(readers[0].schema.field("amount").type)
    return _result(
        sum(t[0] for t in totals), sum(t[1] for t in totals), read_s, amount_type=amount_type
    )


def _arrowline_parquet(table: str) -> dict[str, Any]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from engine.api.pipeline import run

    with tempfile.TemporaryDirectory() as directory:
        project = Path(directory)
        (project / "p.yaml").write_text(
            textwrap.dedent(f"""
            pipeline: bench_extract
            connections:
              bench: {{kind: postgres, uri: "{URI}"}}
            tasks:
              - id: orders
                extract: {{from: postgres, connection: bench, table: {table}}}
        """)
        )
        started = time.perf_counter()
        result = run(project / "p.yaml", project_dir=project)
        read_s = time.perf_counter() - started
        assert result.ok, {k: t.error for k, t in result.tasks.items()}
        output = result.tasks["orders"].output
        assert output is not None
        rows, id_sum = 0, 0
        for path in output.files:  # batch by batch: the checksum must not hold the table either
            for batch in pq.ParquetFile(path).iter_batches(columns=["id"]):
                rows += batch.num_rows
                id_sum += pc.sum(batch.column("id")).as_py() or 0
        amount_type = str(output.schema.field("amount").type)
    return _result(rows, id_sum, read_s, amount_type=amount_type)


def _adbc(table: str) -> dict[str, Any]:
    import adbc_driver_postgresql.dbapi as pgdb
    import pyarrow.compute as pc

    started = time.perf_counter()
    rows, id_sum = 0, 0
    with pgdb.connect(URI) as connection, connection.cursor() as cursor:
        cursor.execute(f"select * from {table}")
        for batch in cursor.fetch_record_batch():
            rows += batch.num_rows
            id_sum += pc.sum(batch.column("id")).as_py() or 0
    return _result(rows, id_sum, time.perf_counter() - started, amount_type="text (opaque)")


def _connectorx(table: str, partitions: int) -> dict[str, Any]:
    import connectorx as cx
    import pyarrow.compute as pc

    started = time.perf_counter()
    options: dict[str, Any] = {"return_type": "arrow"}
    if partitions > 1:
        options |= {"partition_on": "id", "partition_num": partitions}
    arrow = cx.read_sql(URI, f"select * from {table}", **options)
    read_s = time.perf_counter() - started
    return _result(
        arrow.num_rows,
        pc.sum(arrow.column("id")).as_py(),
        read_s,
        amount_type=str(arrow.schema.field("amount").type),
    )


def _pandas(table: str) -> dict[str, Any]:
    import pandas as pd
    import sqlalchemy

    engine = sqlalchemy.create_engine(URI.replace("postgresql://", "postgresql+psycopg://", 1))
    started = time.perf_counter()
    with engine.connect() as connection:
        frame = pd.read_sql(f"select * from {table}", connection)
    read_s = time.perf_counter() - started
    return _result(
        len(frame), int(frame["id"].sum()), read_s, amount_type=str(frame["amount"].dtype)
    )


def _polars(table: str) -> dict[str, Any]:
    import polars as pl

    started = time.perf_counter()
    frame = pl.read_database_uri(f"select * from {table}", URI, engine="connectorx")
    read_s = time.perf_counter() - started
    return _result(
        frame.height, int(frame["id"].sum()), read_s, amount_type=str(frame["amount"].dtype)
    )


def _dlt(table: str) -> dict[str, Any]:
    """dlt's `sql_table` with the pyarrow backend, iterated as a resource: its extraction, without
    a destination."""
    import pyarrow.compute as pc
    from dlt.sources.sql_database import sql_table

    schema, name = table.split(".")
    credentials = URI.replace("postgresql://", "postgresql+psycopg://", 1)
    started = time.perf_counter()
    resource = sql_table(
        credentials=credentials, table=name, schema=schema, backend="pyarrow", chunk_size=100_000
    )
    rows, id_sum, amount_type = 0, 0, "?"
    for item in resource:
        rows += item.num_rows
        id_sum += pc.sum(item.column("id")).as_py() or 0
        amount_type = str(item.schema.field("amount").type)
    return _result(rows, id_sum, time.perf_counter() - started, amount_type=amount_type)


def _psql(table: str, rows: int) -> dict[str, Any]:
    started = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        subprocess.run(
            [
                "psql",
                URI,
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                f"copy (select * from {table}) to stdout (format binary)",
            ],
            stdout=sink,
            check=True,
        )
    read_s = time.perf_counter() - started
    # psql computes no checksum; it reads the same table, whose sum is known.
    return _result(rows, rows * (rows + 1) // 2, read_s, amount_type="binary COPY")


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    rows = 200_000 if args.quick else (args.rows or 5_000_000)
    return {"rows": rows, "table": ensure_table(rows)}


def contenders(args: argparse.Namespace) -> list[Contender]:
    params = prepare(args)
    result = []
    for name in NAMES:
        argv = (
            sys.executable,
            "-m",
            "benchmarks.workloads.pg_extract",
            name,
            "--table",
            params["table"],
            "--rows",
            str(params["rows"]),
        )
        result.append(Contender(name, argv, group="rows"))
    return result


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _goal(label: str, value: float | None, met: bool, shown: str) -> tuple[str, str, str]:
    if value is None:
        return label, "n/a", "n/a"
    return label, "✅" if met else "❌", shown


def summarize(outcomes: list[Outcome], params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    done = {o.contender: o for o in outcomes if o.samples and not o.error}

    def median(name: str, key: str) -> float | None:
        return done[name].median(key) if name in done else None

    lines = [
        f"{params['rows']:,} rows. Throughput from each contender's own read time; "
        "RSS of the whole process.",
        "",
        "| contender | rows/s (median, min–max) | read time | peak RSS | amount arrives as |",
        "|---|---|---|---|---|",
    ]
    for o in outcomes:
        if o.error or not o.samples:
            reason = (o.error or "no samples").splitlines()[0][:90]
            lines.append(f"| {o.contender} | {reason} | | | |")
            continue
        low, high = o.spread("rows_per_s")
        lines.append(
            f"| {o.contender} | {o.median('rows_per_s'):,.0f} ({low:,.0f}–{high:,.0f}) | "
            f"{o.median('read_s'):.2f} s | {o.median('peak_rss_mb'):.0f} MB | "
            f"{o.samples[-1].reported.get('amount_type')} |"
        )
    stream = median("arrowline/stream", "rows_per_s")
    vs_cx = _ratio(stream, median("connectorx/arrow", "rows_per_s"))
    vs_cx4 = _ratio(
        median("arrowline/stream-x4", "rows_per_s"), median("connectorx/arrow-x4", "rows_per_s")
    )
    rss_cx = _ratio(
        median("arrowline/stream", "peak_rss_mb"), median("connectorx/arrow", "peak_rss_mb")
    )
    vs_pandas = _ratio(stream, median("pandas/read_sql", "rows_per_s"))
    vs_ceiling = _ratio(stream, median("psql/copy-binary", "rows_per_s"))
    parquet_rss = median("arrowline/parquet", "peak_rss_mb")
    goals = [
        _goal(
            "throughput ≥ 1.25x connectorx (one connection)",
            vs_cx,
            (vs_cx or 0) >= 1.25,
            f"{vs_cx or 0:.2f}x",
        ),
        _goal(
            "throughput ≥ 1.25x connectorx (4 partitions each)",
            vs_cx4,
            (vs_cx4 or 0) >= 1.25,
            f"{vs_cx4 or 0:.2f}x",
        ),
        _goal("peak RSS ≤ 0.5x connectorx", rss_cx, (rss_cx or 9) <= 0.5, f"{rss_cx or 0:.2f}x"),
        _goal(
            "throughput ≥ 3x pandas.read_sql",
            vs_pandas,
            (vs_pandas or 0) >= 3,
            f"{vs_pandas or 0:.2f}x",
        ),
        _goal(
            "throughput ≥ 75% of the psql COPY binary ceiling",
            vs_ceiling,
            (vs_ceiling or 0) >= 0.75,
            f"{vs_ceiling or 0:.0%}",
        ),
        _goal(
            "arrowline/parquet peak RSS < 300 MB",
            parquet_rss,
            (parquet_rss or 999) < 300,
            f"{parquet_rss or 0:.0f} MB",
        ),
    ]
    lines += ["", "| goal | met | figure |", "|---|---|---|"]
    lines += [f"| {label} | {mark} | {figure} |" for label, mark, figure in goals]
    summary: dict[str, Any] = {
        name: {key: o.median(key) for key in ("rows_per_s", "peak_rss_mb", "read_s")}
        for name, o in done.items()
    }
    summary["goals"] = {label: {"met": mark, "figure": figure} for label, mark, figure in goals}
    return summary, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("contender", choices=NAMES)
    parser.add_argument("--table", required=True)
    parser.add_argument("--rows", type=int, required=True)
    args = parser.parse_args()
    name, table = args.contender, args.table
    runners = {
        "arrowline/stream": lambda: _arrowline_stream(table, 1),
        "arrowline/stream-x4": lambda: _arrowline_stream(table, 4),
        "arrowline/parquet": lambda: _arrowline_parquet(table),
        "adbc/stream": lambda: _adbc(table),
        "connectorx/arrow": lambda: _connectorx(table, 1),
        "connectorx/arrow-x4": lambda: _connectorx(table, 4),
        "pandas/read_sql": lambda: _pandas(table),
        "polars/read_database_uri": lambda: _polars(table),
        "dlt/sql_table": lambda: _dlt(table),
        "psql/copy-binary": lambda: _psql(table, args.rows),
    }
    import importlib.util
    import shutil

    module = NEEDS.get(name)
    if module and importlib.util.find_spec(module) is None:
        sys.exit(f"{module} is not installed: pip install 'arrowline[bench]'")
    if name == "psql/copy-binary" and shutil.which("psql") is None:
        sys.exit("psql is not installed (PostgreSQL's client)")
    print("RESULT " + json.dumps(runners[name]()))


if __name__ == "__main__":
    main()

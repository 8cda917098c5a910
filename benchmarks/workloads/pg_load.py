"""Loading into PostgreSQL: append (this workload) and merge (`pg_merge`, which runs its
contenders through this module), arrowline against the bare and the hand-written way and dlt.

    append   5,000,000 rows from Parquet into a new table
             arrowline/append      arrowline's sink (creates the table, COPY via ADBC, commits)
             adbc/ingest           bare adbc_ingest of the same Parquet stream into the same DDL
             psycopg/copy-csv      Arrow batches as CSV into psycopg's COPY
             pandas/to_sql         pandas.to_sql (method=multi) on a capped subset
             dlt/append            dlt's postgres destination (CSV + COPY), write_disposition=append
    merge    1,000,000 changed rows (900k updates, 100k inserts) into a 10,000,000-row table
             arrowline/merge       arrowline's sink (stage, key checks, INSERT ... ON CONFLICT)
             handwritten/merge     adbc_ingest into a temp table + INSERT ... ON CONFLICT
             dlt/merge             dlt's merge write disposition on primary key id; its base
                                   table is loaded by dlt itself first (untimed)

Each sample rebuilds its target (and runs CHECKPOINT) before its clock starts, and reports
`write_s`: the load from a URI (connect, create, COPY, commit), the same work for every
contender. Goals: append within 1.05x of adbc/ingest, merge within 1.2x of handwritten/merge.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks.harness import Contender, Outcome
from benchmarks.workloads.pg_extract import SCHEMA, URI, dlt_uri

DATA = Path(__file__).resolve().parents[1] / ".data"
COLUMNS = (
    "id bigint, qty integer, amount numeric(12,2), created_at timestamp, name text, flag boolean"
)
DDL = f"({COLUMNS}, primary key (id))"
APPEND_DDL = f"({COLUMNS})"
"""Append targets have no key, as arrowline creates them when no `keys` are given."""
APPEND_NAMES = [
    "arrowline/append",
    "adbc/ingest",
    "psycopg/copy-csv",
    "pandas/to_sql",
    "dlt/append",
]
MERGE_NAMES = ["arrowline/merge", "handwritten/merge", "dlt/merge"]
NAMES = APPEND_NAMES + MERGE_NAMES
PANDAS_CAP = 200_000
"""pandas.to_sql inserts a few tens of thousands of rows a second: it loads a capped subset."""


def _rows(ids: pa.Array, salt: int) -> pa.Table:
    """Deterministic rows for the given ids; `salt` changes every value but the id."""
    values = pc.add(pc.multiply(ids, 7919), salt)
    return pa.table(
        {
            "id": ids,
            "qty": pc.cast(pc.bit_wise_and(values, 1023), pa.int32()),
            "amount": pc.cast(pc.bit_wise_and(values, 0xFFFFF), pa.decimal128(19, 0)).view(
                pa.decimal128(12, 2)
            ),
            "created_at": pc.cast(pc.multiply(ids, 1_000_000), pa.timestamp("us")),
            "name": pc.binary_join_element_wise("name-", pc.cast(values, pa.string()), ""),
            "flag": pc.equal(pc.bit_wise_and(values, 1), 0),
        }
    )


def _parquet(name: str, ids: pa.Array, salt: int) -> Path:
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / name
    if not path.exists():
        pq.write_table(_rows(ids, salt), path, row_group_size=262_144)
    return path


def _execute(*statements: str) -> None:
    import adbc_driver_manager as adbc
    import adbc_driver_postgresql as driver

    with driver.connect(URI) as database, adbc.AdbcConnection(database) as connection:
        for sql in statements:
            with adbc.AdbcStatement(connection) as statement:
                statement.set_sql_query(sql)
                statement.execute_update()


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    append_rows = 20_000 if args.quick else (args.rows or 5_000_000)
    base_rows = 50_000 if args.quick else 10_000_000
    changed = base_rows // 10
    append_file = _parquet(
        f"load-{append_rows}.parquet", pa.array(range(append_rows), pa.int64()), 0
    )
    # 90% of the changes update existing keys (every 11th row), 10% are new keys past the end.
    updates = pa.array(range(0, base_rows, 11), pa.int64())[: changed * 9 // 10]
    inserts = pa.array(range(base_rows, base_rows + changed - len(updates)), pa.int64())
    merge_file = _parquet(f"merge-{base_rows}.parquet", pa.concat_arrays([updates, inserts]), 1)
    base = f"{SCHEMA}.merge_base_{base_rows}"
    import adbc_driver_postgresql.dbapi as pgdb

    with pgdb.connect(URI) as connection, connection.cursor() as cursor:
        cursor.execute(f"create schema if not exists {SCHEMA}")
        cursor.execute(f"select to_regclass('{base}') is not null")
        if not cursor.fetchone()[0]:
            cursor.execute(f"create table {base} {DDL}")
            connection.commit()
            cursor.adbc_ingest(
                base.split(".")[1],
                _rows(pa.array(range(base_rows), pa.int64()), 0),
                mode="append",
                db_schema_name=SCHEMA,
            )
            cursor.execute(f"analyze {base}")
        connection.commit()
    return {
        "append_rows": append_rows,
        "append_file": str(append_file),
        "base_rows": base_rows,
        "changed_rows": changed,
        "merge_file": str(merge_file),
        "base": base,
    }


def _target(name: str) -> str:
    return f"{SCHEMA}.{name.replace('/', '_').replace('-', '_')}"


def _arrowline_write(mode: str, target: str, file: Path) -> float:
    from connectors.base import ConnectorContext
    from connectors.postgres.config import PostgresConnection, PostgresSink
    from connectors.postgres.connection import resolve
    from connectors.postgres.sink import write_postgres
    from engine.core.tables import InputTable

    server = resolve("bench", PostgresConnection(kind="postgres", uri=URI), Path.cwd())
    config: dict[str, Any] = {
        "input": "t",
        "to": "postgres",
        "connection": "bench",
        "table": target,
        "mode": mode,
    }
    if mode == "merge":
        config["keys"] = ["id"]
    sink = PostgresSink.model_validate(config)
    metadata = pq.ParquetFile(file).metadata
    source = InputTable("t", "r", (file,), pq.read_schema(file), metadata.num_rows)
    # A run id of its own per sample: a load ledger row from an earlier sample with the same
    # run id would make this one a no-op (that is what the ledger is for).
    run_id = uuid.uuid4().hex
    ctx = ConnectorContext(Path.cwd(), "bench", run_id, "load", connections={"bench": server})
    started = time.perf_counter()
    write_postgres(source, sink, ctx)
    return time.perf_counter() - started


def _adbc_append(target: str, file: Path) -> float:
    import adbc_driver_postgresql.dbapi as pgdb

    schema, table = target.split(".")
    # The clock starts from a URI, as arrowline's does: connecting (ADBC introspects types on a
    # first connection) and creating the table are part of any load.
    started = time.perf_counter()
    with pgdb.connect(URI) as connection, connection.cursor() as cursor:
        cursor.execute(f"create table {target} {APPEND_DDL}")
        parquet = pq.ParquetFile(file)
        reader = pa.RecordBatchReader.from_batches(
            parquet.schema_arrow, parquet.iter_batches(131_072)
        )
        cursor.adbc_ingest(table, reader, mode="append", db_schema_name=schema)
        connection.commit()
        return time.perf_counter() - started


def _psycopg_copy(target: str, file: Path) -> float:
    """What a hand-written psycopg loader does: Arrow batches to CSV text, streamed into COPY."""
    import io

    import psycopg
    import pyarrow.csv as pa_csv

    options = pa_csv.WriteOptions(include_header=False)
    started = time.perf_counter()
    with psycopg.connect(URI) as connection:
        connection.execute(f"create table {target} {APPEND_DDL}")
        with (
            connection.cursor() as cursor,
            cursor.copy(f"copy {target} from stdin (format csv)") as copy,
        ):
            for batch in pq.ParquetFile(file).iter_batches(131_072):
                buffer = io.BytesIO()
                pa_csv.write_csv(pa.Table.from_batches([batch]), buffer, write_options=options)
                copy.write(buffer.getvalue())
        connection.commit()
    return time.perf_counter() - started


def _pandas_to_sql(target: str, file: Path) -> float:
    import sqlalchemy

    frame = pq.read_table(file).slice(0, PANDAS_CAP).to_pandas()
    schema, table = target.split(".")
    engine = sqlalchemy.create_engine(URI.replace("postgresql://", "postgresql+psycopg://", 1))
    started = time.perf_counter()
    with engine.begin() as connection:
        connection.exec_driver_sql(f"create table {target} {APPEND_DDL}")
        frame.to_sql(
            table,
            connection,
            schema=schema,
            if_exists="append",
            index=False,
            method="multi",
            chunksize=5_000,
            dtype={"amount": sqlalchemy.Numeric(12, 2)},  # Decimals are objects to pandas
        )
    engine.dispose()
    return time.perf_counter() - started


def _handwritten_merge(target: str, file: Path) -> float:
    import adbc_driver_postgresql.dbapi as pgdb

    columns = ["id", "qty", "amount", "created_at", "name", "flag"]
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
    started = time.perf_counter()  # from a URI, as arrowline's clock
    with pgdb.connect(URI) as connection, connection.cursor() as cursor:
        cursor.execute("create temporary table stage (like " + target + ") on commit drop")
        parquet = pq.ParquetFile(file)
        reader = pa.RecordBatchReader.from_batches(
            parquet.schema_arrow, parquet.iter_batches(131_072)
        )
        cursor.adbc_ingest("stage", reader, mode="append", temporary=True)
        cursor.execute(
            f"insert into {target} select * from stage on conflict (id) do update set {updates}"
        )
        connection.commit()
        return time.perf_counter() - started


def _dlt_pipeline(name: str) -> Any:
    """A dlt pipeline of its own (fresh local state) into schema `<SCHEMA>_<name>`."""
    import tempfile

    import dlt

    _execute(f"drop schema if exists {SCHEMA}_{name} cascade")
    return dlt.pipeline(
        pipeline_name=f"arrowline_bench_{name}",
        destination=dlt.destinations.postgres(credentials=dlt_uri()),
        dataset_name=f"{SCHEMA}_{name}",
        pipelines_dir=tempfile.mkdtemp(prefix="dlt-"),
    )


def _batches(file: Path) -> Any:
    yield from pq.ParquetFile(file).iter_batches(131_072)


def _dlt_append(file: Path) -> tuple[float, str]:
    pipeline = _dlt_pipeline("dlt_append")
    started = time.perf_counter()
    pipeline.run(
        _batches(file), table_name="t", write_disposition="append", loader_file_format="csv"
    )
    return time.perf_counter() - started, f"{SCHEMA}_dlt_append.t"


def _dlt_merge(file: Path, base_rows: int) -> tuple[float, str]:
    pipeline = _dlt_pipeline("dlt_merge")
    base = _rows(pa.array(range(base_rows), pa.int64()), 0)
    settings = {
        "table_name": "t",
        "write_disposition": "merge",
        "primary_key": "id",
        "loader_file_format": "csv",
    }
    pipeline.run(base.to_batches(131_072), **settings)  # untimed: dlt's own base table
    _execute("checkpoint")
    started = time.perf_counter()
    pipeline.run(_batches(file), **settings)
    return time.perf_counter() - started, f"{SCHEMA}_dlt_merge.t"


def _checksum(target: str) -> str:
    import adbc_driver_postgresql.dbapi as pgdb

    with pgdb.connect(URI) as connection, connection.cursor() as cursor:
        cursor.execute(f"select count(*), sum(qty), sum(amount)::text from {target}")
        count, qty, amount = cursor.fetchone()
    return f"{count}:{qty}:{amount}"


def contenders_of(names: list[str], args: argparse.Namespace) -> list[Contender]:
    params = prepare(args)
    return [
        Contender(
            name,
            (
                sys.executable,
                "-m",
                "benchmarks.workloads.pg_load",
                name,
                "--params",
                json.dumps(params),
            ),
            group="merge" if "merge" in name else "capped" if "pandas" in name else "append",
        )
        for name in names
    ]


def contenders(args: argparse.Namespace) -> list[Contender]:
    return contenders_of(APPEND_NAMES, args)


def summarize(outcomes: list[Outcome], params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    done = {o.contender: o for o in outcomes if o.samples and not o.error}
    lines = [
        f"append: {params['append_rows']:,} rows into a new table; merge: "
        f"{params['changed_rows']:,} changed rows into {params['base_rows']:,} (setup not timed).",
        "",
        "| contender | load time (median, min–max) | rows/s | peak RSS |",
        "|---|---|---|---|",
    ]
    for o in outcomes:
        if o.error or not o.samples:
            lines.append(
                f"| {o.contender} | {(o.error or 'no samples').splitlines()[0][:90]} | | |"
            )
            continue
        low, high = o.spread("write_s")
        rows = {
            "append": params["append_rows"],
            "capped": min(PANDAS_CAP, params["append_rows"]),
            "merge": params["changed_rows"],
        }[o.group]
        lines.append(
            f"| {o.contender} | {o.median('write_s'):.2f} s ({low:.2f}–{high:.2f}) | "
            f"{rows / o.median('write_s'):,.0f} | {o.median('peak_rss_mb'):.0f} MB |"
        )
    summary: dict[str, Any] = {
        n: {"write_s": o.median("write_s"), "peak_rss_mb": o.median("peak_rss_mb")}
        for n, o in done.items()
    }
    lines += ["", "| goal | met | figure |", "|---|---|---|"]
    for label, ours, theirs, limit in (
        ("append within 1.05x of bare adbc_ingest", "arrowline/append", "adbc/ingest", 1.05),
        (
            "merge within 1.2x of hand-written COPY + ON CONFLICT",
            "arrowline/merge",
            "handwritten/merge",
            1.2,
        ),
    ):
        if ours not in {o.contender for o in outcomes}:
            continue  # the other load workload's goal
        if ours in done and theirs in done:
            ratio = done[ours].median("write_s") / done[theirs].median("write_s")
            lines.append(f"| {label} | {'✅' if ratio <= limit else '❌'} | {ratio:.2f}x |")
            summary[label] = ratio
        else:
            lines.append(f"| {label} | n/a | n/a |")
    for ours, theirs in (("arrowline/append", "dlt/append"), ("arrowline/merge", "dlt/merge")):
        if ours in done and theirs in done:
            ratio = done[theirs].median("write_s") / done[ours].median("write_s")
            label = f"{ours} against {theirs} (no goal set)"
            lines.append(f"| {label} | | {ratio:.2f}x faster |")
            summary[label] = ratio
    return summary, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("contender", choices=NAMES)
    parser.add_argument("--params", required=True)
    args = parser.parse_args()
    params = json.loads(args.params)
    name = args.contender
    target = _target(name)
    quiet = ("checkpoint",)  # untimed: every load starts with the last one's writes flushed
    if name.startswith("dlt/"):
        if importlib.util.find_spec("dlt") is None or importlib.util.find_spec("psycopg2") is None:
            sys.exit("dlt (with postgres) is not installed: pip install 'arrowline[bench]'")
        if name == "dlt/append":
            write_s, target = _dlt_append(Path(params["append_file"]))
        else:
            write_s, target = _dlt_merge(Path(params["merge_file"]), params["base_rows"])
        print("RESULT " + json.dumps({"write_s": write_s, "checksum": _checksum(target)}))
        _execute(f"drop schema if exists {target.split('.')[0]} cascade")
        return
    if "merge" in name:
        # Not timed: a fresh copy of the 10M-row base with its primary key.
        _execute(
            f"drop table if exists {target}",
            f"create table {target} {DDL}",
            f"insert into {target} select * from {params['base']}",
            f"analyze {target}",
            *quiet,
        )
        write_s = (
            _arrowline_write("merge", target, Path(params["merge_file"]))
            if name.startswith("arrowline")
            else _handwritten_merge(target, Path(params["merge_file"]))
        )
    else:
        _execute(f"drop table if exists {target}", *quiet)
        writers = {
            "arrowline/append": lambda: _arrowline_write("append", target, file),
            "adbc/ingest": lambda: _adbc_append(target, file),
            "psycopg/copy-csv": lambda: _psycopg_copy(target, file),
            "pandas/to_sql": lambda: _pandas_to_sql(target, file),
        }
        file = Path(params["append_file"])
        for module in {"psycopg/copy-csv": "psycopg", "pandas/to_sql": "pandas"}.get(
            name, ""
        ).split():
            if importlib.util.find_spec(module) is None:
                sys.exit(f"{module} is not installed: pip install 'arrowline[bench]'")
        write_s = writers[name]()
    print("RESULT " + json.dumps({"write_s": write_s, "checksum": _checksum(target)}))
    _execute(f"drop table if exists {target}")


if __name__ == "__main__":
    main()

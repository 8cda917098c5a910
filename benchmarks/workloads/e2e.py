"""End to end: PostgreSQL -> DuckDB transforms -> validate -> PostgreSQL and Parquet, as one
pipeline (2M rows by default), against the hand-written floor: ADBC into Arrow, the same SQL in
DuckDB, the same checks as a filter, `adbc_ingest` back into PostgreSQL and DuckDB's COPY to
Parquet, in one script with no catalog, no workspace and no retries.

The dlt + dbt-duckdb contender the issue names is not in the harness yet. Both contenders
report the rows and sum of ids they loaded into PostgreSQL and the day rows they wrote.

Child usage: python -m benchmarks.workloads.e2e {arrowline,script} --data SOURCE_TABLE
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Contender, Outcome
from benchmarks.workloads._child import child_main, engine_table
from benchmarks.workloads.pg_extract import SCHEMA, URI, ensure_table

ENRICH = "select id, qty, amount, amount * qty as total, flag, created_at from orders where qty > 0"
DAILY = (
    "select created_at::date as day, count(*) as orders, sum(amount) as amount, "
    "sum(qty) as qty from orders group by 1"
)
CHECK = "amount between 0 and 10000 and qty between 1 and 999"


def _target(source: str, contender: str) -> str:
    return f"{SCHEMA}.e2e_{contender}_{source.rsplit('_', 1)[-1]}"


def _loaded(table: str) -> str:
    import adbc_driver_postgresql.dbapi as pgdb

    with pgdb.connect(URI) as connection, connection.cursor() as cursor:
        cursor.execute(f"select count(*), sum(id), sum(total) from {table}")
        rows, ids, total = cursor.fetchone()
    return f"{rows}:{ids}:{total}"


def _arrowline(source_path: Path, out: Path) -> dict[str, Any]:
    from engine.api import run

    source = str(source_path)
    target = _target(source, "arrowline")
    pipeline = out / "pipeline.yaml"
    pipeline.write_text(
        textwrap.dedent(f"""
        pipeline: e2e
        connections:
          pg: {{kind: postgres, uri: "{URI}"}}
        tasks:
          - id: orders
            extract: {{from: postgres, connection: pg, table: {source}}}
          - id: enriched
            sql: {ENRICH}
          - id: daily
            sql: {DAILY}
          - id: checked
            validate:
              input: enriched
              on_fail: quarantine
              schema:
                columns:
                  amount: {{checks: {{in_range: {{min: 0, max: 10000}}}}}}
                  qty: {{checks: {{in_range: {{min: 1, max: 999}}}}}}
          - id: to_pg
            load: {{input: checked, to: postgres, connection: pg, table: {target},
                    mode: replace}}
          - id: to_parquet
            load: {{input: daily, to: parquet, path: "{out}/daily.parquet"}}
        """)
    )
    started = time.perf_counter()
    result = run(pipeline, project_dir=out)
    elapsed = time.perf_counter() - started
    assert result.ok, {k: t.error for k, t in result.tasks.items() if t.error}
    import pyarrow.parquet as pq

    days = pq.read_metadata(out / "daily.parquet").num_rows
    return {"engine_s": elapsed, "checksum": f"{_loaded(target)};days={days}"}


def _script(source_path: Path, out: Path) -> dict[str, Any]:
    import adbc_driver_postgresql.dbapi as pgdb
    import duckdb

    source = str(source_path)
    target = _target(source, "script")
    schema, table = target.split(".")
    started = time.perf_counter()
    with pgdb.connect(URI) as pg, pg.cursor() as cursor:
        cursor.execute(f"select * from {source}")
        orders = cursor.fetch_arrow_table()
        with duckdb.connect() as db:
            db.register("orders_raw", orders)
            # Bare ADBC hands NUMERIC over as text: a hand-written script casts it back.
            db.execute(
                "create view orders as select * replace (amount::decimal(12,2) as amount) "
                "from orders_raw"
            )
            good = db.execute(f"select * from ({ENRICH}) where {CHECK}").to_arrow_table()
            db.execute(f"copy ({DAILY}) to '{out / 'daily.parquet'}' (format parquet)")
        cursor.adbc_ingest(table, good, mode="replace", db_schema_name=schema)
        pg.commit()
    elapsed = time.perf_counter() - started
    import pyarrow.parquet as pq

    days = pq.read_metadata(out / "daily.parquet").num_rows
    return {"engine_s": elapsed, "checksum": f"{_loaded(target)};days={days}"}


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    rows = 100_000 if args.quick else (args.rows or 2_000_000)
    return {"rows": rows, "table": ensure_table(rows)}


def contenders(args: argparse.Namespace) -> list[Contender]:
    params = prepare(args)
    module = (sys.executable, "-m", "benchmarks.workloads.e2e")
    return [
        Contender(label, (*module, name, "--data", params["table"]), group="e2e")
        for label, name in (("arrowline", "arrowline"), ("script (floor)", "script"))
    ]


def summarize(outcomes: list[Outcome], params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    summary, rows = engine_table(outcomes)
    ours, floor = summary.get("arrowline"), summary.get("script (floor)")
    if ours and floor:
        ratio = ours["engine_s"] / floor["engine_s"]
        memory = ours["peak_rss_mb"] / floor["peak_rss_mb"]
        summary["arrowline_vs_floor"] = ratio
        verdict = "✅" if ratio <= 1.2 else "❌"
        rows.append(
            f"\narrowline / hand-written floor: {ratio:.2f}x time (goal ≤ 1.2x {verdict}), "
            f"{memory:.2f}x peak RSS"
        )
    return summary, "\n".join(rows)


def main() -> None:
    child_main({"arrowline": _arrowline, "script": _script})


if __name__ == "__main__":
    main()

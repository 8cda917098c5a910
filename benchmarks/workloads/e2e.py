"""End to end: PostgreSQL -> DuckDB transforms -> validate -> PostgreSQL and Parquet, as one
pipeline (2M rows by default), against the hand-written floor: ADBC into Arrow, the same SQL in
DuckDB, the same checks as a filter, `adbc_ingest` back into PostgreSQL and DuckDB's COPY to
Parquet, in one script with no catalog, no workspace and no retries.

The peers' way is dlt + dbt-duckdb: dlt's `sql_table` (pyarrow backend) loads the source into a
DuckDB file, a dbt-duckdb project builds the same models there (the checks as a filtering model,
the daily summary as an external Parquet model), and a second dlt pipeline loads the checked
rows into PostgreSQL (CSV + COPY). Every contender reports the rows, sum of ids and sum of totals
it loaded into PostgreSQL and the day rows it wrote, which must agree.

`arrowline, replace by truncate` is the same pipeline with `truncate: true` on the PostgreSQL
load: the in-place replace empties the table with TRUNCATE instead of DELETE, closer to what the
floor's `adbc_ingest(mode="replace")` (drop and create) does. `arrowline, materialize: view`
COPies each run's rows into a new table and switches a view to it, dropping the last one: the
floor's drop and create, with readers never seeing the table missing.

Child usage:
    python -m benchmarks.workloads.e2e {arrowline,arrowline_truncate,arrowline_view,script,dlt_dbt}
        --data TABLE
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
from benchmarks.workloads.pg_extract import SCHEMA, URI, dlt_uri, ensure_table

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


def _arrowline(
    source_path: Path, out: Path, truncate: bool = False, view: bool = False
) -> dict[str, Any]:
    from engine.api.pipeline import run

    source = str(source_path)
    label = "arrowline_truncate" if truncate else "arrowline_view" if view else "arrowline"
    target = _target(source, label)
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
                    mode: replace, truncate: {str(truncate).lower()}}}
            materialize: {"view" if view else "table"}
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


def _dlt_dbt(source_path: Path, out: Path) -> dict[str, Any]:
    import subprocess

    import dlt
    import duckdb
    from dlt.sources.sql_database import sql_table

    source = str(source_path)
    schema, table = source.split(".")
    warehouse = out / "warehouse.duckdb"
    pg_uri = dlt_uri()
    target = f"{SCHEMA}_e2e_dlt"
    project = out / "project"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(
        "name: e2e\nversion: '1.0'\nprofile: e2e\nmodel-paths: [models]\n"
        "models:\n  e2e:\n    +materialized: table\n"
    )
    (out / "profiles.yml").write_text(
        f"e2e:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n"
        f"      path: '{warehouse}'\n      threads: 2\n"
    )
    models = project / "models"
    (models / "sources.yml").write_text(
        "version: 2\nsources:\n  - name: raw\n    schema: raw\n    tables: [{name: orders}]\n"
    )
    raw = "{{ source('raw', 'orders') }}"
    (models / "enriched.sql").write_text(ENRICH.replace("from orders", f"from {raw}") + "\n")
    (models / "checked.sql").write_text(f"select * from {{{{ ref('enriched') }}}} where {CHECK}\n")
    (models / "daily.sql").write_text(
        "{{ config(materialized='external', location='"
        + str(out / "daily.parquet")
        + "') }}\n"
        + DAILY.replace("from orders", f"from {raw}")
        + "\n"
    )
    import adbc_driver_postgresql.dbapi as pgdb

    with pgdb.connect(URI) as connection, connection.cursor() as cursor:  # untimed: a clean target
        cursor.execute(f"drop schema if exists {target} cascade")
        connection.commit()

    started = time.perf_counter()
    extract = dlt.pipeline(
        pipeline_name="e2e_extract",
        destination=dlt.destinations.duckdb(credentials=str(warehouse)),
        dataset_name="raw",
        pipelines_dir=str(out / "dlt"),
    )
    resource = sql_table(credentials=pg_uri, table=table, schema=schema, backend="pyarrow")
    extract.run(resource, table_name="orders")
    dbt = Path(sys.executable).with_name("dbt")  # the environment's own, not one on PATH
    subprocess.run(
        [str(dbt), "run", "--profiles-dir", str(out), "--project-dir", str(project), "--quiet"],
        check=True,
        cwd=out,
    )
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        checked = connection.execute("select * from main.checked").to_arrow_table()
    load = dlt.pipeline(
        pipeline_name="e2e_load",
        destination=dlt.destinations.postgres(credentials=pg_uri),
        dataset_name=target,
        pipelines_dir=str(out / "dlt"),
    )
    load.run(
        checked.to_batches(131_072),
        table_name="checked",
        write_disposition="replace",
        loader_file_format="csv",
    )
    elapsed = time.perf_counter() - started
    import pyarrow.parquet as pq

    days = pq.read_metadata(out / "daily.parquet").num_rows
    return {"engine_s": elapsed, "checksum": f"{_loaded(f'{target}.checked')};days={days}"}


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    rows = 100_000 if args.quick else (args.rows or 2_000_000)
    return {"rows": rows, "table": ensure_table(rows)}


def contenders(args: argparse.Namespace) -> list[Contender]:
    params = prepare(args)
    module = (sys.executable, "-m", "benchmarks.workloads.e2e")
    return [
        Contender(label, (*module, name, "--data", params["table"]), group="e2e")
        for label, name in (
            ("arrowline", "arrowline"),
            ("arrowline, replace by truncate", "arrowline_truncate"),
            ("arrowline, materialize: view", "arrowline_view"),
            ("script (floor)", "script"),
            ("dlt + dbt-duckdb", "dlt_dbt"),
        )
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
    variants = (
        (
            "arrowline, replace by truncate",
            "truncate",
            "`truncate: true` (the floor drops and recreates its table too)",
        ),
        (
            "arrowline, materialize: view",
            "view",
            "`materialize: view` (a new table per run, the view switched to it, like the "
            "floor's drop and create)",
        ),
    )
    for label, key, what in variants:
        variant = summary.get(label)
        if variant and floor:
            ratio = variant["engine_s"] / floor["engine_s"]
            summary[f"arrowline_{key}_vs_floor"] = ratio
            rows.append(f"arrowline with {what} / hand-written floor: {ratio:.2f}x time")
    peers = summary.get("dlt + dbt-duckdb")
    if ours and peers:
        speedup = peers["engine_s"] / ours["engine_s"]
        memory = ours["peak_rss_mb"] / peers["peak_rss_mb"]
        summary["arrowline_speedup_vs_dlt_dbt"] = speedup
        summary["arrowline_rss_vs_dlt_dbt"] = memory
        rows.append(
            f"arrowline / dlt + dbt-duckdb: {speedup:.2f}x faster (goal ≥ 2x "
            f"{'✅' if speedup >= 2 else '❌'}), {memory:.2f}x the peak RSS (goal ≤ 0.5x "
            f"{'✅' if memory <= 0.5 else '❌'})"
        )
    return summary, "\n".join(rows)


def main() -> None:
    child_main(
        {
            "arrowline": _arrowline,
            "arrowline_truncate": lambda source, out: _arrowline(source, out, truncate=True),
            "arrowline_view": lambda source, out: _arrowline(source, out, view=True),
            "script": _script,
            "dlt_dbt": _dlt_dbt,
        },
        needs={"dlt_dbt": "dlt dbt"},
    )


if __name__ == "__main__":
    main()

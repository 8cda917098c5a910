"""A 20-task staging -> intermediate -> marts DAG of DuckDB SQL over generated TPC-H-like tables
(6M lineitem rows by default): arrowline against raw DuckDB running the same statements in one
script, and dbt-duckdb on the same models when it is installed.

arrowline runs each statement as a `sql` task (independent tasks in parallel, every output
published to the workspace as Parquet, so a notebook can open any of them); the raw script runs
them in order as `CREATE TABLE ... AS` in one in-memory DuckDB connection, the floor. Every
contender reports a checksum of the six marts (rows and rounded sums).

Child usage: python -m benchmarks.workloads.sql_dag {arrowline,duckdb,dbt} --data DIR
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Contender, Outcome
from benchmarks.workloads._child import child_main, engine_table

DATA = Path(__file__).resolve().parents[1] / ".data"

SOURCES = ("nation", "customer", "orders", "lineitem", "part", "supplier")

# name -> statement; staging reads the raw Parquet files ({data} is replaced by the folder).
MODELS: dict[str, str] = {
    "stg_nation": "select n_nationkey as nation_key, n_name as nation_name, n_region as region "
    "from read_parquet('{data}/nation.parquet')",
    "stg_customer": "select c_custkey as customer_key, c_nationkey as nation_key, "
    "c_segment as segment from read_parquet('{data}/customer.parquet')",
    "stg_orders": "select o_orderkey as order_key, o_custkey as customer_key, "
    "o_orderdate as order_date, o_priority as priority from read_parquet('{data}/orders.parquet')",
    "stg_lineitem": "select l_orderkey as order_key, l_partkey as part_key, "
    "l_suppkey as supplier_key, l_quantity as quantity, l_extendedprice as price, "
    "l_discount as discount, l_returnflag as return_flag, l_commitdate as commit_date, "
    "l_receiptdate as receipt_date from read_parquet('{data}/lineitem.parquet')",
    "stg_part": "select p_partkey as part_key, p_brand as brand, p_type as part_type "
    "from read_parquet('{data}/part.parquet')",
    "stg_supplier": "select s_suppkey as supplier_key, s_nationkey as nation_key "
    "from read_parquet('{data}/supplier.parquet')",
    "int_lines": "select l.*, o.customer_key, o.order_date, "
    "l.price * (1 - l.discount) as revenue from stg_lineitem l join stg_orders o using (order_key)",
    "int_customers": "select c.customer_key, c.segment, n.nation_name, n.region "
    "from stg_customer c join stg_nation n using (nation_key)",
    "int_supplier_nation": "select s.supplier_key, n.nation_name as supplier_nation "
    "from stg_supplier s join stg_nation n using (nation_key)",
    "int_lines_enriched": "select l.order_key, l.order_date, l.revenue, c.segment, "
    "c.nation_name from int_lines l join int_customers c using (customer_key)",
    "int_part_lines": "select p.brand, p.part_type, l.revenue, l.quantity "
    "from int_lines l join stg_part p using (part_key)",
    "int_returns": "select order_date, revenue from int_lines where return_flag = 'R'",
    "int_late": "select supplier_key, revenue, receipt_date - commit_date as days_late "
    "from int_lines where receipt_date > commit_date",
    "int_order_totals": "select order_key, customer_key, sum(revenue) as total, "
    "count(*) as line_count from int_lines group by order_key, customer_key",
    "mart_revenue_by_nation_month": "select nation_name, date_trunc('month', order_date) as "
    "month, round(sum(revenue), 2) as revenue from int_lines_enriched group by all",
    "mart_top_customers": "select t.customer_key, c.nation_name, round(sum(t.total), 2) as "
    "revenue from int_order_totals t join int_customers c using (customer_key) "
    "group by all order by revenue desc, customer_key limit 100",
    "mart_brand_revenue": "select brand, count(*) as lines, round(sum(revenue), 2) as revenue, "
    "sum(quantity) as quantity from int_part_lines group by brand",
    "mart_returns_by_month": "select date_trunc('month', order_date) as month, count(*) as "
    "returned, round(sum(revenue), 2) as revenue from int_returns group by all",
    "mart_late_by_supplier_nation": "select s.supplier_nation, count(*) as late_lines, "
    "round(avg(l.days_late), 6) as avg_days_late from int_late l join int_supplier_nation s "
    "using (supplier_key) group by all",
    "mart_segment_summary": "select segment, count(distinct order_key) as orders, "
    "round(sum(revenue), 2) as revenue from int_lines_enriched group by segment",
}
MARTS = [name for name in MODELS if name.startswith("mart_")]


def generate(lineitem_rows: int, folder: Path) -> Path:
    """TPC-H-shaped tables from arithmetic on row numbers (deterministic, no extension)."""
    import duckdb

    marker = folder / "DONE"
    if marker.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    orders = max(lineitem_rows // 4, 1)
    customers = max(lineitem_rows // 40, 1)
    parts = max(lineitem_rows // 30, 1)
    suppliers = max(lineitem_rows // 600, 1)

    def h(expression: str, modulo: int) -> str:
        """A deterministic pseudo-random integer in [0, modulo) from a row number."""
        return f"(hash({expression}) % {modulo})::bigint"

    segments = "['AUTOMOBILE','BUILDING','FURNITURE','HOUSEHOLD','MACHINERY']"
    statements = {
        "nation": "select range as n_nationkey, 'NATION_' || range as n_name, "
        "range % 5 as n_region from range(25)",
        "customer": f"select range as c_custkey, {h('range', 25)} as c_nationkey, "
        f"{segments}[{h('range * 3', 5)} + 1] as c_segment from range({customers})",
        "orders": f"select range as o_orderkey, {h('range', customers)} as o_custkey, "
        f"date '1992-01-01' + {h('range * 7', 2400)}::int as o_orderdate, "
        f"'P' || {h('range * 11', 5)} as o_priority from range({orders})",
        "lineitem": f"select range // 4 as l_orderkey, {h('range', parts)} as l_partkey, "
        f"{h('range * 13', suppliers)} as l_suppkey, "
        f"({h('range * 17', 50)} + 1)::int as l_quantity, "
        f"({h('range * 19', 100000)} / 100.0)::decimal(12,2) as l_extendedprice, "
        f"({h('range * 23', 11)} / 100.0)::decimal(4,2) as l_discount, "
        f"['A','N','R'][{h('range * 29', 3)} + 1] as l_returnflag, "
        f"date '1992-02-01' + {h('range * 31', 2400)}::int as l_commitdate, "
        f"date '1992-02-01' + {h('range * 37', 2430)}::int as l_receiptdate "
        f"from range({orders * 4})",
        "part": f"select range as p_partkey, 'Brand#' || {h('range', 25)} as p_brand, "
        f"'TYPE_' || {h('range * 3', 150)} as p_type from range({parts})",
        "supplier": f"select range as s_suppkey, {h('range', 25)} as s_nationkey "
        f"from range({suppliers})",
    }
    with duckdb.connect() as connection:
        for name, sql in statements.items():
            connection.execute(f"copy ({sql}) to '{folder / name}.parquet' (format parquet)")
    marker.write_text("ok")
    return folder


def _checksum(query: Any) -> str:
    """Rows and an order-independent hash of every row of each mart."""
    parts = []
    for mart in MARTS:
        rows, total = query(f"select count(*), sum(hash(m::varchar)) % 1000003 from {mart} m")
        parts.append(f"{mart}={rows}:{total}")
    return ";".join(parts)


def _arrowline(
    data: Path, out: Path, ephemeral_staging: bool = False, workspace: str | None = None
) -> dict[str, Any]:
    """Every model a task whose output is kept; with `ephemeral_staging`, the stg_* models
    (renames and casts over the source files, like dbt's staging layer) are inlined into
    their readers instead; `workspace`: the pipeline's `workspace:` (the objectstore
    workload's)."""
    import yaml

    from engine.api.pipeline import run

    tasks: list[dict[str, Any]] = [
        {"id": name, "sql": sql.replace("{data}", str(data))} for name, sql in MODELS.items()
    ]
    if ephemeral_staging:
        for task in tasks:
            if task["id"].startswith("stg_"):
                task["materialize"] = "ephemeral"
    pipeline = out / "pipeline.yaml"
    document: dict[str, Any] = {"pipeline": "sql_dag", "tasks": tasks}
    if workspace is not None:
        document["workspace"] = workspace
    pipeline.write_text(yaml.safe_dump(document, sort_keys=False))
    started = time.perf_counter()
    result = run(pipeline, project_dir=out)
    elapsed = time.perf_counter() - started
    assert result.ok, {k: t.error for k, t in result.tasks.items() if t.error}
    import duckdb

    with duckdb.connect() as connection:
        for mart in MARTS:
            output = result.tasks[mart].output
            assert output is not None
            files = ", ".join(f"'{f}'" for f in output.files)
            connection.execute(f"create view {mart} as select * from read_parquet([{files}])")
        checksum = _checksum(lambda sql: connection.execute(sql).fetchone())
    return {"engine_s": elapsed, "checksum": checksum}


def _duckdb(data: Path, out: Path) -> dict[str, Any]:
    import duckdb

    started = time.perf_counter()
    with duckdb.connect() as connection:
        for name, sql in MODELS.items():
            connection.execute(f"create table {name} as {sql.replace('{data}', str(data))}")
        elapsed = time.perf_counter() - started
        checksum = _checksum(lambda sql: connection.execute(sql).fetchone())
    return {"engine_s": elapsed, "checksum": checksum}


def _dbt(data: Path, out: Path) -> dict[str, Any]:
    """The same models as a dbt-duckdb project, materialized as tables in a DuckDB file."""
    import duckdb

    project = out / "project"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(
        "name: sql_dag\nversion: '1.0'\nprofile: sql_dag\nmodel-paths: [models]\n"
        "models:\n  sql_dag:\n    +materialized: table\n"
    )
    (out / "profiles.yml").write_text(
        f"sql_dag:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n"
        f"      path: '{out / 'dbt.duckdb'}'\n      threads: 2\n"
    )
    names = "|".join(sorted(MODELS, key=len, reverse=True))
    for name, sql in MODELS.items():
        body = re.sub(rf"\b({names})\b", r"{{ ref('\1') }}", sql.replace("{data}", str(data)))
        (project / "models" / f"{name}.sql").write_text(body + "\n")
    started = time.perf_counter()
    dbt = Path(sys.executable).with_name("dbt")  # the environment's own, not one on PATH
    subprocess.run(
        [str(dbt), "run", "--profiles-dir", str(out), "--project-dir", str(project), "--quiet"],
        check=True,
        cwd=out,
    )
    elapsed = time.perf_counter() - started
    with duckdb.connect(str(out / "dbt.duckdb"), read_only=True) as connection:
        checksum = _checksum(lambda sql: connection.execute(sql).fetchone())
    return {"engine_s": elapsed, "checksum": checksum}


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    rows = 60_000 if args.quick else (args.rows or 6_000_000)
    folder = generate(rows, DATA / f"tpch-{rows}")
    return {"rows": rows, "data": str(folder), "tasks": len(MODELS)}


def contenders(args: argparse.Namespace) -> list[Contender]:
    params = prepare(args)
    module = (sys.executable, "-m", "benchmarks.workloads.sql_dag")
    return [
        Contender(label, (*module, name, "--data", params["data"]), group="marts")
        for label, name in (
            ("arrowline", "arrowline"),
            ("arrowline/ephemeral-staging", "arrowline_ephemeral"),
            ("duckdb/script", "duckdb"),
            ("dbt-duckdb", "dbt"),
        )
    ]


def summarize(outcomes: list[Outcome], params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    summary, rows = engine_table(outcomes)
    floor = summary.get("duckdb/script")
    dbt = summary.get("dbt-duckdb")
    for label, key in (("arrowline", ""), ("arrowline/ephemeral-staging", "_ephemeral")):
        ours = summary.get(label)
        if ours and floor:
            ratio = ours["engine_s"] / floor["engine_s"]
            summary[f"arrowline{key}_vs_duckdb"] = ratio
            verdict = "✅" if ratio <= 1.10 else "❌"
            rows.append(
                f"\n{label} / raw DuckDB (engine time): {ratio:.2f}x (goal ≤ 1.10x {verdict})"
            )
        if ours and dbt:
            speedup = dbt["engine_s"] / ours["engine_s"]
            summary[f"arrowline{key}_speedup_vs_dbt"] = speedup
            verdict = "✅" if speedup >= 2 else "❌"
            rows.append(f"\n{label} is {speedup:.1f}x faster than dbt-duckdb (goal ≥ 2x {verdict})")
    return summary, "\n".join(rows)


def main() -> None:
    child_main(
        {
            "arrowline": _arrowline,
            "arrowline_ephemeral": lambda data, out: _arrowline(data, out, ephemeral_staging=True),
            "duckdb": _duckdb,
            "dbt": _dbt,
        },
        needs={"dbt": "dbt"},
    )


if __name__ == "__main__":
    main()

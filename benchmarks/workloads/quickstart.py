"""The quickstart pipeline (examples/quickstart, 1M orders by default) as a user meets it: one
`arrowline run` process on a fresh project, the same run again with nothing changed, and the
hand-written pandas script that does the same work (read the CSV, NDJSON and Parquet files,
join, score, check the same rules and set failing rows aside, aggregate by day and segment,
write the orders partitioned by country and merge the daily figures into a DuckDB table).

Issue 14's goals: the run is faster than the pandas script at ≤ 300 MB peak RSS, and an
unchanged re-run ends in under a second and writes nothing new. Every contender reports a
checksum of what it published (the orders' rows and ids, the daily table's rows and sums).

Child usage: python -m benchmarks.workloads.quickstart {arrowline,rerun,pandas} --data DIR
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.harness import Contender, Outcome
from benchmarks.rusage import process_usage
from benchmarks.workloads._child import child_main, engine_table

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "quickstart"
DATA = ROOT / "benchmarks" / ".data"
START_DATE = "2024-01-01"
LARGE_ORDER_USD = 500.0
STATUSES = ("placed", "shipped", "delivered", "returned")


def _project(data: Path, into: Path) -> Path:
    """The example's pipeline, UDFs and schema in `into`, reading the generated `data`."""
    for name in ("pipeline.yaml", "udfs.py"):
        shutil.copy(EXAMPLE / name, into / name)
    shutil.copytree(EXAMPLE / "schemas", into / "schemas", dirs_exist_ok=True)
    link = into / "data"
    if not link.exists():
        link.symlink_to(data, target_is_directory=True)
    return into / "pipeline.yaml"


def _process(argv: list[str], folder: Path) -> dict[str, float]:
    """One whole process, as a user starts it: its wall time (the figure compared, as
    `engine_s`), CPU time and peak RSS."""
    wall, cpu, rss = process_usage(argv, folder)
    return {"engine_s": wall, "process_cpu_s": cpu, "process_rss_mb": rss}


def _arrowline_cli(folder: Path) -> dict[str, float]:
    """`arrowline run pipeline.yaml` in `folder`: the console script this environment
    installed, as a user types it."""
    command = Path(sys.executable).with_name("arrowline")
    return _process([str(command), "run", "pipeline.yaml", "--no-progress"], folder)


def _checksum(folder: Path) -> str:
    """What a run published: the orders' Parquet files and the DuckDB table (read by DuckDB
    after the timed part, the same way for every contender)."""
    import duckdb

    with duckdb.connect(str(folder / "out" / "warehouse.duckdb"), read_only=True) as database:
        rows, orders, revenue, large = database.execute(
            "select count(*), sum(orders), round(sum(revenue_usd), 2), sum(large_orders) "
            "from analytics.daily_revenue"
        ).fetchone()
        published, ids, rows_hash = database.execute(
            "select count(*), sum(order_id), "
            "sum(hash(order_id, country, coalesce(segment, ''), status, value_band)) % 1000003 "
            f"from read_parquet('{folder / 'out' / 'orders'}/**/*.parquet', "
            "hive_partitioning = true)"
        ).fetchone()
    return f"daily={rows}:{orders}:{revenue}:{large};orders={published}:{ids}:{rows_hash}"


def _written(folder: Path) -> int:
    """Files under the project's state and outputs: an unchanged re-run adds none. (Logs and
    Python's bytecode caches are not counted: the first run, made by `prepare`, may have run
    with PYTHONDONTWRITEBYTECODE set, and the re-run's import of udfs.py then writes one.)"""
    skipped = {"logs", "__pycache__"}
    return sum(1 for p in folder.rglob("*") if p.is_file() and not skipped & set(p.parts))


def _arrowline(data: Path, out: Path) -> dict[str, Any]:
    folder = out / "project"
    folder.mkdir()
    _project(data, folder)
    return _arrowline_cli(folder) | {"checksum": _checksum(folder)}


def _rerun(data: Path, out: Path) -> dict[str, Any]:
    """The run again with nothing changed, on a project whose first run was made (untimed,
    in another process) by `prepare`."""
    folder = data.parent / f"{data.name}-rerun"
    before = _written(folder)
    usage = _arrowline_cli(folder)
    return usage | {"checksum": _checksum(folder), "new_files": _written(folder) - before}


def _pandas(data: Path, out: Path) -> dict[str, Any]:
    """The script below (`_script`) run as its own process, as a user runs theirs."""
    folder = out / "project"
    usage = _process(
        [sys.executable, "-m", "benchmarks.workloads.quickstart", "script", str(data), str(out)],
        ROOT,
    )
    return usage | {"checksum": _checksum(folder)}


def _script(data: Path, out: Path) -> None:
    """What a user would write without arrowline: pandas reading every file into memory, the
    same rules as schemas/orders.yaml as boolean masks, failing rows written aside."""
    import duckdb
    import numpy as np
    import pandas as pd

    orders = pd.concat(
        (
            pd.read_csv(
                path,
                dtype={"order_id": "int64", "customer_id": "Int64", "amount": "float64"},
                parse_dates=["order_date"],
            )
            for path in sorted((data / "orders").glob("orders-*.csv"))
        ),
        ignore_index=True,
    )
    orders["order_date"] = orders["order_date"].dt.date
    customers = pd.read_json(data / "customers.ndjson", lines=True)[
        ["customer_id", "segment", "country"]
    ]
    fx = pd.read_parquet(data / "fx_rates.parquet")
    enriched = orders.merge(customers, on="customer_id", how="left").merge(fx, on="currency")
    enriched = enriched[enriched["order_date"] >= pd.Timestamp(START_DATE).date()]
    enriched["amount_usd"] = _round2(enriched["amount"] * enriched["usd_rate"])
    enriched = enriched.drop(columns="usd_rate")
    amount = enriched["amount_usd"]
    enriched["is_large"] = amount >= LARGE_ORDER_USD
    enriched["value_band"] = np.where(
        amount < 100, "small", np.where(amount < LARGE_ORDER_USD, "medium", "large")
    )
    enriched["unit_price_usd"] = (amount / enriched["quantity"]).round(2)
    bad = (
        enriched["order_id"].duplicated(keep=False)
        | enriched["customer_id"].isna()
        | ~(enriched["amount"] > 0)
        | ~(enriched["amount_usd"] > 0)
        | ~enriched["status"].isin(STATUSES)
        | ~enriched["quantity"].between(1, 100)
    )
    (out / "quarantine").mkdir()
    enriched[bad].to_parquet(out / "quarantine" / "orders.parquet", index=False)
    checked = enriched[~bad]
    kept = checked[checked["status"] != "returned"]
    daily = (
        kept.groupby(["order_date", "segment"], dropna=False)
        .agg(
            orders=("order_id", "size"),
            revenue_usd=("amount_usd", "sum"),
            large_orders=("is_large", "sum"),
        )
        .reset_index()
    )
    folder = out / "project"
    (folder / "out").mkdir(parents=True)
    checked.to_parquet(folder / "out" / "orders", partition_cols=["country"], index=False)
    with duckdb.connect(str(folder / "out" / "warehouse.duckdb")) as database:
        database.execute("create schema if not exists analytics")
        database.execute(
            "create table if not exists analytics.daily_revenue (order_date date, segment "
            "varchar, orders bigint, revenue_usd double, large_orders bigint, "
            "primary key (order_date, segment))"
        )
        database.register("daily", daily)
        database.execute("insert or replace into analytics.daily_revenue select * from daily")


def _round2(values: Any) -> Any:
    """DuckDB's round(x, 2) on doubles: the exact binary value rounded half away from zero
    (pandas' round, like numpy's, scales in doubles and rounds half to even; on 1M generated
    amounts they differ in ~0.1% of the rows). x * 100 is exact in x86's 64-bit-mantissa long
    double, so rounding there is exact; where long double is no wider than double (arm64),
    each value is rounded as a decimal instead (slower, the same result)."""
    import numpy as np

    if np.finfo(np.longdouble).nmant < 63:
        from decimal import ROUND_HALF_UP, Decimal

        cent = Decimal("0.01")
        return values.map(lambda v: float(Decimal(v).quantize(cent, rounding=ROUND_HALF_UP)))
    scaled = values.to_numpy(dtype=np.float64).astype(np.longdouble) * 100
    whole = np.sign(scaled) * np.floor(np.abs(scaled) + np.longdouble(0.5))
    return whole.astype(np.float64) / 100


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    rows = _rows(args)
    data = DATA / f"quickstart-{rows}"
    if not (data / "fx_rates.parquet").exists():
        subprocess.run(
            [sys.executable, str(EXAMPLE / "generate.py"), "--rows", str(rows), "--out", str(data)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    warm = data.parent / f"{data.name}-rerun"
    shutil.rmtree(warm, ignore_errors=True)
    warm.mkdir()
    _project(data, warm)
    subprocess.run(  # the first run, whose outputs the `rerun` contender finds unchanged
        [sys.executable, "-m", "engine", "run", "pipeline.yaml", "--no-progress"],
        cwd=warm,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return {"rows": rows, "data": str(data)}


def _rows(args: argparse.Namespace) -> int:
    return 20_000 if args.quick else (args.rows or 1_000_000)


def contenders(args: argparse.Namespace) -> list[Contender]:
    """Named without side effects: the harness calls `prepare` (data, the re-run's first run)
    once after this."""
    data = DATA / f"quickstart-{_rows(args)}"
    module = (sys.executable, "-m", "benchmarks.workloads.quickstart")
    return [
        Contender(label, (*module, name, "--data", str(data)), group="published")
        for label, name in (
            ("arrowline", "arrowline"),
            ("arrowline/rerun", "rerun"),
            ("pandas/script", "pandas"),
        )
    ]


def summarize(outcomes: list[Outcome], params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """`engine_s` is the measured process's wall time (`_process`): the harness's wall and
    peak RSS add the child that started it, which is small."""
    summary, rows = engine_table(outcomes)
    ours, peer, rerun = (summary.get(n) for n in ("arrowline", "pandas/script", "arrowline/rerun"))
    rows += ["", "| goal (issue 14) | figure | met |", "|---|---|---|"]
    if ours and peer:
        ratio = ours["engine_s"] / peer["engine_s"]
        summary["arrowline_vs_pandas"] = ratio
        rows.append(
            f"| faster than the pandas script | {ratio:.2f}x its time | {_met(ratio < 1)} |"
        )
    if ours:
        rss = ours["peak_rss_mb"]
        rows.append(f"| peak RSS ≤ 300 MB | {rss:.0f} MB | {_met(rss <= 300)} |")
    if rerun:
        new = max(
            s.reported.get("new_files", 0)
            for o in outcomes
            if o.contender == "arrowline/rerun"
            for s in o.samples
        )
        summary["rerun_new_files"] = new
        rows.append(
            f"| unchanged re-run < 1 s, nothing written | {rerun['engine_s']:.2f} s, {new} new "
            f"files | {_met(rerun['engine_s'] < 1 and new == 0)} |"
        )
    return summary, "\n".join(rows)


def _met(ok: bool) -> str:
    return "✅" if ok else "❌"


def main() -> None:
    if sys.argv[1:2] == ["script"]:  # the pandas script's own process
        _script(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    child_main(
        {"arrowline": _arrowline, "rerun": _rerun, "pandas": _pandas}, needs={"pandas": "pandas"}
    )


if __name__ == "__main__":
    main()

"""Peak memory of the quickstart's extract -> load path at N and 2N rows.

The path streams: CSV files are read in blocks into Arrow batches, written to the workspace as
Parquet row groups, then read back batch by batch into the Parquet sink. If memory is bounded by
batch size, doubling the rows leaves peak RSS nearly unchanged. Beside it, the same job done the
usual ways: pandas (read every CSV into one frame, write Parquet) and Polars' streaming engine
(scan_csv -> sink_parquet), a floor for what a bounded pipeline can reach.

Child usage: python -m benchmarks.workloads.stream_memory {arrowline,pandas,polars} --data DIR
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Contender, Outcome
from benchmarks.workloads._child import child_main

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / ".data"
GOAL_RATIO = 1.5  # 2N peak RSS / N peak RSS; 2.0 would mean memory grows with the input


def _checksum(path: Path) -> str:
    import pyarrow.parquet as pq

    rows = sum(
        pq.ParquetFile(p).metadata.num_rows for p in sorted(path.glob("*.parquet")) or [path]
    )
    return str(rows)


def _arrowline(data: Path, out: Path) -> dict[str, Any]:
    from engine.api.pipeline import run

    pipeline = out / "pipeline.yaml"
    pipeline.write_text(
        textwrap.dedent(f"""
        pipeline: stream_memory
        tasks:
          - id: orders
            extract: {{from: files, path: "{data}/orders/orders-*.csv",
                       columns: {{order_id: int64, customer_id: int64,
                                  order_date: date, amount: float64}},
                       batch_size: 131072}}
          - id: publish
            load: {{input: orders, to: parquet, path: "{out}/orders.parquet"}}
    """)
    )
    started = time.perf_counter()
    result = run(pipeline, project_dir=out)
    assert result.ok, {k: t.error for k, t in result.tasks.items()}
    return {
        "engine_s": time.perf_counter() - started,
        "checksum": _checksum(out / "orders.parquet"),
    }


def _pandas(data: Path, out: Path) -> dict[str, Any]:
    import pandas as pd

    started = time.perf_counter()
    frame = pd.concat([pd.read_csv(p) for p in sorted((data / "orders").glob("orders-*.csv"))])
    frame.to_parquet(out / "orders.parquet", index=False)
    return {
        "engine_s": time.perf_counter() - started,
        "checksum": _checksum(out / "orders.parquet"),
    }


def _polars(data: Path, out: Path) -> dict[str, Any]:
    import polars as pl

    started = time.perf_counter()
    pl.scan_csv(str(data / "orders" / "orders-*.csv")).sink_parquet(out / "orders.parquet")
    return {
        "engine_s": time.perf_counter() - started,
        "checksum": _checksum(out / "orders.parquet"),
    }


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    base = 50_000 if args.quick else (args.rows or 1_000_000)
    sizes = {"N": base, "2N": 2 * base}
    for rows in sizes.values():
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "examples" / "quickstart" / "generate.py"),
                "--rows",
                str(rows),
                "--out",
                str(DATA / f"orders-{rows}"),
            ],
            check=True,
            capture_output=True,
        )
    return {"rows": sizes}


def contenders(args: argparse.Namespace) -> list[Contender]:
    params = prepare(args)
    result = []
    for label, rows in params["rows"].items():
        for name in ("arrowline", "polars", "pandas"):
            argv = (
                sys.executable,
                "-m",
                "benchmarks.workloads.stream_memory",
                name,
                "--data",
                str(DATA / f"orders-{rows}"),
            )
            result.append(Contender(f"{name}/{label}", argv, group=label))
    return result


def summarize(outcomes: list[Outcome], params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    by_name = {o.contender: o for o in outcomes}
    rows = [
        "| contender | peak RSS N | peak RSS 2N | 2N / N | time N (median) | time 2N (median) |",
        "|---|---|---|---|---|---|",
    ]
    summary: dict[str, Any] = {}
    for name in ("arrowline", "polars", "pandas"):
        n, n2 = by_name.get(f"{name}/N"), by_name.get(f"{name}/2N")
        if not n or not n2 or n.error or n2.error or not n.samples or not n2.samples:
            error = (n and n.error) or (n2 and n2.error) or "missing"
            rows.append(f"| {name} | {error.splitlines()[0][:80]} | | | | |")
            continue
        ratio = n2.median("peak_rss_mb") / n.median("peak_rss_mb")
        verdict = ""
        if name == "arrowline":
            verdict = " ✅" if ratio <= GOAL_RATIO else " ❌"
        summary[name] = {
            "rss_n_mb": n.median("peak_rss_mb"),
            "rss_2n_mb": n2.median("peak_rss_mb"),
            "ratio": ratio,
            "wall_n_s": n.median("wall_s"),
            "wall_2n_s": n2.median("wall_s"),
        }
        rows.append(
            f"| {name} | {n.median('peak_rss_mb'):.0f} MB | {n2.median('peak_rss_mb'):.0f} MB | "
            f"{ratio:.2f}{verdict} | {n.median('wall_s'):.2f} s | {n2.median('wall_s'):.2f} s |"
        )
    return summary, "\n".join(rows)


def main() -> None:
    child_main(
        {"arrowline": _arrowline, "pandas": _pandas, "polars": _polars}, needs={"pandas": "pandas"}
    )


if __name__ == "__main__":
    main()

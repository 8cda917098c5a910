"""Polars expression UDFs on N rows (10M by default): through arrowline, calling Polars
directly, and pandas `apply` (on a capped subset: row-wise Python is two orders slower).

The UDF computes a discounted net amount and a size bucket. arrowline runs it as a pipeline
(Parquet extract -> udf), so its time includes copying the input into the workspace: the cost a
user pays. Polars direct is the floor (scan -> with_columns -> sink). Every contender writes its
result as Parquet and reports a checksum of it; the harness refuses a contender whose checksum
differs from the others of its group.

Child usage: python -m benchmarks.workloads.udf {arrowline,polars,pandas} --data FILE
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Contender, Outcome
from benchmarks.workloads._child import child_main
from benchmarks.workloads._frames import generate

DATA = Path(__file__).resolve().parents[1] / ".data"
PANDAS_CAP = 100_000
"""Row-wise `apply` runs at a few thousand rows a second; more would take many minutes."""

UDF_SOURCE = """
import polars as pl

def score():
    discount = pl.when(pl.col("category").is_in(["books", "music"])).then(0.1).otherwise(0.0)
    return {
        "net": (pl.col("amount") * pl.col("qty") * (1 - discount)).round(2),
        "bucket": (pl.col("amount") // 100).cast(pl.Int32),
    }
"""


def _checksum(path: Path) -> str:
    import polars as pl

    row = (
        pl.scan_parquet(path)
        .select(pl.len(), pl.col("net").sum().round(0), pl.col("bucket").sum())
        .collect()
        .row(0)
    )
    return f"{int(row[0])}:{round(row[1])}:{int(row[2])}"  # pandas writes the ints as floats


def _arrowline(data: Path, out: Path) -> dict[str, Any]:
    from engine.api.pipeline import run

    (out / "udfs.py").write_text(UDF_SOURCE)
    pipeline = out / "pipeline.yaml"
    pipeline.write_text(
        textwrap.dedent(f"""
        pipeline: udf_bench
        tasks:
          - id: orders
            extract: {{from: files, path: "{data}"}}
          - id: scored
            udf: {{input: orders, function: "udfs.py:score"}}
        """)
    )
    started = time.perf_counter()
    result = run(pipeline, project_dir=out)
    elapsed = time.perf_counter() - started
    assert result.ok, {k: t.error for k, t in result.tasks.items()}
    output = result.tasks["scored"].output
    assert output is not None
    return {
        "engine_s": elapsed,
        "udf_s": result.tasks["scored"].duration_s,
        "checksum": _checksum(output.files[0].parent / "*.parquet"),
    }


def _polars(data: Path, out: Path) -> dict[str, Any]:
    import importlib.util

    import polars as pl

    spec = importlib.util.spec_from_loader("udfs", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(UDF_SOURCE, module.__dict__)
    started = time.perf_counter()
    expressions = [e.alias(n) for n, e in module.score().items()]
    pl.scan_parquet(data).with_columns(expressions).sink_parquet(out / "scored.parquet")
    elapsed = time.perf_counter() - started
    return {"engine_s": elapsed, "checksum": _checksum(out / "scored.parquet")}


def _pandas(data: Path, out: Path) -> dict[str, Any]:
    import pandas as pd

    frame = pd.read_parquet(data).head(PANDAS_CAP)
    started = time.perf_counter()

    def score(row: Any) -> Any:
        discount = 0.1 if row["category"] in ("books", "music") else 0.0
        return pd.Series(
            {
                "net": round(row["amount"] * row["qty"] * (1 - discount), 2),
                "bucket": int(row["amount"] // 100),
            }
        )

    frame[["net", "bucket"]] = frame.apply(score, axis=1)
    frame.to_parquet(out / "scored.parquet", index=False)
    elapsed = time.perf_counter() - started
    return {
        "engine_s": elapsed,
        "rows_per_s": len(frame) / elapsed,
        "checksum": _checksum(out / "scored.parquet"),
    }


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    rows = 100_000 if args.quick else (args.rows or 10_000_000)
    path = generate(rows, DATA / f"udf-{rows}.parquet")
    capped = min(rows, 10_000 if args.quick else PANDAS_CAP)
    subset = generate(capped, DATA / f"udf-{capped}.parquet")
    return {"rows": rows, "path": str(path), "pandas_rows": capped, "pandas_path": str(subset)}


def contenders(args: argparse.Namespace) -> list[Contender]:
    params = prepare(args)
    module = ("-m", "benchmarks.workloads.udf")
    result = [
        Contender(name, (sys.executable, *module, name, "--data", params["path"]), group="full")
        for name in ("arrowline", "polars")
    ]
    result.append(
        Contender(
            "pandas/apply",
            (sys.executable, *module, "pandas", "--data", params["pandas_path"]),
            group="capped",
        )
    )
    if params["pandas_rows"] < params["rows"]:  # polars on the same subset, for the ratio
        result.append(
            Contender(
                "polars/capped",
                (sys.executable, *module, "polars", "--data", params["pandas_path"]),
                group="capped",
            )
        )
    return result


def summarize(outcomes: list[Outcome], params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    rows = [
        "| contender | rows | median wall | median engine | peak RSS |",
        "|---|---|---|---|---|",
    ]
    summary: dict[str, Any] = {}
    for o in outcomes:
        n = params["pandas_rows"] if o.group == "capped" else params["rows"]
        if o.error or not o.samples:
            rows.append(
                f"| {o.contender} | {n:,} | {(o.error or 'missing').splitlines()[0][:70]} | | |"
            )
            continue
        summary[o.contender] = {
            "rows": n,
            "wall_s": o.median("wall_s"),
            "engine_s": o.median("engine_s"),
            "peak_rss_mb": o.median("peak_rss_mb"),
        }
        rows.append(
            f"| {o.contender} | {n:,} | {o.median('wall_s'):.2f} s | "
            f"{o.median('engine_s'):.2f} s | {o.median('peak_rss_mb'):.0f} MB |"
        )
    ours, floor = summary.get("arrowline"), summary.get("polars")
    if ours and floor:
        ratio = ours["engine_s"] / floor["engine_s"]
        summary["arrowline_vs_polars"] = ratio
        rows.append(f"\narrowline / Polars direct (engine time, same rows): {ratio:.2f}x")
    return summary, "\n".join(rows)


def main() -> None:
    child_main(
        {"arrowline": _arrowline, "polars": _polars, "pandas": _pandas}, needs={"pandas": "pandas"}
    )


if __name__ == "__main__":
    main()

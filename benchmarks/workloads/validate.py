"""A Pandera schema (types, nulls, ranges, a set, uniqueness) on N rows (6M by default), about
0.1% of them bad: through arrowline's validate task (bad rows quarantined), pandera's polars
backend called directly, and a hand-written single Polars pass (the floor).

Each contender splits the rows into passed and failed and reports both counts; the harness
refuses one whose counts differ from the others'.

Child usage: python -m benchmarks.workloads.validate {arrowline,pandera,polars} --data FILE
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
from benchmarks.workloads._frames import CATEGORIES, generate

DATA = Path(__file__).resolve().parents[1] / ".data"
BAD_EVERY = 997


def _arrowline(data: Path, out: Path) -> dict[str, Any]:
    from engine.api.pipeline import run

    pipeline = out / "pipeline.yaml"
    pipeline.write_text(
        textwrap.dedent(f"""
        pipeline: validate_bench
        tasks:
          - id: orders
            extract: {{from: files, path: "{data}"}}
          - id: checked
            validate:
              input: orders
              on_fail: quarantine
              max_rejected_fraction: 0.5
              schema:
                columns:
                  id: {{type: int64, unique: true}}
                  amount: {{type: float64, checks: {{in_range: {{min: 0, max: 1000}}}}}}
                  qty: {{type: int32, checks: {{ge: 1, le: 100}}}}
                  category: {{type: string, checks: {{isin: {CATEGORIES}}}}}
                  day: {{type: date}}
        """)
    )
    started = time.perf_counter()
    result = run(pipeline, project_dir=out)
    elapsed = time.perf_counter() - started
    assert result.ok, {k: t.error for k, t in result.tasks.items()}
    checked = result.tasks["checked"]
    return {
        "engine_s": elapsed,
        "validate_s": checked.duration_s,
        "checksum": f"{checked.rows_out}:{checked.rows_rejected}",
    }


def _pandera(data: Path, out: Path) -> dict[str, Any]:
    import pandera.polars as pa
    import polars as pl

    schema = pa.DataFrameSchema(
        {
            "id": pa.Column(pl.Int64, unique=True),
            "amount": pa.Column(pl.Float64, pa.Check.in_range(0, 1000)),
            "qty": pa.Column(pl.Int32, [pa.Check.ge(1), pa.Check.le(100)]),
            "category": pa.Column(pl.Utf8, pa.Check.isin(CATEGORIES)),
            "day": pa.Column(pl.Date),
        }
    )
    started = time.perf_counter()
    frame = pl.read_parquet(data)
    try:
        schema.validate(frame, lazy=True)
        bad = 0
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        indices = cases.get_column("index").drop_nulls().unique()
        bad = indices.len()
    elapsed = time.perf_counter() - started
    return {"engine_s": elapsed, "checksum": f"{frame.height - bad}:{bad}"}


def _polars(data: Path, out: Path) -> dict[str, Any]:
    import polars as pl

    started = time.perf_counter()
    ok = (
        pl.col("id").is_not_null()
        & ~pl.col("id").is_duplicated()
        & pl.col("amount").is_between(0, 1000)
        & pl.col("qty").is_between(1, 100)
        & pl.col("category").is_in(CATEGORIES)
        & pl.col("day").is_not_null()
    ).fill_null(False)
    counts = (
        pl.scan_parquet(data).select(ok.sum().alias("good"), (~ok).sum().alias("bad")).collect()
    )
    elapsed = time.perf_counter() - started
    good, bad = counts.row(0)
    return {"engine_s": elapsed, "checksum": f"{good}:{bad}"}


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    rows = 100_000 if args.quick else (args.rows or 6_000_000)
    path = generate(rows, DATA / f"validate-{rows}.parquet", bad_every=BAD_EVERY)
    return {"rows": rows, "path": str(path)}


def contenders(args: argparse.Namespace) -> list[Contender]:
    params = prepare(args)
    return [
        Contender(
            name,
            (sys.executable, "-m", "benchmarks.workloads.validate", name, "--data", params["path"]),
            group="all",
        )
        for name in ("arrowline", "pandera", "polars")
    ]


def summarize(outcomes: list[Outcome], params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    rows = [
        "| contender | passed:failed | median wall | median engine | peak RSS |",
        "|---|---|---|---|---|",
    ]
    summary: dict[str, Any] = {}
    for o in outcomes:
        if o.error or not o.samples:
            first = (o.error or "missing").splitlines()[0][:70]
            rows.append(f"| {o.contender} | {first} | | | |")
            continue
        summary[o.contender] = {
            "wall_s": o.median("wall_s"),
            "engine_s": o.median("engine_s"),
            "peak_rss_mb": o.median("peak_rss_mb"),
        }
        rows.append(
            f"| {o.contender} | {o.samples[-1].reported['checksum']} | {o.median('wall_s'):.2f} s "
            f"| {o.median('engine_s'):.2f} s | {o.median('peak_rss_mb'):.0f} MB |"
        )
    for peer in ("pandera", "polars"):
        if "arrowline" in summary and peer in summary:
            ratio = summary["arrowline"]["engine_s"] / summary[peer]["engine_s"]
            summary[f"arrowline_vs_{peer}"] = ratio
            rows.append(f"\narrowline / {peer} (engine time): {ratio:.2f}x")
    return summary, "\n".join(rows)


def main() -> None:
    child_main(
        {"arrowline": _arrowline, "pandera": _pandera, "polars": _polars},
        needs={"pandera": "pandera"},
    )


if __name__ == "__main__":
    main()

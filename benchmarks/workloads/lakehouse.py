"""Lakehouse tables: append N rows (3M by default) to a new table, then merge N/10 changed rows
into it (half updates of existing keys, half inserts), arrowline against the table library's
own calls on the same files.

- Delta: arrowline's pipelines (a Parquet extract, then a `to: delta` load: append, then
  merge on `id`) against delta-rs alone (`write_deltalake` of the streamed file, then
  `DeltaTable.merge(...).when_matched_update_all().when_not_matched_insert_all()`).
- Iceberg: the same pipelines with `to: iceberg` against pyiceberg alone (`Table.append` of the
  file, then `Table.upsert(changes, join_cols=["id"])`), both on a SQLite SQL catalog and a
  local warehouse.

arrowline runs each phase as a whole pipeline from a file, so its times include copying the
input into the workspace and the run's bookkeeping: the cost a user pays. Both contenders
report the table's row count and column sums after the merge; the harness refuses a contender
whose checksum differs from the others of its group.

Child usage: python -m benchmarks.workloads.lakehouse CONTENDER --data DIR
(arrowline-delta, delta-rs, arrowline-iceberg, pyiceberg)
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


def _changes(rows: int, base: Path, path: Path) -> Path:
    """rows/10 changes: the even ids of the first rows/10 (updated amounts and categories),
    and as many new ids past the end."""
    import polars as pl

    if path.exists():
        return path
    count = rows // 10
    updates = (
        pl.scan_parquet(base)
        .filter((pl.col("id") % 2 == 0) & (pl.col("id") < count))
        .with_columns(amount=pl.col("amount") + 1.0, category=pl.lit("changed"))
        .collect()
    )
    inserts = generate(count - updates.height, path.with_name(f"inserts-{rows}.parquet"))
    new = pl.read_parquet(inserts).with_columns(id=pl.col("id") + rows)
    temporary = path.with_suffix(".tmp")
    pl.concat([updates, new.select(updates.columns)]).write_parquet(temporary)
    temporary.replace(path)
    return path


def _checksum(table: Any) -> str:
    import pyarrow.compute as pc

    data = table.to_pyarrow_dataset().to_table(columns=["id", "amount", "qty", "category"])
    changed = pc.sum(pc.equal(data.column("category"), "changed")).as_py()
    amount = pc.sum(data.column("amount")).as_py()
    return f"{data.num_rows}:{pc.sum(data.column('id')).as_py()}:{round(amount)}:{changed}"


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


PHASES = {"append": ("base.parquet", "append"), "merge": ("changes.parquet", "merge")}
IMPORTS = {
    # what each side imports before its clock starts, the same modules for both
    "delta": ("deltalake", "pyarrow.parquet"),
    "iceberg": ("pyiceberg.catalog.sql", "pyiceberg.io.pyarrow", "pyarrow.parquet"),
}


def phase(contender: str, name: str, data: Path, out: Path) -> None:
    """One phase of one contender, in a process of its own (`python -m ... --phase`): prints
    its seconds and its process's peak RSS, so each phase's memory is its own."""
    import importlib
    import json

    fmt = "iceberg" if "iceberg" in contender else "delta"
    for module in IMPORTS[fmt]:
        importlib.import_module(module)
    if contender.startswith("arrowline"):
        from engine.api.pipeline import run  # the engine's import, before the clock as well

        file, mode = PHASES[name]
        target = (
            f'to: delta, path: "{out / "table"}"'
            if fmt == "delta"
            else ("to: iceberg, table: bench.orders")
        )
        keys = ", keys: [id]" if mode == "merge" else ""
        pipeline = out / f"{name}.yaml"
        pipeline.write_text(
            textwrap.dedent(f"""
            pipeline: lakehouse_{name}
            tasks:
              - id: rows
                extract: {{from: files, path: "{data / file}"}}
              - id: lake
                load: {{input: rows, {target}, mode: {mode}{keys}}}
            """)
        )
        started = time.perf_counter()
        result = run(pipeline, project_dir=out)
        seconds = time.perf_counter() - started
        assert result.ok, {k: t.error for k, t in result.tasks.items()}
    else:
        started = time.perf_counter()
        (_delta_rs_phase if fmt == "delta" else _pyiceberg_phase)(name, data, out)
        seconds = time.perf_counter() - started
    print("PHASE " + json.dumps({"seconds": seconds, "peak_mb": _peak_mb()}))


IN_PROCESS = "ARROWLINE_BENCH_IN_PROCESS"


def _phases(contender: str, data: Path, out: Path) -> dict[str, float]:
    """Append, then merge, each in a fresh process; their seconds and peak RSS."""
    import contextlib
    import io
    import json
    import os
    import subprocess

    figures: dict[str, float] = {}
    if os.environ.get(IN_PROCESS):
        for name in PHASES:
            said = io.StringIO()
            with contextlib.redirect_stdout(said):
                phase(contender, name, data, out)
            figures.update(json.loads(said.getvalue().split("PHASE ", 1)[1]))
            figures[f"{name}_s"] = figures.pop("seconds")
            figures[f"{name}_peak_mb"] = figures.pop("peak_mb")
        figures["engine_s"] = figures["append_s"] + figures["merge_s"]
        return figures
    for name in PHASES:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.workloads.lakehouse",
                "--phase",
                name,
                contender,
                "--data",
                str(data),
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("PHASE ")]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"{contender} {name} failed: {done.stderr.strip()[-2000:]}")
        said = json.loads(lines[-1].removeprefix("PHASE "))
        figures[f"{name}_s"], figures[f"{name}_peak_mb"] = said["seconds"], said["peak_mb"]
    figures["engine_s"] = figures["append_s"] + figures["merge_s"]
    return figures


def _arrowline_delta(data: Path, out: Path) -> dict[str, Any]:
    from deltalake import DeltaTable

    figures = _phases("arrowline-delta", data, out)
    return {**figures, "checksum": _checksum(DeltaTable(str(out / "table")))}


def _delta_rs(data: Path, out: Path) -> dict[str, Any]:
    from deltalake import DeltaTable

    figures = _phases("delta-rs", data, out)
    return {**figures, "checksum": _checksum(DeltaTable(str(out / "table")))}


def _delta_rs_phase(name: str, data: Path, out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from deltalake import DeltaTable, write_deltalake

    if name == "append":
        with pq.ParquetFile(data / "base.parquet") as base:
            batches = base.iter_batches(batch_size=65_536)
            reader = pa.RecordBatchReader.from_batches(base.schema_arrow, batches)
            write_deltalake(str(out / "table"), reader)
        return
    changes = pq.read_table(data / "changes.parquet")
    (
        DeltaTable(str(out / "table"))
        .merge(changes, predicate="t.id = s.id", source_alias="s", target_alias="t")
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )


def _iceberg_catalog(out: Path) -> Any:
    from pyiceberg.catalog.sql import SqlCatalog

    folder = out / ".arrowline" / "iceberg"
    folder.mkdir(parents=True, exist_ok=True)
    return SqlCatalog(
        "arrowline",
        uri=f"sqlite:///{folder / 'catalog.db'}",
        warehouse=(folder / "warehouse").as_uri(),
    )


def _arrowline_iceberg(data: Path, out: Path) -> dict[str, Any]:
    figures = _phases("arrowline-iceberg", data, out)
    table = _iceberg_catalog(out).load_table("bench.orders")
    return {**figures, "checksum": _checksum_iceberg(table)}


def _pyiceberg(data: Path, out: Path) -> dict[str, Any]:
    figures = _phases("pyiceberg", data, out)
    table = _iceberg_catalog(out).load_table("bench.orders")
    return {**figures, "checksum": _checksum_iceberg(table)}


def _pyiceberg_phase(name: str, data: Path, out: Path) -> None:
    import pyarrow.parquet as pq

    catalog = _iceberg_catalog(out)  # the catalog's opening is part of the work, as ours is
    if name == "append":
        base = pq.read_table(data / "base.parquet")
        catalog.create_namespace("bench")
        catalog.create_table("bench.orders", schema=base.schema).append(base)
        return
    changes = pq.read_table(data / "changes.parquet")
    catalog.load_table("bench.orders").upsert(changes, join_cols=["id"])


def _checksum_iceberg(table: Any) -> str:
    import pyarrow.compute as pc

    data = table.scan(selected_fields=("id", "amount", "qty", "category")).to_arrow()
    changed = pc.sum(pc.equal(data.column("category"), "changed")).as_py()
    amount = pc.sum(data.column("amount")).as_py()
    return f"{data.num_rows}:{pc.sum(data.column('id')).as_py()}:{round(amount)}:{changed}"


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    rows = 100_000 if args.quick else (args.rows or 3_000_000)
    folder = DATA / f"lakehouse-{rows}"
    folder.mkdir(parents=True, exist_ok=True)
    base = generate(rows, folder / "base.parquet")
    _changes(rows, base, folder / "changes.parquet")
    return {"rows": rows, "changes": rows // 10, "data": str(folder)}


def contenders(args: argparse.Namespace) -> list[Contender]:
    params = prepare(args)
    module = ("-m", "benchmarks.workloads.lakehouse")
    groups = {
        "arrowline-delta": "delta",
        "delta-rs": "delta",
        "arrowline-iceberg": "iceberg",
        "pyiceberg": "iceberg",
    }
    # --quick proves the workload works: its phases run in the contender's process, not one
    # each (the figures are not kept, and four fewer interpreters start per contender)
    env = ((IN_PROCESS, "1"),) if args.quick else ()
    return [
        Contender(
            name, (sys.executable, *module, name, "--data", params["data"]), group=group, env=env
        )
        for name, group in groups.items()
    ]


def summarize(outcomes: list[Outcome], params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    rows = [
        "| contender | append | merge | append peak RSS | merge peak RSS |",
        "|---|---|---|---|---|",
    ]
    summary: dict[str, Any] = {}
    for o in outcomes:
        if o.error or not o.samples:
            rows.append(f"| {o.contender} | {(o.error or 'missing').splitlines()[-1][:80]} | | | |")
            continue
        figures = {
            k: o.median(k) for k in ("append_s", "merge_s", "append_peak_mb", "merge_peak_mb")
        }
        summary[o.contender] = figures
        rows.append(
            f"| {o.contender} | {figures['append_s']:.2f} s | {figures['merge_s']:.2f} s | "
            f"{figures['append_peak_mb']:.0f} MB | {figures['merge_peak_mb']:.0f} MB |"
        )
    ours, floor = summary.get("arrowline-delta"), summary.get("delta-rs")
    if ours and floor:
        append, merge = ours["append_s"] / floor["append_s"], ours["merge_s"] / floor["merge_s"]
        summary.update(delta_append_vs_delta_rs=append, delta_merge_vs_delta_rs=merge)
        rows.append(
            f"\nDelta, arrowline / delta-rs alone: append {append:.2f}x (goal 1.1x), "
            f"merge {merge:.2f}x (goal 1.2x)"
        )
    ours, peer = summary.get("arrowline-iceberg"), summary.get("pyiceberg")
    if ours and peer:
        append, merge = ours["append_s"] / peer["append_s"], peer["merge_s"] / ours["merge_s"]
        rss = ours["merge_peak_mb"] / peer["merge_peak_mb"]
        summary.update(
            iceberg_append_vs_pyiceberg=append,
            iceberg_merge_speedup_vs_upsert=merge,
            iceberg_merge_peak_rss_vs_upsert=rss,
        )
        rows.append(
            f"Iceberg, arrowline / pyiceberg: append {append:.2f}x (goal 1.1x); merge "
            f"{merge:.1f}x faster than upsert (goal 5x) at {rss:.2f}x its peak RSS (goal 0.5x)"
        )
    rows.insert(
        0,
        f"{params['rows']:,} rows appended, then {params['changes']:,} merged; each phase in "
        "a process of its own (seconds from its first statement, imports excluded on both "
        "sides; peak RSS of that process, imports included)\n",
    )
    return summary, "\n".join(rows)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--phase":
        import argparse as _argparse

        parser = _argparse.ArgumentParser()
        parser.add_argument("--phase", required=True)
        parser.add_argument("contender")
        parser.add_argument("--data", type=Path, required=True)
        parser.add_argument("--out", type=Path, required=True)
        args = parser.parse_args()
        phase(args.contender, args.phase, args.data, args.out)
        return
    child_main(
        {
            "arrowline-delta": _arrowline_delta,
            "delta-rs": _delta_rs,
            "arrowline-iceberg": _arrowline_iceberg,
            "pyiceberg": _pyiceberg,
        },
        needs={
            "delta-rs": "deltalake",
            "arrowline-delta": "deltalake",
            "pyiceberg": "pyiceberg",
            "arrowline-iceberg": "pyiceberg",
        },
    )


if __name__ == "__main__":
    main()

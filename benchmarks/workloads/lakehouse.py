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
from benchmarks.workloads._child import child_main, engine_table
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


def _arrowline(data: Path, out: Path, target: str) -> dict[str, float]:
    """Both phases as pipelines from files; the times of each and the peak RSS after each."""
    from engine.api.pipeline import run

    figures = {}
    for phase, file, mode in (
        ("append", "base.parquet", "append"),
        ("merge", "changes.parquet", "merge"),
    ):
        pipeline = out / f"{phase}.yaml"
        keys = ", keys: [id]" if mode == "merge" else ""
        pipeline.write_text(
            textwrap.dedent(f"""
            pipeline: lakehouse_{phase}
            tasks:
              - id: rows
                extract: {{from: files, path: "{data / file}"}}
              - id: lake
                load: {{input: rows, {target}, mode: {mode}{keys}}}
            """)
        )
        started = time.perf_counter()
        result = run(pipeline, project_dir=out)
        figures[f"{phase}_s"] = time.perf_counter() - started
        figures[f"{phase}_peak_mb"] = _peak_mb()
        assert result.ok, {k: t.error for k, t in result.tasks.items()}
    figures["engine_s"] = figures["append_s"] + figures["merge_s"]
    return figures


def _arrowline_delta(data: Path, out: Path) -> dict[str, Any]:
    from deltalake import DeltaTable

    figures = _arrowline(data, out, f'to: delta, path: "{out / "table"}"')
    return {**figures, "checksum": _checksum(DeltaTable(str(out / "table")))}


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
    figures = _arrowline(data, out, "to: iceberg, table: bench.orders")
    table = _iceberg_catalog(out).load_table("bench.orders")
    return {**figures, "checksum": _checksum_iceberg(table)}


def _pyiceberg(data: Path, out: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    catalog = _iceberg_catalog(out)
    started = time.perf_counter()
    base = pq.read_table(data / "base.parquet")
    catalog.create_namespace("bench")
    table = catalog.create_table("bench.orders", schema=base.schema)
    table.append(base)
    del base
    appended = time.perf_counter()
    append_peak = _peak_mb()
    changes = pq.read_table(data / "changes.parquet")
    table.upsert(changes, join_cols=["id"])
    merged = time.perf_counter()
    return {
        "engine_s": merged - started,
        "append_s": appended - started,
        "merge_s": merged - appended,
        "append_peak_mb": append_peak,
        "merge_peak_mb": _peak_mb(),
        "checksum": _checksum_iceberg(catalog.load_table("bench.orders")),
    }


def _checksum_iceberg(table: Any) -> str:
    import pyarrow.compute as pc

    data = table.scan(selected_fields=("id", "amount", "qty", "category")).to_arrow()
    changed = pc.sum(pc.equal(data.column("category"), "changed")).as_py()
    amount = pc.sum(data.column("amount")).as_py()
    return f"{data.num_rows}:{pc.sum(data.column('id')).as_py()}:{round(amount)}:{changed}"


def _delta_rs(data: Path, out: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq
    from deltalake import DeltaTable, write_deltalake

    started = time.perf_counter()
    with pq.ParquetFile(data / "base.parquet") as base:
        reader = base.iter_batches(batch_size=65_536)
        import pyarrow as pa

        write_deltalake(
            str(out / "table"), pa.RecordBatchReader.from_batches(base.schema_arrow, reader)
        )
    appended = time.perf_counter()
    changes = pq.read_table(data / "changes.parquet")
    (
        DeltaTable(str(out / "table"))
        .merge(changes, predicate="t.id = s.id", source_alias="s", target_alias="t")
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )
    merged = time.perf_counter()
    return {
        "engine_s": merged - started,
        "append_s": appended - started,
        "merge_s": merged - appended,
        "checksum": _checksum(DeltaTable(str(out / "table"))),
    }


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
    return [
        Contender(name, (sys.executable, *module, name, "--data", params["data"]), group=group)
        for name, group in groups.items()
    ]


def summarize(outcomes: list[Outcome], params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    summary, rows = engine_table(outcomes)
    rows[0] = rows[0].replace("| peak RSS |", "| append | merge | peak RSS |")
    rows[1] += "---|---|"
    by_name = {o.contender: o for o in outcomes if not o.error and o.samples}
    for index, line in enumerate(rows[2:], start=2):
        name = line.split("|")[1].strip()
        outcome = by_name.get(name)
        if outcome is None:
            continue
        append, merge = outcome.median("append_s"), outcome.median("merge_s")
        summary[name].update(append_s=append, merge_s=merge)
        head, rss = line.rsplit("|", 2)[0], line.rsplit("|", 2)[1]
        rows[index] = f"{head}| {append:.2f} s | {merge:.2f} s |{rss}|"
    ours, floor = summary.get("arrowline-delta"), summary.get("delta-rs")
    if ours and floor:
        for phase in ("append_s", "merge_s", "engine_s"):
            summary[f"delta_{phase[:-2]}_vs_delta_rs"] = ours[phase] / floor[phase]
        append, merge = ours["append_s"] / floor["append_s"], ours["merge_s"] / floor["merge_s"]
        rows.append(
            f"\nDelta, arrowline / delta-rs alone: append {append:.2f}x (goal 1.1x), "
            f"merge {merge:.2f}x (goal 1.2x)"
        )
    ours, peer = summary.get("arrowline-iceberg"), summary.get("pyiceberg")
    if ours and peer:
        append, merge = ours["append_s"] / peer["append_s"], peer["merge_s"] / ours["merge_s"]
        rss = ours["peak_rss_mb"] / peer["peak_rss_mb"]
        summary.update(
            iceberg_append_vs_pyiceberg=append,
            iceberg_merge_speedup_vs_upsert=merge,
            iceberg_peak_rss_vs_pyiceberg=rss,
        )
        rows.append(
            f"Iceberg, arrowline / pyiceberg: append {append:.2f}x (goal 1.1x); merge "
            f"{merge:.1f}x faster than upsert (goal 5x) at {rss:.2f}x its peak RSS (goal 0.5x)"
        )
    rows.insert(0, f"{params['rows']:,} rows appended, then {params['changes']:,} merged\n")
    return summary, "\n".join(rows)


def main() -> None:
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

"""PostgreSQL table -> one Parquet file, each tool run as a whole process the way a user meets it.

Table: pg_extract's (id bigint, qty integer, amount numeric(12,2), created_at timestamp, name
text, flag bool), 5,000,000 rows by default (`--rows`). Every contender writes ONE Parquet file
with zstd (Arrow's default level, 1), arrowline's sink default; contenders:

    arrowline/run           `arrowline run p.yaml`: extract from postgres -> load to a parquet
                            file; the extract is published to the workspace, then loaded
    arrowline/run-nocopy    the same with `materialize: ephemeral` on the extract (no workspace
                            copy): reported as not supported while validation refuses the key
    connectorx/parquet      connectorx.read_sql(return_type="arrow") + pq.write_table
    adbc/parquet            bare adbc_driver_postgresql fetch_record_batch() + pq.ParquetWriter,
                            batch by batch (NUMERIC arrives as text, as the driver gives it)

DuckDB's postgres_scanner is not a contender: its extension is downloaded from
extensions.duckdb.org on first use, which this machine cannot reach, and the PyPI packages of
DuckDB's extensions are built for DuckDB 1.5, not the 2.0 this project requires.

Measured is the tool's process, not this wrapper: the wrapper starts it, takes its wall time and
its peak RSS from `wait4` (`process_s`, `process_rss_mb`), then reads the file back batch by batch
for rows and sum(id), which must agree across contenders. The harness's own `wall_s` and
`peak_rss_mb` cover the wrapper too (and are the larger of the two memories).

Child usage:
    python -m benchmarks.workloads.pg_parquet measure CONTENDER --table T --rows N
    python -m benchmarks.workloads.pg_parquet script {connectorx,adbc} --table T --out FILE
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from benchmarks.harness import Contender, Outcome
from benchmarks.rusage import timed_process

MODULE = "benchmarks.workloads.pg_parquet"
COMPRESSION = "zstd"
NAMES = ("arrowline/run", "arrowline/run-nocopy", "connectorx/parquet", "adbc/parquet")
SCRIPTS = {"connectorx/parquet": "connectorx", "adbc/parquet": "adbc"}
NEEDS = {"connectorx/parquet": "connectorx"}
TARGETS = {
    "time ≤ 0.8x connectorx": ("connectorx/parquet", "process_s", 0.8),
    "peak RSS ≤ 0.5x connectorx": ("connectorx/parquet", "process_rss_mb", 0.5),
    "time ≤ 1.05x bare ADBC + ParquetWriter": ("adbc/parquet", "process_s", 1.05),
}
"""The data plane v2 issue's targets for arrowline/run: (peer, measurement, at most ratio)."""


def _uri() -> str:
    from benchmarks.workloads.pg_extract import URI

    return URI


def pipeline_yaml(table: str, out: Path, *, nocopy: bool) -> str:
    """The pipeline a user writes: extract the table, load it into one Parquet file."""
    ephemeral = "\n            materialize: ephemeral" if nocopy else ""
    return textwrap.dedent(f"""\
        pipeline: bench_pg_parquet
        connections:
          bench: {{kind: postgres, uri: "{_uri()}"}}
        tasks:
          - id: orders
            extract: {{from: postgres, connection: bench, table: {table}}}{ephemeral}
          - id: to_parquet
            load: {{input: orders, to: parquet, path: "{out}", compression: {COMPRESSION}}}
        """)


def _arrowline_cli() -> str:
    return str(Path(sys.executable).with_name("arrowline"))  # the environment's own


def nocopy_refusal(table: str) -> str:
    """Empty when this tree accepts `materialize: ephemeral`; else why `arrowline validate`
    refuses it (its first error line)."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "p.yaml"
        path.write_text(pipeline_yaml(table, Path(directory) / "out.parquet", nocopy=True))
        done = subprocess.run(
            [_arrowline_cli(), "validate", str(path)], capture_output=True, text=True, check=False
        )
    if done.returncode == 0:
        return ""
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    reason = next((line for line in lines if "error" in line), lines[0] if lines else "")
    return "`materialize: ephemeral` refused by arrowline validate:" + reason.split("error", 1)[-1]


def _read_back(path: Path) -> tuple[int, int, str]:
    """Rows and sum(id) of the written file, one row group at a time, and its codec."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rows, id_sum = 0, 0
    file = pq.ParquetFile(path)
    for batch in file.iter_batches(columns=["id"]):
        rows += batch.num_rows
        id_sum += pc.sum(batch.column("id")).as_py() or 0
    codec = file.metadata.row_group(0).column(0).compression if file.metadata.num_row_groups else ""
    return rows, id_sum, f"{codec}, {file.metadata.num_row_groups} row groups"


def measure(name: str, table: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        out = scratch / "orders.parquet"
        if name in SCRIPTS:
            argv = [sys.executable, "-m", MODULE, "script", SCRIPTS[name]]
            argv += ["--table", table, "--out", str(out)]
        else:
            pipeline = scratch / "p.yaml"
            pipeline.write_text(pipeline_yaml(table, out, nocopy=name.endswith("nocopy")))
            argv = [_arrowline_cli(), "run", str(pipeline), "--project-dir", str(scratch)]
            argv += ["--no-progress", "--log-level", "warning"]
        elapsed, rss = timed_process(argv, scratch)
        rows, id_sum, layout = _read_back(out)
        size = out.stat().st_size
    return {
        "checksum": f"{rows}:{id_sum}",
        "rows": rows,
        "process_s": elapsed,
        "process_rss_mb": rss,
        "rows_per_s": rows / elapsed,
        "file_mb": size / 1e6,
        "layout": layout,
    }


def _connectorx(table: str, out: Path) -> None:
    import connectorx as cx
    import pyarrow.parquet as pq

    arrow = cx.read_sql(_uri(), f"select * from {table}", return_type="arrow")
    pq.write_table(arrow, out, compression=COMPRESSION)


def _adbc(table: str, out: Path) -> None:
    import adbc_driver_postgresql.dbapi as pgdb
    import pyarrow.parquet as pq

    with pgdb.connect(_uri()) as connection, connection.cursor() as cursor:
        cursor.execute(f"select * from {table}")
        reader = cursor.fetch_record_batch()
        with pq.ParquetWriter(out, reader.schema, compression=COMPRESSION) as writer:
            for batch in reader:
                writer.write_batch(batch)


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.workloads.pg_extract import ensure_table

    rows = 200_000 if args.quick else (args.rows or 5_000_000)
    return {"rows": rows, "table": ensure_table(rows), "compression": COMPRESSION}


def contenders(args: argparse.Namespace) -> list[Contender]:
    params = prepare(args)
    refusal = nocopy_refusal(params["table"])
    module = (sys.executable, "-m", MODULE, "measure")
    return [
        Contender(
            name,
            (*module, name, "--table", params["table"]),
            group="rows",
            unsupported=refusal if name == "arrowline/run-nocopy" else "",
        )
        for name in NAMES
    ]


def summarize(outcomes: list[Outcome], params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    done = {o.contender: o for o in outcomes if o.samples and not o.error}
    lines = [
        f"{params['rows']:,} rows to one Parquet file ({COMPRESSION}). Time and peak RSS of the "
        "tool's whole process (interpreter start-up included); medians, min–max.",
        "",
        "| contender | process time | rows/s | peak RSS | file | layout |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        if o.error or not o.samples:
            reason = (o.error or "no samples").splitlines()[-1][:120]
            lines.append(f"| {o.contender} | {reason} | | | | |")
            continue
        low, high = o.spread("process_s")
        rss_low, rss_high = o.spread("process_rss_mb")
        lines.append(
            f"| {o.contender} | {o.median('process_s'):.2f} s ({low:.2f}–{high:.2f}) | "
            f"{o.median('rows_per_s'):,.0f} | {o.median('process_rss_mb'):.0f} MB "
            f"({rss_low:.0f}–{rss_high:.0f}) | {o.median('file_mb'):.0f} MB | "
            f"{o.samples[-1].reported.get('layout')} |"
        )
    summary: dict[str, Any] = {
        name: {k: o.median(k) for k in ("process_s", "process_rss_mb", "rows_per_s", "file_mb")}
        for name, o in done.items()
    }
    goals: dict[str, Any] = {}
    lines += ["", "| target (arrowline/run) | met | figure |", "|---|---|---|"]
    for label, (peer, key, limit) in TARGETS.items():
        if "arrowline/run" not in done or peer not in done:
            lines.append(f"| {label} | n/a | a contender is missing |")
            continue
        ratio = done["arrowline/run"].median(key) / done[peer].median(key)
        met = ratio <= limit
        goals[label] = {"ratio": ratio, "met": met}
        lines.append(f"| {label} | {'✅' if met else '❌'} | {ratio:.2f}x |")
    summary["goals"] = goals
    return summary, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("measure", "script"))
    parser.add_argument("contender")
    parser.add_argument("--table", required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.mode == "script":
        scripts = {"connectorx": _connectorx, "adbc": _adbc}
        scripts[args.contender](args.table, args.out)
        return
    import importlib.util

    module = NEEDS.get(args.contender)
    if module and importlib.util.find_spec(module) is None:
        sys.exit(f"{module} is not installed: pip install 'arrowline[bench]'")
    print("RESULT " + json.dumps(measure(args.contender, args.table)))


if __name__ == "__main__":
    main()

"""Hand-off formats: how fast one task's output reaches the next, per intermediate file format.

Two data sets: TPC-H-shaped `lineitem` (sql_dag's generator, 6,000,000 rows by default, `--rows`)
and `orders`, pg_extract's table generated locally (id bigint, qty int, amount decimal(12,2),
created_at timestamp, name text, flag bool; 5/6 of `--rows`, 5,000,000 by default). Formats:

    parquet-snappy   parquet-zstd (level 1)   parquet-none   ipc-none   ipc-lz4

Parquet is written by arrowline's own intermediate writer (`engine.core.parquet`, row groups of
262,144 rows); Arrow IPC by `pyarrow.ipc.new_file` with `IpcWriteOptions(compression=...)`, one
record batch per incoming batch. For every data set and format, each in a fresh process:

    write     the data set as an Arrow stream of 131,072-row batches into the format: the time
              spent in the writer (write + close; decoding the source is not counted), file size
    duckdb    DuckDB aggregating it: `read_parquet` for Parquet; for IPC the file memory-mapped
              (`pa.ipc.open_file(pa.memory_map(path))`) and registered as a table (DuckDB's own
              arrow extension is downloaded on first use, which this machine cannot)
    polars    Polars `scan_parquet` / `scan_ipc` and a group-by (Polars 2 has no `memory_map`
              argument: it was a no-op since 1.40 and was removed, pola-rs/polars#27994)
    stream    a full Arrow stream read, what a load does: every batch, every column's buffers
              touched once (copied), as a sink sending them on would

Reads use files written once in `prepare` (untimed, warm page cache). Every contender reports
rows, sum of the key and the decimal sum, which must agree across formats and consumers.

Child usage: python -m benchmarks.workloads.handoff DATASET/FORMAT/STEP --data DIR
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.harness import Contender, Outcome
from benchmarks.workloads._child import child_main

DATA = Path(__file__).resolve().parents[1] / ".data"
BATCH_ROWS = 131_072
FORMATS = ("parquet-snappy", "parquet-zstd", "parquet-none", "ipc-none", "ipc-lz4")
STEPS = ("write", "duckdb", "polars", "stream")
DATASETS = {
    # name: (key column, decimal column, group-by column, a further aggregate for the engines)
    "lineitem": ("l_orderkey", "l_extendedprice", "l_returnflag", "l_quantity"),
    "orders": ("id", "amount", "flag", "qty"),
}


def _suffix(fmt: str) -> str:
    return ".parquet" if fmt.startswith("parquet") else ".arrow"


def _source_batches(source: Path) -> Iterator[Any]:
    import pyarrow.parquet as pq

    yield from pq.ParquetFile(source).iter_batches(batch_size=BATCH_ROWS)


def write_format(source: Path, fmt: str, target: Path) -> tuple[float, str]:
    """Stream `source` into `target`; returns the seconds spent in the writer and the checksum
    of what was written (counted from the batches as they passed)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    key, decimal = _columns(source)
    schema = pq.read_schema(source)
    kind, codec = fmt.split("-")
    writer: Any
    started = time.perf_counter()
    if kind == "parquet":
        from engine.core.parquet import ParquetBatchWriter

        writer = ParquetBatchWriter(target, schema, compression=codec)
        write, close = writer.write, writer.close
    else:
        sink = pa.OSFile(str(target), "wb")
        options = pa.ipc.IpcWriteOptions(compression=None if codec == "none" else codec)
        writer = pa.ipc.new_file(sink, schema, options=options)

        def close() -> None:
            writer.close()
            sink.close()

        write = writer.write_batch
    spent = time.perf_counter() - started
    rows, key_sum, decimal_sum = 0, 0, None
    for batch in _source_batches(source):
        started = time.perf_counter()
        write(batch)
        spent += time.perf_counter() - started
        rows += batch.num_rows
        key_sum += pc.sum(batch.column(key)).as_py() or 0
        part = pc.sum(batch.column(decimal)).as_py()
        decimal_sum = part if decimal_sum is None else decimal_sum + part
    started = time.perf_counter()
    close()
    spent += time.perf_counter() - started
    return spent, f"{rows}:{key_sum}:{decimal_sum}"


def _columns(path: Path) -> tuple[str, str]:
    name = "lineitem" if "lineitem" in path.name else "orders"
    key, decimal, _, _ = DATASETS[name]
    return key, decimal


def _orders_source(rows: int, path: Path) -> Path:
    """pg_extract's table, the same values as its `generate_series` statement, as Parquet."""
    import duckdb

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    with duckdb.connect() as connection:
        connection.execute(
            f"copy (select g::bigint as id, (g * 7 % 1000)::integer as qty, "
            f"((g * 7919 % 1000000) / 100.0)::decimal(12,2) as amount, "
            f"timestamp '2024-01-01' + g * interval '1 second' as created_at, "
            f"md5(g::varchar) as name, g % 2 = 0 as flag from range(1, {rows + 1}) t(g)) "
            f"to '{temporary}' (format parquet, row_group_size {BATCH_ROWS * 2})"
        )
    temporary.replace(path)
    return path


def sources(rows: int) -> dict[str, Path]:
    from benchmarks.workloads.sql_dag import generate

    tpch = generate(rows, DATA / f"tpch-{rows}")
    orders_rows = rows * 5 // 6
    return {
        "lineitem": tpch / "lineitem.parquet",
        "orders": _orders_source(orders_rows, DATA / f"handoff-{rows}" / "orders.parquet"),
    }


def _checksum(rows: int, key_sum: int, decimal_sum: Any) -> str:
    return f"{rows}:{key_sum}:{decimal_sum}"


def _duckdb(dataset: str, fmt: str, path: Path) -> str:
    import duckdb

    key, decimal, group, other = DATASETS[dataset]
    with duckdb.connect() as connection:
        if fmt.startswith("parquet"):
            relation = f"read_parquet('{path}')"
        else:
            import pyarrow as pa

            table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
            connection.register("handoff", table)
            relation = "handoff"
        groups = connection.execute(
            f"select {group}, count(*), sum({key}), sum({decimal}), sum({other}) "
            f"from {relation} group by 1"
        ).fetchall()
    return _checksum(
        sum(g[1] for g in groups), sum(g[2] for g in groups), sum(g[3] for g in groups)
    )


def _polars(dataset: str, fmt: str, path: Path) -> str:
    import polars as pl

    key, decimal, group, other = DATASETS[dataset]
    frame = pl.scan_parquet(path) if fmt.startswith("parquet") else pl.scan_ipc(path)
    groups = (
        frame.group_by(group)
        .agg(pl.len().alias("n"), pl.col(key).sum(), pl.col(decimal).sum(), pl.col(other).sum())
        .collect()
    )
    return _checksum(int(groups["n"].sum()), int(groups[key].sum()), groups[decimal].sum())


def _stream(dataset: str, fmt: str, path: Path) -> str:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    key, decimal, _, _ = DATASETS[dataset]
    if fmt.startswith("parquet"):
        batches: Iterator[Any] = pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS)
    else:
        reader = pa.ipc.open_file(pa.memory_map(str(path)))
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    rows, key_sum, decimal_sum, touched = 0, 0, None, 0
    for batch in batches:
        for column in batch.columns:  # what a sink sending the rows on reads: every byte
            for buffer in column.buffers():
                if buffer is not None:
                    touched += len(buffer.to_pybytes())
        rows += batch.num_rows
        key_sum += pc.sum(batch.column(key)).as_py() or 0
        part = pc.sum(batch.column(decimal)).as_py()
        decimal_sum = part if decimal_sum is None else decimal_sum + part
    return _checksum(rows, key_sum, decimal_sum)


def _run(name: str, data: Path, out: Path) -> dict[str, Any]:
    dataset, fmt, step = name.split("/")
    if step == "write":
        target = out / f"{dataset}{_suffix(fmt)}"
        elapsed, checksum = write_format(sources_in(data)[dataset], fmt, target)
        return {"engine_s": elapsed, "checksum": checksum, "file_mb": target.stat().st_size / 1e6}
    readers = {"duckdb": _duckdb, "polars": _polars, "stream": _stream}
    started = time.perf_counter()
    checksum = readers[step](dataset, fmt, data / f"{dataset}-{fmt}{_suffix(fmt)}")
    return {"engine_s": time.perf_counter() - started, "checksum": checksum}


def sources_in(data: Path) -> dict[str, Path]:
    """The source files `prepare` recorded in the data folder."""
    return {name: Path((data / f"{name}.source").read_text().strip()) for name in DATASETS}


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    rows = 60_000 if args.quick else (args.rows or 6_000_000)
    folder = DATA / f"handoff-{rows}"
    folder.mkdir(parents=True, exist_ok=True)
    files = sources(rows)
    sizes: dict[str, float] = {}
    for dataset, source in files.items():
        (folder / f"{dataset}.source").write_text(str(source))
        for fmt in FORMATS:
            target = folder / f"{dataset}-{fmt}{_suffix(fmt)}"
            if not target.exists():
                temporary = target.with_name(target.name + ".tmp")
                write_format(source, fmt, temporary)
                temporary.replace(target)
            sizes[f"{dataset}/{fmt}"] = target.stat().st_size / 1e6
    return {"rows": rows, "orders_rows": rows * 5 // 6, "data": str(folder), "file_mb": sizes}


def contenders(args: argparse.Namespace) -> list[Contender]:
    params = prepare(args)
    module = (sys.executable, "-m", "benchmarks.workloads.handoff")
    return [
        Contender(name, (*module, name, "--data", params["data"]), group=name.split("/")[0])
        for name in names()
    ]


def names() -> list[str]:
    return [f"{d}/{f}/{s}" for d in DATASETS for s in STEPS for f in FORMATS]


def summarize(outcomes: list[Outcome], params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    by_name = {o.contender: o for o in outcomes}
    summary: dict[str, Any] = {}
    lines: list[str] = []
    for dataset in DATASETS:
        rows = params["orders_rows"] if dataset == "orders" else params["rows"]
        lines += [
            "",
            f"**{dataset}**, {rows:,} rows: median seconds (min–max) / peak RSS of the process",
            "",
            "| format | file | write | DuckDB aggregate | Polars group-by | Arrow stream read |",
            "|---|---|---|---|---|---|",
        ]
        for fmt in FORMATS:
            cells = [fmt, f"{params['file_mb'][f'{dataset}/{fmt}']:.0f} MB"]
            for step in STEPS:
                name = f"{dataset}/{fmt}/{step}"
                o = by_name.get(name)
                if o is None or o.error or not o.samples:
                    cells.append((o.error if o and o.error else "missing").splitlines()[-1][:60])
                    continue
                low, high = o.spread("engine_s")
                median, rss = o.median("engine_s"), o.median("peak_rss_mb")
                summary[name] = {
                    "engine_s": median,
                    "peak_rss_mb": rss,
                    "min_s": low,
                    "max_s": high,
                }
                cells.append(f"{median:.2f} s ({low:.2f}–{high:.2f}) / {rss:.0f} MB")
            lines.append("| " + " | ".join(cells) + " |")
    summary["file_mb"] = params["file_mb"]
    return summary, "\n".join(lines)


def main() -> None:
    child_main({name: functools.partial(_run, name) for name in names()})


if __name__ == "__main__":
    main()

"""Load a task's output into Parquet: one file, or a directory (optionally hive-partitioned).

Nothing is visible at the target until everything is written. A file is written beside the
target and renamed over it. A directory is written to a staging sibling; `replace` swaps it in
atomically, `append` moves in this run's files, named `part-<run_id>-<n>.parquet`, so loading the
same run again overwrites its own files instead of adding duplicates.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from connectors.base import ConnectorContext, SinkResult
from connectors.files.config import ParquetSink
from engine.core.cancel import CancelToken
from engine.core.errors import DataError
from engine.core.faults import fault_point
from engine.core.files import publish_directory, remove_tree, staging_path
from engine.core.parquet import ParquetBatchWriter
from engine.core.tables import InputTable

__all__ = ["write_parquet"]


def _checked(source: InputTable, cancel: CancelToken | None) -> pa.RecordBatchReader:
    def batches() -> Iterator[pa.RecordBatch]:
        for batch in source.batches():
            if cancel is not None:
                cancel.raise_if_cancelled()
            yield batch

    return pa.RecordBatchReader.from_batches(source.schema, batches())


def _write_file(
    source: InputTable, config: ParquetSink, target: Path, ctx: ConnectorContext
) -> int:
    temporary = staging_path(target, f"{ctx.run_id}-{ctx.attempt}")  # its own: attempts overlap
    with ParquetBatchWriter(temporary, source.schema, compression=config.compression) as writer:
        for batch in _checked(source, ctx.cancel):
            writer.write(batch)
    fault_point("parquet.before_publish")
    os.replace(temporary, target)
    return writer.rows


def _write_directory(
    source: InputTable, config: ParquetSink, target: Path, ctx: ConnectorContext
) -> tuple[int, list[str], bool]:
    missing = [column for column in config.partition_by if column not in source.schema.names]
    if missing:
        raise DataError(
            f"partition_by names {missing}, which the input does not have; its columns are "
            f"{source.schema.names}"
        )
    import pyarrow.dataset as ds  # here, not at import: it loads pandas when pandas is installed

    run_id, cancel = ctx.run_id, ctx.cancel
    staged = staging_path(target, f"{run_id}-{ctx.attempt}")  # its own: attempts overlap
    remove_tree(staged)  # left by a killed process's attempt of the same number
    written: list[tuple[str, int]] = []
    compression = None if config.compression == "none" else config.compression
    try:
        ds.write_dataset(
            _checked(source, cancel),
            staged,
            format="parquet",
            partitioning=list(config.partition_by) or None,
            partitioning_flavor="hive" if config.partition_by else None,
            basename_template=f"part-{run_id}-{{i}}.parquet",
            existing_data_behavior="overwrite_or_ignore",
            max_rows_per_file=config.max_rows_per_file,
            max_rows_per_group=min(config.max_rows_per_file, 1 << 20),
            file_options=ds.ParquetFileFormat().make_write_options(compression=compression),
            file_visitor=lambda f: written.append((f.path, f.metadata.num_rows)),
        )
        if not written:  # no rows: still publish the schema, as the single-file path does
            staged.mkdir(parents=True, exist_ok=True)
            empty = staged / f"part-{run_id}-0.parquet"
            ParquetBatchWriter(empty, source.schema, compression=config.compression).close()
            written.append((str(empty), 0))
    except BaseException:
        remove_tree(staged)
        raise
    relative = [str(Path(path).relative_to(staged)) for path, _ in written]
    rows = sum(count for _, count in written)
    fault_point("parquet.before_publish")
    if config.mode == "replace":
        atomic = publish_directory(staged, target)
        return rows, relative, atomic
    target.mkdir(parents=True, exist_ok=True)
    for name in relative:
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged / name, destination)
    new = set(relative)
    for old in target.rglob(f"part-{run_id}-*.parquet"):  # left by an earlier attempt of this run
        if str(old.relative_to(target)) not in new:
            old.unlink()
    remove_tree(staged)
    return rows, relative, True


def write_parquet(source: InputTable, config: ParquetSink, ctx: ConnectorContext) -> SinkResult:
    target = Path(config.path).expanduser()
    target = target if target.is_absolute() else ctx.base_dir / target
    target.parent.mkdir(parents=True, exist_ok=True)
    if config.path.endswith(".parquet"):
        rows = _write_file(source, config, target, ctx)
        return SinkResult(rows, f"parquet:{target}", {"files": [target.name], "atomic": True})
    rows, files, atomic = _write_directory(source, config, target, ctx)
    return SinkResult(
        rows, f"parquet:{target}/", {"files": files, "atomic": atomic, "mode": config.mode}
    )

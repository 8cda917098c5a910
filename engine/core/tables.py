"""The hand-off between tasks: a task's output as the tasks downstream (and sinks) read it.

An output is a folder: its rows in `part-NNNNN.parquet` files (one per stream a task wrote),
and the rows it set aside in `quarantine/` in the same form. Tasks write that layout into a
staging folder, the workspace publishes it, readers find the parts; this module is the one
place that spells it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from engine.core.sqltext import parquet_list_sql
from engine.core.streams import BatchStream
from engine.core.watermark import RowsAfter

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "OUTPUT_FILE",
    "QUARANTINE_DIR",
    "THIS",
    "InlineQuery",
    "InputTable",
    "fresh_directory",
    "output_parts",
    "part_file",
    "quarantine_parts",
]

QUARANTINE_DIR = "quarantine"
"""The subfolder of an output that holds the rows a task set aside."""
THIS = "__this"
"""The table `{{ this }}` names in an incremental sql task: its own output of the last run."""
_PARTS = "part-*.parquet"


def part_file(index: int) -> str:
    """The name of an output's `index`th part."""
    return f"part-{index:05d}.parquet"


OUTPUT_FILE = part_file(0)
"""The one part of a task that writes one stream."""


def output_parts(directory: Path) -> tuple[Path, ...]:
    """An output folder's parts, in order (none when it holds no rows' file)."""
    return tuple(sorted(directory.glob(_PARTS)))


def quarantine_parts(directory: Path) -> tuple[Path, ...]:
    return output_parts(directory / QUARANTINE_DIR)


def fresh_directory(path: Path) -> Path:
    """An empty folder at `path`, removing what a crashed attempt may have left there."""
    from engine.core.files import remove_tree

    remove_tree(path)
    path.mkdir(parents=True)
    return path


@dataclass(frozen=True)
class InlineQuery:
    """An output handed over as the query that computes it, not as rows: a `materialize:
    ephemeral` sql task's statement and the tables it reads, inlined into its readers'."""

    sql: str
    inputs: dict[str, InputTable]


@dataclass(frozen=True)
class InputTable:
    """A task output as another task reads it: Parquet files with a known schema and row count.

    Readers choose their access path: an Arrow stream (`reader`), a Polars LazyFrame (`lazy`),
    or DuckDB reading the files directly (`duckdb_source`), which is the fastest for SQL.

    A table handed over as a `stream` (a load riding on a running extract) has no files yet:
    it is read once, as batches, and `num_rows` counts what was read so far. A table handed
    over as a `query` (an ephemeral sql task) has no files either: only DuckDB reads it, by
    running the query inside its reader's statement.
    """

    task_id: str
    run_id: str
    files: tuple[Path, ...]
    schema: pa.Schema
    num_rows: int
    bytes: int = 0
    extras: dict[str, Any] = field(default_factory=dict, compare=False)
    stream: BatchStream | None = field(default=None, compare=False)
    query: InlineQuery | None = field(default=None, compare=False)
    after: RowsAfter | None = field(default=None, compare=False)
    """Of a stream: only the rows past a sink's own watermark are read (`rows_after`)."""
    locator: str | None = field(default=None, compare=False)
    """Where the workspace keeps it when that is not this disk (an object store's URI):
    `files` are then its local copies, made when a task is about to read them
    (engine.state.objectstore.ensure_local)."""

    @property
    def rows(self) -> int:
        """Its rows: all of them, or for a stream those read so far."""
        return self.stream.rows if self.stream is not None else self.num_rows

    def batches(self, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        """The rows, batch by batch (a stream's batches come as its producer made them)."""
        self._rows_needed("batches")
        if self.stream is not None:
            for batch in self.stream.batches():
                yield batch if self.after is None else batch.filter(self.after.mask(batch))
            return
        import pyarrow.parquet as pq

        for path in self.files:
            with pq.ParquetFile(path) as parquet:
                yield from parquet.iter_batches(batch_size=batch_size)

    def reader(self, batch_size: int = 65_536) -> pa.RecordBatchReader:
        """The rows as one Arrow stream, never more than a batch in memory at a time."""
        return pa.RecordBatchReader.from_batches(self.schema, self.batches(batch_size))

    def lazy(self) -> pl.LazyFrame:
        self._files_needed("a Polars LazyFrame")
        import polars as pl

        return pl.scan_parquet([str(path) for path in self.files])

    def duckdb_source(self) -> str:
        """A DuckDB table expression over the files."""
        self._files_needed("DuckDB")
        return f"read_parquet({parquet_list_sql(self.files)})"

    def rows_after(self, after: RowsAfter, folder: Path) -> InputTable:
        """Only its rows past `after`'s watermark: a stream filtered as it is read, files
        filtered into one Parquet file in `folder` (the reading attempt's), which every
        reader takes as it would the whole output."""
        if self.stream is not None:
            return replace(self, after=after)
        import pyarrow.parquet as pq

        path, kept = folder / "rows-after.parquet", 0
        with pq.ParquetWriter(path, self.schema) as writer:
            for batch in self.batches():
                rows = batch.filter(after.mask(batch))
                writer.write_batch(rows)
                kept += rows.num_rows
        return replace(self, files=(path,), num_rows=kept, bytes=path.stat().st_size)

    def _rows_needed(self, reader: str) -> None:
        if self.query is not None:
            raise TypeError(
                f"the output of task {self.task_id!r} is ephemeral, handed over as its query, "
                f"and cannot be read as {reader}: only sql tasks read it, inlined"
            )

    def _files_needed(self, reader: str) -> None:
        self._rows_needed(reader)
        if self.stream is not None:
            raise TypeError(
                f"the output of task {self.task_id!r} is handed over as a stream and cannot be "
                f"read by {reader}: only consumers that read batches may stream"
            )

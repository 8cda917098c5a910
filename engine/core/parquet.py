"""A streaming Parquet writer that makes proper row groups out of small batches.

`pyarrow.parquet.ParquetWriter.write_batch` turns every batch into its own row group, and a file
of thousands of 64k-row groups reads slowly and compresses badly. Batches are buffered here up to
`row_group_rows` rows or `row_group_bytes` bytes, whichever comes first.

Two choices come from measurement (6M rows on the shared 2-core machine, see
benchmarks/README.md, "Writing the workspace copy"):

- Dictionary encoding only for text and binary columns (nested ones too). pyarrow tries a dictionary
  on every column and falls back when one grows too large, which on keys, amounts and dates
  costs 40-75% of the write (lineitem-like rows: 1.69 s against 0.99 s) for files within 1% of
  the same size.
- A row group is encoded on a writer thread while the producer (a database cursor, a file
  reader, a validation) makes the next one: pyarrow releases the GIL while it encodes, so on two
  cores the copy a task keeps costs little more than producing its rows. At most one row group
  is encoding while the next fills, so memory stays bounded by two row groups.

The writer owns its file handle and closes it whatever happens: when a write fails (a full disk)
pyarrow's own close fails too and would leave the descriptor open, so the space of a file
already unlinked stayed in use and every later write on that disk (the catalog's) failed as well.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq

from engine.core.errors import full_disk_said

__all__ = ["ParquetBatchWriter", "dictionary_columns", "write_parts"]

ROW_GROUP_ROWS = 262_144
ROW_GROUP_BYTES = 64 << 20


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The Parquet columns worth a dictionary: text and binary (byte arrays), nested ones
    included (`tags.list.element`), whose repeats it folds; numbers and dates compress about as
    well without one and write much faster. Read off the Parquet schema pyarrow makes of
    `schema` (an empty file in memory), which spells nested paths as the writer wants them."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_batches([], schema=schema), sink)
    layout = pq.read_metadata(pa.BufferReader(sink.getvalue())).schema
    return [
        layout.column(i).path
        for i in range(len(layout))
        if layout.column(i).physical_type == "BYTE_ARRAY"
    ]


class ParquetBatchWriter:
    def __init__(
        self,
        path: Path,
        schema: pa.Schema,
        *,
        compression: str = "snappy",
        row_group_rows: int = ROW_GROUP_ROWS,
        row_group_bytes: int = ROW_GROUP_BYTES,
    ) -> None:
        self.path = path
        self.schema = schema
        self.row_group_rows = row_group_rows
        self.row_group_bytes = row_group_bytes
        self.rows = 0
        self._buffer: list[pa.RecordBatch] = []
        self._buffered_rows = 0
        self._buffered_bytes = 0
        self._pending: Future[None] | None = None
        self._encoder: ThreadPoolExecutor | None = None
        self._file = pa.OSFile(str(path), "wb")
        try:
            self._writer = pq.ParquetWriter(
                self._file,
                schema,
                compression=None if compression == "none" else compression,
                use_dictionary=dictionary_columns(schema),
            )
        except BaseException:
            self._file.close()
            raise

    def write(self, data: pa.RecordBatch | pa.Table) -> None:
        batches = data.to_batches() if isinstance(data, pa.Table) else [data]
        for original in batches:
            if original.num_rows == 0:
                continue
            batch = original if original.schema == self.schema else original.cast(self.schema)
            self._buffer.append(batch)
            self._buffered_rows += batch.num_rows
            self._buffered_bytes += batch.nbytes
            self.rows += batch.num_rows
            if (
                self._buffered_rows >= self.row_group_rows
                or self._buffered_bytes >= self.row_group_bytes
            ):
                with full_disk_said(self.path):
                    self._flush()

    def _flush(self) -> None:
        """Hand the buffered rows to the writer thread, once the row group before is written
        (its failure is raised here, to the producer)."""
        self._wait()
        if not self._buffer:
            return
        table = pa.Table.from_batches(self._buffer, schema=self.schema)
        self._buffer = []
        self._buffered_rows = 0
        self._buffered_bytes = 0
        if self._encoder is None:
            self._encoder = ThreadPoolExecutor(1, thread_name_prefix="parquet-writer")
        self._pending = self._encoder.submit(self._encode, table)

    def _encode(self, table: pa.Table) -> None:
        self._writer.write_table(table, row_group_size=self.row_group_rows)

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _stop_encoder(self) -> None:
        if self._encoder is not None:
            self._encoder.shutdown(wait=True)
            self._encoder = None

    def close(self) -> int:
        """Flush and close; returns the rows written. A file without rows keeps the schema."""
        try:
            with full_disk_said(self.path):
                self._flush()
                self._wait()
                self._writer.close()
        except BaseException:
            self._stop_encoder()
            self._file.close()
            self.path.unlink(missing_ok=True)  # without its footer it is no Parquet file
            raise
        finally:
            self._stop_encoder()
        self._file.close()
        return self.rows

    def abort(self) -> None:
        """Give the file up: closed and removed, even when its last write cannot be made."""
        self._buffer.clear()
        with contextlib.suppress(Exception):  # a row group of a file about to be removed:
            self._wait()  # the failure that led here is the one that counts
        self._stop_encoder()
        try:
            self._writer.close()
        except OSError:
            pass  # the footer of a file about to be removed; the failure that led here counts
        finally:
            self._file.close()
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> ParquetBatchWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def write_parts(
    table: pa.Table,
    folder: Path,
    name: Callable[[int], str],
    *,
    compression: str = "snappy",
    part_rows: int = ROW_GROUP_ROWS,
) -> list[Path]:
    """A table held whole in memory written as parts `name(0)`, `name(1)`, ... encoded in
    parallel, one per core, each at least `part_rows` rows (6M rows on 2 cores: 0.43 s in one
    part, 0.24 s in two). pyarrow encodes a file on one thread; parts are how a table spreads."""
    cores = max(1, min(os.cpu_count() or 1, 4))
    count = max(1, min(cores, table.num_rows // part_rows))
    size = -(-table.num_rows // count) if table.num_rows else 0
    paths = [folder / name(index) for index in range(count)]

    def write(index: int) -> None:
        rows = table.slice(index * size, size) if count > 1 else table
        with ParquetBatchWriter(paths[index], table.schema, compression=compression) as writer:
            writer.write(rows)

    if count == 1:
        write(0)
        return paths
    with ThreadPoolExecutor(count, thread_name_prefix="parquet-part") as pool:
        for future in [pool.submit(write, index) for index in range(count)]:
            future.result()
    return paths

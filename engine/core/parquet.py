"""A streaming Parquet writer that makes proper row groups out of small batches.

`pyarrow.parquet.ParquetWriter.write_batch` turns every batch into its own row group, and a file
of thousands of 64k-row groups reads slowly and compresses badly. Batches are buffered here up to
`row_group_rows` rows or `row_group_bytes` bytes, whichever comes first, which is also the bound
on the memory this writer holds.

The writer owns its file handle and closes it whatever happens: when a write fails (a full disk)
pyarrow's own close fails too and would leave the descriptor open, so the space of a file
already unlinked stayed in use and every later write on that disk (the catalog's) failed as well.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq

from engine.core.errors import full_disk_said

__all__ = ["ParquetBatchWriter"]

ROW_GROUP_ROWS = 262_144
ROW_GROUP_BYTES = 64 << 20


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
        self._file = pa.OSFile(str(path), "wb")
        try:
            self._writer = pq.ParquetWriter(
                self._file, schema, compression=None if compression == "none" else compression
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
        if not self._buffer:
            return
        table = pa.Table.from_batches(self._buffer, schema=self.schema)
        self._writer.write_table(table, row_group_size=self.row_group_rows)
        self._buffer.clear()
        self._buffered_rows = 0
        self._buffered_bytes = 0

    def close(self) -> int:
        """Flush and close; returns the rows written. A file without rows keeps the schema."""
        try:
            with full_disk_said(self.path):
                self._flush()
                self._writer.close()
        except BaseException:
            self._file.close()
            self.path.unlink(missing_ok=True)  # without its footer it is no Parquet file
            raise
        self._file.close()
        return self.rows

    def abort(self) -> None:
        """Give the file up: closed and removed, even when its last write cannot be made."""
        self._buffer.clear()
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

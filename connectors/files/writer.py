"""A streaming Parquet writer that makes proper row groups out of small batches.

`pyarrow.parquet.ParquetWriter.write_batch` turns every batch into its own row group, and a file
of thousands of 64k-row groups reads slowly and compresses badly. Batches are buffered here up to
`row_group_rows` rows or `row_group_bytes` bytes, whichever comes first, which is also the bound
on the memory this writer holds.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq

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
        self._writer = pq.ParquetWriter(
            str(path), schema, compression=None if compression == "none" else compression
        )

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
        self._flush()
        self._writer.close()
        return self.rows

    def abort(self) -> None:
        self._buffer.clear()
        try:
            self._writer.close()
        finally:
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

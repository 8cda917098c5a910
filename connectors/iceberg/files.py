"""Rows into an Iceberg table's data files: the input cast to the table's schema (and checked
against a replace's predicate), written as they come, counted on the way.

pyiceberg writes a data file from an Arrow table it holds whole (a bin of up to the table's
target file size). An unpartitioned table's files are written here instead as the rows come,
a row group at a time through pyiceberg's own Parquet writer (its properties, field ids and
statistics), so memory holds one row group and files still reach the target size (writing
each chunk as files of its own, as before, left a merge's rewrite of one 3,000,000-row file in
seven files of 2 MB). A partitioned table's rows go to pyiceberg a chunk at a time, split by
partition."""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from connectors.evolution import fit_batch
from connectors.iceberg.catalog import iceberg_schema, parse_condition
from engine.core.errors import DataError
from engine.core.faults import fault_point
from engine.core.tables import InputTable

if TYPE_CHECKING:
    from pyiceberg.table import Transaction

__all__ = [
    "CHUNK_BYTES",
    "Counted",
    "bounds_as_written",
    "cast_reader",
    "counting",
    "data_files",
    "input_reader",
    "predicate_expression",
]


def input_reader(
    source: InputTable, schema: pa.Schema, within: str | None = None
) -> pa.RecordBatchReader:
    """The input in the table's shape; with `within` (a replace's predicate), a row outside
    it fails the load: it would be written where the predicate did not make room."""
    check = predicate_expression(within, schema) if within else None

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in source.batches():
            cast = fit_batch(batch, schema)
            if check is not None:  # NULL is no match: such a row is outside too
                outside = pa.Table.from_batches([cast]).filter(~(check.is_valid() & check)).num_rows
                if outside:
                    raise DataError(
                        f"{outside} input rows do not match the predicate {within!r}",
                        hint="with mode: replace and a predicate, every input row must match it",
                    )
            yield cast
        fault_point("iceberg.input_read")  # data files being written, nothing committed

    return pa.RecordBatchReader.from_batches(schema, batches())


def predicate_expression(text: str, schema: pa.Schema) -> Any:
    """A pyiceberg condition as a pyarrow expression over rows of `schema`."""
    from pyiceberg.expressions.visitors import bind
    from pyiceberg.io.pyarrow import expression_to_pyarrow

    bound = bind(iceberg_schema(schema), parse_condition(text, "predicate"), case_sensitive=True)
    return expression_to_pyarrow(bound)


def cast_reader(rows: pa.RecordBatchReader, schema: pa.Schema) -> pa.RecordBatchReader:
    return pa.RecordBatchReader.from_batches(schema, (fit_batch(b, schema) for b in rows))


CHUNK_BYTES = 256 * 1024 * 1024
"""Arrow bytes of a partitioned table's rows handed to pyiceberg at a time (it splits them by
partition and into files of its target size, written in parallel): what such a load holds."""
GROUP_BYTES = 32 * 1024 * 1024
"""Arrow bytes of a row group of an unpartitioned table's file: what such a load holds."""


def data_files(
    tx: Transaction,
    io: Any,
    rows: pa.RecordBatchReader,
    write_uuid: uuid.UUID,
    counter: itertools.count[int],
    chunk_bytes: int = 0,
) -> list[Any]:
    """The rows as data files of the table; no snapshot names them until the transaction
    commits. Unpartitioned: written as they come, a row group each GROUP_BYTES, a new file
    each time the table's target file size is reached (write.target-file-size-bytes, counted
    in Arrow bytes as pyiceberg counts it). Partitioned: `chunk_bytes` at a time (default
    CHUNK_BYTES) through pyiceberg, which splits them by partition."""
    from pyiceberg.table import TableProperties
    from pyiceberg.utils.properties import property_as_int

    metadata = tx.table_metadata
    if not metadata.spec().is_unpartitioned():
        return _chunked_data_files(tx, io, rows, write_uuid, counter, chunk_bytes or CHUNK_BYTES)
    target = property_as_int(
        metadata.properties,
        TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
        TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT,
    )
    files: list[Any] = []
    writer: _FileWriter | None = None
    group: list[pa.RecordBatch] = []
    held = 0
    try:
        for batch in rows:
            group.append(batch)
            held += batch.nbytes
            if held >= GROUP_BYTES:
                writer = writer or _FileWriter(metadata, io, rows.schema, write_uuid, next(counter))
                writer.write(group)
                group, held = [], 0
                if writer.written >= (target or 0):
                    files.append(writer.close())
                    writer = None
        if any(batch.num_rows for batch in group):
            writer = writer or _FileWriter(metadata, io, rows.schema, write_uuid, next(counter))
            writer.write(group)
        if writer is not None:
            files.append(writer.close())
    except BaseException:  # the load fails: the file being written is no file of the table
        if writer is not None:
            writer.abandon()
        raise
    return files


def _chunked_data_files(
    tx: Transaction,
    io: Any,
    rows: pa.RecordBatchReader,
    write_uuid: uuid.UUID,
    counter: itertools.count[int],
    chunk_bytes: int,
) -> list[Any]:
    from pyiceberg.io.pyarrow import _dataframe_to_data_files

    files: list[Any] = []
    chunk: list[pa.RecordBatch] = []
    held = 0

    def flush() -> None:
        nonlocal chunk, held
        if held:
            table = pa.Table.from_batches(chunk, rows.schema)
            made = _dataframe_to_data_files(tx.table_metadata, table, io, write_uuid, counter)
            schema = tx.table_metadata.schema()
            files.extend(bounds_as_written(data_file, io, schema) for data_file in made)
        chunk, held = [], 0

    for batch in rows:
        chunk.append(batch)
        held += batch.nbytes
        if held >= chunk_bytes:
            flush()
    flush()
    return files


def unbounded_fields(footer: Any, ids: dict[str, int]) -> set[int]:
    """Field ids (by Parquet column path in `ids`) whose bounds a file's row groups cannot
    tell: one holds values but no min and max (Parquet leaves them out past 4 KB of a string
    or binary value), and pyiceberg gives the bounds of the other row groups, which then
    exclude those values (a scan or a delete by a condition would skip the file)."""
    unbounded = set()
    for group in range(footer.num_row_groups):
        row_group = footer.row_group(group)
        for index in range(row_group.num_columns):
            column = row_group.column(index)
            stats = column.statistics if column.is_stats_set else None
            nulls = stats.null_count if stats is not None and stats.has_null_count else 0
            if column.num_values > nulls and not (stats is not None and stats.has_min_max):
                unbounded.add(ids.get(column.path_in_schema, -1))
    return unbounded


def bounds_as_written(data_file: Any, io: Any, schema: Any) -> Any:
    """A data file pyiceberg wrote, without the bounds of fields its row groups cannot tell
    (one row group: pyiceberg's bounds are right; the footer is read only for several)."""
    import pyarrow.parquet as pq
    from pyiceberg.io.pyarrow import parquet_path_to_id_mapping
    from pyiceberg.schema import sanitize_column_names

    if len(data_file.split_offsets or ()) < 2:
        return data_file
    with io.new_input(data_file.file_path).open() as stream:
        footer = pq.ParquetFile(stream).metadata
    ids = parquet_path_to_id_mapping(sanitize_column_names(schema))
    for field_id in unbounded_fields(footer, ids):
        (data_file.lower_bounds or {}).pop(field_id, None)
        (data_file.upper_bounds or {}).pop(field_id, None)
    return data_file


class Counted:
    def __init__(self, reader: pa.RecordBatchReader) -> None:
        self.rows = 0
        self.reader = pa.RecordBatchReader.from_batches(reader.schema, self._count(reader))

    def _count(self, reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
        for batch in reader:
            self.rows += batch.num_rows
            yield batch


def counting(reader: pa.RecordBatchReader) -> Counted:
    """`reader`, counting the rows read through it."""
    return Counted(reader)


class _FileWriter:
    """One data file being written, as pyiceberg's `write_file` writes one (its format, location,
    name, column names, field ids, Parquet properties and statistics), a row group a call."""

    def __init__(
        self, metadata: Any, io: Any, schema: pa.Schema, write_uuid: uuid.UUID, task_id: int
    ) -> None:
        from pyiceberg.io.fileformat import FileFormatFactory
        from pyiceberg.io.pyarrow import pyarrow_to_schema
        from pyiceberg.manifest import FileFormat
        from pyiceberg.schema import sanitize_column_names
        from pyiceberg.table import TableProperties, WriteTask
        from pyiceberg.table.locations import load_location_provider

        self.metadata = metadata
        table_schema = metadata.schema()
        self.file_schema = sanitize_column_names(table_schema)
        self.given = pyarrow_to_schema(
            schema, name_mapping=table_schema.name_mapping, format_version=metadata.format_version
        )
        self.format = FileFormat(
            metadata.properties.get(
                TableProperties.WRITE_FILE_FORMAT, TableProperties.WRITE_FILE_FORMAT_DEFAULT
            )
        )
        self.model = FileFormatFactory.get(self.format)  # what pyiceberg has no writer of fails
        name = WriteTask(write_uuid, task_id, self.given, []).generate_data_file_filename(
            self.model.file_extension()
        )
        where = load_location_provider(metadata.location, metadata.properties)
        self.path = where.new_data_location(data_file_name=name)
        self.io = io
        self.output = io.new_output(self.path)
        self.writer = self.model.create_writer(self.output, self.file_schema, metadata.properties)
        self.written = 0

    def write(self, batches: list[pa.RecordBatch]) -> None:
        from pyiceberg.io.pyarrow import _to_requested_schema

        fitted = [
            _to_requested_schema(
                requested_schema=self.file_schema,
                file_schema=self.given,
                batch=batch,
                include_field_ids=True,
                format_model=self.model,
            )
            for batch in batches
        ]
        self.writer.write(pa.Table.from_batches(fitted))
        self.written += sum(batch.nbytes for batch in batches)

    def abandon(self) -> None:
        """Close the file unregistered and remove it (when that fails, it is an unreferenced
        file, which `arrowline table vacuum` removes)."""
        with contextlib.suppress(Exception):
            self.writer.close()
        with contextlib.suppress(Exception):
            self.io.delete(self.path)

    def _unbounded(self) -> set[int]:
        """Field ids whose bounds the file's row groups cannot tell (`unbounded_fields`);
        every field when the file's footer cannot be read here."""
        from pyiceberg.io.pyarrow import parquet_path_to_id_mapping

        footer = getattr(
            getattr(getattr(self.writer, "_writer", None), "writer", None), "metadata", None
        )
        ids = parquet_path_to_id_mapping(self.file_schema)
        return set(ids.values()) if footer is None else unbounded_fields(footer, ids)

    def close(self) -> Any:
        from pyiceberg.manifest import DataFile, DataFileContent
        from pyiceberg.typedef import Record

        statistics = self.writer.close()
        for field_id in self._unbounded():  # no bounds rather than bounds missing values
            statistics.column_aggregates.pop(field_id, None)
        return DataFile.from_args(
            content=DataFileContent.DATA,
            file_path=self.path,
            file_format=self.format,
            partition=Record(),
            file_size_in_bytes=len(self.output),
            sort_order_id=None,
            spec_id=self.metadata.default_spec_id,
            equality_ids=None,
            key_metadata=None,
            **statistics.to_serialized_dict(),
        )

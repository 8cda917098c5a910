"""Rows into an Iceberg table's data files: the input cast to the table's schema (and checked
against a replace's predicate), written a chunk at a time, counted on the way."""

from __future__ import annotations

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
"""Arrow bytes written into data files at a time (pyiceberg splits them into files of its
target size and writes those in parallel): what a load holds in memory at most."""


def data_files(
    tx: Transaction,
    io: Any,
    rows: pa.RecordBatchReader,
    write_uuid: uuid.UUID,
    counter: itertools.count[int],
    chunk_bytes: int = 0,
) -> list[Any]:
    """The rows as data files of the table (partitioned as its spec says), written a chunk at
    a time; no snapshot names them until the transaction commits."""
    from pyiceberg.io.pyarrow import _dataframe_to_data_files

    files: list[Any] = []
    chunk: list[pa.RecordBatch] = []
    held = 0

    def flush() -> None:
        nonlocal chunk, held
        if held:
            table = pa.Table.from_batches(chunk, rows.schema)
            files.extend(
                _dataframe_to_data_files(tx.table_metadata, table, io, write_uuid, counter)
            )
        chunk, held = [], 0

    for batch in rows:
        chunk.append(batch)
        held += batch.nbytes
        if held >= (chunk_bytes or CHUNK_BYTES):
            flush()
    flush()
    return files


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

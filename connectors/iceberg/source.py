"""Stream an Iceberg table (a snapshot of it, its columns, its rows matching a filter) as Arrow.

pyiceberg plans the scan: the filter prunes manifests by partition and data files by their
column statistics, `columns` are the only ones read. Incremental reads take the data files
written by the snapshots after the one the watermark names, still live now: appends, and the
files a merge or overwrite wrote (whose rows it kept are read again: re-read rather than
missed). A compaction's files (a `replace` snapshot) hold rows already read, unless it merged a
file with new rows. The watermark is the snapshot's sequence number, which, unlike its id,
grows with each commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC
from typing import TYPE_CHECKING, Any, NoReturn

import pyarrow as pa

from connectors.base import ConnectorContext, Unknown
from connectors.iceberg.catalog import (
    REWRITE_KEY,
    arrow_schema,
    catalog_for,
    load_table,
    parse_condition,
    translate,
)
from connectors.iceberg.config import IcebergSource
from engine.core.errors import DataError, TaskError

if TYPE_CHECKING:
    from pyiceberg.table import Table

__all__ = ["SEQUENCE_COLUMN", "iceberg_schema", "open_iceberg"]

SEQUENCE_COLUMN = "_iceberg_sequence"
"""Added by an incremental read: the sequence number of the snapshot read up to."""


def _table(config: IcebergSource, ctx: ConnectorContext) -> Table:
    with catalog_for(config, ctx) as catalog:
        table = load_table(catalog, config.table)
        if table is None:
            where = (
                f"connection {config.connection!r}" if config.connection else "the embedded catalog"
            )
            nearest = _nearest(catalog, config.table)
            raise DataError(f"no Iceberg table {config.table} in {where}.{nearest}")
    return table


def _nearest(catalog: Any, table: str) -> str:
    """`. Did you mean ...?` with the catalog's tables nearest to `table`, when one is near (a
    typo in its namespace or its name); empty when none is, or the catalog cannot list them."""
    from engine.core.problems import did_you_mean

    try:
        known = [
            ".".join(found)
            for namespace in catalog.list_namespaces()
            for found in catalog.list_tables(namespace)
        ]
    except Exception:  # listing is a courtesy: a catalog may refuse it
        return ""
    return did_you_mean(table, known)


def _plain(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f.remove_metadata() for f in schema])


def _projected(table: Table, config: IcebergSource) -> pa.Schema:
    schema = _plain(arrow_schema(table))
    if config.columns is not None:
        missing = [c for c in config.columns if c not in schema.names]
        if missing:
            raise DataError(
                f"columns {missing} are not in the Iceberg table {config.table} "
                f"(its columns: {schema.names})"
            )
        schema = pa.schema([schema.field(c) for c in config.columns])
    if config.incremental:
        if SEQUENCE_COLUMN in schema.names:
            raise DataError(f"the table has a column {SEQUENCE_COLUMN!r}, which incremental adds")
        schema = schema.append(pa.field(SEQUENCE_COLUMN, pa.int64(), nullable=False))
    return schema


def iceberg_schema(config: IcebergSource, ctx: ConnectorContext) -> pa.Schema | Unknown:
    """The output's schema, from the table's metadata (no data file is opened)."""
    if config.connection is not None and config.connection not in ctx.connections:
        return Unknown(
            f"the table is in connection {config.connection!r}, reached when a run starts"
        )
    try:
        return _projected(_table(config, ctx), config)
    except DataError as exc:
        return Unknown(exc.message)


def _written_since(table: Table, sequence: int) -> list[Any]:
    """The live data files of the current snapshot holding rows written after the snapshot of
    sequence number `sequence`, in the order they were written."""
    from pyiceberg.manifest import ManifestEntryStatus

    current = table.current_snapshot()
    summary = current.summary if current is not None else None
    if summary is not None and int(summary.get("total-delete-files", "0") or 0):
        raise DataError(
            f"the Iceberg table {'.'.join(table.name())} has delete files (merge-on-read), "
            "which an incremental read does not apply",
            hint="compact the table with the engine that wrote them, or read it whole",
        )
    lineage = []
    snapshot = current
    while snapshot is not None and (snapshot.sequence_number or 0) > sequence:
        lineage.append(snapshot)
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    if snapshot is None or (snapshot.sequence_number or 0) != sequence:
        _missing(table, sequence)
    written: dict[str, Any] = {}
    for snapshot in reversed(lineage):
        summary = snapshot.summary
        operation = str(summary.operation.value) if summary else "append"
        if summary is not None and REWRITE_KEY in summary.additional_properties:
            operation = "replace"  # a compaction by arrowline, committed as an overwrite
        added, removed = [], set()
        for manifest in snapshot.manifests(table.io):
            if manifest.added_snapshot_id != snapshot.snapshot_id:
                continue
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
                if entry.status == ManifestEntryStatus.ADDED:
                    added.append(entry.data_file)
                elif entry.status == ManifestEntryStatus.DELETED:
                    removed.add(entry.data_file.file_path)
        carries_new = any(path in written for path in removed)
        for path in removed:
            written.pop(path, None)
        if operation != "replace" or carries_new:
            written.update((f.file_path, f) for f in added)
    return list(written.values())


def _missing(table: Table, sequence: int) -> NoReturn:
    raise TaskError(
        f"the Iceberg table {'.'.join(table.name())} no longer holds the snapshot of sequence "
        f"number {sequence}, which the last run read up to (expired)",
        hint="run once with --full-refresh to read the whole table again",
    )


def _files(
    table: Table, since: int, row_filter: Any, columns: tuple[str, ...]
) -> Iterator[pa.RecordBatch]:
    from pyiceberg.io.pyarrow import ArrowScan
    from pyiceberg.table import FileScanTask

    tasks = [FileScanTask(data_file) for data_file in _written_since(table, since)]
    metadata = table.metadata
    schema = metadata.schema() if columns == ("*",) else metadata.schema().select(*columns)
    filter_ = parse_condition(row_filter, "filter") if isinstance(row_filter, str) else row_filter
    yield from ArrowScan(metadata, table.io, schema, filter_).to_record_batches(tasks)


def _batches(
    reader: Iterator[pa.RecordBatch] | pa.RecordBatchReader,
    schema: pa.Schema,
    size: int,
    sequence: int | None,
) -> Iterator[pa.RecordBatch]:
    for batch in reader:
        for start in range(0, batch.num_rows, size):
            part = batch.slice(start, size)
            arrays = [part.column(f.name).cast(f.type) for f in schema if f.name != SEQUENCE_COLUMN]
            if sequence is not None:
                arrays.append(pa.array([sequence] * part.num_rows, pa.int64()))
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def open_iceberg(config: IcebergSource, ctx: ConnectorContext) -> list[pa.RecordBatchReader]:
    from pyiceberg.expressions import AlwaysTrue

    table = _table(config, ctx)
    schema = _projected(table, config)
    columns = tuple(config.columns) if config.columns else ("*",)
    row_filter: Any = parse_condition(config.filter, "filter") if config.filter else AlwaysTrue()
    sequence = None
    try:
        if config.incremental:
            if table.format_version < 2:
                raise DataError(
                    f"the Iceberg table {config.table} is format version 1, whose snapshots "
                    "carry no sequence number to read on from",
                    hint="upgrade it to format version 2 (with pyiceberg or Spark), or read "
                    "it whole",
                )
            current = table.current_snapshot()
            if current is None:
                return [pa.RecordBatchReader.from_batches(schema, iter(()))]
            sequence = int(current.sequence_number or 0)
            since = None
            if ctx.watermark is not None:
                if int(ctx.watermark.cursor) > sequence:
                    raise TaskError(
                        f"the last run read the Iceberg table {config.table} up to sequence "
                        f"number {ctx.watermark.cursor}, and the table is at {sequence}: it "
                        "was made anew since",
                        hint="run once with --full-refresh to read the whole table again",
                    )
                if int(ctx.watermark.cursor) == sequence:
                    return [pa.RecordBatchReader.from_batches(schema, iter(()))]
                since = int(ctx.watermark.cursor)
            if since is not None:
                reader = _files(table, since, row_filter, columns)
                return [
                    pa.RecordBatchReader.from_batches(
                        schema, _batches(reader, schema, config.batch_size, sequence)
                    )
                ]
            scan: Any = table.scan(
                row_filter=row_filter, selected_fields=columns, snapshot_id=current.snapshot_id
            )
        else:
            snapshot_id = config.snapshot_id
            if config.as_of is not None:
                moment = config.as_of  # a time without a zone is UTC, as for a Delta table
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
                found = table.snapshot_as_of_timestamp(int(moment.timestamp() * 1000))
                if found is None:
                    raise DataError(
                        f"the Iceberg table {config.table} has no snapshot at or before "
                        f"{config.as_of.isoformat()}"
                    )
                snapshot_id = found.snapshot_id
            elif snapshot_id is not None and table.snapshot_by_id(snapshot_id) is None:
                raise DataError(f"the Iceberg table {config.table} has no snapshot {snapshot_id}")
            scan = table.scan(
                row_filter=row_filter, selected_fields=columns, snapshot_id=snapshot_id
            )
        reader = scan.to_arrow_batch_reader()
    except (DataError, TaskError):
        raise
    except Exception as exc:
        raise translate(exc, f"reading the Iceberg table {config.table}") from None
    batches = _batches(reader, schema, config.batch_size, sequence)
    return [pa.RecordBatchReader.from_batches(schema, batches)]

"""Load a task's output into an Iceberg table: one transaction, one metadata commit per load.

The transaction holds the schema's evolution, the load's snapshot, and the ledger entry in the
table's properties (connectors.iceberg.catalog), so readers and a resumed run see all of it or
none. A new table is created in the same transaction as its first rows.

append and replace go through pyiceberg (`append`, `overwrite` with the predicate as its
filter). merge does not use pyiceberg's `upsert`, which reads the whole table into memory and
compares it row by row in Python (apache/iceberg-python#2159). It computes the change set
itself, copy-on-write (connectors.iceberg.merge): the input's key range prunes the table's
files by their partition values and column statistics; each remaining file is read alone, and
only when it holds one of the input's keys is it replaced by its other rows; the input becomes
new files; one overwrite snapshot deletes the replaced files and adds the new ones. Memory
holds the input's keys and a batch of one table file, never the table.
"""

from __future__ import annotations

import itertools
import uuid
import warnings
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from connectors.base import ConnectorContext, SinkResult
from connectors.changes import keep_column, net_sql, table_input
from connectors.iceberg.catalog import (
    NO_RETRY,
    Load,
    arrow_schema,
    catalog_for,
    iceberg_schema,
    ledger_key,
    load_table,
    parse_condition,
    storable_schema,
    translate,
)
from connectors.iceberg.config import IcebergSink
from connectors.state import with_changes
from engine.core.errors import DataError
from engine.core.faults import fault_point
from engine.core.sqltext import quote_identifier
from engine.core.tables import InputTable

if TYPE_CHECKING:
    import duckdb
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table, Transaction

from connectors.iceberg.files import cast_reader, data_files, input_reader
from connectors.iceberg.merge import InputSQL, check_merge_input, merge_files
from connectors.iceberg.schema import arrow_schema_of, evolve_schema, partition_spec

__all__ = ["write_iceberg"]


def _append(
    tx: Transaction, io: Any, rows: pa.RecordBatchReader, properties: dict[str, str]
) -> None:
    """One snapshot adding `rows`."""
    write_uuid, counter = uuid.uuid4(), itertools.count(0)
    files = data_files(tx, io, rows, write_uuid, counter)
    fault_point("iceberg.files_written")
    with tx.update_snapshot(snapshot_properties=properties).fast_append() as append:
        for data_file in files:
            append.append_data_file(data_file)


def _snapshot_of_run(table: Table, ctx: ConnectorContext) -> int | None:
    """The newest snapshot a load of this task in run `ctx.run_id` committed."""
    task = f"{ctx.pipeline}.{ctx.task_id}"
    for snapshot in sorted(table.snapshots(), key=lambda s: s.sequence_number or 0, reverse=True):
        summary = snapshot.summary
        if summary is None:
            continue
        said = summary.additional_properties
        if said.get("arrowline.run") == ctx.run_id and said.get("arrowline.task") == task:
            return int(snapshot.snapshot_id)
    return None


def write_iceberg(source: InputTable, config: IcebergSink, ctx: ConnectorContext) -> SinkResult:
    """Load `source` into the table in one transaction."""
    with catalog_for(config, ctx) as catalog:
        return _write(catalog, source, config, ctx)


def _write(
    catalog: Catalog, source: InputTable, config: IcebergSink, ctx: ConnectorContext
) -> SinkResult:
    label = f"iceberg:{config.connection or 'embedded'}#{config.table}"
    what = f"loading into the Iceberg table {config.table}"
    sql = InputSQL(source)
    try:
        table = load_table(catalog, config.table)
        earlier = Load.of(table, ctx.pipeline, ctx.task_id) if table is not None else None
        done_rows = earlier.committed(ctx.run_id) if earlier is not None else None
        if table is not None and done_rows is not None:
            done: dict[str, Any] = {"mode": config.mode, "already_committed": True}
            snapshot = _snapshot_of_run(table, ctx)
            if snapshot is not None:  # the table as that load left it, for a notebook
                done.update(metadata=table.metadata_location, snapshot_id=snapshot)
            return SinkResult(done_rows, label, done, ctx.pending_watermarks)
        stream, keys = source, None
        if config.mode == "apply":  # arrowline_input: the net changes; the table's columns
            source, keeps, truncated = _net_changes(sql(), source, config)
        if config.mode == "merge":
            keys = check_merge_input(source, config, arrow_schema(table) if table else None)
        given = storable_schema(source.schema)
        pending = {u.task_id: (u.watermark, ctx.run_id) for u in ctx.pending_watermarks}
        watermarks = with_changes(earlier.watermarks if earlier else {}, dict(pending))
        sequence = (earlier.sequence if earlier else 0) + 1
        runs = earlier.with_run() if earlier else {}
        entry = Load(ctx.run_id, source.num_rows, sequence, watermarks=watermarks, runs=runs)
        ledger = {
            ledger_key(ctx.pipeline, ctx.task_id): entry.to_json(),
            **NO_RETRY,
        }
        snapshot_properties = {
            "arrowline.run": ctx.run_id,
            "arrowline.task": f"{ctx.pipeline}.{ctx.task_id}",
        }
        changes: list[dict[str, object]] = []
        metrics: dict[str, int] = {}
        if table is None:
            tx = _create(catalog, config, given)
            staged = tx._table  # the table being created, with its FileIO
            within = config.predicate if config.mode == "replace" else None
            rows = input_reader(source, arrow_schema_of(tx), within)
            if config.mode == "apply":
                rows = _upserts(sql(), arrow_schema_of(tx))
            _append(tx, staged.io, rows, snapshot_properties)
        else:
            tx = table.transaction()
            if config.mode == "replace" and table.current_snapshot() is not None:
                # first, while the old schema and spec still describe the old files
                emptied = parse_condition(config.predicate or "true", "predicate")
                _delete(tx, emptied, snapshot_properties)
            schema, changes = evolve_schema(tx, table, given, config, label)
            if config.mode in ("append", "replace"):
                within = config.predicate if config.mode == "replace" else None
                _append(tx, table.io, input_reader(source, schema, within), snapshot_properties)
            elif config.mode == "apply" and truncated:  # after a truncate: only the upserts
                if table.current_snapshot() is not None:
                    _delete(tx, parse_condition("true", "predicate"), snapshot_properties)
                _append(tx, table.io, _upserts(sql(), schema), snapshot_properties)
            elif config.mode == "apply":
                metrics = merge_files(
                    tx, table, source, config, schema, sql, snapshot_properties, keeps=keeps
                )
            else:
                metrics = merge_files(
                    tx, table, source, config, schema, sql, snapshot_properties, keys=keys
                )
        tx.set_properties(ledger)
        fault_point("iceberg.before_commit")
        tx.commit_transaction()
        fault_point("iceberg.after_commit")
        committed = load_table(catalog, config.table)
    except DataError:
        raise
    except Exception as exc:
        ctx.raise_if_cancelled()
        raise translate(exc, what) from None
    finally:
        sql.close()
    details: dict[str, Any] = {"mode": config.mode, **metrics}
    if committed is not None:
        details["metadata"] = committed.metadata_location
        if committed.current_snapshot() is not None:
            details["snapshot_id"] = committed.current_snapshot().snapshot_id  # type: ignore[union-attr]
    if changes:
        details["schema_changes"] = changes
    return SinkResult(stream.num_rows, label, details, ctx.pending_watermarks)


def _net_changes(
    connection: duckdb.DuckDBPyConnection, stream: InputTable, config: IcebergSink
) -> tuple[InputTable, dict[str, str], bool]:
    """Reduce the change stream to its net changes (connectors.changes) as `arrowline_input`:
    the input with the table's columns only, the keep flags set somewhere (column -> flag),
    and whether a truncate came first."""
    shaped = table_input(stream, config.keys)
    connection.execute("alter view arrowline_input rename to arrowline_changes")
    connection.execute(
        "create temp table arrowline_net as "
        + net_sql("arrowline_changes", stream.schema, config.keys)
    )
    connection.execute("create view arrowline_input as select * from arrowline_net")
    columns = shaped.schema.names
    flags = {c: keep_column(i) for i, c in enumerate(columns) if c not in config.keys}
    found = connection.execute(
        "select coalesce(bool_or(_truncated), false)"
        + "".join(f", coalesce(bool_or({flag}), false)" for flag in flags.values())
        + " from arrowline_net"
    ).fetchall()[0]
    keeps = {c: flag for (c, flag), used in zip(flags.items(), found[1:], strict=True) if used}
    return shaped, keeps, bool(found[0])


def _upserts(connection: duckdb.DuckDBPyConnection, schema: pa.Schema) -> pa.RecordBatchReader:
    """The net changes' upserts in the table's shape (nothing to carry: a new table, or all
    after a truncate); a table column the stream lacks is NULL."""
    have = {row[0] for row in connection.execute("describe arrowline_input").fetchall()}
    listed = ", ".join(
        quote_identifier(n) if n in have else f"null as {quote_identifier(n)}" for n in schema.names
    )
    rows = connection.sql(f"select {listed} from arrowline_input where _op <> 'delete'")
    return cast_reader(rows.to_arrow_reader(65_536), schema)


def _delete(tx: Transaction, condition: Any, snapshot_properties: dict[str, str]) -> None:
    """Delete the rows `condition` matches; matching none (a replace of a new partition) is
    no news, though pyiceberg warns of it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Delete operation did not match any records")
        tx.delete(condition, snapshot_properties=snapshot_properties)


def _create(catalog: Catalog, config: IcebergSink, given: pa.Schema) -> Transaction:
    """A transaction creating the table: its first rows commit with it, or nothing does."""
    levels = config.table.split(".")[:-1]
    for depth in range(1, len(levels) + 1):  # a nested namespace's parents first
        level = tuple(levels[:depth])
        if not catalog.namespace_exists(level):  # asked first: creating may not be allowed
            catalog.create_namespace_if_not_exists(level)
    schema = iceberg_schema(given)
    spec = partition_spec(schema, config)
    return catalog.create_table_transaction(config.table, schema, partition_spec=spec)

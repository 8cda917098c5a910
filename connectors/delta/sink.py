"""Load a task's output into a Delta table: one commit per load, with its ledger entry.

append adds the rows; replace overwrites the table (or, with `predicate`, the rows matching
it); apply plays a change stream (connectors.delta.apply); merge runs delta-rs's merge (update
on matching keys, insert the rest, and with `delete_missing` delete the table's rows whose keys
the input lacks) after refusing NULL or repeated keys in the input, checked over the input's
key columns in Arrow (connectors.keys: no DuckDB loaded for it).

The commit carries arrowline's ledger entry (connectors.delta.table): the run, the rows, and
every watermark of the extracts whose rows the table holds. A load whose run already committed
(the process died after the commit, before the catalog heard of it) finds its entry and writes
nothing. A kill before the commit leaves only data files no commit names, which `arrowline
table vacuum` removes.

An existing table is fitted to the input per `schema_change` (connectors.evolution, the same
rules as the database sinks, with Arrow's types named as PostgreSQL's): new columns are added
by the commit itself (delta-rs's schema merge); a widened column rewrites the table's files
with the wider type in a commit of its own first, which changes no row; a missing nullable
column is written as NULLs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from connectors.base import ConnectorContext, SinkResult
from connectors.changes import table_input
from connectors.delta.config import DeltaSink
from connectors.delta.table import (
    LEDGER_KEY,
    REWRITE_KEY,
    Load,
    TableAt,
    app_id,
    arrow_schema,
    last_load,
    located,
    open_table,
    translate,
)
from connectors.evolution import Column, arrow_type_name, diff, fit_batch, replacing_policy
from connectors.keys import check_key_columns, check_key_values, input_keys
from connectors.state import with_changes
from engine.core.errors import DataError
from engine.core.faults import fault_point
from engine.core.sqltext import quote_identifier
from engine.core.tables import InputTable

if TYPE_CHECKING:
    from deltalake import DeltaTable

__all__ = ["storable_schema", "write_delta"]


def _storable_type(name: str, t: pa.DataType) -> pa.DataType:
    """The type a Delta table holds `t` as: what delta-rs would store silently wrong (unsigned
    integers wrapped, nanoseconds truncated) is widened or checked, what Delta cannot hold is
    refused, naming the column."""
    if pa.types.is_dictionary(t):
        return _storable_type(name, t.value_type)
    unsigned = {pa.uint8(): pa.int16(), pa.uint16(): pa.int32(), pa.uint32(): pa.int64()}
    if t in unsigned:
        return unsigned[t]
    if t == pa.uint64():
        return pa.int64()  # checked by the cast: a value past 2^63 - 1 fails the load
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", "UTC" if t.tz is not None else None)
    if pa.types.is_decimal(t) and t.precision > 38:
        raise DataError(f"column {name!r} is {t}: Delta holds decimals of at most 38 digits")
    if pa.types.is_time(t) or pa.types.is_duration(t) or pa.types.is_interval(t):
        raise DataError(
            f"column {name!r} is {t}, which a Delta table cannot hold",
            hint="cast it upstream (to a string, or a count of microseconds as bigint)",
        )
    if (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_fixed_size_list(t)
    ):
        return pa.list_(_storable_type(name, t.value_type))
    if pa.types.is_map(t):
        return pa.map_(_storable_type(name, t.key_type), _storable_type(name, t.item_type))
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_storable_type(f"{name}.{f.name}", f.type)) for f in t])
    return t


def storable_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f.with_type(_storable_type(f.name, f.type)) for f in schema])


def _columns(schema: pa.Schema) -> list[Column]:
    return [Column(f.name, arrow_type_name(f.type), not f.nullable, False) for f in schema]


def _widened_type(column: str, type_name: str, given: pa.DataType) -> pa.DataType:
    """The Arrow type of a widened column: the input's, or the numeric the two share (in a
    list, its elements')."""
    if type_name.endswith("[]") and pa.types.is_list(given):
        return pa.list_(_widened_type(column, type_name[:-2], given.value_type))
    if type_name.startswith("numeric("):
        precision, scale = (int(p) for p in type_name[8:-1].split(","))
        if precision > 38:
            raise DataError(
                f"column {column!r} would need {type_name}: Delta holds decimals of at most "
                "38 digits",
                hint="round the input to the table's scale upstream",
            )
        return pa.decimal128(precision, scale)
    return given


def _reader(
    source: InputTable, schema: pa.Schema, failures: list[DataError]
) -> pa.RecordBatchReader:
    """The input in the table's shape; a value that does not fit is kept in `failures`
    (delta-rs, reading through Arrow's C stream, hands back only its text)."""

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in source.batches():
            try:
                yield fit_batch(batch, schema)
            except DataError as exc:
                failures.append(exc)
                raise
        fault_point("delta.input_read")  # data files being written, nothing committed

    return pa.RecordBatchReader.from_batches(schema, batches())


def _fit(
    table: DeltaTable | None, source: InputTable, config: DeltaSink, label: str
) -> tuple[pa.Schema, dict[str, pa.DataType], list[dict[str, object]]]:
    """The schema the load writes, the columns to widen first, and the changes (reported)."""
    given = storable_schema(source.schema)
    if table is None:
        return given, {}, []
    current = arrow_schema(table)
    fields = [(f.name, arrow_type_name(f.type)) for f in given]
    policy = replacing_policy(config, view=False)
    if config.mode == "replace" and config.predicate is None:
        if policy is not None:  # refuses what the policy refuses; the table becomes the input
            return given, {}, diff(label, fields, _columns(current), policy).report()
        return given, {}, []
    found = diff(label, fields, _columns(current), config.schema_change)
    widen: dict[str, pa.DataType] = {}
    for change in found.changes:
        if change.change == "widened" and change.after is not None:
            given_type = given.field(change.column).type
            widen[change.column] = _widened_type(change.column, change.after, given_type)
    names = set(current.names)
    shape = [f.with_type(widen.get(f.name, f.type)) for f in current]
    shape += [f.with_nullable(True) for f in given if f.name not in names]
    return pa.schema(shape), widen, found.report()


def _widen(table: DeltaTable, widen: dict[str, pa.DataType], location: TableAt) -> None:
    """Rewrite the table with wider column types, in a commit that changes no row (tagged,
    so incremental readers of the table do not read its rows again)."""
    from deltalake import CommitProperties, write_deltalake

    current = arrow_schema(table)
    shape = pa.schema([f.with_type(widen.get(f.name, f.type)) for f in current])
    dataset = table.to_pyarrow_dataset()
    rows = pa.RecordBatchReader.from_batches(
        shape, (fit_batch(b, shape) for b in dataset.to_batches(batch_size=65_536))
    )
    write_deltalake(
        table,
        rows,
        mode="overwrite",
        schema_mode="overwrite",
        partition_by=table.metadata().partition_columns or None,
        commit_properties=CommitProperties(custom_metadata={REWRITE_KEY: "widen"}),
    )
    fault_point("delta.after_widen")


def _check_keys(source: InputTable, config: DeltaSink, table: pa.Schema | None) -> None:
    check_key_columns(config.keys, source.schema.names, table.names if table else None)
    check_key_values(input_keys(source, config.keys), config.keys)


def _merge(
    table: DeltaTable,
    rows: pa.RecordBatchReader,
    config: DeltaSink,
    given: list[str],
    properties: Any,
    writer: Any,
    new_columns: bool,
) -> dict[str, Any]:
    """Update matching keys and insert the rest, setting only the input's columns: a table
    column the input lacks keeps its value in updated rows (NULL in inserted ones). The
    predicate only limits which rows delete_missing deletes; an input row whose key the
    table holds outside it is still matched, never inserted twice."""
    on = " and ".join(f"t.{_name(k)} = s.{_name(k)}" for k in config.keys)
    merger = table.merge(
        rows,
        predicate=on,
        source_alias="s",
        target_alias="t",
        merge_schema=new_columns,
        writer_properties=writer,
        commit_properties=properties,
    )
    values = {_name(column): f"s.{_name(column)}" for column in given}
    updates = {c: v for c, v in values.items() if c not in {_name(k) for k in config.keys}}
    merger = merger.when_matched_update(updates) if updates else merger
    merger = merger.when_not_matched_insert(values)
    if config.delete_missing:
        merger = merger.when_not_matched_by_source_delete(config.predicate)
    metrics: dict[str, Any] = merger.execute()
    return metrics


def _apply(
    table: DeltaTable | None,
    location: TableAt,
    stream: InputTable,
    config: DeltaSink,
    schema: pa.Schema,
    new_columns: bool,
    properties: Any,
) -> dict[str, Any]:
    """Apply a change stream's net changes in one commit (a new table: its upserts)."""
    from deltalake import WriterProperties, write_deltalake

    from connectors.delta.apply import NetChanges, apply_changes, upserts

    writer = WriterProperties(compression="SNAPPY")
    net = NetChanges(stream, config.keys)
    try:
        if table is None:
            write_deltalake(
                location.uri,
                upserts(net, schema),
                storage_options=location.options,
                mode="append",
                partition_by=list(config.partition_by) or None,
                target_file_size=config.target_file_size,
                writer_properties=writer,
                commit_properties=properties,
            )
            return {}
        if new_columns:  # the merge source has helper columns: add the new ones on their own
            write_deltalake(table, schema.empty_table(), mode="append", schema_mode="merge")
            table = open_table(location)
            assert table is not None
        return apply_changes(table, net, schema, config.keys, properties, writer)
    finally:
        net.close()


def _name(column: str) -> str:
    """A column in delta-rs's SQL (DataFusion folds unquoted names to lower case)."""
    return quote_identifier(column)


def write_delta(source: InputTable, config: DeltaSink, ctx: ConnectorContext) -> SinkResult:
    """Load `source` into the table in one commit (two when a column is widened first)."""
    from deltalake import CommitProperties, Transaction, WriterProperties, write_deltalake

    location = located(config, ctx)
    label = f"delta:{location}"
    what = f"loading into the Delta table {location}"
    failures: list[DataError] = []
    try:
        table = open_table(location)
        earlier = last_load(table, ctx.pipeline, ctx.task_id) if table is not None else None
        done_rows = earlier.committed(ctx.run_id) if earlier is not None else None
        if earlier is not None and done_rows is not None:
            done = {"mode": config.mode, "already_committed": True}
            return SinkResult(done_rows, label, done, ctx.pending_watermarks)
        stream = source
        if config.mode == "apply":  # the table has the change's table columns
            source = table_input(source, config.keys)
        if config.mode == "merge":
            _check_keys(source, config, arrow_schema(table) if table is not None else None)
        schema, widen, changes = _fit(table, source, config, label)
        if widen:
            assert table is not None
            _widen(table, widen, location)
            table = open_table(location)
        sequence = (earlier.sequence if earlier else 0) + 1
        pending = {u.task_id: (u.watermark, ctx.run_id) for u in ctx.pending_watermarks}
        watermarks = with_changes(earlier.watermarks if earlier else {}, dict(pending))
        runs = earlier.with_run(ctx.run_id, source.num_rows) if earlier else {}
        entry = Load(0, ctx.run_id, source.num_rows, sequence, watermarks, runs)
        properties = CommitProperties(
            custom_metadata={LEDGER_KEY: entry.entry(ctx.pipeline, ctx.task_id)},
            app_transactions=[Transaction(app_id(ctx.pipeline, ctx.task_id), sequence)],
        )
        writer = WriterProperties(compression="SNAPPY")
        rows = _reader(source, schema, failures)
        new_columns = table is not None and any(c["change"] == "added" for c in changes)
        metrics: dict[str, Any] = {}
        fault_point("delta.before_commit")
        if config.mode == "apply":
            metrics = _apply(table, location, stream, config, schema, new_columns, properties)
        elif config.mode == "merge" and table is not None:
            given = list(source.schema.names)
            metrics = _merge(table, rows, config, given, properties, writer, new_columns)
        elif config.mode == "replace":
            whole = not config.predicate
            write_deltalake(
                table if table is not None else location.uri,
                rows,
                storage_options=location.options if table is None else None,
                mode="overwrite",
                schema_mode="overwrite" if whole else "merge" if new_columns else None,
                predicate=config.predicate,
                # the table becomes the input: partitioned as the load says (or not at all)
                partition_by=list(config.partition_by) if whole or table is None else None,
                target_file_size=config.target_file_size,
                writer_properties=writer,
                commit_properties=properties,
            )
        else:
            write_deltalake(
                table if table is not None else location.uri,
                rows,
                storage_options=location.options if table is None else None,
                mode="append",
                schema_mode="merge" if new_columns else None,
                partition_by=(list(config.partition_by) or None) if table is None else None,
                target_file_size=config.target_file_size,
                writer_properties=writer,
                commit_properties=properties,
            )
        fault_point("delta.after_commit")
    except DataError:
        raise
    except Exception as exc:
        ctx.raise_if_cancelled()
        if failures:
            raise failures[0] from None
        asked = (
            f"with mode: replace, every input row must match the predicate {config.predicate!r}"
            if config.mode == "replace" and config.predicate
            else None
        )
        raise translate(exc, what, location.uri, data_hint=asked) from None
    committed = open_table(location)
    mine = last_load(committed, ctx.pipeline, ctx.task_id) if committed is not None else None
    details: dict[str, Any] = {"mode": config.mode}
    if config.connection is not None:
        details["connection"] = config.connection
    if mine is not None and mine.sequence == sequence:  # the version this load committed
        details["version"] = mine.version
    if changes:
        details["schema_changes"] = changes
    for key in ("num_target_rows_inserted", "num_target_rows_updated", "num_target_rows_deleted"):
        if key in metrics:
            details[key.removeprefix("num_target_rows_")] = metrics[key]
    return SinkResult(source.num_rows, label, details, ctx.pending_watermarks)

"""Load a task's output into an Iceberg table: one transaction, one metadata commit per load.

The transaction holds the schema's evolution, the load's snapshot, and the ledger entry in the
table's properties (connectors.iceberg.catalog), so readers and a resumed run see all of it or
none. A new table is created in the same transaction as its first rows.

append and replace go through pyiceberg (`append`, `overwrite` with the predicate as its
filter). merge does not use pyiceberg's `upsert`, which reads the whole table into memory and
compares it row by row in Python (apache/iceberg-python#2159). It computes the change set
itself, copy-on-write: the input's key range prunes the table's files by their partition
values and column statistics; each remaining file is read alone, and only when it holds one of
the input's keys is it replaced by its other rows (DuckDB's anti join); the input becomes new
files; one overwrite snapshot deletes the replaced files and adds the new ones. Memory holds one
table file and the input, never the table.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from connectors.base import ConnectorContext, SinkResult
from connectors.evolution import Column, arrow_type_name, diff, replacing_policy
from connectors.iceberg.catalog import (
    Load,
    arrow_schema,
    catalog_for,
    ledger_key,
    load_table,
    parse_condition,
    storable_schema,
    translate,
)
from connectors.iceberg.config import IcebergSink, partition_field
from connectors.keys import check_merge_keys
from engine.core.errors import DataError
from engine.core.faults import fault_point
from engine.core.sqltext import quote_identifier
from engine.core.tables import InputTable

if TYPE_CHECKING:
    import duckdb
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table, Transaction

__all__ = ["write_iceberg"]


def _cast(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """`batch` in the table's shape: columns cast (checked) by name, missing ones NULL."""
    arrays = []
    for target in schema:
        index = batch.schema.get_field_index(target.name)
        if index < 0:
            arrays.append(pa.nulls(batch.num_rows, target.type))
            continue
        column = batch.column(index)
        try:
            arrays.append(column if column.type == target.type else column.cast(target.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataError(
                f"column {target.name!r}: {column.type} values do not fit the table's "
                f"{target.type} ({exc})"
            ) from None
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _reader(
    source: InputTable, schema: pa.Schema, within: str | None = None
) -> pa.RecordBatchReader:
    """The input in the table's shape; with `within` (a replace's predicate), a row outside
    it fails the load: it would be written where the predicate did not make room."""
    check = _predicate(within, schema) if within else None

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in source.batches():
            cast = _cast(batch, schema)
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


def _predicate(text: str, schema: pa.Schema) -> Any:
    """A pyiceberg condition as a pyarrow expression over rows of `schema`."""
    from pyiceberg.expressions.visitors import bind
    from pyiceberg.io.pyarrow import expression_to_pyarrow

    bound = bind(_iceberg_schema(schema), parse_condition(text, "predicate"), case_sensitive=True)
    return expression_to_pyarrow(bound)


def _transforms(config: IcebergSink) -> list[tuple[str, Any, str]]:
    """(column, transform, partition field name) of each `partition_by` entry."""
    from pyiceberg.transforms import (
        BucketTransform,
        DayTransform,
        HourTransform,
        IdentityTransform,
        MonthTransform,
        TruncateTransform,
        VoidTransform,
        YearTransform,
    )

    simple = {
        "identity": IdentityTransform,
        "year": YearTransform,
        "month": MonthTransform,
        "day": DayTransform,
        "hour": HourTransform,
        "void": VoidTransform,
    }
    found = []
    for text in config.partition_by:
        column, kind, size = partition_field(text)
        transform: Any
        if kind == "bucket" and size is not None:
            transform = BucketTransform(num_buckets=size)
        elif kind == "truncate" and size is not None:
            transform = TruncateTransform(width=size)
        else:
            transform = simple[kind]()
        found.append((column, transform, column if kind == "identity" else f"{column}_{kind}"))
    return found


def _file_batches(table: Table, task: Any, projected: Any) -> Iterator[pa.RecordBatch]:
    """A data file's rows in the table's current schema, a row group at a time. A file
    written in the current schema (its field ids, names and types the table's) is read
    straight; any other goes through pyiceberg's projection (renames, added columns,
    promotions), which holds more of the file at once."""
    import pyarrow.parquet as pq
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan

    wanted = projected.as_arrow()
    if task.file.file_format.name == "PARQUET":
        with table.io.new_input(task.file.file_path).open() as stream:
            parquet = pq.ParquetFile(stream)
            held = parquet.schema_arrow
            if all(
                held.get_field_index(f.name) >= 0
                and held.field(f.name).equals(f, check_metadata=True)
                for f in wanted
            ):
                # large batches: each costs a hash of the input's keys to look rows up in
                for batch in parquet.iter_batches(batch_size=LOOKUP_ROWS, columns=wanted.names):
                    yield batch
                    pa.default_memory_pool().release_unused()
                return
    yield from ArrowScan(table.metadata, table.io, projected, AlwaysTrue()).to_record_batches(
        [task]
    )


class _Counted:
    def __init__(self, reader: pa.RecordBatchReader) -> None:
        self.rows = 0
        self.reader = pa.RecordBatchReader.from_batches(reader.schema, self._count(reader))

    def _count(self, reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
        for batch in reader:
            self.rows += batch.num_rows
            yield batch


def _counting(reader: pa.RecordBatchReader) -> _Counted:
    """`reader`, counting the rows read through it."""
    return _Counted(reader)


def _cast_reader(rows: pa.RecordBatchReader, schema: pa.Schema) -> pa.RecordBatchReader:
    return pa.RecordBatchReader.from_batches(schema, (_cast(b, schema) for b in rows))


def _partition_spec(schema: Any, config: IcebergSink) -> Any:
    from pyiceberg.partitioning import PartitionField, PartitionSpec

    fields = []
    for index, (column, transform, name) in enumerate(_transforms(config)):
        try:
            source_id = schema.find_field(column).field_id
        except ValueError:
            raise DataError(f"partition_by: the input has no column {column!r}") from None
        fields.append(PartitionField(source_id, 1000 + index, transform, name))
    return PartitionSpec(*fields)


def _respec(tx: Transaction, table: Table, config: IcebergSink, given: pa.Schema) -> None:
    """A replaced table takes the input's schema and `partition_by` (its own spec when the
    load names none), evolved by name: columns the input keeps with their type keep their
    field ids (and partition fields on them); the others are dropped and added anew. The
    table is empty at this point of the transaction, so any change is allowed."""
    missing = [c for c, _, _ in _transforms(config) if c not in given.names]
    if missing:
        raise DataError(f"partition_by: the input has no column {missing[0]!r}")
    schema = table.schema()
    current = storable_schema(_plain(arrow_schema(table)))
    keep = {
        f.name
        for f in given
        if f.name in current.names
        and arrow_type_name(current.field(f.name).type) == arrow_type_name(f.type)
    }
    wanted = {(name, str(transform)) for _, transform, name in _transforms(config)}
    remove = [
        field.name
        for field in table.spec().fields
        if schema.find_field(field.source_id).name not in keep
        or (config.partition_by and (field.name, str(field.transform)) not in wanted)
    ]
    if remove:
        with tx.update_spec() as spec:
            for name in remove:
                spec.remove_field(name)
    drop = [name for name in current.names if name not in keep]
    if drop:
        with tx.update_schema(allow_incompatible_changes=True) as update:
            for name in drop:
                update.delete_column(name)
    fresh = [f for f in given if f.name not in keep]
    if fresh:
        with tx.update_schema(allow_incompatible_changes=True) as update:
            update.union_by_name(_iceberg_schema(pa.schema(fresh)))
    present = {f.name for f in table.spec().fields} - set(remove)
    added = [(c, t, n) for c, t, n in _transforms(config) if n not in present]
    if added:
        with tx.update_spec() as spec:
            for column, transform, name in added:
                spec.add_field(column, transform, name)


def _plain(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f.remove_metadata() for f in schema])


def _columns(schema: pa.Schema) -> list[Column]:
    return [Column(f.name, arrow_type_name(f.type), not f.nullable, False) for f in schema]


def _evolve(
    tx: Transaction, table: Table, given: pa.Schema, config: IcebergSink, label: str
) -> tuple[pa.Schema, list[dict[str, object]]]:
    """Fit the table's schema to the input in the transaction, per `schema_change`: the
    schema the rows are written in, and the changes (reported)."""
    current = arrow_schema(table)
    # compared as Iceberg holds them: pyiceberg hands nested strings over as large_string
    held = storable_schema(_plain(current))
    fields = [(f.name, arrow_type_name(f.type)) for f in given]
    if config.mode == "replace" and config.predicate is None:
        policy = replacing_policy(config, view=False)
        report = diff(label, fields, _columns(held), policy).report() if policy else []
        same_shape = given.names == held.names and all(
            arrow_type_name(a.type) == arrow_type_name(b.type)
            for a, b in zip(given, held, strict=True)
        )
        spec = [(f.name, str(f.transform)) for f in table.spec().fields]
        wanted = [(name, str(transform)) for _, transform, name in _transforms(config)]
        if same_shape and (not config.partition_by or spec == wanted):
            return current, report
        _respec(tx, table, config, given)
        return arrow_schema_of(tx), report
    found = diff(label, fields, _columns(held), config.schema_change)
    if not found.changes:
        return current, []
    from pyiceberg.types import DecimalType, DoubleType, LongType

    promotions = {"bigint": LongType(), "double precision": DoubleType()}
    added = [f.with_nullable(True) for f in given if f.name not in current.names]
    with tx.update_schema() as update:
        for change in found.changes:
            if change.change != "widened" or change.after is None:
                continue
            target: Any = promotions.get(change.after)
            if change.after.startswith("numeric("):
                precision, scale = (int(p) for p in change.after[8:-1].split(","))
                before = current.field(change.column).type
                if scale != before.scale:
                    raise DataError(
                        f"column {change.column!r} {change.before} -> {change.after}: an "
                        "Iceberg decimal may gain digits, never change its scale",
                        hint="cast the input to the table's scale upstream",
                    )
                target = DecimalType(precision, scale)
            if target is None:
                raise DataError(
                    f"column {change.column!r} {change.before} -> {change.after} is no "
                    "promotion Iceberg allows (int to long, float to double, wider decimals)"
                )
            update.update_column(change.column, field_type=target)
        if added:
            update.union_by_name(_iceberg_schema(pa.schema(added)))
    return arrow_schema_of(tx), found.report()


def _iceberg_schema(schema: pa.Schema) -> Any:
    """An Arrow schema as Iceberg's, with field ids of its own (a table assigns them anew)."""
    from pyiceberg.catalog import Catalog
    from pyiceberg.schema import assign_fresh_schema_ids

    return assign_fresh_schema_ids(Catalog._convert_schema_if_needed(schema))


def arrow_schema_of(tx: Transaction) -> pa.Schema:
    schema: pa.Schema = tx.table_metadata.schema().as_arrow()
    return schema


MERGE_CHUNK_BYTES = 32 * 1024 * 1024
LOOKUP_ROWS = 524_288
"""Rows of a rewritten file read at once: `is_in` hashes the input's keys for each batch."""
"""A merge's chunk: what it holds of a rewritten file's other rows at once."""
CHUNK_BYTES = 256 * 1024 * 1024
"""Arrow bytes written into data files at a time (pyiceberg splits them into files of its
target size and writes those in parallel): what a load holds in memory at most."""


def _data_files(
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


def _append(
    tx: Transaction, io: Any, rows: pa.RecordBatchReader, properties: dict[str, str]
) -> None:
    """One snapshot adding `rows`."""
    write_uuid, counter = uuid.uuid4(), itertools.count(0)
    files = _data_files(tx, io, rows, write_uuid, counter)
    fault_point("iceberg.files_written")
    with tx.update_snapshot(snapshot_properties=properties).fast_append() as append:
        for data_file in files:
            append.append_data_file(data_file)


def _check_keys(
    source: InputTable,
    config: IcebergSink,
    connection: duckdb.DuckDBPyConnection,
    table: pa.Schema | None,
) -> None:
    missing = [key for key in config.keys if key not in source.schema.names]
    if missing:
        raise DataError(
            f"merge keys {missing} are not columns of the input ({source.schema.names})"
        )
    absent = [key for key in config.keys if table is not None and key not in table.names]
    if absent:
        raise DataError(
            f"merge keys {absent} are not columns of the table ({table.names if table else []})",
            hint="rows are matched on columns both have; replace the table to change its keys",
        )
    check_merge_keys(lambda sql: connection.execute(sql).fetchall(), "arrowline_input", config.keys)


def _key_range(
    config: IcebergSink, connection: duckdb.DuckDBPyConnection, schema: pa.Schema
) -> Any:
    """A filter that keeps the files whose statistics allow one of the input's keys: each
    key between the input's least and greatest value (for keys of an ordered kind)."""
    from pyiceberg.expressions import AlwaysTrue, And, GreaterThanOrEqual, LessThanOrEqual

    ordered = [
        k
        for k in config.keys
        if (t := schema.field(k).type)
        and (
            pa.types.is_integer(t)
            or pa.types.is_string(t)
            or pa.types.is_date(t)
            or pa.types.is_decimal(t)
        )
    ]
    if not ordered:
        return AlwaysTrue()
    bounds = ", ".join(f"min({quote_identifier(k)}), max({quote_identifier(k)})" for k in ordered)
    (row,) = connection.execute(f"select {bounds} from arrowline_input").fetchall()
    if row[0] is None:
        return AlwaysTrue()
    condition: Any = AlwaysTrue()
    for index, key in enumerate(ordered):
        low, high = row[2 * index], row[2 * index + 1]
        low_bound = GreaterThanOrEqual(term=key, literal=low)  # type: ignore[call-arg]
        high_bound = LessThanOrEqual(term=key, literal=high)  # type: ignore[call-arg]
        condition = And(condition, And(low_bound, high_bound))
    return condition


def _merge(
    tx: Transaction,
    table: Table,
    source: InputTable,
    config: IcebergSink,
    schema: pa.Schema,
    connection: duckdb.DuckDBPyConnection,
    properties: dict[str, str],
) -> dict[str, int]:
    from pyiceberg.expressions import AlwaysTrue, Or
    from pyiceberg.io.pyarrow import ArrowScan, expression_to_pyarrow

    metadata = tx.table_metadata
    projected = metadata.schema()
    prune = _key_range(config, connection, schema)
    if config.delete_missing:  # rows outside the input's keys go too: within the predicate
        within = parse_condition(config.predicate, "predicate") if config.predicate else None
        prune = Or(within, prune) if within is not None else AlwaysTrue()
    snapshot = (
        table.snapshot_by_id(metadata.current_snapshot_id) if metadata.current_snapshot_id else None
    )
    tasks = list(table.scan(row_filter=prune).plan_files()) if snapshot is not None else []
    if any(task.delete_files for task in tasks):
        raise DataError(
            f"the Iceberg table {config.table} has delete files (merge-on-read), which this "
            "merge does not rewrite",
            hint="compact the table with the engine that wrote them first",
        )
    keys = ", ".join(quote_identifier(k) for k in config.keys)
    outside = None
    if config.delete_missing and config.predicate:
        from pyiceberg.expressions.visitors import bind

        outside = expression_to_pyarrow(
            bind(projected, parse_condition(config.predicate, "predicate"), True)
        )
    write_uuid, counter = uuid.uuid4(), itertools.count(0)
    removed: list[Any] = []
    added: list[Any] = []
    kept = 0
    # table columns the input lacks keep their values in the rows it updates
    lacking = [name for name in schema.names if name not in source.schema.names]
    carried = ", ".join(quote_identifier(name) for name in [*config.keys, *lacking])
    narrow = projected.select(*config.keys, *lacking)
    lookup = None
    if len(config.keys) == 1:  # the input's keys, in the table's type, to look rows up in
        (key,) = config.keys
        found = connection.sql(f"select distinct {keys} from arrowline_input").to_arrow_table()
        lookup = found.column(0).combine_chunks().cast(projected.as_arrow().field(key).type)
    for index, task in enumerate(tasks):
        # first only the keys (and carried columns): a file without an input key is left alone
        if lookup is not None and not lacking:
            column = config.keys[0]
            hit = any(
                pc.any(pc.is_in(b.column(column), lookup)).as_py()
                for b in _file_batches(table, task, narrow)
            )
        else:
            few = ArrowScan(metadata, table.io, narrow, AlwaysTrue()).to_table([task])
            connection.register("arrowline_file", few)
            if lacking:
                connection.execute(
                    (
                        "insert into arrowline_carried "
                        if index
                        else "create temp table arrowline_carried as "
                    )
                    + f"select {carried} from arrowline_file semi join arrowline_input "
                    f"using ({keys})"
                )
            ((hit,),) = connection.execute(
                f"select count(*) from arrowline_file semi join arrowline_input using ({keys})"
            ).fetchall()
            connection.unregister("arrowline_file")
            del few
        if not hit and not config.delete_missing:
            continue
        removed.append(task.file)
        if config.delete_missing and outside is None:
            continue  # every row of the file is the input's or goes
        # then the whole file, streamed through the anti join into new files
        batches = _file_batches(table, task, projected)
        if outside is not None:  # NULL is no match: a row whose predicate is NULL is kept
            keep = ~(outside.is_valid() & outside)
            batches = (pa.Table.from_batches([b]).filter(keep).to_batches() for b in batches)
            batches = (b for group in batches for b in group)
        if lookup is not None:  # one key: a hash lookup per batch, nothing held but the batch
            column = config.keys[0]
            batches = (b.filter(pc.invert(pc.is_in(b.column(column), lookup))) for b in batches)
            remainder = pa.RecordBatchReader.from_batches(projected.as_arrow(), batches)
        else:
            stream = pa.RecordBatchReader.from_batches(projected.as_arrow(), batches)
            connection.register("arrowline_file", stream)
            remainder = connection.sql(
                f"select * from arrowline_file anti join arrowline_input using ({keys})"
            ).to_arrow_reader(65_536)
        counted = _counting(_cast_reader(remainder, schema))
        added += _data_files(tx, table.io, counted.reader, write_uuid, counter, MERGE_CHUNK_BYTES)
        if lookup is None:
            connection.unregister("arrowline_file")
        kept += counted.rows
    deleted = sum(f.record_count for f in removed) - kept
    if lacking and tasks:
        # a key the table held twice carries one set of values: the merge leaves it once
        values = ", ".join(
            f"any_value({quote_identifier(n)}) as {quote_identifier(n)}" for n in lacking
        )
        merged = connection.sql(
            f"select i.*, {', '.join('c.' + quote_identifier(n) for n in lacking)} "
            f"from arrowline_input i left join (select {keys}, {values} from arrowline_carried "
            f"group by {keys}) c using ({keys})"
        )
        rows_in: pa.RecordBatchReader = _cast_reader(merged.to_arrow_reader(65_536), schema)
    else:
        rows_in = _reader(source, schema)
    added += _data_files(tx, table.io, rows_in, write_uuid, counter)
    fault_point("iceberg.files_written")
    with tx.update_snapshot(snapshot_properties=properties).overwrite(
        commit_uuid=write_uuid
    ) as change:
        for data_file in removed:
            change.delete_data_file(data_file)
        for data_file in added:
            change.append_data_file(data_file)
    return {"files_rewritten": len(removed), "rows_kept": kept, "rows_replaced": deleted}


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
    import duckdb

    label = f"iceberg:{config.connection or 'embedded'}#{config.table}"
    what = f"loading into the Iceberg table {config.table}"
    connection = duckdb.connect()
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
        connection.execute(f"create view arrowline_input as select * from {source.duckdb_source()}")
        if config.mode == "merge":
            _check_keys(source, config, connection, arrow_schema(table) if table else None)
        given = storable_schema(source.schema)
        watermarks = dict(earlier.watermarks) if earlier else {}
        for update in ctx.pending_watermarks:
            watermarks[update.task_id] = (update.watermark, ctx.run_id)
        sequence = (earlier.sequence if earlier else 0) + 1
        runs = earlier.with_run() if earlier else {}
        entry = Load(ctx.run_id, source.num_rows, sequence, watermarks=watermarks, runs=runs)
        ledger = {
            ledger_key(ctx.pipeline, ctx.task_id): entry.to_json(),
            # no retry inside pyiceberg, which would replay this entry over a concurrent
            # load's: a lost race fails the attempt, and the task's retry computes it anew
            "commit.retry.num-retries": "0",
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
            rows = _reader(source, arrow_schema_of(tx), within)
            _append(tx, staged.io, rows, snapshot_properties)
        else:
            tx = table.transaction()
            if config.mode == "replace" and table.current_snapshot() is not None:
                # first, while the old schema and spec still describe the old files
                emptied = parse_condition(config.predicate or "true", "predicate")
                tx.delete(emptied, snapshot_properties=snapshot_properties)
            schema, changes = _evolve(tx, table, given, config, label)
            if config.mode in ("append", "replace"):
                within = config.predicate if config.mode == "replace" else None
                _append(tx, table.io, _reader(source, schema, within), snapshot_properties)
            else:
                metrics = _merge(tx, table, source, config, schema, connection, snapshot_properties)
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
        connection.close()
    details: dict[str, Any] = {"mode": config.mode, **metrics}
    if committed is not None:
        details["metadata"] = committed.metadata_location
        if committed.current_snapshot() is not None:
            details["snapshot_id"] = committed.current_snapshot().snapshot_id  # type: ignore[union-attr]
    if changes:
        details["schema_changes"] = changes
    return SinkResult(source.num_rows, label, details, ctx.pending_watermarks)


def _create(catalog: Catalog, config: IcebergSink, given: pa.Schema) -> Transaction:
    """A transaction creating the table: its first rows commit with it, or nothing does."""
    namespace = config.table.rsplit(".", 1)[0]
    catalog.create_namespace_if_not_exists(namespace)
    schema = _iceberg_schema(given)
    spec = _partition_spec(schema, config)
    return catalog.create_table_transaction(config.table, schema, partition_spec=spec)

"""The copy-on-write merge (see connectors.iceberg.sink): files pruned by the input's key range,
each candidate read alone, a file holding an input key rewritten without it, one snapshot.

With one key and every table column in the input (the common merge), no DuckDB is loaded: the
input's keys come from its files in Arrow (connectors.keys), and each candidate file's key
column is looked up in them a large batch at a time (`is_in` hashes the input's keys once a
batch), which leaves a mask of its matching rows (a bit a row); its rows are then read a
small batch at a time and filtered by that mask. Several keys, or table columns the input
lacks (their values are carried into the updated rows), join in DuckDB over the input's files."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from connectors.iceberg.catalog import (
    parse_condition,
)
from connectors.iceberg.config import IcebergSink
from connectors.keys import check_key_columns, check_key_values, input_keys
from engine.core.errors import DataError
from engine.core.faults import fault_point
from engine.core.sqltext import quote_identifier
from engine.core.tables import InputTable

if TYPE_CHECKING:
    import duckdb
    from pyiceberg.table import Table, Transaction

from connectors.iceberg.files import cast_reader, counting, data_files, input_reader

__all__ = ["InputSQL", "check_merge_input", "merge_files"]


class InputSQL:
    """DuckDB over the load's input as the view `arrowline_input`, connected when first
    asked: an append, a replace and a one-key merge of the table's columns never ask, and
    DuckDB costs ~40 MB of such a load's peak."""

    def __init__(self, source: InputTable) -> None:
        self._source = source
        self._connection: duckdb.DuckDBPyConnection | None = None

    def __call__(self) -> duckdb.DuckDBPyConnection:
        if self._connection is None:
            import duckdb

            self._connection = duckdb.connect()
            self._connection.execute(
                f"create view arrowline_input as select * from {self._source.duckdb_source()}"
            )
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


def file_batches(
    table: Table, task: Any, projected: Any, batch_size: int
) -> Iterator[pa.RecordBatch]:
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
                for batch in parquet.iter_batches(batch_size=batch_size, columns=wanted.names):
                    yield batch
                    pa.default_memory_pool().release_unused()
                return
    yield from ArrowScan(table.metadata, table.io, projected, AlwaysTrue()).to_record_batches(
        [task]
    )


MERGE_CHUNK_BYTES = 32 * 1024 * 1024
"""What a merge holds at once of a partitioned table's rewritten rows (an unpartitioned
table's are written a row group at a time: connectors.iceberg.files.GROUP_BYTES)."""
LOOKUP_ROWS = 524_288
"""A candidate file's key column read at once: `is_in` hashes the input's keys each batch."""
REWRITE_ROWS = 65_536
"""A rewritten file's rows read at once: a 524,288-row batch of five columns held ~150 MB
more at the peak than this (decoded pages, the batch, its filtered copy)."""


def check_merge_input(source: InputTable, config: IcebergSink, table: pa.Schema | None) -> pa.Table:
    """Refuse keys the input or table lacks, NULL or repeated ones; the input's keys."""
    check_key_columns(config.keys, source.schema.names, table.names if table else None)
    keys = input_keys(source, config.keys)
    check_key_values(keys, config.keys)
    return keys


def key_range(config: IcebergSink, keys: pa.Table, schema: pa.Schema) -> Any:
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
            or pa.types.is_large_string(t)
            or pa.types.is_date(t)
            or pa.types.is_decimal(t)
        )
    ]
    if not ordered or keys.num_rows == 0:
        return AlwaysTrue()
    condition: Any = AlwaysTrue()
    for key in ordered:
        bounds = pc.min_max(keys.column(key))
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if low is None:  # every key NULL (a change stream's): nothing to prune by
            return AlwaysTrue()
        low_bound = GreaterThanOrEqual(term=key, literal=low)  # type: ignore[call-arg]
        high_bound = LessThanOrEqual(term=key, literal=high)  # type: ignore[call-arg]
        condition = And(condition, And(low_bound, high_bound))
    return condition


def _upserts(
    connection: duckdb.DuckDBPyConnection,
    schema: pa.Schema,
    source: InputTable,
    config: IcebergSink,
    keeps: dict[str, str],
    *,
    carried: bool,
) -> pa.RecordBatchReader:
    """A change stream's upserts in the table's shape: a column the stream lacks, or one whose
    keep flag is set, takes the value the table held (`arrowline_carried`)."""
    keys = ", ".join(quote_identifier(k) for k in config.keys)
    picks = []
    for name in schema.names:
        quoted = quote_identifier(name)
        held = f"c.{quoted}" if carried else "null"
        if name in config.keys:
            picks.append(f"i.{quoted}")
        elif name not in source.schema.names:
            picks.append(f"{held} as {quoted}")
        elif name in keeps:
            keep = quote_identifier(keeps[name])
            picks.append(f"case when i.{keep} then {held} else i.{quoted} end as {quoted}")
        else:
            picks.append(f"i.{quoted}")
    join = ""
    if carried:
        lacking = [
            n
            for n in schema.names
            if n not in config.keys and (n in keeps or n not in source.schema.names)
        ]
        values = ", ".join(
            f"any_value({quote_identifier(n)}) as {quote_identifier(n)}" for n in lacking
        )
        held_rows = f"(select {keys}, {values} from arrowline_carried group by {keys})"
        join = f" left join {held_rows} c using ({keys})"
    rows = connection.sql(
        f"select {', '.join(picks)} from arrowline_input i{join} where i._op <> 'delete'"
    )
    return cast_reader(rows.to_arrow_reader(65_536), schema)


def merge_files(
    tx: Transaction,
    table: Table,
    source: InputTable,
    config: IcebergSink,
    schema: pa.Schema,
    sql: InputSQL,
    properties: dict[str, str],
    keys: pa.Table | None = None,
    keeps: dict[str, str] | None = None,
) -> dict[str, int]:
    """`keys`: the input's key columns (check_merge_input); None: those of `arrowline_input`.
    With `keeps` (mode: apply), `arrowline_input` holds a change stream's net changes: every
    key's rows go from the table, and only the upserts are written, a column whose keep flag
    (`keeps[column]`) is set with the table's value."""
    from pyiceberg.expressions import AlwaysTrue, Or
    from pyiceberg.io.pyarrow import ArrowScan, expression_to_pyarrow

    listed = ", ".join(quote_identifier(k) for k in config.keys)
    if keys is None:
        keys = sql().sql(f"select distinct {listed} from arrowline_input").to_arrow_table()
    metadata = tx.table_metadata
    projected = metadata.schema()
    prune = key_range(config, keys, schema)
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
    lacking += [name for name in (keeps or {}) if name not in lacking]
    carried = ", ".join(quote_identifier(name) for name in [*config.keys, *lacking])
    narrow = projected.select(*config.keys, *lacking)
    lookup = None
    if len(config.keys) == 1:  # the input's keys, in the table's type, to look rows up in
        (key,) = config.keys
        lookup = keys.column(key).combine_chunks().cast(projected.as_arrow().field(key).type)
    for index, task in enumerate(tasks):
        # first only the keys (and carried columns): a file without an input key is left alone
        matches = None  # one key: a bit a row of the file, set where its key is the input's
        hit = False
        if lacking or lookup is None:  # keys and carried columns, the whole file's, to DuckDB
            few = ArrowScan(metadata, table.io, narrow, AlwaysTrue()).to_table([task])
            connection = sql()
            connection.register("arrowline_file", few)
            within = f"from arrowline_file semi join arrowline_input using ({listed})"
            if lacking:
                into = "insert into" if index else "create temp table"
                as_ = "" if index else " as"
                connection.execute(f"{into} arrowline_carried{as_} select {carried} {within}")
            if lookup is not None:
                matches = pc.is_in(few.column(config.keys[0]), lookup).combine_chunks()
            else:
                ((hit,),) = connection.execute(f"select count(*) {within}").fetchall()
            connection.unregister("arrowline_file")
            del few
        else:
            found = file_batches(table, task, narrow, LOOKUP_ROWS)
            matches = _matching(found, config.keys[0], lookup)
        if matches is not None:
            hit = bool(pc.any(matches).as_py())
        if not hit and not config.delete_missing:
            continue
        removed.append(task.file)
        if config.delete_missing and outside is None:
            continue  # every row of the file is the input's or goes
        # then the whole file, a small batch at a time, without the input's keys
        batches = file_batches(table, task, projected, REWRITE_ROWS)
        if matches is not None:
            batches = _unmatched(batches, matches)
        if outside is not None:  # NULL is no match: a row whose predicate is NULL is kept
            keep = ~(outside.is_valid() & outside)
            batches = (pa.Table.from_batches([b]).filter(keep).to_batches() for b in batches)
            batches = (b for group in batches for b in group)
        remainder = pa.RecordBatchReader.from_batches(projected.as_arrow(), batches)
        if matches is None:  # several keys: DuckDB's anti join
            connection = sql()
            connection.register("arrowline_file", remainder)
            remainder = connection.sql(
                f"select * from arrowline_file anti join arrowline_input using ({listed})"
            ).to_arrow_reader(65_536)
        counted = counting(cast_reader(remainder, schema))
        added += data_files(tx, table.io, counted.reader, write_uuid, counter, MERGE_CHUNK_BYTES)
        if matches is None:
            sql().unregister("arrowline_file")
        kept += counted.rows
    deleted = sum(f.record_count for f in removed) - kept
    rows_in: pa.RecordBatchReader
    if keeps is not None:
        rows_in = _upserts(sql(), schema, source, config, keeps, carried=bool(lacking and tasks))
    elif lacking and tasks:
        # a key the table held twice carries one set of values: the merge leaves it once
        values = ", ".join(
            f"any_value({quote_identifier(n)}) as {quote_identifier(n)}" for n in lacking
        )
        merged = sql().sql(
            f"select i.*, {', '.join('c.' + quote_identifier(n) for n in lacking)} "
            f"from arrowline_input i left join (select {listed}, {values} from arrowline_carried "
            f"group by {listed}) c using ({listed})"
        )
        rows_in = cast_reader(merged.to_arrow_reader(65_536), schema)
    else:
        rows_in = input_reader(source, schema)
    added += data_files(tx, table.io, rows_in, write_uuid, counter)
    fault_point("iceberg.files_written")
    with tx.update_snapshot(snapshot_properties=properties).overwrite(
        commit_uuid=write_uuid
    ) as change:
        for data_file in removed:
            change.delete_data_file(data_file)
        for data_file in added:
            change.append_data_file(data_file)
    return {"files_rewritten": len(removed), "rows_kept": kept, "rows_replaced": deleted}


def _matching(batches: Iterator[pa.RecordBatch], key: str, lookup: pa.Array) -> pa.BooleanArray:
    """A bit a row of the batches: whether `lookup` holds its `key`."""
    found = [pc.is_in(batch.column(key), lookup) for batch in batches]
    return pa.concat_arrays(found) if found else pa.array([], pa.bool_())


def _unmatched(
    batches: Iterator[pa.RecordBatch], matches: pa.BooleanArray
) -> Iterator[pa.RecordBatch]:
    """The file's batches without the rows `matches` (a bit a row of the file) sets."""
    offset = 0
    for batch in batches:
        yield batch.filter(pc.invert(matches.slice(offset, batch.num_rows)))
        offset += batch.num_rows

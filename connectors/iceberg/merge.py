"""The copy-on-write merge (see connectors.iceberg.sink): files pruned by the input's key range,
each candidate read alone, a file holding an input key rewritten without it, one snapshot."""

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
from connectors.keys import check_key_columns, check_merge_keys
from engine.core.errors import DataError
from engine.core.faults import fault_point
from engine.core.sqltext import quote_identifier
from engine.core.tables import InputTable

if TYPE_CHECKING:
    import duckdb
    from pyiceberg.table import Table, Transaction

from connectors.iceberg.files import cast_reader, counting, data_files, input_reader

__all__ = ["check_merge_input", "merge_files"]


def file_batches(table: Table, task: Any, projected: Any) -> Iterator[pa.RecordBatch]:
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


MERGE_CHUNK_BYTES = 32 * 1024 * 1024
LOOKUP_ROWS = 524_288
"""Rows of a rewritten file read at once: `is_in` hashes the input's keys for each batch."""
"""A merge's chunk: what it holds of a rewritten file's other rows at once."""


def check_merge_input(
    source: InputTable,
    config: IcebergSink,
    connection: duckdb.DuckDBPyConnection,
    table: pa.Schema | None,
) -> None:
    check_key_columns(config.keys, source.schema.names, table.names if table else None)
    check_merge_keys(lambda sql: connection.execute(sql).fetchall(), "arrowline_input", config.keys)


def key_range(config: IcebergSink, connection: duckdb.DuckDBPyConnection, schema: pa.Schema) -> Any:
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
    connection: duckdb.DuckDBPyConnection,
    properties: dict[str, str],
    keeps: dict[str, str] | None = None,
) -> dict[str, int]:
    """With `keeps` (mode: apply), `arrowline_input` holds a change stream's net changes: every
    key's rows go from the table, and only the upserts are written, a column whose keep flag
    (`keeps[column]`) is set with the table's value."""
    from pyiceberg.expressions import AlwaysTrue, Or
    from pyiceberg.io.pyarrow import ArrowScan, expression_to_pyarrow

    metadata = tx.table_metadata
    projected = metadata.schema()
    prune = key_range(config, connection, schema)
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
    lacking += [name for name in (keeps or {}) if name not in lacking]
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
                for b in file_batches(table, task, narrow)
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
        batches = file_batches(table, task, projected)
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
        counted = counting(cast_reader(remainder, schema))
        added += data_files(tx, table.io, counted.reader, write_uuid, counter, MERGE_CHUNK_BYTES)
        if lookup is None:
            connection.unregister("arrowline_file")
        kept += counted.rows
    deleted = sum(f.record_count for f in removed) - kept
    rows_in: pa.RecordBatchReader
    if keeps is not None:
        rows_in = _upserts(
            connection, schema, source, config, keeps, carried=bool(lacking and tasks)
        )
    elif lacking and tasks:
        # a key the table held twice carries one set of values: the merge leaves it once
        values = ", ".join(
            f"any_value({quote_identifier(n)}) as {quote_identifier(n)}" for n in lacking
        )
        merged = connection.sql(
            f"select i.*, {', '.join('c.' + quote_identifier(n) for n in lacking)} "
            f"from arrowline_input i left join (select {keys}, {values} from arrowline_carried "
            f"group by {keys}) c using ({keys})"
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

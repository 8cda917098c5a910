"""Stream a Delta table (a version of it, its columns, its rows matching a filter) as Arrow.

The table is scanned as a pyarrow dataset of the snapshot's data files, with their partition
values: `columns` are the only ones read, and a `filter` runs in DuckDB over the dataset, which
pushes it down so files and row groups that cannot match are skipped. What DuckDB hands back is
cast to the table's own types, so a filter never changes the output's schema.

Incremental reads take the files written since the version of the watermark: the adds with
`dataChange` of the commits after it, still in the snapshot (a compaction's adds move rows
without changing them and are skipped, unless they merged a file with new rows, which is then
read again whole). When those commits' log files are gone (log retention), the files of the
snapshot that the old version lacks are read instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pyarrow as pa

from connectors.base import ConnectorContext, Unknown
from connectors.delta.config import DeltaSource
from connectors.delta.table import (
    REWRITE_KEY,
    TableAt,
    arrow_schema,
    is_uri,
    located,
    open_table,
    translate,
)
from engine.core.errors import DataError, TaskError

if TYPE_CHECKING:
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

__all__ = ["VERSION_COLUMN", "delta_schema", "open_delta"]

VERSION_COLUMN = "_delta_version"
"""Added by an incremental read: the table version the rows were read at (its watermark)."""


def _open(config: DeltaSource, ctx: ConnectorContext) -> tuple[DeltaTable, TableAt]:
    location = located(config, ctx)
    table = open_table(location, version=config.version, as_of=config.as_of)
    if table is None:
        raise DataError(
            f"no Delta table at {location}",
            hint="the folder must hold a _delta_log; check `path`",
        )
    return table, location


def _projected(schema: pa.Schema, config: DeltaSource) -> pa.Schema:
    if config.columns is None:
        return schema
    missing = [c for c in config.columns if c not in schema.names]
    if missing:
        raise DataError(
            f"columns {missing} are not in the Delta table (its columns: {schema.names})"
        )
    return pa.schema([schema.field(c) for c in config.columns])


def _with_version(schema: pa.Schema, config: DeltaSource) -> pa.Schema:
    if not config.incremental:
        return schema
    if VERSION_COLUMN in schema.names:
        raise DataError(f"the Delta table has a column {VERSION_COLUMN!r}, which incremental adds")
    return schema.append(pa.field(VERSION_COLUMN, pa.int64(), nullable=False))


def delta_schema(config: DeltaSource, ctx: ConnectorContext) -> pa.Schema | Unknown:
    """The output's schema, read from the table's log (no data file is opened)."""
    if config.connection is not None and config.connection not in ctx.connections:
        return Unknown(
            f"the table is read with connection {config.connection!r}, resolved when a run starts"
        )
    try:
        table, _ = _open(config, ctx)
    except DataError as exc:
        return Unknown(exc.message)
    return _with_version(_projected(arrow_schema(table), config), config)


def _log_entries(location: TableAt, version: int) -> list[dict[str, Any]] | None:
    """The actions of one commit, None when its log file is gone."""
    name = f"_delta_log/{version:020d}.json"
    if is_uri(location.uri):
        filesystem, root = location.filesystem()
        try:
            with filesystem.open_input_stream(f"{root.rstrip('/')}/{name}") as stream:
                text = stream.read().decode()
        except FileNotFoundError:
            return None
        except OSError as exc:  # gone (a 404) is None; refused or unreachable is an error,
            # never a quiet switch to the slower comparison of snapshots
            if "NoSuchKey" in str(exc) or "404" in str(exc):
                return None
            raise translate(exc, f"reading the log of the Delta table {location}") from None
    else:
        try:
            with open(f"{location.uri}/{name}", encoding="utf-8") as file:
                text = file.read()
        except FileNotFoundError:
            return None
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _written_since(table: DeltaTable, location: TableAt, since: int) -> set[str] | None:
    """Relative paths of the snapshot's files holding rows written after version `since`;
    None when the log no longer holds every commit since.

    A file added with `dataChange` holds new rows. A compaction's adds (no `dataChange`) hold
    rows already read, unless it compacted a file holding new rows: then its output holds
    them too, and is read again whole (rows re-read rather than missed)."""
    written: set[str] = set()
    for version in range(since + 1, table.version() + 1):
        actions = _log_entries(location, version)
        if actions is None:
            return None
        removed = {unquote(a["remove"]["path"]) for a in actions if "remove" in a}
        carries_new = bool(removed & written)
        written -= removed
        info: dict[str, Any] = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
        rewrite = REWRITE_KEY in info  # a widened column: the same rows, rewritten
        for action in actions:
            add = action.get("add")
            if add is None:
                continue
            if carries_new or (add.get("dataChange", True) and not rewrite):
                written.add(unquote(add["path"]))
    return written


def _new_files(table: DeltaTable, location: TableAt, since: int) -> set[str]:
    if since > table.version():
        raise TaskError(
            f"the last run read the Delta table {location} up to version {since}, and the "
            f"table is at version {table.version()}: it was made anew since",
            hint="run once with --full-refresh to read the whole table again",
        )
    written = _written_since(table, location, since)
    if written is not None:
        return written
    try:
        before = open_table(location, version=since)
    except TaskError as exc:
        raise TaskError(
            f"the Delta table {location} no longer holds version {since}, which the last run "
            f"read up to ({exc.message})",
            hint="run once with --full-refresh to read the whole table again",
        ) from None
    assert before is not None
    old = {unquote(p) for p in before.get_add_actions(flatten=True).column("path").to_pylist()}
    now = {unquote(p) for p in table.get_add_actions(flatten=True).column("path").to_pylist()}
    return now - old


def _only(dataset: ds.FileSystemDataset, files: set[str]) -> ds.FileSystemDataset:
    """The dataset's fragments that are `files` (paths relative to the table's folder; a
    fragment's path may carry the folder, or a bucket, before them)."""
    import pyarrow.dataset as pads

    by_name = {path.rsplit("/", 1)[-1]: path for path in files}
    kept = []
    for fragment in dataset.get_fragments():
        wanted = by_name.get(fragment.path.rsplit("/", 1)[-1])
        if wanted is not None and (fragment.path == wanted or fragment.path.endswith("/" + wanted)):
            kept.append(fragment)
    return pads.FileSystemDataset(kept, dataset.schema, dataset.format, dataset.filesystem)


def _cast(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    if batch.schema.equals(schema):
        return batch
    arrays = [batch.column(i).cast(f.type) for i, f in enumerate(schema)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _condition(text: str) -> str:
    """The filter as one condition on the table's columns, re-rendered from its parse: a
    second statement, a subquery or a table function is refused, whatever its quoting."""
    import sqlglot
    from sqlglot import exp

    def refuse(why: str) -> DataError:
        return DataError(
            f"the filter of the Delta source is not one condition on the table's columns: {why}",
            hint="filter is a SQL condition such as `region = 'EU' and amount > 10`",
        )

    try:
        statements = sqlglot.parse(f"select * from delta_table where {text}", read="duckdb")
    except sqlglot.errors.ParseError as exc:
        raise refuse(str(exc).splitlines()[0]) from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Select):
        raise refuse("it holds more than one statement")
    where = statements[0].args.get("where")
    if where is None or len(list(statements[0].find_all(exp.Select))) != 1:
        raise refuse("it holds a query of its own")
    if any(isinstance(node, exp.Table) for node in where.walk() if node is not where):
        raise refuse("it reads a table")
    return str(where.this.sql(dialect="duckdb"))


def _filtered(
    dataset: ds.Dataset, schema: pa.Schema, config: DeltaSource
) -> Iterator[pa.RecordBatch]:
    import duckdb

    from engine.core.sqltext import quote_identifier

    condition = _condition(config.filter or "")
    connection = duckdb.connect(config={"enable_external_access": False})
    try:
        connection.execute("set TimeZone = 'UTC'")
        connection.register("delta_table", dataset)
        columns = ", ".join(quote_identifier(name) for name in schema.names)
        try:
            reader = connection.sql(
                f"select {columns} from delta_table where {condition}"
            ).to_arrow_reader(config.batch_size)
        except duckdb.Error as exc:
            raise DataError(
                f"the filter of the Delta source failed: {str(exc).splitlines()[0]}",
                hint="filter is a SQL condition on the table's columns, in DuckDB's dialect",
            ) from None
        for batch in reader:
            yield _cast(batch, schema)
    finally:
        connection.close()


def _stamped(
    batches: Iterator[pa.RecordBatch], schema: pa.Schema, version: int | None
) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        if version is None:
            yield batch
            continue
        stamp = pa.array([version] * batch.num_rows, pa.int64())
        yield pa.RecordBatch.from_arrays([*batch.columns, stamp], schema=schema)


def open_delta(config: DeltaSource, ctx: ConnectorContext) -> list[pa.RecordBatchReader]:
    table, location = _open(config, ctx)
    try:
        dataset = table.to_pyarrow_dataset()
        version = table.version()
        if config.incremental and ctx.watermark is not None:
            dataset = _only(dataset, _new_files(table, location, int(ctx.watermark.cursor)))
    except (DataError, TaskError):
        raise
    except Exception as exc:
        raise translate(exc, f"reading the Delta table {location}") from None
    projected = _projected(arrow_schema(table), config)
    if config.filter is not None:
        batches: Iterator[pa.RecordBatch] = _filtered(dataset, projected, config)
    else:
        scanner = dataset.scanner(columns=projected.names, batch_size=config.batch_size)
        batches = (_cast(b, projected) for b in scanner.to_batches())
    schema = _with_version(projected, config)
    stamped = _stamped(batches, schema, version if config.incremental else None)
    return [pa.RecordBatchReader.from_batches(schema, stamped)]

"""Load a task's output into PostgreSQL: COPY through ADBC, one transaction per load.

    append   COPY the rows into the table (created when missing, evolved per schema_change)
    replace  COPY into a new table, then swap it in: readers see the old rows or the new, never
             an empty or half-filled table (DDL is transactional in PostgreSQL)
    merge    COPY into a temporary stage, refuse NULL or duplicated keys, then
             INSERT ... ON CONFLICT (keys) DO UPDATE (MERGE when no unique index covers the
             keys); delete_missing removes target rows whose keys the input lacks
    apply    reduce a change stream to one net change per key in DuckDB (connectors.changes),
             COPY that into a stage, then truncate, delete, UPDATE and INSERT from it

Watermarks of the extracts feeding this load are written to `arrowline_state.watermarks` in the
same transaction, so the data and the watermark move together or not at all.

A load's SQL hooks (engine.spec.hooks) run in the same transaction: the pre-hooks before
anything is written, the post-hooks after, before the watermarks and the commit.

`materialize: view` COPies into a table of the run's own and makes the target a view of it
(`connectors.postgres.views`).

Rows stream from the workspace's Parquet into COPY batch by batch. When an input column cannot be
sent in its target column's binary format as it is (text into a uuid column, say), the rows go
to a stage first and `INSERT ... SELECT` casts them in SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from connectors.base import ConnectorContext, SinkResult
from connectors.changes import DELETE, keep_column, net_sql, table_input
from connectors.evolution import Column, diff, replacing_policy
from connectors.keys import check_merge_keys
from connectors.postgres.config import PostgresSink
from connectors.postgres.connection import ResolvedPostgres, Session
from connectors.postgres.state import prepare
from connectors.postgres.types import pg_type, target_arrow_type
from connectors.postgres.views import (
    drop_view,
    relation_kind,
    switch_view,
    table_columns,
    version_table,
)
from connectors.state import committed_load, record_load, write_state
from engine.core.errors import DataError
from engine.core.faults import fault_point
from engine.core.sqltext import quote_identifier, quote_table, split_table
from engine.core.tables import InputTable

__all__ = ["write_postgres"]

STAGE = "arrowline_stage"


def _create_table(
    session: Session, table: str, schema: pa.Schema, keys: tuple[str, ...], temporary: bool = False
) -> None:
    columns = [f"{quote_identifier(f.name)} {pg_type(f)}" for f in schema]
    if keys:
        columns.append("primary key (" + ", ".join(quote_identifier(k) for k in keys) + ")")
    prefix = "create temporary table" if temporary else "create table"
    suffix = " on commit drop" if temporary else ""
    session.execute(
        f"{prefix} {table} ({', '.join(columns)}){suffix}", what=f"cannot create {table}"
    )


@dataclass(frozen=True)
class _Conform:
    """How input batches become the target's wire types, or None: stage and cast in SQL."""

    schema: pa.Schema
    casts: tuple[Callable[[pa.Array], pa.Array] | None, ...]

    @property
    def identity(self) -> bool:
        return all(cast is None for cast in self.casts)

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self.identity:  # the common case: the input already has the columns' wire types
            return batch
        columns = [
            c if cast is None else cast(c)
            for c, cast in zip(batch.columns, self.casts, strict=True)
        ]
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)


def _cast_to(target: pa.DataType) -> Callable[[pa.Array], pa.Array]:
    def cast(array: pa.Array) -> pa.Array:
        return pc.cast(array, target, safe=True)  # overflow and truncation raise, never wrap

    return cast


def _conform(source: pa.Schema, columns: list[Column]) -> _Conform | None:
    by_name = {c.name: c for c in columns}
    fields: list[pa.Field] = []
    casts: list[Callable[[pa.Array], pa.Array] | None] = []
    for field in source:
        column = by_name[field.name]
        target = target_arrow_type(column.type)
        given = field.type
        if target is None:
            if column.type == "numeric" and pa.types.is_decimal(given):
                fields.append(field)
                casts.append(None)
                continue
            return None
        if given == target:
            fields.append(field)
            casts.append(None)
            continue
        storage = given.storage_type if isinstance(given, pa.BaseExtensionType) else given
        if isinstance(target, pa.BaseExtensionType):
            if storage != target.storage_type and not (
                pa.types.is_string(target.storage_type)
                and (pa.types.is_large_string(storage) or pa.types.is_string_view(storage))
            ):
                return None

            def wrap(array: pa.Array, target: pa.BaseExtensionType = target) -> pa.Array:
                plain = array.storage if isinstance(array, pa.ExtensionArray) else array
                return pa.ExtensionArray.from_storage(target, plain.cast(target.storage_type))

            fields.append(pa.field(field.name, target))
            casts.append(wrap)
            continue
        try:
            pc.cast(pa.array([], given), target)  # a cast Arrow knows; values checked per batch
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        fields.append(pa.field(field.name, target))
        casts.append(_cast_to(target))
    return _Conform(pa.schema(fields), tuple(casts))


def _ingest(
    session: Session, table: str, reader: pa.RecordBatchReader, temporary: bool = False
) -> None:
    schema, name = split_table(table)
    session.ingest(
        name, reader, db_schema=schema, temporary=temporary, what=f"COPY into {table} failed"
    )


def _unique_keys(session: Session, table: str) -> list[set[str]]:
    rows = session.rows(
        "select array_to_string(array(select a.attname from pg_attribute a "
        "where a.attrelid = i.indrelid and a.attnum = any(i.indkey)), ',') "
        "from pg_index i where i.indrelid = to_regclass($1) and i.indisunique",
        (table,),
    )
    return [set(row[0].split(",")) for row in rows if row[0]]


def _select_list(names: list[str], columns: dict[str, Column], alias: str) -> str:
    """`cast(alias."c" as <c's type>) as "c", ...`: SQL does the conversions COPY cannot."""
    return ", ".join(
        f"cast({alias}.{quote_identifier(n)} as {columns[n].type}) as {quote_identifier(n)}"
        for n in names
    )


def _merge(
    session: Session, table: str, names: list[str], columns: dict[str, Column], config: PostgresSink
) -> int:
    keys = list(config.keys)
    quoted_keys = ", ".join(quote_identifier(k) for k in keys)
    target_cols = ", ".join(quote_identifier(n) for n in names)
    staged = f"(select {_select_list(names, columns, 'src')} from {STAGE} src)"
    updates = [n for n in names if n not in keys]
    if any(set(keys) == unique for unique in _unique_keys(session, table)):
        action = "do nothing"
        if updates:
            action = "do update set " + ", ".join(
                f"{quote_identifier(n)} = excluded.{quote_identifier(n)}" for n in updates
            )
        sql = (
            f"insert into {table} ({target_cols}) select {target_cols} from {staged} s "
            f"on conflict ({quoted_keys}) {action}"
        )
    else:
        (version,) = session.rows("select current_setting('server_version_num')")[0]
        if int(version) < 150000:
            raise DataError(
                f"merge into {table} needs a unique index on {keys} (or PostgreSQL 15 for MERGE)",
                hint=f"create unique index on {table} ({', '.join(keys)})",
            )
        on = " and ".join(f"t.{quote_identifier(k)} = s.{quote_identifier(k)}" for k in keys)
        matched = ""
        if updates:
            assignments = ", ".join(
                f"{quote_identifier(n)} = s.{quote_identifier(n)}" for n in updates
            )
            matched = f"when matched then update set {assignments} "
        inserted = ", ".join(f"s.{quote_identifier(n)}" for n in names)
        sql = (
            f"merge into {table} t using {staged} s on ({on}) {matched}"
            f"when not matched then insert ({target_cols}) values ({inserted})"
        )
    return max(0, session.execute(sql, what=f"merge into {table} failed"))


def _replace(session: Session, config: PostgresSink, source: InputTable, rows: _Batches) -> str:
    """Make the table exactly the input, in the load's transaction. Returns how.

    `in_place`: the table already has the input's columns and types, so its rows are deleted
    and the input COPied into it. Concurrent readers see the old rows until the commit and the
    new ones after (MVCC), and the table keeps its indexes, grants and dependent views. With
    `truncate`, TRUNCATE empties it instead: no dead rows (a DELETE leaves every old row for
    autovacuum, and costs about 0.6 s per million), but readers wait on its lock until the commit.

    `swap`: the columns differ, so the input is COPied into a new table that takes the old one's
    name. Readers never see a partial table, but a reader whose statement began before the commit
    and waited on the swap's lock reads the new table with its older snapshot, which cannot see
    rows committed after it: that one query returns no rows. PostgreSQL's DDL is not MVCC-safe;
    the swap also drops the old table's indexes, grants and views."""
    from connectors.evolution import compatibility

    table = quote_table(config.table)
    existing = table_columns(session, table)
    wanted = [(field.name, pg_type(field)) for field in source.schema]
    if existing is not None and len(existing) == len(wanted):
        same = all(
            column.name == name and compatibility(column.type, kind)[0] == "same"
            for column, (name, kind) in zip(existing, wanted, strict=True)
        )
        if same:
            empty = f"truncate {table}" if config.truncate else f"delete from {table}"
            session.execute(empty, what=f"cannot empty {config.table}")
            _ingest(session, config.table, rows.reader(None))
            return "in_place"
    schema_name, name = split_table(config.table)
    staging_name = f"{config.table}__arrowline_new"
    staging = quote_table(staging_name)
    session.execute(f"drop table if exists {staging}")
    _create_table(session, staging, source.schema, config.keys)
    _ingest(session, staging_name, rows.reader(None))
    old = quote_identifier(name + "__arrowline_old")
    exists = existing is not None
    if exists:
        session.execute(f"alter table {table} rename to {old}")
    session.execute(f"alter table {staging} rename to {quote_identifier(name)}")
    if exists:
        old_table = f"{quote_identifier(schema_name)}.{old}" if schema_name else old
        session.execute(f"drop table {old_table}", what=f"cannot drop the previous {config.table}")
    return "swap"


def _columns_after_changes(
    session: Session, config: PostgresSink, source: InputTable, details: dict[str, Any]
) -> list[Column]:
    """The target's columns once it exists and fits the input (created or evolved)."""
    table = quote_table(config.table)
    existing = table_columns(session, table)
    if existing is None:
        _create_table(session, table, source.schema, config.keys)
        details["created"] = True
        return [Column(f.name, pg_type(f), f.name in config.keys, False) for f in source.schema]
    fields = [(field.name, pg_type(field)) for field in source.schema]
    changes = diff(table, fields, existing, config.schema_change)
    if not changes.changes:
        return existing
    for statement in changes.statements:
        session.execute(statement, what=f"cannot change {config.table}")
    details["schema_changes"] = changes.report()
    return table_columns(session, table) or []


class _Batches:
    """The input as a stream, counting rows and honouring cancellation."""

    def __init__(self, source: InputTable, ctx: ConnectorContext) -> None:
        self.source = source
        self.ctx = ctx
        self.count = 0

    def reader(self, conform: _Conform | None) -> pa.RecordBatchReader:
        def generate() -> Iterator[pa.RecordBatch]:
            for batch in self.source.batches(131_072):
                self.ctx.raise_if_cancelled()
                self.count += batch.num_rows
                yield conform.apply(batch) if conform else batch

        schema = conform.schema if conform else self.source.schema
        return pa.RecordBatchReader.from_batches(schema, generate())


def _stage(session: Session, source: InputTable, rows: _Batches) -> None:
    _create_table(session, STAGE, source.schema, (), temporary=True)
    _ingest(session, STAGE, rows.reader(None), temporary=True)


def _view(
    session: Session,
    config: PostgresSink,
    source: InputTable,
    rows: _Batches,
    run: str,
    kind: str | None,
) -> dict[str, Any]:
    """COPY the rows into this run's table and make the target a view of it."""
    version = version_table(config.table, run)
    session.execute(f"drop table if exists {quote_table(version)}")  # a crashed attempt's
    _create_table(session, quote_table(version), source.schema, ())
    _ingest(session, version, rows.reader(None))
    dropped = switch_view(session, config.table, version, source.schema, kind)
    return {"table": version, "dropped": dropped}


def write_postgres(
    source: InputTable, config: PostgresSink, ctx: ConnectorContext, *, view: bool = False
) -> SinkResult:
    """Load `source` into the table, or with `view` make the table a view of this run's rows."""
    server: ResolvedPostgres = ctx.connection(config.connection)
    table = quote_table(config.table)
    schema_name, _ = split_table(config.table)
    stream = source
    if config.mode == "apply":  # the target has the table's columns, not the change's
        source = table_input(source, config.keys)
    rows = _Batches(source, ctx)
    details: dict[str, Any] = {"mode": config.mode}
    target = f"postgres:{server.name}#{config.table}"
    with Session(server) as session:

        def execute(sql: str, params: Any) -> Any:
            return session.execute(sql, params or None, what="cannot write arrowline_state")

        def query(sql: str, params: Any) -> list[tuple[Any, ...]]:
            return session.rows(sql, params or None, what="cannot read arrowline_state")

        prepare(session, schema_name)
        earlier = committed_load(execute, query, ctx.pipeline, ctx.task_id, ctx.run_id)
        if earlier is not None:  # this run's load committed before the process died
            session.rollback()
            details |= {"already_committed": True, "input_rows": source.rows}
            return SinkResult(earlier, target, details, ctx.pending_watermarks)
        for hook in ctx.hooks_before:  # in the load's transaction: a failure rolls it back
            session.execute(hook.sql, what=hook.label)
        kind = relation_kind(session, config.table)
        if kind == "v" and not view:
            if config.mode != "replace":
                raise DataError(
                    f"{config.table} is a view, and mode: {config.mode} cannot write into it",
                    hint="set mode: replace to make it a table again, or drop the view",
                )
            drop_view(session, config.table)
        policy = replacing_policy(config, view=view)
        existing = table_columns(session, table) if policy is not None else None
        if policy is not None and existing is not None:  # refuses what the policy refuses
            fields = [(field.name, pg_type(field)) for field in source.schema]
            found = diff(table, fields, existing, policy)
            if found.changes:
                details["schema_changes"] = found.report()
        if view:
            details["view"] = _view(session, config, source, rows, ctx.run_id, kind)
            written = rows.count
        elif config.mode == "replace":
            details["replace"] = _replace(session, config, source, rows)
            written = rows.count
        else:
            columns = _columns_after_changes(session, config, source, details)
            by_name = {c.name: c for c in columns}
            names = list(source.schema.names)
            conform = _conform(source.schema, columns) if config.mode == "append" else None
            if conform is not None:
                _ingest(session, config.table, rows.reader(conform))
                written = rows.count
            elif config.mode == "append":  # types COPY cannot send as they are: cast in SQL
                _stage(session, source, rows)
                session.execute(
                    f"insert into {table} ({', '.join(quote_identifier(n) for n in names)}) "
                    f"select {_select_list(names, by_name, 's')} from {STAGE} s",
                    what=f"insert into {config.table} failed",
                )
                written = rows.count
                details["staged"] = True
            elif config.mode == "apply":
                written = _apply(session, table, stream, config, names, by_name)
            else:
                _stage(session, source, rows)
                check_merge_keys(session.rows, STAGE, config.keys)
                written = _merge(session, table, names, by_name, config)
                if config.delete_missing:
                    details["deleted"] = _delete_missing(session, table, config)
        for hook in ctx.hooks_after:
            session.execute(hook.sql, what=hook.label)
        write_state(execute, ctx.pipeline, ctx.task_id, ctx.pending_watermarks, ctx.run_id)
        record_load(execute, ctx.pipeline, ctx.task_id, ctx.run_id, written)
        fault_point("postgres.before_commit")
        session.commit()
        fault_point("postgres.after_commit")
    details["input_rows"] = rows.count
    return SinkResult(written, target, details, ctx.pending_watermarks)


def _apply(
    session: Session,
    table: str,
    source: InputTable,
    config: PostgresSink,
    names: list[str],
    columns: dict[str, Column],
) -> int:
    """Apply a change stream's net changes; a column no change sent keeps its value."""
    import duckdb

    with duckdb.connect() as local:
        local.execute(f"create view changes as select * from {source.duckdb_source()}")
        reader = local.sql(net_sql("changes", source.schema, config.keys)).to_arrow_reader(131_072)
        _create_table(session, STAGE, reader.schema, (), temporary=True)
        _ingest(session, STAGE, reader, temporary=True)
    ((truncated, deleted, total),) = session.rows(
        f"select coalesce(bool_or(_truncated), false), count(*) filter (where _op = "
        f"'{DELETE}'), count(*) from {STAGE}"
    )
    keys = [quote_identifier(k) for k in config.keys]
    matched = " and ".join(f"t.{k} = s.{k}" for k in keys)
    what = f"applying changes to {config.table} failed"
    if truncated:
        session.execute(f"delete from {table}", what=what)
    if deleted:
        session.execute(
            f"delete from {table} t using {STAGE} s where {matched} and s._op = '{DELETE}'",
            what=what,
        )
    index = {name: i for i, name in enumerate(names)}
    others = [n for n in names if n not in config.keys]
    flags = [f"s.{keep_column(index[n])}" for n in others]
    kept = f"({' or '.join(flags)})" if flags else "false"
    listed = ", ".join(quote_identifier(n) for n in names)
    upserts = f"s._op <> '{DELETE}'"
    if any(set(config.keys) == unique for unique in _unique_keys(session, table)):
        # One pass for the rows that sent every value; the few that did not (an unchanged
        # TOASTed value) are updated from the table's own value below.
        action = "do nothing"
        if others:
            action = "do update set " + ", ".join(
                f"{quote_identifier(n)} = excluded.{quote_identifier(n)}" for n in others
            )
        session.execute(
            f"insert into {table} ({listed}) select {_select_list(names, columns, 's')} "
            f"from {STAGE} s where {upserts} and not {kept} on conflict "
            f"({', '.join(keys)}) {action}",
            what=what,
        )
        upserts += f" and {kept}"
    assignments = []
    for name in others:
        quoted = quote_identifier(name)
        value = f"cast(s.{quoted} as {columns[name].type})"
        keep = f"s.{keep_column(index[name])}"
        assignments.append(f"{quoted} = case when {keep} then t.{quoted} else {value} end")
    if assignments:
        session.execute(
            f"update {table} t set {', '.join(assignments)} from {STAGE} s "
            f"where {matched} and {upserts}",
            what=what,
        )
    session.execute(
        f"insert into {table} ({listed}) select {_select_list(names, columns, 's')} "
        f"from {STAGE} s where {upserts} "
        f"and not exists (select 1 from {table} t where {matched})",
        what=what,
    )
    return int(total)


def _delete_missing(session: Session, table: str, config: PostgresSink) -> int:
    on = " and ".join(f"s.{quote_identifier(k)} = t.{quote_identifier(k)}" for k in config.keys)
    deleted = session.execute(
        f"delete from {table} t where not exists (select 1 from {STAGE} s where {on})",
        what=f"delete_missing on {config.table} failed",
    )
    return max(0, deleted)

"""Load a task's output into a DuckDB table in one transaction.

append inserts by column name; replace makes the table exactly the input; merge updates rows
whose keys match and inserts the rest, after refusing input with a NULL key (it cannot be matched)
or with the same key twice (which of the two should win is a question only the user can answer).
Watermarks of the
extracts feeding the load are written to `arrowline_state.watermarks` in the same transaction.
A new
table is created from the input's schema, with a primary key on the merge keys; an existing one
is fitted to the input per `schema_change` (connectors.evolution: the same rules as PostgreSQL).

`materialize: view` makes the target a view over the input's files in the workspace instead: the
load copies no row, and the view reads the Parquet files of the run it was made in (retention
keeps them while it does, `engine.state.retention`). A view and a table of the same name replace
each other when the load's materialization changes.

A load's SQL hooks (engine.spec.hooks) run in the same transaction: the pre-hooks after it
begins, before the input is read; the post-hooks after the write, before the watermarks and the
commit. A hook that fails rolls all of it back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors.base import ConnectorContext, Hook, SinkResult
from connectors.changes import DELETE, check_stream, keep_column, net_sql, table_columns
from connectors.duckdb.config import DuckDBSink
from connectors.duckdb.errors import translate
from connectors.duckdb.state import prepare
from connectors.evolution import (
    Column,
    diff,
    duckdb_type_name,
    replacing_policy,
    sql_type_of_duckdb,
)
from connectors.keys import check_merge_keys
from connectors.state import committed_load, record_load, write_state
from engine.core.errors import DataError
from engine.core.faults import fault_point
from engine.core.sqltext import (
    parquet_list_sql,
    quote_identifier,
    quote_table,
    split_table,
    sql_literal,
)
from engine.core.tables import InputTable

if TYPE_CHECKING:
    import duckdb

__all__ = ["write_duckdb"]

_INPUT = "__arrowline_input"


def _table_columns(connection: duckdb.DuckDBPyConnection, name: str) -> list[Column] | None:
    schema, table = split_table(name)
    rows = connection.execute(
        "select column_name, data_type, is_nullable = 'NO', column_default is not null "
        "from information_schema.columns "
        "where table_schema = coalesce(?, current_schema()) and table_name = ? "
        "order by ordinal_position",
        [schema, table],
    ).fetchall()
    return [Column(n, duckdb_type_name(t), bool(nn), bool(d)) for n, t, nn, d in rows] or None


def _evolve(
    connection: duckdb.DuckDBPyConnection,
    target: str,
    existing: list[Column],
    config: DuckDBSink,
    *,
    apply: bool = True,
) -> list[dict[str, object]]:
    """Fit the table to the input per `schema_change` (connectors.evolution); the changes.
    Without `apply`, only refuse what the policy refuses (a replace makes the table anew)."""
    described = connection.execute(f"describe select * from {_INPUT}").fetchall()
    fields = [(str(row[0]), duckdb_type_name(str(row[1]))) for row in described]
    changes = diff(target, fields, existing, config.schema_change, render=sql_type_of_duckdb)
    for statement in changes.statements if apply else ():
        connection.execute(statement)
    return changes.report()


def _check_keys(
    connection: duckdb.DuckDBPyConnection, source: InputTable, config: DuckDBSink
) -> None:
    missing = [key for key in config.keys if key not in source.schema.names]
    if missing:
        raise DataError(
            f"merge keys {missing} are not columns of the input ({source.schema.names})"
        )
    check_merge_keys(lambda sql: connection.execute(sql).fetchall(), _INPUT, config.keys)


def _catalog_row(
    connection: duckdb.DuckDBPyConnection, sql: str, name: str
) -> tuple[Any, ...] | None:
    """The one row `sql` (taking the table's name, then its schema) finds for `name`."""
    schema, table = split_table(name)
    return connection.execute(sql, [table, schema]).fetchone()


def _kind(connection: duckdb.DuckDBPyConnection, name: str) -> str | None:
    """'VIEW', 'BASE TABLE', or None when nothing has that name."""
    row = _catalog_row(
        connection,
        "select table_type from information_schema.tables "
        "where table_name = ? and table_schema = coalesce(?, current_schema())",
        name,
    )
    return str(row[0]) if row else None


VIEW_COMMENT = "arrowline: materialize: view"
"""The comment on a view arrowline made: it replaces no view it did not make."""


def _refuse_theirs(connection: duckdb.DuckDBPyConnection, name: str, doing: str) -> None:
    row = _catalog_row(
        connection,
        "select comment from duckdb_views() "
        "where view_name = ? and schema_name = coalesce(?, current_schema())",
        name,
    )
    if not row or row[0] != VIEW_COMMENT:
        raise DataError(
            f"{name} is a view that materialize: view did not make; {doing} would replace it",
            hint="load into another table, or drop the view yourself",
        )


def _make_view(
    connection: duckdb.DuckDBPyConnection, target: str, kind: str | None, source: InputTable
) -> int:
    """The target as a view over the input's files (absolute paths: the database file may
    be opened from anywhere)."""
    if kind == "BASE TABLE":
        connection.execute(f"drop table {target}")
    files = parquet_list_sql([path.resolve() for path in source.files])
    connection.execute(f"create or replace view {target} as select * from read_parquet({files})")
    connection.execute(f"comment on view {target} is {sql_literal(VIEW_COMMENT)}")
    return source.num_rows


def _merge(connection: duckdb.DuckDBPyConnection, target: str, config: DuckDBSink) -> int:
    condition = " and ".join(
        f"t.{quote_identifier(k)} = s.{quote_identifier(k)}" for k in config.keys
    )
    result = connection.execute(
        f"merge into {target} as t using {_INPUT} as s on ({condition}) "
        "when matched then update set * when not matched then insert *"
    ).fetchone()
    return int(result[0]) if result else 0


_NET = "__arrowline_net"


def _net_changes(
    connection: duckdb.DuckDBPyConnection, source: InputTable, config: DuckDBSink
) -> None:
    """Reduce the change stream to one row per key (connectors.changes), and make `_INPUT`
    the rows to upsert, with the table's columns only."""
    check_stream(source.schema.names, config.keys, source.task_id)
    connection.execute(f"create temp table {_NET} as {net_sql(_INPUT, source.schema, config.keys)}")
    columns = ", ".join(quote_identifier(c) for c in table_columns(source.schema))
    connection.execute(f"drop view {_INPUT}")
    connection.execute(
        f"create temp view {_INPUT} as select {columns} from {_NET} where _op <> '{DELETE}'"
    )


def _apply(
    connection: duckdb.DuckDBPyConnection, target: str, source: InputTable, config: DuckDBSink
) -> int:
    """Apply the net changes to an existing table: truncate, deletes, then upserts that keep
    a column's value where no change sent one."""
    columns = table_columns(source.schema)
    keys = [quote_identifier(k) for k in config.keys]
    matched = " and ".join(f"t.{k} = s.{k}" for k in keys)
    ((truncated, deleted, total),) = connection.execute(
        f"select coalesce(bool_or(_truncated), false), count(*) filter (where _op = "
        f"'{DELETE}'), count(*) from {_NET}"
    ).fetchall()
    if truncated:
        connection.execute(f"delete from {target}")
    if deleted:
        connection.execute(
            f"delete from {target} t using {_NET} s where {matched} and s._op = '{DELETE}'"
        )
    updates = []
    for index, column in enumerate(columns):
        if column in config.keys:
            continue
        quoted = quote_identifier(column)
        updates.append(
            f"{quoted} = case when s.{keep_column(index)} then t.{quoted} else s.{quoted} end"
        )
    listed = ", ".join(quote_identifier(c) for c in columns)
    values = ", ".join(f"s.{quote_identifier(c)}" for c in columns)
    update = f"when matched then update set {', '.join(updates)} " if updates else ""
    connection.execute(
        f"merge into {target} as t using (select * from {_NET} where _op <> '{DELETE}') as s "
        f"on ({matched}) {update}when not matched then insert ({listed}) values ({values})"
    )
    connection.execute(f"drop table {_NET}")
    return int(total)


def _run_hooks(connection: duckdb.DuckDBPyConnection, hooks: Sequence[Hook], path: Path) -> None:
    """A load's SQL hooks, in its transaction: one that fails rolls back the load with it."""
    import duckdb

    for hook in hooks:
        try:
            connection.execute(hook.sql)
        except duckdb.Error as exc:
            raise translate(exc, hook.label, path) from None


def write_duckdb(
    source: InputTable, config: DuckDBSink, ctx: ConnectorContext, *, view: bool = False
) -> SinkResult:
    """Load `source` into the table, or with `view` make the table a view of it."""
    import duckdb

    base_dir, cancel = ctx.base_dir, ctx.cancel
    path = Path(config.path).expanduser()
    path = path if path.is_absolute() else base_dir / path
    path.parent.mkdir(parents=True, exist_ok=True)
    what = f"loading {config.table} in {path.name}"
    try:
        connection = duckdb.connect(str(path))
        catalog = connection.execute("select current_database()").fetchall()[0][0]
    except duckdb.Error as exc:
        raise translate(exc, what, path) from None
    # schema.table fully qualified: in dev.duckdb, `dev.orders` could also be catalog dev's
    # table orders, and DuckDB refuses the ambiguity
    qualified = split_table(config.table)[0] is not None
    target = (quote_identifier(catalog) + "." if qualified else "") + quote_table(config.table)
    unregister = cancel.on_cancel(connection.interrupt) if cancel else None

    def execute(sql: str, params: Any) -> Any:
        return connection.execute(sql, list(params))

    def query(sql: str, params: Any) -> list[tuple[Any, ...]]:
        return connection.execute(sql, list(params)).fetchall()

    schema, _ = split_table(config.table)
    try:
        prepare(connection, path, schema)
        connection.execute("begin transaction")
        earlier = committed_load(execute, query, ctx.pipeline, ctx.task_id, ctx.run_id)
        if earlier is not None:  # this run's load committed before the process died
            connection.execute("rollback")
            done: dict[str, Any] = {"mode": config.mode, "already_committed": True}
            if view:  # retention keeps what the committed view reads
                done["view_of"] = {"task": source.task_id, "run": source.run_id}
            return SinkResult(
                earlier, f"duckdb:{path}#{config.table}", done, ctx.pending_watermarks
            )
        _run_hooks(connection, ctx.hooks_before, path)
        connection.execute(f"create temp view {_INPUT} as select * from {source.duckdb_source()}")
        if config.mode == "apply":  # the stream's net change per key; _INPUT its upserts
            _net_changes(connection, source, config)
        existing = _table_columns(connection, config.table)
        kind = _kind(connection, config.table) if existing is not None else None
        if kind == "VIEW" and not view and config.mode != "replace":
            raise DataError(
                f"{config.table} in {path.name} is a view, and mode: {config.mode} cannot "
                "write into it",
                hint="set mode: replace to make it a table again, or drop the view",
            )
        changes: list[dict[str, object]] = []
        policy = replacing_policy(config, view=view)
        if policy is not None and existing is not None:  # refuses what the policy refuses
            changes = _evolve(connection, target, existing, config, apply=False)
        if config.mode in ("merge", "apply"):
            _check_keys(connection, source, config)
        if kind == "VIEW":
            _refuse_theirs(connection, config.table, "this view load" if view else "a table load")
        if view:
            rows = _make_view(connection, target, kind, source)
        elif config.mode == "replace" or existing is None:
            if kind == "VIEW":
                connection.execute(f"drop view {target}")
            result = connection.execute(
                f"create or replace table {target} as select * from {_INPUT}"
            ).fetchone()
            rows = int(result[0]) if result else 0
            if config.mode in ("merge", "apply"):
                keys = ", ".join(quote_identifier(k) for k in config.keys)
                connection.execute(f"alter table {target} add primary key ({keys})")
        elif config.mode == "append":
            changes = _evolve(connection, target, existing, config)
            result = connection.execute(
                f"insert into {target} by name select * from {_INPUT}"
            ).fetchone()
            rows = int(result[0]) if result else 0
        elif config.mode == "apply":
            changes = _evolve(connection, target, existing, config)
            rows = _apply(connection, target, source, config)
        else:
            changes = _evolve(connection, target, existing, config)
            rows = _merge(connection, target, config)
        connection.execute(f"drop view {_INPUT}")
        _run_hooks(connection, ctx.hooks_after, path)
        write_state(execute, ctx.pipeline, ctx.task_id, ctx.pending_watermarks, ctx.run_id)
        record_load(execute, ctx.pipeline, ctx.task_id, ctx.run_id, rows)
        fault_point("duckdb.before_commit")
        connection.execute("commit")
        fault_point("duckdb.after_commit")
    except BaseException as exc:
        with contextlib.suppress(duckdb.Error):  # the failure may have ended the transaction
            connection.execute("rollback")
        if isinstance(exc, duckdb.Error):
            if cancel is not None:
                cancel.raise_if_cancelled()
            raise translate(exc, what, path) from None
        raise
    finally:
        if unregister:
            unregister()
        connection.close()
    details: dict[str, Any] = {"mode": config.mode}
    if view:
        details["view_of"] = {"task": source.task_id, "run": source.run_id}
    if changes:
        details["schema_changes"] = changes
    return SinkResult(rows, f"duckdb:{path}#{config.table}", details, ctx.pending_watermarks)

"""Watermarks kept in a DuckDB sink's file (see connectors.state)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors.base import ConnectorContext
from connectors.duckdb.config import DuckDBSink
from connectors.duckdb.errors import translate
from connectors.state import STATE_TABLE, delete_state, ensure_state_table, read_state, write_state
from engine.core.sqltext import quote_identifier
from engine.core.watermark import Watermark, WatermarkUpdate

if TYPE_CHECKING:
    import duckdb

__all__ = ["delete", "prepare", "put", "read"]

_DDL_LOCKS: dict[Path, threading.Lock] = {}
_DDL_LOCKS_GUARD = threading.Lock()


def prepare(connection: duckdb.DuckDBPyConnection, path: Path, schema: str | None = None) -> None:
    """Create arrowline_state's tables (and the load's target `schema`) when they are missing,
    each committed at once, before the load's own transaction begins.

    Two loads into one file in one process (DuckDB lets only one process write a file) that
    both create the same new schema inside their transactions collide: "Catalog write-write
    conflict", and one of them failed its first attempt. A lock per file serializes the
    creation; the later `if not exists` finds the committed objects and writes nothing.
    """
    with _DDL_LOCKS_GUARD:
        lock = _DDL_LOCKS.setdefault(path.resolve(), threading.Lock())
    with lock:
        ensure_state_table(lambda sql, params: connection.execute(sql, list(params)))
        if schema:  # in the file's own catalog: `marts` alone is ambiguous in marts.duckdb
            catalog = connection.execute("select current_database()").fetchall()[0][0]
            connection.execute(
                f"create schema if not exists {quote_identifier(catalog)}."
                f"{quote_identifier(schema)}"
            )


def _path(config: DuckDBSink, ctx: ConnectorContext) -> Path:
    path = Path(config.path).expanduser()
    return path if path.is_absolute() else ctx.base_dir / path


def read(config: DuckDBSink, ctx: ConnectorContext) -> dict[str, tuple[Watermark, str]]:
    import duckdb

    path = _path(config, ctx)
    if not path.exists():
        return {}
    # A plain connection, as the loads open: in one process DuckDB shares one open database
    # among connections of one configuration and refuses a second one, so a read-only
    # connection here would fail a load of the same file starting meanwhile (or fail itself
    # beside a running one). Read-only only when another process holds the file that way.
    try:
        connection = duckdb.connect(str(path))
    except duckdb.Error:
        try:
            connection = duckdb.connect(str(path), read_only=True)
        except duckdb.Error as exc:
            raise translate(exc, f"reading watermarks from {path.name}") from None
    try:
        schema, table = STATE_TABLE.split(".")
        exists = connection.execute(
            "select count(*) from information_schema.tables "
            "where table_schema = $1 and table_name = $2",
            [schema, table],
        ).fetchone()
        if not exists or not exists[0]:
            return {}

        def query(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            return connection.execute(sql, list(params)).fetchall()

        return read_state(query, ctx.pipeline, ctx.task_id)
    finally:
        connection.close()


def _write(config: DuckDBSink, ctx: ConnectorContext, action: Any) -> None:
    import duckdb

    path = _path(config, ctx)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        connection = duckdb.connect(str(path))
    except duckdb.Error as exc:
        raise translate(exc, f"writing watermarks to {path.name}", path) from None
    try:
        prepare(connection, path)
        connection.execute("begin")
        action(lambda sql, params: connection.execute(sql, list(params)))
        connection.execute("commit")
    finally:
        connection.close()


def put(config: DuckDBSink, ctx: ConnectorContext, updates: Sequence[WatermarkUpdate]) -> None:
    _write(
        config,
        ctx,
        lambda execute: write_state(execute, ctx.pipeline, ctx.task_id, updates, ctx.run_id),
    )


def delete(config: DuckDBSink, ctx: ConnectorContext, task: str | None) -> None:
    if not _path(config, ctx).exists():
        return

    def action(execute: Any) -> None:
        ensure_state_table(execute)
        delete_state(execute, ctx.pipeline, ctx.task_id, task)

    _write(config, ctx, action)

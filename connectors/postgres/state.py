"""Watermarks kept in a PostgreSQL sink's database (see connectors.state)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connectors.base import ConnectorContext
from connectors.postgres.config import PostgresSink
from connectors.postgres.connection import Session
from connectors.state import (
    LOADS_TABLE,
    STATE_TABLE,
    delete_state,
    ensure_state_table,
    read_state,
    write_state,
)
from engine.core.locking import advisory_key
from engine.core.sqltext import quote_identifier
from engine.core.watermark import Watermark, WatermarkUpdate

__all__ = ["delete", "prepare", "put", "read"]

_DDL_LOCK = advisory_key("arrowline:sink", "create")
"""One lock per database for the DDL of every arrowline load into it."""


def prepare(session: Session, schema: str | None = None) -> None:
    """Create arrowline_state's tables (and the load's target `schema`) when they are missing,
    and commit, before the load's own transaction begins.

    `create ... if not exists` is not safe against itself: two sessions creating the same new
    schema at once both find it missing, and the later insert into pg_namespace (or pg_type)
    fails with a unique violation (23505), so two loads into a database that never had one
    failed their first run. A transaction-scoped advisory lock serializes the creation; the
    waiter's `if not exists` then sees the winner's committed objects. Once everything exists
    no lock is taken, so loads never wait on each other here.
    """
    checks = ["to_regclass($1) is null", "to_regclass($2) is null"]
    parameters = [STATE_TABLE, LOADS_TABLE]
    if schema:
        checks.append("not exists (select 1 from pg_namespace where nspname = $3)")
        parameters.append(schema)
    (missing,) = session.rows(
        "select " + " or ".join(checks), parameters, what="cannot read arrowline_state"
    )[0]
    if not missing:
        return
    session.rows(
        "select pg_advisory_xact_lock(cast($1 as int), cast($2 as int))",
        _DDL_LOCK,
        what="cannot take the lock for creating arrowline_state",
    )
    ensure_state_table(
        lambda sql, params: session.execute(
            sql, tuple(params) or None, what="cannot create arrowline_state"
        )
    )
    if schema:
        session.execute(
            f"create schema if not exists {quote_identifier(schema)}",
            what=f"cannot create schema {schema}",
        )
    session.commit()


def read(config: PostgresSink, ctx: ConnectorContext) -> dict[str, tuple[Watermark, str]]:
    with Session(ctx.connection(config.connection), autocommit=True) as session:
        (exists,) = session.rows("select to_regclass($1) is not null", (STATE_TABLE,))[0]
        if not exists:
            return {}
        return read_state(
            lambda sql, params: session.rows(sql, tuple(params)), ctx.pipeline, ctx.task_id
        )


def _write(config: PostgresSink, ctx: ConnectorContext, action: Any) -> None:
    with Session(ctx.connection(config.connection)) as session:
        prepare(session)
        action(lambda sql, params: session.execute(sql, tuple(params) or None))
        session.commit()


def put(config: PostgresSink, ctx: ConnectorContext, updates: Sequence[WatermarkUpdate]) -> None:
    _write(
        config,
        ctx,
        lambda execute: write_state(execute, ctx.pipeline, ctx.task_id, updates, ctx.run_id),
    )


def delete(config: PostgresSink, ctx: ConnectorContext, task: str | None) -> None:
    def action(execute: Any) -> None:
        ensure_state_table(execute)
        delete_state(execute, ctx.pipeline, ctx.task_id, task)

    _write(config, ctx, action)

"""Watermarks kept in a PostgreSQL sink's database (see connectors.state)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connectors.base import ConnectorContext
from connectors.postgres.config import PostgresSink
from connectors.postgres.connection import Session
from connectors.state import STATE_TABLE, delete_state, ensure_state_table, read_state, write_state
from connectors.watermark import Watermark, WatermarkUpdate

__all__ = ["delete", "put", "read"]


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

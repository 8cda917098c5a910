"""Watermarks a Delta sink keeps in its table's commit log (connectors.delta.table's ledger).

`arrowline state set` and `reset` write them as a commit that adds no row, so the table's
newest entry stays the truth (it keeps naming the last load's run, so a resume of that run still
finds its load committed); a table that does not exist yet has nothing to hold them.
"""

from __future__ import annotations

from collections.abc import Sequence

from connectors.base import ConnectorContext
from connectors.delta.config import DeltaSink
from connectors.delta.table import (
    LEDGER_KEY,
    Load,
    app_id,
    last_load,
    located,
    open_table,
    translate,
)
from connectors.state import with_changes
from engine.core.errors import StateError
from engine.core.watermark import Watermark, WatermarkUpdate

__all__ = ["delete", "put", "read"]


def read(config: DeltaSink, ctx: ConnectorContext) -> dict[str, tuple[Watermark, str]]:
    table = open_table(located(config, ctx))
    if table is None:
        return {}
    load = last_load(table, ctx.pipeline, ctx.task_id)
    return dict(load.watermarks) if load is not None else {}


def _commit(
    config: DeltaSink, ctx: ConnectorContext, change: dict[str, tuple[Watermark, str] | None]
) -> None:
    """A commit of no rows whose ledger entry is the last one with `change` applied."""
    from deltalake import CommitProperties, Transaction, write_deltalake

    from connectors.delta.table import arrow_schema

    location = located(config, ctx)
    table = open_table(location)
    if table is None:
        raise StateError(
            f"the Delta table {location} does not exist yet, so it cannot hold watermarks",
            hint="run the pipeline once first; its load creates the table",
        )
    earlier = last_load(table, ctx.pipeline, ctx.task_id)
    watermarks = with_changes(earlier.watermarks if earlier else {}, change)
    if earlier is None and not watermarks:
        return
    sequence = (earlier.sequence if earlier else 0) + 1
    # the entry still names the last load's run, so a resume of that run finds it committed
    run_id, rows = (earlier.run_id, earlier.rows) if earlier else (ctx.run_id, 0)
    entry = Load(0, run_id, rows, sequence, watermarks, earlier.runs if earlier else {})
    try:
        write_deltalake(
            table,
            arrow_schema(table).empty_table(),
            mode="append",
            commit_properties=CommitProperties(
                custom_metadata={LEDGER_KEY: entry.entry(ctx.pipeline, ctx.task_id)},
                app_transactions=[Transaction(app_id(ctx.pipeline, ctx.task_id), sequence)],
            ),
        )
    except Exception as exc:
        raise translate(exc, f"writing watermarks to the Delta table {location}") from None


def put(config: DeltaSink, ctx: ConnectorContext, updates: Sequence[WatermarkUpdate]) -> None:
    _commit(config, ctx, {u.task_id: (u.watermark, ctx.run_id) for u in updates})


def delete(config: DeltaSink, ctx: ConnectorContext, task: str | None) -> None:
    location = located(config, ctx)
    table = open_table(location)
    if table is None:
        return
    earlier = last_load(table, ctx.pipeline, ctx.task_id)
    if earlier is None:
        return
    tasks = [task] if task is not None else list(earlier.watermarks)
    _commit(config, ctx, dict.fromkeys(tasks))

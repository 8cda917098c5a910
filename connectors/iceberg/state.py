"""Watermarks an Iceberg sink keeps in its table's properties (connectors.iceberg.catalog).

`arrowline state set` and `reset` rewrite the load's ledger entry in a metadata-only commit;
the entry keeps naming the last load's run, so a resume of that run still finds it committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connectors.base import ConnectorContext
from connectors.iceberg.catalog import Load, catalog_for, ledger_key, load_table
from connectors.iceberg.config import IcebergSink
from connectors.state import with_changes
from engine.core.errors import StateError
from engine.core.watermark import Watermark, WatermarkUpdate

__all__ = ["delete", "put", "read"]


def read(config: IcebergSink, ctx: ConnectorContext) -> dict[str, tuple[Watermark, str]]:
    with catalog_for(config, ctx) as catalog:
        table = load_table(catalog, config.table)
    load = Load.of(table, ctx.pipeline, ctx.task_id) if table is not None else None
    return dict(load.watermarks) if load is not None else {}


def _commit(
    config: IcebergSink, ctx: ConnectorContext, change: dict[str, tuple[Watermark, str] | None]
) -> None:
    with catalog_for(config, ctx) as catalog:
        _commit_in(catalog, config, ctx, change)


def _commit_in(
    catalog: Any,
    config: IcebergSink,
    ctx: ConnectorContext,
    change: dict[str, tuple[Watermark, str] | None],
) -> None:
    table = load_table(catalog, config.table)
    if table is None:
        raise StateError(
            f"the Iceberg table {config.table} does not exist yet, so it cannot hold watermarks",
            hint="run the pipeline once first; its load creates the table",
        )
    earlier = Load.of(table, ctx.pipeline, ctx.task_id)
    watermarks = with_changes(earlier.watermarks if earlier else {}, change)
    if earlier is None and not watermarks:
        return
    run_id, rows = (earlier.run_id, earlier.rows) if earlier else (ctx.run_id, 0)
    sequence = (earlier.sequence if earlier else 0) + 1
    runs = earlier.runs if earlier else {}
    entry = Load(run_id, rows, sequence, watermarks=watermarks, runs=runs)
    with table.transaction() as tx:
        tx.set_properties({ledger_key(ctx.pipeline, ctx.task_id): entry.to_json()})


def put(config: IcebergSink, ctx: ConnectorContext, updates: Sequence[WatermarkUpdate]) -> None:
    _commit(config, ctx, {u.task_id: (u.watermark, ctx.run_id) for u in updates})


def delete(config: IcebergSink, ctx: ConnectorContext, task: str | None) -> None:
    with catalog_for(config, ctx) as catalog:
        table = load_table(catalog, config.table)
    earlier = Load.of(table, ctx.pipeline, ctx.task_id) if table is not None else None
    if earlier is None:
        return
    tasks = [task] if task is not None else list(earlier.watermarks)
    _commit(config, ctx, dict.fromkeys(tasks))

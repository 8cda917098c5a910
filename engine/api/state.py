"""`arrowline state show|set|reset`: look at and change watermarks, by hand, with an audit trail.

A change is applied where the watermark lives (each transactional sink's state table) and to the
catalog's mirror, and every change leaves an audit row saying who changed what from what to what.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from connectors.base import ConnectorContext
from connectors.registry import sink_state
from engine.core.errors import SelectionError
from engine.core.problems import did_you_mean
from engine.core.watermark import Watermark, WatermarkUpdate
from engine.execution.connections import resolve_plan_connections
from engine.execution.watermarks import NO_SINK
from engine.planning.build import Plan, PlannedTask, build_plan
from engine.spec.definition import Definition
from engine.state.catalog import Catalog, CatalogReader
from engine.state.db import CatalogLocation

__all__ = [
    "StateRow",
    "change_streams",
    "parse_value",
    "reset_state",
    "set_state",
    "show_state",
    "source_status",
]


@dataclass(frozen=True)
class StateRow:
    task_id: str
    sink_id: str
    where: str
    """'catalog' or the sink's target."""
    value: str | None
    run_id: str | None
    note: str = ""


def _incremental(plan: Plan, task_id: str | None) -> list[PlannedTask]:
    tasks = [t for t in plan.tasks if t.incremental]
    if task_id is None:
        return tasks
    chosen = [t for t in tasks if task_id in (t.id, t.spec.expanded_from)]  # or all it became
    if not chosen:
        names = [t.id for t in tasks]
        raise SelectionError(
            f"{task_id!r} is not an incremental extract of {plan.pipeline}."
            f"{did_you_mean(task_id, names)} Incremental extracts: {', '.join(names) or 'none'}"
        )
    return chosen


def _context(
    plan: Plan, connections: dict[str, Any], sink_id: str, run_id: str | None = None
) -> ConnectorContext:
    return ConnectorContext(
        base_dir=plan.base_dir,
        pipeline=plan.pipeline,
        run_id=run_id or "manual",
        task_id=sink_id,
        connections=connections,
    )


def _sinks(task: PlannedTask) -> list[tuple[str, Any]]:
    return list(task.watermark_sinks) or [(NO_SINK, None)]


def show_state(
    definition: Definition, location: CatalogLocation, task_id: str | None = None
) -> list[StateRow]:
    plan = build_plan(definition)
    connections = resolve_plan_connections(plan)
    rows: list[StateRow] = []
    with Catalog(location) as catalog:
        for task in _incremental(plan, task_id):
            mirror = {r.sink_id: r for r in catalog.watermarks(plan.pipeline, task.id)}
            for sink_id, config in _sinks(task):
                row = mirror.get(sink_id)
                catalog_value = Watermark.from_json(row.value) if row else None
                rows.append(
                    StateRow(
                        task.id,
                        sink_id,
                        "catalog",
                        catalog_value.describe() if catalog_value else None,
                        row.run_id if row else None,
                    )
                )
                state = sink_state(config) if config is not None else None
                if state is None:
                    continue
                try:
                    stored = state.read(config, _context(plan, connections, sink_id)).get(task.id)
                except Exception as exc:  # an unreachable sink is shown, not fatal
                    rows.append(
                        StateRow(task.id, sink_id, "sink", None, None, f"unreadable: {exc}")
                    )
                    continue
                value = stored[0] if stored else None
                note = (
                    ""
                    if value == catalog_value
                    else "differs from the catalog; the sink's value is used"
                )
                rows.append(
                    StateRow(
                        task.id,
                        sink_id,
                        "sink",
                        value.describe() if value else None,
                        stored[1] if stored else None,
                        note,
                    )
                )
    return rows


def _apply(
    definition: Definition,
    location: CatalogLocation,
    task_id: str | None,
    value: Watermark | None,
    action: str,
) -> list[str]:
    plan = build_plan(definition)
    connections = resolve_plan_connections(plan)
    changed = []
    with Catalog(location) as catalog:
        for task in _incremental(plan, task_id):
            for sink_id, config in _sinks(task):
                state = sink_state(config) if config is not None else None
                if state is not None:
                    ctx = _context(plan, connections, sink_id)
                    if value is None:
                        state.delete(config, ctx, task.id)
                    else:
                        state.put(config, ctx, [WatermarkUpdate(task.id, value)])
                catalog.set_watermark(
                    plan.pipeline,
                    task.id,
                    sink_id,
                    value.to_json() if value else None,
                    action=action,
                )
                changed.append(f"{task.id} -> {sink_id or '(no load)'}")
    return changed


def set_state(
    definition: Definition, location: CatalogLocation, task_id: str, value: Watermark
) -> list[str]:
    return _apply(definition, location, task_id, value, "set")


def reset_state(
    definition: Definition, location: CatalogLocation, task_id: str | None
) -> list[str]:
    return _apply(definition, location, task_id, None, "reset")


def parse_value(text: str, kind: str = "auto") -> Any:
    """A cursor or key value typed on the command line."""
    if kind == "int" or (kind == "auto" and text.lstrip("-").isdigit()):
        return int(text)
    if kind == "date" or (kind == "auto" and len(text) == 10 and text[4] == "-" and text[7] == "-"):
        return date.fromisoformat(text)
    if kind in ("auto", "timestamp"):
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            if kind == "timestamp":
                raise
    if kind == "decimal":
        try:
            return Decimal(text)
        except InvalidOperation:
            raise ValueError(f"{text!r} is not a decimal number") from None
    return text


def source_status(
    definition: Definition, location: CatalogLocation, task_id: str | None = None
) -> list[dict[str, Any]]:
    """What each extract's source holds at its server between runs (a replication slot), with
    the position its loads committed, as the catalog mirrors it: one dict per such extract."""
    plan = build_plan(definition)
    connections = resolve_plan_connections(plan)
    found: list[dict[str, Any]] = []
    tasks = [t for t in plan.tasks if t.spec.extract is not None and t.spec.connector]
    if task_id is not None:  # a task written as several names them all
        tasks = [t for t in tasks if task_id in (t.id, t.spec.expanded_from)] or tasks
    if task_id is not None and not any(task_id in (t.id, t.spec.expanded_from) for t in tasks):
        names = [t.id for t in tasks]
        raise SelectionError(
            f"no extract {task_id!r} in {plan.pipeline}.{did_you_mean(task_id, names)}"
        )
    catalog = CatalogReader(location) if location.exists() else None
    try:
        for task in tasks:
            values = catalog.watermarks(plan.pipeline, task.id) if catalog else []
            committed = Watermark.least([Watermark.from_json(r.value) for r in values] or [None])
            ctx = _context(plan, connections, task.id, "status")
            ctx.watermark = committed
            last = catalog.last_success(plan.pipeline, task.id) if catalog else None
            ctx.previous = (last.details or {}) if last is not None else {}
            assert task.spec.connector is not None
            assert task.spec.extract is not None
            status = task.spec.connector.source_status(task.spec.extract, ctx)
            if status is not None:
                found.append({"task": task.id, **status})
    finally:
        if catalog is not None:
            catalog.close()
    return found


def change_streams(definition: Definition, task_id: str | None = None) -> list[str]:
    """The extracts (of `task_id`, or all) that read a change stream: resetting one makes its
    next run read the whole table again, starting its source over (a new replication slot)."""
    from connectors.base import NamingContext

    plan = build_plan(definition)
    found = []
    for task in plan.tasks:
        owner, config = task.spec.connector, task.spec.extract
        if owner is None or config is None or (task_id is not None and task.id != task_id):
            continue
        if owner.place(config, NamingContext(plan.base_dir)).generated:
            found.append(task.id)
    return found

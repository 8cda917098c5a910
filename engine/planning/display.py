"""How a plan and a lineage answer show in a notebook.

A plan: its task graph (tasks it reuses drawn as REUSED), then a table of what each task
reads, writes, and why it runs or whose output it reuses, as `arrowline plan` says it. A
lineage answer: the column's sources (or dependents) as a tree, and what could not be
resolved. engine.api.notebook shows the other objects a notebook meets; these live here
because `Plan` does, and this layer may not import that one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from engine.core.html import badge, block, figure, heading, table, tree
from engine.views.svg import STATE_COLOURS, TaskBox, dag_svg

if TYPE_CHECKING:
    from engine.planning.build import Plan

__all__ = ["lineage_html", "plan_boxes", "plan_html"]


def plan_boxes(plan: Plan) -> list[TaskBox]:
    """The plan's graph: each task's box, a reused one marked so."""
    boxes = []
    for task in plan.tasks:
        reused = task.action == "reuse"
        why = task.cache.reason if task.cache is not None else None
        boxes.append(
            TaskBox(
                task.id,
                task.kind.value,
                tuple(up for up in task.upstream if up in plan),
                state="REUSED" if reused else None,
                note=f"reuses {task.reuse_run}" if reused else None,
                title=" · ".join(part for part in (task.id, task.kind.value, why) if part),
            )
        )
    return boxes


def plan_html(plan: Plan, *, decisions: bool = True) -> str:
    """The plan; without `decisions`, only the graph and what each task reads and writes (a
    pipeline as defined, before any catalog weighs in)."""
    columns = ["task", "kind", "reads", "output", "defined at"]
    if decisions:
        columns[2:2] = ["action", "why"]
    rows = []
    for task in plan.tasks:
        row: list[object] = [
            task.id,
            task.kind.value,
            ", ".join(task.inputs),
            task.describe_output(),
            task.defined_at or "",
        ]
        if decisions:
            action = badge("reuse", *STATE_COLOURS["REUSED"]) if task.action == "reuse" else "run"
            why = task.cache.reason if task.cache is not None else ""
            row[2:2] = [action, why]
        rows.append(row)
    params = ", ".join(f"{k}={v}" for k, v in plan.shown_params().items())
    facts: list[object] = [f"{len(plan.tasks)} tasks"]
    if decisions:
        facts = [f"run {plan.run_id}", f"{len(plan.to_run)} of {len(plan.tasks)} tasks to run"]
    return block(
        heading(f"pipeline {plan.pipeline}", *facts, f"params: {params}" if params else None),
        figure(dag_svg(plan_boxes(plan))) if plan.tasks else "",
        table(columns, rows, empty="no tasks"),
    )


def lineage_html(report: Mapping[str, Any]) -> str:
    """A lineage report (engine.planning.lineage) as a tree, with its unresolved references
    and the outside sources it names."""
    direction = str(report.get("direction", "upstream"))
    parts = [
        heading(
            str(report.get("column", "")),
            "sources" if direction == "upstream" else "dependents",
            f"as run {report['run_id']} recorded it" if report.get("run_id") else "as defined now",
        ),
        tree(
            report.get("tree") or {},
            empty="no dependents" if direction == "downstream" else "no sources",
        ),
    ]
    external = report.get("external") or {}
    if external:
        parts.append(table(["column", "comes from outside"], sorted(external.items())))
    unresolved = [
        (task, reason)
        for task, reasons in (report.get("unresolved") or {}).items()
        for reason in reasons
    ]
    if unresolved:
        parts.append(table(["unresolved in", "why"], unresolved))
    return block(*parts)

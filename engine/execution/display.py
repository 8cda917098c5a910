"""How a run's result shows in a notebook: its outcome, a table of its tasks (state, attempts,
rows, time, error) and the Gantt chart of their attempts.

The chart is drawn from the catalog's transitions, as the web monitor draws it, so retries,
backoff and waits for a pool's slot are bars of their own; when the catalog cannot be read
(the project moved, another host's catalog), each task's first start and last end stand in.
engine.api.notebook shows the other objects a notebook meets; this one lives here because
`RunResult` does, and this layer may not import that one.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from engine.core.errors import ArrowlineError
from engine.core.html import Html, badge, block, figure, heading, number, seconds, table
from engine.views.svg import STATE_COLOURS
from engine.views.timeline import Step, gantt_svg, timeline

if TYPE_CHECKING:
    from engine.execution.results import RunResult

__all__ = ["result_html", "state_badge"]

_COLUMNS = ("task", "kind", "state", "attempts", "rows in", "rows out", "rejected", "time", "note")
_NUMBERS = {"attempts", "rows in", "rows out", "rejected", "time"}


def state_badge(state: str) -> Html:
    return badge(state, *STATE_COLOURS.get(state, ("#ffffff", "#1f2733")))


def result_html(result: RunResult) -> str:
    kinds = {task.id: task.kind.value for task in result.plan.tasks}
    inlined = {t.id for t in result.plan.tasks if t.spec.sql and t.spec.materialize == "ephemeral"}
    rows = []
    for task_id, task in result.tasks.items():
        reused = task.reused_from is not None
        note = (
            f"reused from {task.reused_from}"
            if reused
            else "inlined into its readers"
            if task_id in inlined and not task.error
            else (task.error or "").splitlines()[0][:300]
            if task.error
            else ""
        )
        rows.append(
            (
                task_id,
                kinds.get(task_id, ""),
                state_badge("REUSED" if reused else task.state.value),
                "" if reused else task.attempts,
                "" if reused or task_id in inlined else number(task.rows_in),
                "" if reused or task_id in inlined else number(task.rows_out),
                number(task.rows_rejected) if task.rows_rejected else "",
                "" if reused else seconds(task.duration_s),
                note,
            )
        )
    steps, source = _steps(result)
    bars = timeline(steps)
    chart = figure(gantt_svg(bars), source) if bars else ""
    return block(
        heading(
            f"run {result.run_id}",
            f"pipeline {result.pipeline}",
            state_badge(result.state.value),
            seconds(result.duration_s),
            f"{len(result.tasks)} tasks",
        ),
        table(_COLUMNS, rows, right=_NUMBERS, empty="no tasks ran"),
        chart,
    )


def _steps(result: RunResult) -> tuple[list[Step], str | None]:
    """The run's transitions from its catalog, or each task's start and end from the result."""
    from engine.state.catalog import CatalogReader
    from engine.state.layout import ProjectLayout
    from engine.state.values import parse

    try:
        with CatalogReader(ProjectLayout.at(result.project_dir).catalog) as catalog:
            return [
                Step(t.task_id, t.to_state, parse(t.at), t.attempt, t.error)
                for t in catalog.transitions(result.run_id)
                if t.task_id is not None
            ], None
    except (ArrowlineError, OSError) as exc:
        reason = exc.message if isinstance(exc, ArrowlineError) else str(exc)
        steps = []
        for task_id, task in result.tasks.items():
            if task.started_at and task.ended_at:
                start = datetime.fromisoformat(task.started_at)
                steps.append(Step(task_id, "RUNNING", start, task.attempts))
                steps.append(Step(task_id, task.state.value, datetime.fromisoformat(task.ended_at)))
        return steps, f"each task from its first start to its end (the catalog: {reason})"

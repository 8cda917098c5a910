"""What the pictures draw, read from a project: a pipeline's task graph (as defined now, or as a
run planned it, with that run's states), and a run's timeline. The drawing itself is
engine.views'; the CLI, the web monitor, exported reports and notebooks all come through here.

    boxes = task_boxes(project, "orders")                 # as defined now
    boxes = task_boxes(project, "orders", run="last")     # as the last run planned and ran it
    svg = dag_svg(boxes)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from engine.core.states import RunState
from engine.state.catalog import CatalogReader, RunRow, TaskRunRow
from engine.state.values import parse
from engine.views.svg import TaskBox, dag_svg
from engine.views.text import dag_dot, dag_mermaid
from engine.views.timeline import Bar, Step, timeline

if TYPE_CHECKING:
    from engine.api.project import PipelineLike, Project

__all__ = ["GraphFormat", "draw_graph", "run_bars", "run_boxes", "task_boxes", "task_note"]

GraphFormat = Literal["svg", "mermaid", "dot"]
Href = Callable[[str], str | None]


def task_note(row: TaskRunRow | None) -> str | None:
    """A box's second line for a task that ran: rows out and time."""
    if row is None:
        return None
    parts = []
    if row.rows_out is not None:
        parts.append(f"{row.rows_out:,} rows")
    if row.duration_s is not None:
        parts.append(_seconds(row.duration_s))
    if row.attempts and row.attempts > 1:
        parts.append(f"{row.attempts} attempts")
    return " · ".join(parts) or None


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 10 else f"{value:.0f} s"


def task_boxes(
    project: Project, pipeline: PipelineLike, *, run: str | None = None, href: Href | None = None
) -> list[TaskBox]:
    """The boxes of a pipeline's graph: as planned now (no states), or, with `run`, as that run
    planned it with each task's state, rows and time."""
    if run is None:
        plan = project.plan(pipeline)
        return [
            TaskBox(t.id, t.kind.value, t.upstream, href=href(t.id) if href else None)
            for t in plan.tasks
        ]
    name = project.pipeline_name(pipeline) if isinstance(pipeline, str) else None
    if name is None:
        name = project.definition(pipeline).name
    row = project.catalog.run_of(name, run)
    return run_boxes(
        project.catalog,
        row,
        href=href,
        fallback=lambda: {t.id: t.upstream for t in project.plan(pipeline).tasks},
    )


def run_boxes(
    catalog: CatalogReader,
    run: RunRow,
    *,
    href: Href | None = None,
    reused_href: Callable[[str, str], str | None] | None = None,
    fallback: Callable[[], Mapping[str, Sequence[str]]] | None = None,
) -> list[TaskBox]:
    """A run's graph with its states. The graph is the one the run recorded; a run from before
    graphs were recorded is drawn with the edges `fallback()` gives (`{task: upstream}`, the
    pipeline as defined now; tasks it does not know are drawn unconnected). A task whose output
    an earlier run made links to that run's task (`reused_href(run_id, task)`)."""
    rows = {row.task_id: row for row in catalog.task_runs(run.run_id)}
    reused = catalog.reused(run.run_id)
    graph = catalog.monitor.run_graph(run.run_id)
    if graph is None:
        edges = fallback() if fallback else {}
        known = [*rows, *(t for t in reused if t not in rows)]
        graph = [
            (task_id, rows[task_id].kind if task_id in rows else "", tuple(edges.get(task_id, ())))
            for task_id in known
        ]
    boxes = []
    for task_id, kind, upstream in graph:
        row = rows.get(task_id)
        source = reused.get(task_id) if row is None else None
        state = row.state.value if row is not None else ("REUSED" if source else None)
        if row is not None:
            note, link = task_note(row), href(task_id) if href else None
        elif source:
            note = f"reused from {source[:15]}…" if len(source) > 16 else f"reused from {source}"
            link = reused_href(source, task_id) if reused_href else None
        else:
            note, link = "not in this run", None
        boxes.append(
            TaskBox(
                task_id,
                kind,
                upstream,
                state=state,
                note=note,
                href=link,
                title=_title(task_id, kind, row),
            )
        )
    return boxes


def _title(task_id: str, kind: str, row: TaskRunRow | None) -> str:
    parts = [task_id, kind]
    if row is not None:
        parts.append(row.state.value)
        if row.rows_in is not None:
            parts.append(f"in {row.rows_in:,}")
        if row.rows_out is not None:
            parts.append(f"out {row.rows_out:,}")
        if row.duration_s is not None:
            parts.append(_seconds(row.duration_s))
        if row.error:
            parts.append(row.error.splitlines()[0][:200])
    return " · ".join(parts)


def run_bars(catalog: CatalogReader, run: RunRow) -> list[Bar]:
    """The run's Gantt bars from its transitions (since its last resume); a running run's open
    bars end now."""
    transitions = catalog.transitions(run.run_id)
    # a resumed run: the timeline of its last resume (its earlier attempts came minutes or
    # days before, and would squeeze this one into a sliver)
    resumed = [t.at for t in transitions if t.task_id is None and t.event == "resumed"]
    since = resumed[-1] if resumed else ""
    steps = [
        Step(t.task_id, t.to_state, parse(t.at), t.attempt, t.error)
        for t in transitions
        if t.task_id is not None and t.at >= since
    ]
    running = run.state in (RunState.RUNNING, RunState.PENDING)
    return timeline(steps, now=datetime.now(UTC) if running else None)


def draw_graph(boxes: Sequence[TaskBox], fmt: GraphFormat) -> str:
    match fmt:
        case "svg":
            return dag_svg(boxes)
        case "mermaid":
            return dag_mermaid(boxes)
        case "dot":
            return dag_dot(boxes)

"""What the pictures draw, read from a project: a pipeline's task graph (as defined now, or as a
run planned it, with that run's states), and a run's timeline. The drawing itself is
engine.views'; the CLI, the web monitor, exported reports and notebooks all come through here.

    boxes = task_boxes(project, "orders")                 # as defined now
    boxes = task_boxes(project, "orders", run="last")     # as the last run planned and ran it
    boxes = task_boxes(project, "orders", select=["+enriched"], exclude=["tag:pii"])
    svg = dag_svg(boxes)

A selection (`--select`, `--exclude` of `arrowline graph` and `arrowline lineage`) is read as
`plan` reads it (engine.planning.select), against the pipeline as defined now: a picture shows
the tasks it names and nothing else, also of a run (`selected_tasks`, `lineage_within`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from engine.core.errors import SelectionError
from engine.core.graph import Graph
from engine.core.states import RunState
from engine.state.catalog import CatalogReader, RunRow, TaskRunRow
from engine.state.values import parse
from engine.views.svg import TaskBox, dag_svg
from engine.views.text import dag_dot, dag_mermaid
from engine.views.timeline import Bar, Step, timeline

if TYPE_CHECKING:
    from engine.api.project import PipelineLike, Project
    from engine.planning.build import Plan
    from engine.planning.lineage import LineageReport

__all__ = [
    "GraphFormat",
    "draw_graph",
    "lineage_within",
    "run_bars",
    "run_boxes",
    "selected_tasks",
    "task_boxes",
    "task_note",
]

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
    project: Project,
    pipeline: PipelineLike,
    *,
    run: str | None = None,
    href: Href | None = None,
    select: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    plan: Plan | None = None,
) -> list[TaskBox]:
    """The boxes of a pipeline's graph: as planned now (no states; `plan`, when the caller has
    made it), or, with `run`, as that run planned it with each task's state, rows and time.
    With `select` or `exclude`, only the tasks they name (see `selected_tasks`) and the edges
    among them."""
    if run is None:
        definition = project.definition(pipeline)
        plan = plan or project.plan(definition)
        chosen = selected_tasks(project, definition, select, exclude, plan=plan)
        boxes = [
            TaskBox(t.id, t.kind.value, t.upstream, href=href(t.id) if href else None)
            for t in plan.tasks
        ]
        return _only(boxes, chosen)
    chosen = selected_tasks(project, pipeline, select, exclude)
    name = project.pipeline_name(pipeline) if isinstance(pipeline, str) else None
    if name is None:
        name = project.definition(pipeline).name
    row = project.catalog.run_of(name, run)
    boxes = run_boxes(
        project.catalog,
        row,
        href=href,
        fallback=lambda: {t.id: t.upstream for t in project.plan(pipeline).tasks},
    )
    return _only(boxes, chosen)


def selected_tasks(
    project: Project,
    pipeline: PipelineLike,
    select: Sequence[str] | None,
    exclude: Sequence[str] | None,
    *,
    plan: Plan | None = None,
) -> set[str] | None:
    """The tasks `select` minus `exclude` name, or None when neither is given (every task).

    The grammar, and every error, are `plan`'s (engine.planning.select), read against the
    pipeline as defined now: its tasks, edges, tags, files, and `state:` against the catalog
    (before the first run every task is new). Nothing is planned to run, so an excluded task
    that a selected one reads is simply left out, where `plan` wants an output to reuse.
    `plan`: the pipeline's whole plan, when the caller has made it."""
    from engine.planning.select import select_tasks, selectable

    if not select and not exclude:
        return None
    definition = project.definition(pipeline)
    plan = plan or project.plan(definition)
    graph = Graph({task.id: task.upstream for task in plan.tasks})
    fingerprints = {t.id: t.cache.fingerprint for t in plan.tasks if t.cache is not None}
    catalog = project.catalog if project.layout.catalog.exists() else None
    tasks = selectable(definition, graph.order, fingerprints, catalog)
    return select_tasks(select, exclude, graph, tasks, definition.base_dir)


def _only(boxes: list[TaskBox], chosen: Collection[str] | None) -> list[TaskBox]:
    """The boxes of the chosen tasks, with the edges among them."""
    if chosen is None:
        return boxes
    return [
        replace(
            box,
            upstream=tuple(u for u in box.upstream if u in chosen),
            filtered_by=tuple(u for u in box.filtered_by if u in chosen),
        )
        for box in boxes
        if box.id in chosen
    ]


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


def lineage_within(report: Mapping[str, Any], tasks: Collection[str]) -> LineageReport:
    """A lineage answer (`Project.lineage`) walked through the columns of `tasks` alone: a
    branch ends before a column of a task left out, so what lies beyond it is not shown either
    (the tree of the lineage graph cut down to those tasks). A place outside the pipeline that
    an extract reads or a load writes (`<place>::column`) stays with its task. The unresolved
    and external notes keep the chosen tasks'. SelectionError when the column asked about is
    of a task left out: there is nothing to walk from."""
    from engine.planning.lineage import LineageReport

    column = str(report["column"])
    owner = column.partition(".")[0]
    if owner not in tasks:
        raise SelectionError(
            f"the selection leaves out task {owner!r}, whose column {column!r} is asked about",
            hint=f"add {owner} to --select (or take it out of --exclude): lineage walks the "
            "selected tasks' columns from it",
        )

    def kept(key: str) -> bool:
        node = key.rpartition(" (")[0] or key
        return "::" in node or node.partition(".")[0] in tasks

    def cut(tree: Mapping[str, Any]) -> dict[str, Any]:
        return {key: cut(below) for key, below in tree.items() if kept(key)}

    return LineageReport(
        {
            **report,
            "tree": cut(report["tree"]),
            "unresolved": {k: v for k, v in report["unresolved"].items() if k in tasks},
            "external": {k: v for k, v in report["external"].items() if k in tasks},
            "selected": sorted(tasks),
        }
    )

"""What a notebook shows for a project, one of its runs, and a pipeline built in Python.

    project = engine.open(".")
    project                      # its pipelines, each with its last run's state and time
    project.run_info()           # the last run: its graph coloured by state, its tasks, its
                                 # Gantt chart
    engine.Pipeline("orders")    # a pipeline built in Python: its task graph

The pictures are engine.views' (through engine.api.pictures, as the web monitor draws them),
the HTML fragments engine.core.html's: escaped, without scripts or links, so a saved notebook
shows the same thing anywhere. A plan, a run's result and a lineage answer show themselves
(engine.planning.display, engine.execution.display): they are made below this layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from engine.api.pictures import run_bars, run_boxes
from engine.core.errors import ArrowlineError, StateError
from engine.core.html import block, figure, heading, number, seconds, table
from engine.execution.display import state_badge
from engine.planning.display import plan_html
from engine.state.catalog import CatalogReader, RunRow, TaskRunRow
from engine.views.svg import TaskBox, dag_svg
from engine.views.timeline import Bar, gantt_svg

if TYPE_CHECKING:
    import polars as pl

    from engine.api.project import Builds
    from engine.api.reader import ProjectReader
    from engine.spec.definition import Definition

__all__ = ["RunInfo", "pipeline_html", "project_html", "run_info"]

_TASK_COLUMNS = (
    "task",
    "kind",
    "state",
    "attempts",
    "rows in",
    "rows out",
    "rejected",
    "time",
    "note",
)
_NUMBERS = {"attempts", "rows in", "rows out", "rejected", "time"}


def _when(text: str | None) -> str:
    """A catalog time as UTC, to the second."""
    if not text:
        return ""
    from engine.state.values import parse

    return parse(text).strftime("%Y-%m-%d %H:%M:%S UTC")


def _first_line(text: str | None, limit: int = 300) -> str:
    return text.splitlines()[0][:limit] if text else ""


# -- the project ----------------------------------------------------------------------------------


def project_html(reader: ProjectReader) -> str:
    """The project's pipelines (its pipeline files, and whatever else has runs in its catalog),
    each with its last run."""
    from engine.scheduling.discover import discover_pipelines

    files = discover_pipelines(reader.path)
    try:
        catalog: CatalogReader | None = reader.catalog
    except StateError:  # a project folder whose catalog is not there (yet)
        catalog = None
    names = sorted({*files, *(catalog.pipelines() if catalog is not None else ())})
    rows = []
    for name in names:
        last = catalog.last_run(name) if catalog is not None else None
        file = files.get(name)
        rows.append(
            (
                name,
                _relative(file, reader.path) if file is not None else "",
                last.run_id if last else "never run",
                state_badge(last.state.value) if last else "",
                _when(last.started_at) if last else "",
                seconds(last.duration_s) if last else "",
                _why(catalog, last) if catalog is not None and last else "",
            )
        )
    return block(
        heading(
            "arrowline project",
            str(reader.path),
            f"{len(names)} pipeline{'' if len(names) == 1 else 's'}",
        ),
        table(
            ("pipeline", "file", "last run", "state", "started", "took", "error"),
            rows,
            right={"took"},
            empty="no pipelines yet: no pipeline file in the folder, no runs in its catalog",
        ),
    )


def _why(catalog: CatalogReader, run: RunRow) -> str:
    """Why a run did not succeed: its first failed task's error, else its own."""
    if run.state.value == "FAILED":
        for task in catalog.task_runs(run.run_id):
            if task.error:
                return f"{task.task_id}: {_first_line(task.error, 160)}"
    return _first_line(run.error, 160)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


# -- a run ----------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RunInfo:
    """One run as a notebook shows it: `row` (the catalog's), `tasks` (a DataFrame of its task
    runs, as `project.tasks(run)` gives), the tasks it reused from earlier runs, and its
    pictures. Read once when made; it does not change as the run goes on."""

    row: RunRow
    tasks: pl.DataFrame
    task_rows: tuple[TaskRunRow, ...]
    reused: dict[str, str]
    """Task -> the earlier run whose output this run reused."""
    boxes: tuple[TaskBox, ...]
    bars: tuple[Bar, ...]

    @property
    def run_id(self) -> str:
        return self.row.run_id

    @property
    def pipeline(self) -> str:
        return self.row.pipeline

    @property
    def state(self) -> str:
        return self.row.state.value

    def __repr__(self) -> str:
        took = f" in {self.row.duration_s:.2f}s" if self.row.duration_s is not None else ""
        error = f": {_first_line(self.row.error, 200)}" if self.row.error else ""
        return f"<Run {self.pipeline} {self.run_id} {self.state}{took}{error}>"

    def _repr_html_(self) -> str:
        row = self.row
        rows: list[tuple[object, ...]] = [
            (
                t.task_id,
                t.kind,
                state_badge(t.state.value),
                t.attempts,
                number(t.rows_in),
                number(t.rows_out),
                number(t.rows_rejected) if t.rows_rejected else "",
                seconds(t.duration_s),
                _first_line(t.error),
            )
            for t in self.task_rows
        ]
        kinds = {box.id: box.kind for box in self.boxes}
        rows += [
            (task, kinds.get(task, ""), state_badge("REUSED"), "", "", "", "", "", f"from {run}")
            for task, run in self.reused.items()
        ]
        params = ", ".join(f"{k}={v}" for k, v in row.params.items())
        return block(
            heading(
                f"run {row.run_id}",
                f"pipeline {row.pipeline}",
                state_badge(row.state.value),
                f"started {_when(row.started_at)}" if row.started_at else "not started",
                seconds(row.duration_s),
                f"params: {params}" if params else None,
            ),
            f'<pre style="color:#8a1c12;white-space:pre-wrap">{escape(row.error)}</pre>'
            if row.error
            else "",
            figure(dag_svg(self.boxes)) if self.boxes else "",
            table(_TASK_COLUMNS, rows, right=_NUMBERS, empty="no tasks ran"),
            figure(gantt_svg(self.bars)) if self.bars else "",
        )


def run_info(reader: ProjectReader, run: str = "last", pipeline: str | None = None) -> RunInfo:
    """One run (an id, a prefix, or 'last': the catalog's newest, or `pipeline`'s)."""
    catalog = reader.catalog
    row = catalog.run_of(pipeline, run) if pipeline else catalog.run(run)
    return RunInfo(
        row=row,
        tasks=reader.tasks(row.run_id),
        task_rows=tuple(catalog.task_runs(row.run_id)),
        reused=catalog.reused(row.run_id),
        boxes=tuple(run_boxes(catalog, row)),
        bars=tuple(run_bars(catalog, row)),
    )


# -- a pipeline -----------------------------------------------------------------------------------


def pipeline_html(pipeline: Builds | Definition, name: str) -> str:
    """A pipeline's task graph and what each task reads and writes, as planned with its default
    parameters; its problems instead when it does not validate."""
    from engine.planning.build import build_plan
    from engine.spec.definition import Definition

    try:
        definition = pipeline if isinstance(pipeline, Definition) else pipeline.definition
        plan = build_plan(definition)
    except ArrowlineError as exc:
        return block(
            heading(f"pipeline {name}", state_badge("FAILED"), "does not plan"),
            f'<pre style="white-space:pre-wrap">{escape(str(exc))}</pre>',
        )
    return plan_html(plan, decisions=False)

"""What each page of the monitor shows, gathered from one `Project`: plain dicts for the templates
(engine.ui.templates), pictures already drawn (engine.views through engine.api.pictures).

Nothing here writes: actions are engine.ui.actions'. Every list is bounded (a page of runs, the
newest dead letters, the first rows of an output), so a page costs the same with 100,000 runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from threading import Lock
from typing import Any
from urllib.parse import quote

from markupsafe import Markup

from engine.api.pictures import run_bars, run_boxes
from engine.api.project import Project
from engine.core.errors import ArrowlineError, StateError
from engine.core.states import RunState
from engine.state.catalog import RunRow
from engine.state.rows import RequestRow
from engine.ui.definitions import Definitions
from engine.ui.details import drift, preview, quarantine, task_log
from engine.views.svg import TaskBox, dag_svg, sparkline_svg
from engine.views.timeline import gantt_svg

__all__ = ["Definitions", "Pages"]

PICK_COLUMNS = 5_000
DEAD_LETTERS = 200
"""Dead letters listed at most (newest first); a filter by pipeline narrows them."""
SILENT_AFTER = 60.0
"""Seconds without a heartbeat (the executor beats every 5) after which a running run is shown
as probably dead, and its page stops following it."""
KEPT_DRAWINGS = 32
"""Drawings of finished runs kept in memory (a 5,000-task one is ~1.5 MB of SVG)."""
RUNS_PER_PAGE = 50


def run_href(run_id: str) -> str:
    return f"/runs/{quote(run_id, safe='')}"


def task_href(run_id: str, task_id: str) -> str:
    return f"{run_href(run_id)}/tasks/{quote(task_id, safe='')}"


def pipeline_href(name: str) -> str:
    return f"/pipelines/{quote(name, safe='')}"


@dataclass
class Pages:
    project_dir: Path
    definitions: Definitions
    _lock: Lock = field(default_factory=Lock)
    _drawings: dict[tuple[object, ...], tuple[str | None, int]] = field(default_factory=dict)

    def project(self) -> Project:
        return Project.find(self.project_dir)

    def warm(self) -> None:
        """Find the project's pipeline files (each is read once per change) before the first
        page asks; a project that cannot be read now says so on its pages instead."""
        try:
            with self.project() as project:
                project.pipelines()
        except (ArrowlineError, OSError):
            return

    # -- overview ---------------------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        from engine.scheduling.cron import Schedule

        now = datetime.now(UTC)
        with self.project() as project:
            files = project.pipelines()
            has_catalog = project.layout.catalog.exists()
            known = project.catalog.pipelines() if has_catalog else []
            names = sorted(set(files) | set(known))
            rows = []
            for name in names:
                row: dict[str, Any] = {"name": name, "href": pipeline_href(name)}
                path = files.get(name)
                row["file"] = os.path.relpath(path, self.project_dir) if path else None
                if path is not None:
                    try:
                        spec = self.definitions.get(path).spec
                        row["schedule"] = spec.schedule
                        if spec.schedule:
                            row["next_run"] = Schedule(spec.schedule, spec.timezone).next_after(now)
                    except ArrowlineError as exc:
                        row["problem"] = str(exc).splitlines()[0]
                recent = project.catalog.monitor.recent_runs(name, 20) if name in known else []
                row["last"] = recent[0] if recent else None
                row["last_success"] = (
                    project.catalog.monitor.last_success(name) if name in known else None
                )
                row["trend"] = Markup(
                    sparkline_svg([(r.duration_s, r.state.value) for r in reversed(recent)])
                )
                schedule = project.catalog.schedule(name) if has_catalog else None
                row["paused"] = (
                    schedule.reason or "paused" if schedule and schedule.paused else None
                )
                if row["paused"]:
                    row.pop("next_run", None)
                row["attention"] = (
                    project.catalog.monitor.attention(name, recent[0].run_id if recent else None)
                    if name in known
                    else None
                )
                rows.append(row)
        return {"pipelines": rows, "project": str(self.project_dir)}

    # -- a pipeline -------------------------------------------------------------------------------

    def docs(self, name: str) -> dict[str, Any]:
        """A pipeline's documentation (engine.api.docs), as `arrowline docs` writes it."""
        from engine.api.docs import pipeline_docs

        with self.project() as project:
            path = project.pipelines().get(name)
            if path is None:
                raise LookupError(f"no pipeline file of {name!r} in {self.project_dir}")
            found = pipeline_docs(project, path)
        return {"docs": found, "svg": Markup(found.svg)}

    def pipeline(self, name: str, *, as_defined: bool = False) -> dict[str, Any]:
        with self.project() as project:
            path = project.pipelines().get(name)
            known = project.layout.catalog.exists() and name in project.catalog.pipelines()
            if path is None and not known:
                raise LookupError(f"no pipeline {name!r} in {self.project_dir}")
            last = project.catalog.last_run(name) if known else None
            context: dict[str, Any] = {"name": name, "last": last, "as_defined": as_defined}
            context["file"] = os.path.relpath(path, self.project_dir) if path else None
            # the file as written, secrets masked (a URI's password, `password:` keys, values
            # registered as secrets): the page and an exported report are shown to others
            context["source"] = self.definitions.source(path) if path else None
            graph_error = None
            svg, tasks = None, 0
            if last is not None and not as_defined:
                svg, tasks = self._run_drawing(project, last)
            elif path is not None:
                try:
                    svg, tasks = self.definitions.drawing(path, project)
                except ArrowlineError as exc:
                    graph_error = str(exc)
            context["graph"] = Markup(svg) if svg else None
            context["graph_error"] = graph_error
            context["tasks"] = tasks
            # paused before its first run too: the schedule is the catalog's, runs or not
            exists = project.layout.catalog.exists()
            context["schedule"] = project.catalog.schedule(name) if exists else None
            cron = self.definitions.schedule(path) if path is not None else None
            context["cron"] = f"{cron[0]} ({cron[1]})" if cron else None
            context["runs"] = project.catalog.monitor.recent_runs(name, 20) if known else []
        return context

    # -- runs -------------------------------------------------------------------------------------

    def runs(
        self,
        *,
        pipeline: str | None,
        state: RunState | None,
        since: datetime | None,
        until: datetime | None,
        after: str | None,
    ) -> dict[str, Any]:
        with self.project() as project:
            if not project.layout.catalog.exists():
                page_runs, next_key, pipelines = [], None, []
            else:
                page = project.catalog.monitor.runs_page(
                    pipeline=pipeline,
                    state=state,
                    since=since,
                    until=until,
                    after=after,
                    limit=RUNS_PER_PAGE,
                )
                page_runs, next_key = page.runs, page.next_key
                pipelines = project.catalog.pipelines()
        return {
            "runs": page_runs,
            "next_key": next_key,
            "pipelines": pipelines,
            "states": [s.value for s in RunState],
            "filters": {
                "pipeline": pipeline or "",
                "state": state.value if state else "",
                "since": since.date().isoformat() if since else "",
                "until": until.date().isoformat() if until else "",
            },
        }

    # -- a run ------------------------------------------------------------------------------------

    def run(self, run_id: str, *, links: bool = True) -> dict[str, Any]:
        """A run's page; without `links` (an exported report), nothing points at the server. A
        run queued with the scheduler and not started yet gets a page that waits for it."""
        with self.project() as project:
            try:
                run = project.catalog.run(run_id)
            except StateError:
                request = self._request(project, run_id)
                if request is None:
                    raise
                return {"queued": request, "live_url": f"{run_href(run_id)}/events"}
            return self._run(project, run, links)

    @staticmethod
    def _request(project: Project, run_id: str) -> RequestRow | None:
        if not project.layout.catalog.exists():
            return None
        return project.catalog.request_for_run(run_id)

    def run_of(self, pipeline: str, run_id: str, *, links: bool = True) -> dict[str, Any]:
        with self.project() as project:
            run = project.catalog.run_of(pipeline, run_id)
            return self._run(project, run, links)

    def _run_drawing(
        self, project: Project, run: RunRow, links: bool = True
    ) -> tuple[str | None, int]:
        """A run's DAG with its states (and its number of tasks). A run that ended does not
        change until it is resumed, so its drawing is kept under its state, end and resumes (the
        newest few); a running one is drawn afresh each time. A run recorded before runs kept
        their graph is drawn with the edges of the pipeline as its file defines it now."""
        key = (run.run_id, run.state.value, run.ended_at, run.resumes, links)
        finished = run.state not in (RunState.PENDING, RunState.RUNNING)
        with self._lock:
            kept = self._drawings.get(key)
        if kept is not None and finished:
            return kept
        href = (lambda t: task_href(run.run_id, t)) if links else None
        reused_href = task_href if links else None
        boxes = run_boxes(
            project.catalog,
            run,
            href=href,
            reused_href=reused_href,
            fallback=lambda: self._edges_now(project, run.pipeline),
        )
        drawn = (dag_svg(boxes) if boxes else None), len(boxes)
        if finished:
            with self._lock:
                self._drawings[key] = drawn
                while len(self._drawings) > KEPT_DRAWINGS:
                    self._drawings.pop(next(iter(self._drawings)))
        return drawn

    def _edges_now(self, project: Project, pipeline: str) -> dict[str, tuple[str, ...]]:
        path = project.pipelines().get(pipeline)
        if path is None:
            return {}
        try:
            return self.definitions.edges(path, project)
        except ArrowlineError:
            return {}

    def _run(self, project: Project, run: RunRow, links: bool = True) -> dict[str, Any]:
        catalog = project.catalog
        tasks = catalog.task_runs(run.run_id)
        svg, _ = self._run_drawing(project, run, links)
        bars = run_bars(catalog, run)
        hrefs = {row.task_id: task_href(run.run_id, row.task_id) for row in tasks}
        wall = run.duration_s or max((bar.end for bar in bars), default=0.0)
        busy = sorted(
            (row for row in tasks if row.duration_s),
            key=lambda row: -(row.duration_s or 0.0),
        )
        before = catalog.monitor.runs_page(
            pipeline=run.pipeline, after=f"{run.created_at}|{run.run_id}", limit=1
        ).runs
        ran = {row.task_id for row in tasks}
        reused = {t: source for t, source in catalog.reused(run.run_id).items() if t not in ran}
        return {
            "run": run,
            "previous": before[0].run_id if before else None,
            "tasks": tasks,
            "reused": [
                (task_id, source, task_href(source, task_id) if links else None)
                for task_id, source in reused.items()
            ],
            "hrefs": hrefs,
            "graph": Markup(svg) if svg else None,
            "gantt": Markup(gantt_svg(bars, href=hrefs if links else None)) if bars else None,
            "wall": wall,
            "time_went": [
                (row, (row.duration_s or 0.0) / wall * 100 if wall else 0.0) for row in busy[:10]
            ],
            "errors": [row for row in tasks if row.error],
            "live_url": f"{run_href(run.run_id)}/events" if _live(run) else None,
            "silent_since": run.heartbeat_at if _silent(run) else None,
            "pipeline_href": pipeline_href(run.pipeline),
        }

    def run_state(self, run_id: str) -> dict[str, Any]:
        """What the live page compares to decide whether to redraw: cheap, two small queries."""
        with self.project() as project:
            try:
                run = project.catalog.run(run_id)
            except StateError:
                request = self._request(project, run_id)
                if request is None or request.state == "skipped":
                    raise
                return {"state": "QUEUED", "live": True, "tasks": {}}
            tasks = project.catalog.task_runs(run.run_id)
        return {
            "state": run.state.value,
            "live": _live(run),
            "tasks": {row.task_id: [row.state.value, row.attempts] for row in tasks},
        }

    # -- a task of a run --------------------------------------------------------------------------

    def task(self, run_id: str, task_id: str) -> dict[str, Any]:
        with self.project() as project:
            catalog = project.catalog
            run = catalog.run(run_id)
            row = catalog.task_run(run.run_id, task_id)
            if row is None:
                raise LookupError(f"run {run.run_id} has no task {task_id!r}")
            transitions = catalog.transitions(run.run_id, task_id)
            previous = catalog.monitor.previous_output(run.pipeline, task_id, run.created_at)
            context: dict[str, Any] = {
                "run": run,
                "row": row,
                "transitions": transitions,
                "drift": drift(previous, row),
                "previous": previous,
                "run_href": run_href(run.run_id),
            }
            context["preview"], context["stats"], context["preview_error"] = preview(project, row)
            context["quarantine"] = quarantine(project, row)
            context["log"] = task_log(project.layout.run_log(run.pipeline, run.run_id), task_id)
        return context

    # -- lineage and dead letters -----------------------------------------------------------------

    def lineage(
        self, pipeline: str | None, column: str | None, *, downstream: bool = False
    ) -> dict[str, Any]:
        """A column's upstream or downstream graph, as the pipeline is defined now."""
        return _lineage(self, pipeline, column, downstream)

    def dead_letters(self, status: str, pipeline: str | None = None) -> dict[str, Any]:
        return _dead_letters(self, status, pipeline)

    def compare(self, a: str | None, b: str | None, threshold: float) -> dict[str, Any]:
        """Two runs side by side (engine.api.compare), the regressions past `threshold` %."""
        from engine.api.compare import compare_runs

        context: dict[str, Any] = {"a": a or "", "b": b or "", "threshold": threshold}
        if not a or not b:
            return context | {"comparison": None, "regressions": []}
        with self.project() as project:
            comparison = compare_runs(project.catalog, a, b)
        return context | {
            "comparison": comparison,
            "regressions": {r.task_id for r in comparison.regressions(threshold)},
        }


def _silent(run: RunRow) -> bool:
    """A run the catalog calls running whose process has not beaten for SILENT_AFTER seconds:
    it most likely died (the next run of its pipeline will mark it INTERRUPTED)."""
    if run.state not in (RunState.PENDING, RunState.RUNNING):
        return False
    beat = run.heartbeat_at or run.started_at or run.created_at
    age = (datetime.now(UTC) - datetime.fromisoformat(beat)).total_seconds()
    return age > SILENT_AFTER


def _live(run: RunRow) -> bool:
    return run.state in (RunState.PENDING, RunState.RUNNING) and not _silent(run)


def _lineage_boxes(report: dict[str, Any]) -> list[TaskBox]:
    """A lineage answer's tree as boxes: one per column, edges pointing downstream, dashed where
    a column filters rows rather than feeds values."""
    upstream: dict[str, list[str]] = {report["column"]: []}
    filters: dict[str, set[str]] = {}
    downstream = report["direction"] == "downstream"

    def walk(node: str, tree: dict[str, Any]) -> None:
        for key, below in tree.items():
            name, _, how = key.partition(" (")
            upstream.setdefault(name, [])
            source, target = (node, name) if downstream else (name, node)
            if source not in upstream[target]:
                upstream[target].append(source)
            if how.rstrip(")") == "filter":
                filters.setdefault(target, set()).add(source)
            walk(name, below)

    walk(report["column"], report["tree"])
    asked = report["column"]
    return [
        TaskBox(
            column,
            "column",
            tuple(up),
            state="SUCCESS" if column == asked else None,
            note="the column asked about" if column == asked else column.partition(".")[0],
            filtered_by=tuple(sorted(filters.get(column, ()))),
        )
        for column, up in upstream.items()
    ]


def _columns(project: Project, pipeline: str) -> list[str]:
    """`task.column` of every output of the pipeline's last run, to pick from (at most
    PICK_COLUMNS)."""
    if not project.layout.catalog.exists():
        return []
    last = project.catalog.last_run(pipeline)
    if last is None:
        return []
    found = [
        f"{row.task_id}.{field['name']}"
        for row in project.catalog.task_runs(last.run_id)
        for field in row.output_schema or ()
    ]
    return found[:PICK_COLUMNS]


def _lineage(
    pages: Pages, pipeline: str | None, column: str | None, downstream: bool
) -> dict[str, Any]:
    context: dict[str, Any] = {
        "pipeline": pipeline or "",
        "column": column or "",
        "downstream": downstream,
        "graph": None,
        "report": None,
        "error": None,
    }
    with pages.project() as project:
        context["pipelines"] = sorted(project.pipelines())
        chosen = pipeline or next(iter(context["pipelines"]), None)
        context["columns"] = _columns(project, chosen) if chosen else []
        if not pipeline or not column:
            return context
        if "." not in column:
            raise ValueError(f"give the column as task.column, not {column[:80]!r}")
        path = project.pipeline_file(pipeline)
        report = project.lineage(pages.definitions.get(path), column, downstream=downstream)
    context["report"] = report
    context["graph"] = Markup(dag_svg(_lineage_boxes(report), legend=False))
    return context


def _dead_letters(pages: Pages, status: str, pipeline: str | None) -> dict[str, Any]:
    with pages.project() as project:
        letters = (
            project.catalog.dead_letters(
                pipeline, status=None if status == "all" else status, limit=DEAD_LETTERS
            )
            if project.layout.catalog.exists()
            else []
        )
    return {
        "letters": letters,
        "status": status,
        "pipeline": pipeline or "",
        "more": len(letters) == DEAD_LETTERS,
        "run_href": run_href,
        "task_href": task_href,
    }

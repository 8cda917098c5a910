"""The application: one object per project that the CLI and notebooks call for everything they
do to it, over one `ProjectLayout`.

    import engine
    from engine.api.options import PlanOptions, RunOptions

    project = engine.open(".")                       # a project that has run before
    project.runs()                                   # the read side (engine.api.reader)
    result = project.run("orders", PlanOptions(params={"day": "2024-11-02"}))
    project.resume("orders", "last", options=RunOptions(max_parallel=2))

A pipeline is named the same way everywhere: a `Pipeline` built in Python, a `Definition`, a
file path, or the name of a pipeline file in the project (`pipeline: orders` in some YAML file
under the project folder).

The scheduler runs pipelines through engine.execution.launch, as `run` does here, and its
HTTP API reads the same layout; so a run started by hand, by a schedule or over HTTP is the
same run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

from engine.api.options import PlanOptions, RunOptions
from engine.api.reader import AmbiguousTask, ProjectReader
from engine.core.errors import SelectionError, StateError
from engine.core.problems import did_you_mean
from engine.execution import launch
from engine.planning.build import Plan, build_plan
from engine.spec.definition import Definition
from engine.spec.sqlproject import PROJECT_FILES
from engine.state.catalog import Catalog, CatalogReader
from engine.state.layout import ProjectLayout
from engine.tasks.checks import load_definition

if TYPE_CHECKING:
    from engine.api.state import StateRow
    from engine.core.watermark import Watermark
    from engine.execution.executor import RunResult
    from engine.planning.schemas import SchemaReport
    from engine.spec.model import RetryPolicy
    from engine.state.catalog import DeadLetterRow
    from engine.state.schedules import RequestRow

__all__ = ["AmbiguousTask", "Builds", "PipelineLike", "Project", "looks_like_file", "open"]


@runtime_checkable
class Builds(Protocol):
    """Something that builds a definition: `engine.Pipeline`, whose module calls this one (so
    this one names it by what it does)."""

    @property
    def definition(self) -> Definition: ...


PipelineLike: TypeAlias = "Builds | Definition | str | os.PathLike[str]"
"""A pipeline as every entry point takes it: built in Python, loaded, a file, or a name."""

_SUFFIXES = (".yaml", ".yml")


def looks_like_file(reference: str) -> bool:
    """Whether a pipeline given as text is a file (a YAML suffix, a folder in it, or an
    existing file) rather than a pipeline's name."""
    return (
        reference.endswith(_SUFFIXES)
        or "/" in reference
        or os.sep in reference
        or Path(reference).is_file()
        or any((Path(reference) / name).is_file() for name in PROJECT_FILES)  # SQL models
    )


class Project(ProjectReader):
    """Everything done to one project: plan, run, resume and replay its pipelines, change their
    watermarks, settle dead letters, ask its scheduler; and read it (ProjectReader)."""

    @classmethod
    def find(cls, project_dir: str | os.PathLike[str] | None = None) -> Project:
        """The project a command means (see ProjectLayout.resolve for the precedence)."""
        return cls(ProjectLayout.resolve(project_dir))

    # -- pipelines --------------------------------------------------------------------------------

    def pipelines(self) -> dict[str, Path]:
        """The project's pipeline files, by pipeline name."""
        from engine.scheduling.discover import discover_pipelines

        return discover_pipelines(self.path)

    def pipeline_file(self, name: str) -> Path:
        """The file of the pipeline named `name` in this project; SelectionError when none."""
        found = self.pipelines()
        if name not in found:
            names = ", ".join(sorted(found)) or "none"
            raise SelectionError(
                f"no pipeline {name!r} in {self.path} (pipelines: {names})."
                + did_you_mean(name, set(found)),
                hint="give the pipeline's file, or its name from a folder inside its project",
            )
        return found[name]

    def locate(self, pipeline: str) -> tuple[str, Path]:
        """A pipeline's name and file (absolute). A name is looked up without reading the file
        through, so a pipeline whose file is broken now can still be paused; a file is read
        for its name, and must be valid."""
        if looks_like_file(pipeline):
            return load_definition(pipeline).name, Path(pipeline).resolve()
        return pipeline, self.pipeline_file(pipeline)

    def definition(self, pipeline: PipelineLike) -> Definition:
        """The validated definition; raises PipelineInvalid listing every problem."""
        if isinstance(pipeline, Definition):
            return pipeline
        if isinstance(pipeline, Builds):
            return pipeline.definition
        if isinstance(pipeline, str) and not looks_like_file(pipeline):
            return load_definition(self.pipeline_file(pipeline))
        return load_definition(os.fspath(pipeline))

    def pipeline_name(self, pipeline: str) -> str:
        """A name as given, or the name inside the file given (filters of runs, letters)."""
        return self.locate(pipeline)[0] if looks_like_file(pipeline) else pipeline

    # -- planning ---------------------------------------------------------------------------------

    def plan(self, pipeline: PipelineLike, options: PlanOptions | None = None) -> Plan:
        """The plan `run` would execute, without running anything."""
        options = options or PlanOptions()
        definition = self.definition(pipeline)
        location = self.layout.catalog
        # the cache and a selection reuse earlier outputs; before the first run there are none
        reader = CatalogReader(location) if location.exists() else None
        try:
            return build_plan(
                definition,
                params=options.params,
                select=options.select,
                exclude=options.exclude,
                catalog=reader,
                run_id=options.run_id,
                full_refresh=options.full_refresh,
                logical_date=options.logical_date,
                force=options.force,
            )
        finally:
            if reader is not None:
                reader.close()

    def plan_schemas(self, pipeline: PipelineLike, the_plan: Plan) -> SchemaReport:
        """Each task's output schema before any data moves, its drift against the last run, and
        the problems a run would hit (see engine.planning.schemas)."""
        from engine.planning.schemas import plan_schemas

        definition = self.definition(pipeline)
        reader = CatalogReader(self.layout.catalog) if self.layout.catalog.exists() else None
        try:
            return plan_schemas(the_plan, reader, locate=definition.task_location)
        finally:
            if reader is not None:
                reader.close()

    def lineage(
        self,
        pipeline: PipelineLike,
        column: str,
        *,
        downstream: bool = False,
        kind: str | None = None,
        run: str | None = None,
    ) -> dict[str, Any]:
        """Sources of `column` ("task.column"), or what depends on it, as plain data: the
        same report as `arrowline lineage ... --format json` (`run`: as that run recorded it)."""
        from engine.planning.lineage import lineage_report
        from lineage.columns import Kind

        the_plan = self.plan(pipeline)
        chosen: Kind | None = "filter" if kind == "filter" else "value" if kind == "value" else None
        # Before any run there is no catalog: lineage is then the plan's alone.
        known = self.layout.catalog.exists() or run is not None
        return lineage_report(
            the_plan,
            self.catalog if known else None,
            column,
            downstream=downstream,
            kind=chosen,
            run_id=run,
        )

    # -- running ----------------------------------------------------------------------------------

    def execute(self, the_plan: Plan, options: RunOptions | None = None) -> RunResult:
        """Run exactly `the_plan` (from `plan`); returns the result, it does not raise on failure.

        Only one run of a pipeline runs at a time: when another holds the pipeline's lock, this
        one refuses (ConcurrentRun) or waits, as `options.if_running` says."""
        return launch.execute(the_plan, self.layout, options)

    def run(
        self,
        pipeline: PipelineLike,
        plan: PlanOptions | None = None,
        options: RunOptions | None = None,
    ) -> RunResult:
        """Validate, plan and run a pipeline; returns the result (it does not raise on task
        failure: `result.raise_for_status()` does)."""
        return self.execute(self.plan(pipeline, plan), options)

    def resume(
        self,
        pipeline: PipelineLike,
        run_id: str = "last",
        *,
        force: bool = False,
        retry: RetryPolicy | None = None,
        options: RunOptions | None = None,
        on_plan: Callable[[Plan], None] | None = None,
    ) -> RunResult:
        """Continue a run that did not succeed (see engine.execution.launch.resume)."""
        definition = self.definition(pipeline)
        return launch.resume(
            definition,
            self.layout,
            run_id,
            force=force,
            retry=retry,
            options=options,
            on_plan=on_plan,
        )

    def replay_quarantine(
        self,
        pipeline: PipelineLike,
        task_id: str,
        *,
        from_run: str | None = None,
        downstream: Sequence[str] = (),
        options: RunOptions | None = None,
    ) -> tuple[RunResult, int]:
        """Run the rows a validate task quarantined (in `from_run`, else its latest run) through
        it again, and through the `downstream` tasks named; returns the run and the rows
        replayed."""
        definition = self.definition(pipeline)
        return launch.replay(
            definition,
            self.layout,
            task_id,
            from_run=from_run,
            downstream=downstream,
            options=options,
        )

    def requeue_dead_letter(
        self,
        letter_id: int,
        *,
        attempts: int | None = None,
        backoff: str | None = None,
        force: bool = False,
        options: RunOptions | None = None,
    ) -> RunResult:
        """Resume the run a dead letter came from, so its task runs again (with the letter's
        parameters and logical date), optionally with a new retry policy."""
        from engine.spec.model import RetryPolicy

        with CatalogReader(self.layout.catalog) as reader:
            letter = reader.dead_letter(letter_id)
        if letter.status == "resolved":
            raise StateError(f"dead letter {letter_id} is resolved {letter.resolution}")
        if not letter.pipeline_file:
            raise StateError(
                f"dead letter {letter_id} came from a pipeline defined in Python; resume it with "
                f"engine.planning.resume(pipeline, {letter.run_id!r})"
            )
        file = Path(letter.pipeline_file)
        if not file.is_absolute():  # as given to `arrowline run`, from the project folder
            file = self.path / file
        definition = load_definition(file)
        retry = None
        if attempts is not None or backoff is not None:
            current = definition.spec.task(letter.task_id).retry or definition.spec.defaults.retry
            changes: dict[str, Any] = {}
            if attempts is not None:
                changes["attempts"] = attempts
            if backoff is not None:
                changes["backoff"] = backoff
            retry = RetryPolicy.model_validate(current.model_dump() | changes)
        return self.resume(definition, letter.run_id, force=force, retry=retry, options=options)

    # -- state ------------------------------------------------------------------------------------

    def watermarks(self, pipeline: PipelineLike, task: str | None = None) -> list[StateRow]:
        """Each incremental extract's watermark, in the catalog and in each sink."""
        from engine.api.state import show_state

        return show_state(self.definition(pipeline), self.layout.catalog, task)

    def set_watermark(self, pipeline: PipelineLike, task: str, value: Watermark) -> list[str]:
        """Set an extract's watermark in every sink and the catalog (audited)."""
        from engine.api.state import set_state

        return set_state(self.definition(pipeline), self.layout.catalog, task, value)

    def reset_watermarks(self, pipeline: PipelineLike, task: str | None = None) -> list[str]:
        """Forget watermarks (one extract's, or all): the next run reads everything."""
        from engine.api.state import reset_state

        return reset_state(self.definition(pipeline), self.layout.catalog, task)

    def source_status(
        self, pipeline: PipelineLike, task: str | None = None
    ) -> list[dict[str, Any]]:
        """What each extract's source holds at its server (replication slots): position, lag,
        retained WAL, and the position its loads committed."""
        from engine.api.state import source_status

        return source_status(self.definition(pipeline), self.layout.catalog, task)

    def resolve_dead_letter(self, letter_id: int, note: str) -> DeadLetterRow:
        """Dismiss a dead letter dealt with otherwise, with the note, user and time."""
        location = self.layout.catalog
        if not location.exists():
            raise StateError(f"no arrowline catalog at {location.describe()}")
        with Catalog(location) as catalog:
            return catalog.resolve_dead_letter(letter_id, note)

    # -- scheduling -------------------------------------------------------------------------------

    def scheduler_running(self) -> bool:
        """Whether a scheduler process leads this project now."""
        from engine.scheduling.leader import scheduler_running

        return scheduler_running(self.layout)

    def request_run(self, name: str, params: dict[str, Any], source: str = "manual") -> RequestRow:
        """Queue a run with the project's scheduler (the HTTP API's POST does the same)."""
        from engine.scheduling.discover import request_run

        return request_run(self.layout, name, params, source)

    def status(self) -> list[dict[str, Any]]:
        """Every pipeline at a glance, as `arrowline status` and GET /status show it."""
        from engine.scheduling.status import status_rows

        return status_rows(self.layout)

    def metrics(self) -> bytes:
        """The catalog's metrics in Prometheus' text format, as GET /metrics serves them."""
        from engine.scheduling.metrics import render

        return render(self.layout.catalog)


def open(project_dir: str | os.PathLike[str] | None = None) -> Project:
    """Open a project for reading, found as the CLI finds it: the nearest folder at or above
    `project_dir` that holds `.arrowline/`, so `engine.open(".")` works from any folder inside
    the project. Without `project_dir`: $ARROWLINE_PROJECT_DIR, else from the working
    directory."""
    start = Path(project_dir) if project_dir is not None else ProjectLayout.resolve().project_dir
    found = ProjectLayout.nearest(start)
    if found is None:
        from engine.state.workspace import STATE_DIR

        raise StateError(
            f"{start.resolve()} and the folders above it hold no arrowline state "
            f"(no {STATE_DIR}/ folder)",
            hint="pass the folder you ran `arrowline run` in, or a folder inside it",
        )
    return Project(ProjectLayout.at(found))

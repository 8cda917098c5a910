"""The Python API: build, validate, plan and run pipelines from a script or a notebook.

    import polars as pl
    from engine import Pipeline

    p = Pipeline("orders", params={"min_amount": 10})
    p.extract("orders", path="data/orders.csv")
    p.sql("big", "select * from orders where amount >= {{ params.min_amount | sql_literal }}")

    @p.udf("scored", input="big")
    def score():
        return {"score": pl.col("amount") / 100}

    p.load("publish", input="scored", to="duckdb", path="out/warehouse.duckdb", table="orders")
    result = p.run().raise_for_status()  # RunFailed, naming the failed tasks, unless it succeeded

A Python pipeline builds the same `PipelineSpec` as a YAML file and goes through the same
validation, planning and execution.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.core.errors import PipelineInvalid
from engine.core.problems import Problem
from engine.execution.executor import ExecutionSettings, Executor, RunEvent, RunResult
from engine.planning.build import Plan, build_plan
from engine.planning.resume import find_run_to_resume, plan_resume, recover_interrupted
from engine.planning.schemas import SchemaReport
from engine.spec.definition import Definition
from engine.spec.model import PipelineSpec, RetryPolicy
from engine.state.catalog import Catalog, CatalogReader, catalog_location
from engine.state.locks import IfRunning, RunLock
from engine.state.workspace import STATE_DIR, Workspace, nearest_project_dir
from engine.tasks import TaskRunner, run_task
from engine.tasks.checks import check_definition, load_definition, structural_check

__all__ = [
    "Pipeline",
    "RunResult",
    "execute",
    "find_project_dir",
    "load",
    "plan",
    "replay_quarantine",
    "requeue_dead_letter",
    "resume",
    "run",
    "validate",
]


def find_project_dir(
    explicit: str | os.PathLike[str] | None = None, start: Path | None = None
) -> Path:
    """Where `.arrowline/` lives: the explicit directory, $ARROWLINE_PROJECT_DIR, the nearest
    ancestor of the working directory that already has one, or the working directory."""
    if explicit is not None:
        return Path(explicit).resolve()
    from_env = os.environ.get("ARROWLINE_PROJECT_DIR")
    if from_env:
        return Path(from_env).resolve()
    here = (start or Path.cwd()).resolve()
    return nearest_project_dir(here) or here


class Pipeline:
    """Build a pipeline in Python. Every method adds one task and returns its id."""

    def __init__(
        self,
        name: str,
        *,
        params: Mapping[str, Any] | None = None,
        description: str | None = None,
        schedule: str | None = None,
        timezone: str = "UTC",
        defaults: Mapping[str, Any] | None = None,
        base_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.name = name
        self.base_dir = Path(base_dir).resolve() if base_dir is not None else Path.cwd()
        self._header: dict[str, Any] = {"pipeline": name, "timezone": timezone}
        if params:
            self._header["params"] = dict(params)
        if description:
            self._header["description"] = description
        if schedule:
            self._header["schedule"] = schedule
        if defaults:
            self._header["defaults"] = dict(defaults)
        self._tasks: list[dict[str, Any]] = []

    def _add(self, task_id: str, kind: str, config: Any, common: Mapping[str, Any]) -> str:
        task = {"id": task_id, kind: config}
        task.update({key: value for key, value in common.items() if value is not None})
        self._tasks.append(task)
        return task_id

    def extract(
        self,
        task_id: str,
        source: str = "files",
        *,
        depends_on: Sequence[str] | None = None,
        retry: Mapping[str, Any] | None = None,
        timeout: str | float | None = None,
        **config: Any,
    ) -> str:
        """`p.extract("o", path="data/*.csv")`, `p.extract("c", "duckdb", path=..., table=...)`."""
        common = {"depends_on": depends_on, "retry": retry, "timeout": timeout}
        return self._add(task_id, "extract", {"from": source, **config}, common)

    def sql(
        self,
        task_id: str,
        query: str,
        *,
        depends_on: Sequence[str] | None = None,
        retry: Mapping[str, Any] | None = None,
        timeout: str | float | None = None,
    ) -> str:
        common = {"depends_on": depends_on, "retry": retry, "timeout": timeout}
        return self._add(task_id, "sql", {"query": query}, common)

    def udf(
        self,
        task_id: str,
        *,
        input: str,
        function: str | Callable[..., Any] | None = None,
        args: Mapping[str, Any] | None = None,
        mode: str = "auto",
        output: str = "with_columns",
        depends_on: Sequence[str] | None = None,
        retry: Mapping[str, Any] | None = None,
        timeout: str | float | None = None,
    ) -> Any:
        """Add a UDF task; without `function`, decorate the function that follows."""
        common = {"depends_on": depends_on, "retry": retry, "timeout": timeout}

        def add(fn: str | Callable[..., Any]) -> Any:
            config = {
                "input": input,
                "function": fn,
                "args": dict(args or {}),
                "mode": mode,
                "output": output,
            }
            self._add(task_id, "udf", config, common)
            return fn

        if function is None:
            return add
        add(function)
        return task_id

    def validate(
        self,
        task_id: str,
        *,
        input: str,
        schema: Any,
        on_fail: str = "fail",
        depends_on: Sequence[str] | None = None,
        **config: Any,
    ) -> str:
        """`schema` is a pandera DataFrameModel or DataFrameSchema, a reference, or a mapping."""
        settings = {"input": input, "schema": schema, "on_fail": on_fail, **config}
        return self._add(task_id, "validate", settings, {"depends_on": depends_on})

    def load(
        self,
        task_id: str,
        *,
        input: str,
        to: str,
        depends_on: Sequence[str] | None = None,
        retry: Mapping[str, Any] | None = None,
        timeout: str | float | None = None,
        **config: Any,
    ) -> str:
        common = {"depends_on": depends_on, "retry": retry, "timeout": timeout}
        return self._add(task_id, "load", {"input": input, "to": to, **config}, common)

    @property
    def definition(self) -> Definition:
        """The validated definition; raises PipelineInvalid listing every problem."""
        data = {**self._header, "tasks": self._tasks}
        spec, problems, ids = structural_check(data, None, "<python>")
        if spec is None or any(p.severity == "error" for p in problems):
            raise PipelineInvalid(problems)
        definition = Definition(spec, self.base_dir, None, None, ids)
        semantic = check_definition(definition)
        if any(p.severity == "error" for p in semantic):
            raise PipelineInvalid(semantic)
        return definition

    @property
    def spec(self) -> PipelineSpec:
        return self.definition.spec

    def plan(self, **kwargs: Any) -> Plan:
        return plan(self, **kwargs)

    def run(self, **kwargs: Any) -> RunResult:
        return run(self, **kwargs)


def load(path: str | os.PathLike[str]) -> Definition:
    """Read and validate a pipeline file; raises PipelineInvalid listing every problem."""
    return load_definition(Path(path))


def _definition(pipeline: Any) -> Definition:
    if isinstance(pipeline, Definition):
        return pipeline
    if isinstance(pipeline, Pipeline):
        return pipeline.definition
    return load(pipeline)


def validate(pipeline: Any) -> list[Problem]:
    """Validate and return the warnings; raises PipelineInvalid when there are errors."""
    if isinstance(pipeline, Pipeline | Definition):
        definition = _definition(pipeline)
        return [p for p in check_definition(definition) if p.severity == "warning"]
    from engine.tasks.checks import check_file

    definition_or_none, problems = check_file(Path(pipeline))
    if definition_or_none is None:
        raise PipelineInvalid(problems)
    return problems


def plan_schemas(
    pipeline: Any,
    the_plan: Plan,
    *,
    project_dir: str | os.PathLike[str] | None = None,
) -> SchemaReport:
    """Each task's output schema before any data moves, its drift against the last run, and
    the problems a run would hit (see engine.planning.schemas)."""
    from engine.planning.schemas import plan_schemas as compute

    definition = _definition(pipeline)
    location = catalog_location(find_project_dir(project_dir))
    reader = CatalogReader(location) if location.exists() else None
    try:
        return compute(the_plan, reader, line_of=definition.task_line)
    finally:
        if reader is not None:
            reader.close()


def plan(
    pipeline: Any,
    *,
    params: Mapping[str, Any] | None = None,
    select: Sequence[str] | None = None,
    project_dir: str | os.PathLike[str] | None = None,
    run_id: str | None = None,
    full_refresh: bool = False,
    logical_date: datetime | None = None,
) -> Plan:
    """The plan `run` would execute, without running anything."""
    definition = _definition(pipeline)
    project = find_project_dir(project_dir)
    location = catalog_location(project)
    reader = CatalogReader(location) if select and location.exists() else None
    try:
        return build_plan(
            definition,
            params=params,
            select=select,
            catalog=reader,
            run_id=run_id,
            full_refresh=full_refresh,
            logical_date=logical_date,
        )
    finally:
        if reader is not None:
            reader.close()


def _settings(
    project: Path, settings: ExecutionSettings | None, max_parallel: int | None
) -> ExecutionSettings:
    settings = settings or ExecutionSettings()
    if max_parallel is not None:
        settings = replace(settings, max_parallel=max_parallel)
    if settings.duckdb.temp_directory is None:
        temp = project / STATE_DIR / "tmp"
        settings = replace(settings, duckdb=replace(settings.duckdb, temp_directory=temp))
    return settings


@contextmanager
def _locked(
    project: Path,
    pipeline: str,
    run_id: str,
    if_running: IfRunning,
    wait_timeout: float | None,
    on_wait: Callable[[dict[str, Any]], None] | None,
) -> Iterator[Catalog]:
    """Hold the pipeline's run lock, settle the runs a dead process left RUNNING, and yield
    the catalog."""
    lock = RunLock(
        project / STATE_DIR,
        pipeline,
        run_id,
        if_running=if_running,
        wait_timeout=wait_timeout,
        on_wait=on_wait,
    )
    with lock:
        catalog = Catalog(catalog_location(project))
        try:
            if not lock.shared:  # a sharer cannot tell a dead run from another live sharer
                recover_interrupted(catalog, Workspace.for_project(project), pipeline)
            yield catalog
        finally:
            catalog.close()


def _execute_locked(
    the_plan: Plan,
    project: Path,
    catalog: Catalog,
    settings: ExecutionSettings,
    runner: TaskRunner,
    listener: Callable[[RunEvent], None] | None,
    on_executor: Callable[[Executor], None] | None,
    if_running: IfRunning,
) -> RunResult:
    """Run the plan, then apply the pipeline's retention while the run lock is still held. A
    run that shares the lock (`overlap: allow`) leaves that to the next run holding it alone:
    another run of the pipeline may be planning its reuse at that very moment."""
    from engine.execution.connections import resolve_plan_connections

    executor = Executor(
        the_plan,
        project,
        catalog=catalog,
        settings=settings,
        runner=runner,
        listener=listener,
        connections=resolve_plan_connections(the_plan),
    )
    if on_executor is not None:
        on_executor(executor)
    result = executor.run()
    if if_running != "share":
        _apply_retention(the_plan, project, catalog)
    return result


def _apply_retention(the_plan: Plan, project: Path, catalog: Catalog) -> None:
    """Remove the outputs of earlier runs that the pipeline's retention no longer keeps. The
    run has ended: a failure here is logged, never turned into a failed run."""
    from loguru import logger

    from engine.state.retention import collect, format_bytes, plan_collection

    log = logger.bind(pipeline=the_plan.pipeline, run_id=the_plan.run_id)
    keep = the_plan.retention.keep_runs
    try:
        collection = plan_collection(
            catalog, Workspace.for_project(project), the_plan.pipeline, keep
        )
        collect(catalog, collection)
    except Exception as exc:  # a catalog or file system problem: the next run tries again
        log.warning("retention: outputs of earlier runs not removed: {}", exc)
        return
    if collection.removals:
        log.info(
            "retention: removed {} outputs of earlier runs ({}), keeping the last {} runs",
            len(collection.removals),
            format_bytes(collection.bytes),
            keep,
        )


def execute(
    the_plan: Plan,
    *,
    project_dir: str | os.PathLike[str] | None = None,
    max_parallel: int | None = None,
    settings: ExecutionSettings | None = None,
    runner: TaskRunner = run_task,
    listener: Callable[[RunEvent], None] | None = None,
    on_executor: Callable[[Executor], None] | None = None,
    if_running: IfRunning = "refuse",
    wait_timeout: float | None = None,
    on_wait: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Run exactly `the_plan` (from `plan`); returns the result, it does not raise on failure.

    Only one run of a pipeline runs at a time: when another holds the pipeline's lock, this one
    refuses (ConcurrentRun) or, with `if_running="wait"`, waits up to `wait_timeout` seconds."""
    project = find_project_dir(project_dir)
    settings = _settings(project, settings, max_parallel)
    with _locked(
        project, the_plan.pipeline, the_plan.run_id, if_running, wait_timeout, on_wait
    ) as catalog:
        return _execute_locked(
            the_plan, project, catalog, settings, runner, listener, on_executor, if_running
        )


def resume(
    pipeline: Any,
    run_id: str = "last",
    *,
    force: bool = False,
    retry: RetryPolicy | None = None,
    project_dir: str | os.PathLike[str] | None = None,
    max_parallel: int | None = None,
    settings: ExecutionSettings | None = None,
    runner: TaskRunner = run_task,
    listener: Callable[[RunEvent], None] | None = None,
    on_executor: Callable[[Executor], None] | None = None,
    on_plan: Callable[[Plan], None] | None = None,
    if_running: IfRunning = "refuse",
    wait_timeout: float | None = None,
) -> RunResult:
    """Continue a run that did not succeed (`run_id`, a prefix, or 'last'): tasks that
    succeeded in it are reused, the others run again, under the same run id. Raises
    ResumeRefused (with a diff) when the pipeline changed since, unless `force`. `retry`
    replaces the retry policy of the tasks that run again."""
    definition = _definition(pipeline)
    project = find_project_dir(project_dir)
    settings = _settings(project, settings, max_parallel)
    # The lock names the run it is held for, so a run refused meanwhile can say which: "last"
    # is resolved first (with no runs at all, find_run_to_resume says so under the lock).
    with CatalogReader(catalog_location(project)) as reader:
        if run_id == "last":
            last = reader.last_run(definition.spec.name)
            target = last.run_id if last is not None else "last"
        else:
            target = reader.run(run_id).run_id
    with _locked(project, definition.spec.name, target, if_running, wait_timeout, None) as catalog:
        previous = find_run_to_resume(catalog, definition.spec.name, target)
        the_plan = plan_resume(definition, catalog, previous, force=force)
        if retry is not None:
            the_plan = replace(
                the_plan,
                tasks=tuple(
                    replace(t, retry=retry) if t.action == "run" else t for t in the_plan.tasks
                ),
            )
        if on_plan is not None:
            on_plan(the_plan)
        return _execute_locked(
            the_plan, project, catalog, settings, runner, listener, on_executor, if_running
        )


def run(
    pipeline: Any,
    *,
    params: Mapping[str, Any] | None = None,
    select: Sequence[str] | None = None,
    project_dir: str | os.PathLike[str] | None = None,
    max_parallel: int | None = None,
    settings: ExecutionSettings | None = None,
    runner: TaskRunner = run_task,
    listener: Callable[[RunEvent], None] | None = None,
    full_refresh: bool = False,
    if_running: IfRunning = "refuse",
    wait_timeout: float | None = None,
    logical_date: datetime | None = None,
    run_id: str | None = None,
    on_executor: Callable[[Executor], None] | None = None,
) -> RunResult:
    """Validate, plan and run a pipeline; returns the result (it does not raise on task failure:
    `result.raise_for_status()` does). `logical_date`: the start of the interval the run covers
    (default: now)."""
    the_plan = plan(
        pipeline,
        params=params,
        select=select,
        project_dir=project_dir,
        full_refresh=full_refresh,
        logical_date=logical_date,
        run_id=run_id,
    )
    return execute(
        the_plan,
        project_dir=project_dir,
        max_parallel=max_parallel,
        settings=settings,
        runner=runner,
        listener=listener,
        on_executor=on_executor,
        if_running=if_running,
        wait_timeout=wait_timeout,
    )


def replay_quarantine(
    pipeline: Any,
    task_id: str,
    *,
    from_run: str | None = None,
    downstream: Sequence[str] = (),
    project_dir: str | os.PathLike[str] | None = None,
    settings: ExecutionSettings | None = None,
    listener: Callable[[RunEvent], None] | None = None,
    if_running: IfRunning = "refuse",
    wait_timeout: float | None = None,
) -> tuple[RunResult, int]:
    """Run the rows a validate task quarantined (in `from_run`, else its latest run) through it
    again, and through the `downstream` tasks named; returns the run and the rows replayed."""
    from engine.planning.replay import plan_replay
    from engine.spec.params import new_run_id

    definition = _definition(pipeline)
    project = find_project_dir(project_dir)
    settings = _settings(project, settings, None)
    name = definition.spec.name
    run_id = new_run_id()
    with _locked(project, name, run_id, if_running, wait_timeout, None) as catalog:
        the_plan, source = plan_replay(
            definition,
            catalog,
            task_id,
            from_run=from_run,
            downstream=downstream,
            workspace=Workspace.for_project(project),
            run_id=run_id,
        )
        result = _execute_locked(
            the_plan, project, catalog, settings, run_task, listener, None, if_running
        )
        return result, source.rows


def requeue_dead_letter(
    letter_id: int,
    *,
    attempts: int | None = None,
    backoff: str | None = None,
    force: bool = False,
    project_dir: str | os.PathLike[str] | None = None,
    listener: Callable[[RunEvent], None] | None = None,
    on_executor: Callable[[Executor], None] | None = None,
) -> RunResult:
    """Resume the run a dead letter came from, so its task runs again (with the letter's
    parameters and logical date), optionally with a new retry policy."""
    from engine.core.errors import StateError

    project = find_project_dir(project_dir)
    with CatalogReader(catalog_location(project)) as reader:
        letter = reader.dead_letter(letter_id)
    if letter.status == "resolved":
        raise StateError(f"dead letter {letter_id} is resolved {letter.resolution}")
    if not letter.pipeline_file:
        raise StateError(
            f"dead letter {letter_id} came from a pipeline defined in Python; resume it with "
            f"engine.planning.resume(pipeline, {letter.run_id!r})"
        )
    definition = load(letter.pipeline_file)
    retry = None
    if attempts is not None or backoff is not None:
        current = definition.spec.task(letter.task_id).retry or definition.spec.defaults.retry
        changes: dict[str, Any] = {}
        if attempts is not None:
            changes["attempts"] = attempts
        if backoff is not None:
            changes["backoff"] = backoff
        retry = RetryPolicy.model_validate(current.model_dump() | changes)
    return resume(
        definition,
        letter.run_id,
        force=force,
        retry=retry,
        project_dir=project,
        listener=listener,
        on_executor=on_executor,
    )

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
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from engine.api.options import PlanOptions, RunOptions
from engine.api.project import Builds, PipelineLike, Project, looks_like_file
from engine.core.errors import PipelineInvalid
from engine.core.problems import Problem
from engine.core.yaml_source import SourceMap
from engine.execution.executor import ExecutionSettings, Executor, RunEvent, RunResult
from engine.planning.build import Plan
from engine.planning.schemas import SchemaReport
from engine.spec.definition import Definition
from engine.spec.model import PipelineSpec, RetryPolicy
from engine.state.locks import IfRunning
from engine.tasks import TaskRunner, run_task
from engine.tasks.checks import check_definition, load_definition, structural_check

__all__ = [
    "Pipeline",
    "RunResult",
    "execute",
    "load",
    "plan",
    "plan_schemas",
    "replay_quarantine",
    "requeue_dead_letter",
    "resume",
    "run",
    "validate",
]

ProjectDir = str | os.PathLike[str] | None
"""A project folder as the functions below take it; None: found as the CLI finds it."""


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
        cache: bool = False,
        pools: Mapping[str, int] | None = None,
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
        if cache:
            self._header["cache"] = True
        if pools:
            self._header["pools"] = dict(pools)  # resource pools: engine.execution.pools
        self._tasks: list[dict[str, Any]] = []
        self._source: tuple[str, SourceMap] | None = None
        """The project file a builder started from, and its lines (`from_project`)."""

    @classmethod
    def from_project(cls, folder: str | os.PathLike[str]) -> Pipeline:
        """A SQL project (a folder holding `arrowline_project.yml`) as a builder: its models,
        seeds, sources and tasks, to which Python adds more (a UDF reading a model, a load).
        Raises PipelineInvalid when the project has errors."""
        from engine.core.errors import DefinitionError
        from engine.core.yaml_source import read_yaml_file
        from engine.spec.sqlproject import PROJECT_FILE, compose, project_file

        path = project_file(Path(folder))
        if path is None:
            raise DefinitionError(f"{folder} holds no {PROJECT_FILE} (nor dbt_project.yml)")
        data, source, problems = read_yaml_file(path)
        if isinstance(data, dict):
            data, found = compose(data, source, path)
            problems = [*problems, *found]
        if any(p.severity == "error" for p in problems) or not isinstance(data, dict):
            raise PipelineInvalid(problems)
        built = cls(str(data.get("pipeline")), base_dir=path.parent)
        built._header = {key: value for key, value in data.items() if key != "tasks"}
        built._tasks = list(data.get("tasks") or [])
        built._source = (str(path), source)  # a model's problems named at its file
        return built

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
        pool: str | None = None,
        materialize: Literal["table", "ephemeral"] | None = None,
        **config: Any,
    ) -> str:
        """`p.extract("o", path="data/*.csv")`, `p.extract("c", "duckdb", path=..., table=...)`;
        `materialize="ephemeral"`: stream to its loads and keep no copy."""
        common = {
            "depends_on": depends_on,
            "retry": retry,
            "timeout": timeout,
            "pool": pool,
            "materialize": materialize,
        }
        return self._add(task_id, "extract", {"from": source, **config}, common)

    def sql(
        self,
        task_id: str,
        query: str,
        *,
        depends_on: Sequence[str] | None = None,
        retry: Mapping[str, Any] | None = None,
        timeout: str | float | None = None,
        pool: str | None = None,
        materialize: Literal["table", "ephemeral"] | None = None,
    ) -> str:
        """`p.sql("t", "select ... from o")`; `materialize="ephemeral"`: keep nothing, inlined
        into the sql tasks that read it."""
        common = {
            "depends_on": depends_on,
            "retry": retry,
            "timeout": timeout,
            "pool": pool,
            "materialize": materialize,
        }
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
        pool: str | None = None,
    ) -> Any:
        """Add a UDF task; without `function`, decorate the function that follows."""
        common = {"depends_on": depends_on, "retry": retry, "timeout": timeout, "pool": pool}

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
        pool: str | None = None,
        materialize: Literal["table", "view"] | None = None,
        hooks: Mapping[str, Sequence[str]] | None = None,
        **config: Any,
    ) -> str:
        """`p.load("pub", input="t", to="duckdb", path=..., table=..., mode="replace")`;
        `materialize="view"` (duckdb, postgres; mode replace): the target becomes a view;
        `hooks={"pre": [...], "post": [...]}`: SQL run in the target around the write
        (engine.spec.hooks)."""
        common = {
            "depends_on": depends_on,
            "retry": retry,
            "timeout": timeout,
            "pool": pool,
            "materialize": materialize,
            "hooks": hooks,
        }
        return self._add(task_id, "load", {"input": input, "to": to, **config}, common)

    @property
    def definition(self) -> Definition:
        """The validated definition; raises PipelineInvalid listing every problem."""
        data = {**self._header, "tasks": self._tasks}
        file, source = self._source or (None, None)
        spec, problems, ids = structural_check(data, source, file or "<python>")
        if spec is None or any(p.severity == "error" for p in problems):
            raise PipelineInvalid(problems)
        definition = Definition(spec, self.base_dir, file, source, ids)
        semantic = check_definition(definition)
        if any(p.severity == "error" for p in semantic):
            raise PipelineInvalid(semantic)
        return definition

    @property
    def spec(self) -> PipelineSpec:
        return self.definition.spec

    def __repr__(self) -> str:
        return f"<Pipeline {self.name}: {len(self._tasks)} tasks>"

    def _repr_html_(self) -> str:
        """What a notebook shows: the task graph, and what each task reads and writes."""
        from engine.api.notebook import pipeline_html

        return pipeline_html(self, self.name)

    def plan(self, **kwargs: Any) -> Plan:
        """`engine.plan(self, ...)`."""
        return plan(self, **kwargs)

    def run(self, **kwargs: Any) -> RunResult:
        """`engine.run(self, ...)`."""
        return run(self, **kwargs)


def load(path: str | os.PathLike[str]) -> Definition:
    """Read and validate a pipeline file; raises PipelineInvalid listing every problem."""
    return load_definition(os.fspath(path))


def validate(pipeline: PipelineLike) -> list[Problem]:
    """Validate and return the warnings; raises PipelineInvalid when there are errors."""
    if isinstance(pipeline, Definition | Builds):
        definition = pipeline if isinstance(pipeline, Definition) else pipeline.definition
        return [p for p in check_definition(definition) if p.severity == "warning"]
    from engine.tasks.checks import check_file

    path = os.fspath(pipeline)
    if not looks_like_file(path):  # a pipeline's name, in the project of the working directory
        path = str(Project.find().pipeline_file(path))
    definition_or_none, problems = check_file(path)
    if definition_or_none is None:
        raise PipelineInvalid(problems)
    return problems


# The functions below are the keyword form of `Project`'s methods, for scripts that do not hold
# a Project: each finds the project, puts its keywords into the typed options and calls it.


def plan_schemas(
    pipeline: PipelineLike, the_plan: Plan, *, project_dir: ProjectDir = None
) -> SchemaReport:
    """Each task's output schema before any data moves, its drift against the last run, and
    the problems a run would hit (see engine.planning.schemas)."""
    with Project.find(project_dir) as project:
        return project.plan_schemas(pipeline, the_plan)


def plan(
    pipeline: PipelineLike,
    *,
    params: Mapping[str, Any] | None = None,
    select: Sequence[str] | None = None,
    project_dir: ProjectDir = None,
    run_id: str | None = None,
    full_refresh: bool = False,
    logical_date: datetime | None = None,
    force: bool = False,
    exclude: Sequence[str] | None = None,
) -> Plan:
    """The plan `run` would execute, without running anything."""
    options = PlanOptions(params, select, full_refresh, logical_date, run_id, force, exclude)
    with Project.find(project_dir) as project:
        return project.plan(pipeline, options)


def execute(
    the_plan: Plan,
    *,
    project_dir: ProjectDir = None,
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
    options = RunOptions(
        max_parallel, settings, runner, listener, on_executor, if_running, wait_timeout, on_wait
    )
    with Project.find(project_dir) as project:
        return project.execute(the_plan, options)


def resume(
    pipeline: PipelineLike,
    run_id: str = "last",
    *,
    force: bool = False,
    retry: RetryPolicy | None = None,
    project_dir: ProjectDir = None,
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
    options = RunOptions(
        max_parallel, settings, runner, listener, on_executor, if_running, wait_timeout
    )
    with Project.find(project_dir) as project:
        return project.resume(
            pipeline, run_id, force=force, retry=retry, options=options, on_plan=on_plan
        )


def run(
    pipeline: PipelineLike,
    *,
    params: Mapping[str, Any] | None = None,
    select: Sequence[str] | None = None,
    project_dir: ProjectDir = None,
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
    force: bool = False,
    exclude: Sequence[str] | None = None,
) -> RunResult:
    """Validate, plan and run a pipeline; returns the result (it does not raise on task failure:
    `result.raise_for_status()` does). `logical_date`: the start of the interval the run covers
    (default: now); `force`: run every task, whatever the cache holds; `select`/`exclude`:
    dbt's selector grammar (engine.planning.select)."""
    what = PlanOptions(params, select, full_refresh, logical_date, run_id, force, exclude)
    how = RunOptions(
        max_parallel, settings, runner, listener, on_executor, if_running, wait_timeout
    )
    with Project.find(project_dir) as project:
        return project.run(pipeline, what, how)


def replay_quarantine(
    pipeline: PipelineLike,
    task_id: str,
    *,
    from_run: str | None = None,
    downstream: Sequence[str] = (),
    project_dir: ProjectDir = None,
    settings: ExecutionSettings | None = None,
    listener: Callable[[RunEvent], None] | None = None,
    if_running: IfRunning = "refuse",
    wait_timeout: float | None = None,
) -> tuple[RunResult, int]:
    """Run the rows a validate task quarantined (in `from_run`, else its latest run) through it
    again, and through the `downstream` tasks named; returns the run and the rows replayed."""
    options = RunOptions(
        settings=settings, listener=listener, if_running=if_running, wait_timeout=wait_timeout
    )
    with Project.find(project_dir) as project:
        return project.replay_quarantine(
            pipeline, task_id, from_run=from_run, downstream=downstream, options=options
        )


def requeue_dead_letter(
    letter_id: int,
    *,
    attempts: int | None = None,
    backoff: str | None = None,
    force: bool = False,
    project_dir: ProjectDir = None,
    listener: Callable[[RunEvent], None] | None = None,
    on_executor: Callable[[Executor], None] | None = None,
) -> RunResult:
    """Resume the run a dead letter came from, so its task runs again (with the letter's
    parameters and logical date), optionally with a new retry policy."""
    options = RunOptions(listener=listener, on_executor=on_executor)
    with Project.find(project_dir) as project:
        return project.requeue_dead_letter(
            letter_id, attempts=attempts, backoff=backoff, force=force, options=options
        )

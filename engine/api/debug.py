"""Run one task of an earlier run again, here, on the exact inputs that run gave it.

    project = engine.open(".")
    project.debug("scored")                   # the newest run in which `scored` FAILED
    project.debug("scored", run="20241102T03")  # or any run: an id, a prefix, 'last'

The task is planned as that run planned it: the definition the run recorded (the pipeline
file when it recorded none, or with `current=True` to try a fix to the file), the run's
parameters, run id and logical date, so its templates render the same. Its inputs are the
outputs of its upstream tasks in that run, or in the run that run reused them from, read
from the workspace where they were published; an ephemeral upstream (a query inlined into
its readers) is planned and handed over the same way. The attempt runs in this process,
without the executor: nothing is recorded in the catalog, no retry, no watermark, and its
output goes to a scratch folder that is removed once read.

It returns the output as a polars DataFrame (a whole table in memory: this is for looking at
it) or raises what the task raised, as a run records it: a UDF's own exception is the
`__cause__` of the UserCodeError, with its traceback into the UDF. A validate task returns
the rows that passed. A load is refused: running it again would write to its target. An
extract reads its source again, now; a recorded definition has its secrets masked, so one
whose connection needs them takes `current=True`.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.core.errors import SelectionError, StateError
from engine.core.problems import did_you_mean
from engine.core.states import TaskState
from engine.spec.definition import Definition

if TYPE_CHECKING:
    import polars as pl

    from engine.api.reader import ProjectReader
    from engine.core.tables import InputTable
    from engine.planning.build import Plan, PlannedTask
    from engine.state.catalog import CatalogReader, RunRow
    from transforms.sql import DuckDatabase

__all__ = ["LAST_FAILED", "debug_task"]

LAST_FAILED = "last-failed"
"""The run to debug by default: the newest in which the task failed."""
_SEARCHED = 500
"""How many of the newest runs `last-failed` looks through."""


def debug_task(
    reader: ProjectReader,
    task: str,
    run: str = LAST_FAILED,
    *,
    pipeline: str | None = None,
    current: bool = False,
) -> pl.DataFrame:
    """Run `task` again as run `run` ran it (see the module's docstring); its output, or its
    error raised."""
    import polars as pl

    from engine.core.cancel import CancelToken
    from engine.core.tables import output_parts
    from engine.spec.model import TaskKind
    from engine.tasks import TaskContext, run_task
    from transforms.sql import DuckDatabase

    catalog = reader.catalog
    row = _run(catalog, task, run, pipeline)
    plan = _plan(reader, row, current)
    if task not in plan:
        raise SelectionError(
            f"the definition of run {row.run_id} has no task {task!r}."
            + did_you_mean(task, [t.id for t in plan.tasks])
        )
    planned = plan.task(task)
    if planned.kind is TaskKind.LOAD:
        raise SelectionError(
            f"task {task!r} is a load: running it again would write to its target",
            hint=f"debug the task it loads from: project.debug({planned.inputs[0]!r}, ...)"
            if planned.inputs
            else None,
        )
    planned = replace(planned, spec=planned.spec.model_copy(update={"materialize": "table"}))
    database = DuckDatabase()
    try:
        inputs = {name: _input(reader, plan, row, name, database) for name in planned.inputs}
        with tempfile.TemporaryDirectory(prefix="arrowline-debug-") as scratch:
            context = TaskContext(
                row.pipeline,
                row.run_id,
                plan.base_dir,
                planned,
                1,
                inputs,
                Path(scratch) / task,
                CancelToken(),
                duckdb=database,
                connections=_connections(plan, planned),
            )
            run_task(context)
            parts = output_parts(Path(scratch) / task)
            if not parts:
                return pl.DataFrame()
            return pl.read_parquet([str(part) for part in parts])
    finally:
        database.close()


def _run(catalog: CatalogReader, task: str, run: str, pipeline: str | None) -> RunRow:
    if run != LAST_FAILED:
        return catalog.run_of(pipeline, run) if pipeline else catalog.run(run)
    pipelines = [pipeline] if pipeline else catalog.pipelines()
    known = {t for name in pipelines for t in catalog.task_ids(name)}
    if task not in known:
        where = f"pipeline {pipeline!r}" if pipeline else "any run in the catalog"
        raise SelectionError(f"no task {task!r} in {where}.{did_you_mean(task, known)}")
    for row in catalog.runs(pipeline, _SEARCHED):
        found = catalog.task_run(row.run_id, task)
        if found is not None and found.state is TaskState.FAILED:
            return row
    raise StateError(
        f"task {task!r} failed in none of the last {_SEARCHED} runs",
        hint="give the run to debug: project.debug(task, run=RUN_ID); project.runs() lists them",
    )


def _plan(reader: ProjectReader, row: RunRow, current: bool) -> Plan:
    """The run's plan again: its definition, parameters, run id and logical date."""
    from engine.core.secrets import without_masked
    from engine.planning.build import build_plan, kept_outputs
    from engine.state.values import parse

    definition = _definition(reader.path, row, current)
    params = without_masked(row.params)
    return build_plan(
        definition,
        params=params,
        run_id=row.run_id,
        logical_date=parse(row.logical_date),
        kept=kept_outputs(definition.spec, reader.catalog, params, before=row.run_id),
    )


def _definition(project_dir: Path, row: RunRow, current: bool) -> Definition:
    """What the run recorded, else (or when `current`) its pipeline file as it is now."""
    import yaml

    from engine.spec.shape import structural_check
    from engine.tasks.checks import load_definition

    file = Path(row.pipeline_file) if row.pipeline_file else None
    if file is not None and not file.is_absolute():  # as given to `arrowline run`, in the project
        file = project_dir / file
    if row.definition and not current:
        spec, problems, ids = structural_check(yaml.safe_load(row.definition), None, str(file))
        if spec is not None and not any(p.severity == "error" for p in problems):
            base = file.resolve().parent if file is not None else project_dir
            return Definition(spec, base, str(file) if file else None, None, ids)
    if file is not None and file.exists():
        return load_definition(file)
    raise StateError(
        f"run {row.run_id} recorded no definition that can be read, and its pipeline file "
        f"{str(file) if file else '(none: it was built in Python)'} is not there",
    )


def _input(
    reader: ProjectReader, plan: Plan, row: RunRow, name: str, database: DuckDatabase
) -> InputTable:
    """Upstream `name`'s output as the run's task read it."""
    from engine.state.objectstore import local_output
    from engine.state.workspace import LocalWorkspace

    upstream = plan.task(name) if name in plan else None
    if upstream is not None and upstream.spec.materialize == "ephemeral":
        return _handed_over(reader, plan, row, upstream, database)
    found = reader._output(name, row.run_id, row.pipeline)
    assert found.output_path is not None
    folder = local_output(found.output_path)  # an object store's: copied here first
    return LocalWorkspace(reader.path).table(name, found.output_run, folder)


def _handed_over(
    reader: ProjectReader, plan: Plan, row: RunRow, task: PlannedTask, database: DuckDatabase
) -> InputTable:
    """An ephemeral upstream: its query, planned over its own inputs, as the run inlined it."""
    from engine.core.cancel import CancelToken
    from engine.tasks import TaskContext, run_task

    inputs = {name: _input(reader, plan, row, name, database) for name in task.inputs}
    with tempfile.TemporaryDirectory(prefix="arrowline-debug-") as scratch:
        context = TaskContext(
            row.pipeline,
            row.run_id,
            plan.base_dir,
            task,
            1,
            inputs,
            Path(scratch),
            CancelToken(),
            duckdb=database,
        )
        outcome = run_task(context)
    if outcome.handed_over is None:
        raise StateError(f"task {task.id!r} is ephemeral but handed over no query")
    return outcome.handed_over


def _connections(plan: Plan, task: PlannedTask) -> dict[str, Any]:
    """The task's named connection, resolved (secrets filled in) as a run resolves it."""
    from connectors.registry import connector_of

    name = task.connection
    if name is None or name not in plan.connections:
        return {}
    spec = plan.connections[name]
    return {name: connector_of(spec).resolve(name, spec, plan.base_dir)}

"""Replay quarantined rows through a validate task (and chosen tasks after it) once the cause is
fixed: a schema relaxed, a reference table loaded, an upstream bug repaired.

A replay is a run of its own. The rows a validate task set aside in an earlier run, without the
`_arrowline_row` and `_arrowline_errors` columns it added, become the input of the validate task
for this run; they are written to the workspace as the output, for this run, of the validate
task's input task, which the plan reuses instead of running. The validate task runs again with the
current definition; rows that pass go on to the tasks named with `downstream`, rows that fail
again are quarantined again. Everything else in the pipeline is left alone.

In a replay the validate task sorts rows and never fails over how many fail: every row it reads
failed once, so its `max_rejected_fraction` (a share of a normal input) or `on_fail: fail` would
turn a partial fix into a FAILED run and a dead letter, while the rows that still fail stay
quarantined either way. It quarantines them, and the caller reports how many passed and how many
did not. A failure that concerns the schema itself (a missing column) still fails it.

Loads in `replace` mode are refused: they would replace the table with only the replayed rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq

from engine.core.errors import SelectionError, StateError
from engine.core.graph import Graph
from engine.core.secrets import without_masked
from engine.planning.build import Plan, PlannedTask, build_plan, kept_outputs
from engine.spec.definition import Definition
from engine.spec.model import TaskKind
from engine.state.catalog import CatalogReader, TaskRunRow
from engine.state.objectstore import local_output
from engine.state.retention import missing_output
from engine.state.workspace import QUARANTINE_DIR, Workspace
from transforms.config import OnFail

__all__ = ["ReplaySource", "plan_replay"]

_ADDED = ("_arrowline_row", "_arrowline_errors")


class ReplaySource:
    """The quarantine of one validate task in one run."""

    def __init__(self, row: TaskRunRow) -> None:
        assert row.output_path is not None
        self.row = row
        folder = local_output(row.output_path) / QUARANTINE_DIR
        self.files = sorted(folder.glob("part-*.parquet"))
        if not self.files:
            raise StateError(f"run {row.run_id} quarantined no rows of task {row.task_id!r}")

    @property
    def rows(self) -> int:
        return sum(pq.ParquetFile(path).metadata.num_rows for path in self.files)

    def write_input(self, directory: Path) -> None:
        """The quarantined rows as they were before validation, as an output's parts."""
        for n, path in enumerate(self.files):
            table = pq.read_table(path)
            table = table.drop_columns([c for c in _ADDED if c in table.column_names])
            pq.write_table(table, directory / f"part-{n:05d}.parquet")


def find_quarantine(
    catalog: CatalogReader, pipeline: str, task_id: str, run_id: str | None
) -> ReplaySource:
    if run_id is None:
        row = catalog.latest_output(pipeline, task_id)
        if row is None:
            raise StateError(f"task {task_id!r} of pipeline {pipeline!r} has no successful run")
    else:
        found = catalog.task_run(catalog.run(run_id).run_id, task_id)
        if found is None or found.output_path is None:
            raise StateError(f"run {run_id} has no output of task {task_id!r}")
        row = found
    if not row.output_on_disk:
        raise missing_output(catalog, row)
    return ReplaySource(row)


def _sorting(planned: PlannedTask) -> PlannedTask:
    """The validate task as a replay runs it: failing rows are quarantined, whatever their
    share (see the module's docstring)."""
    config = planned.spec.validate_
    assert config is not None
    sorting = config.model_copy(update={"on_fail": OnFail.QUARANTINE, "max_rejected_fraction": 1.0})
    return replace(planned, spec=planned.spec.model_copy(update={"validate_": sorting}))


def plan_replay(
    definition: Definition,
    catalog: CatalogReader,
    task_id: str,
    *,
    from_run: str | None = None,
    downstream: Sequence[str] = (),
    workspace: Workspace,
    run_id: str | None = None,
) -> tuple[Plan, ReplaySource]:
    """The plan of a replay run (`run_id`: the one its lock was taken for), with its input
    already written to the workspace."""
    spec = definition.spec
    if task_id not in {t.id for t in spec.tasks}:
        raise SelectionError(f"pipeline {spec.name!r} has no task {task_id!r}")
    task = spec.task(task_id)
    if task.kind is not TaskKind.VALIDATE or task.validate_ is None:
        raise SelectionError(
            f"task {task_id!r} is a {task.kind.value} task; only validate tasks quarantine rows"
        )
    source = find_quarantine(catalog, spec.name, task_id, from_run)
    recorded = catalog.run(source.row.run_id).params
    params = without_masked(recorded)
    kept = kept_outputs(spec, catalog, params)
    full = build_plan(definition, params=params, run_id=run_id, kept=kept)
    graph = Graph({t.id: t.upstream for t in full.tasks})
    below = graph.descendants([task_id])
    for name in downstream:
        if name not in below:
            raise SelectionError(
                f"{name!r} is not downstream of {task_id!r}; a replay runs only the validate "
                "task and tasks after it",
                hint=f"downstream of {task_id}: {', '.join(sorted(below)) or 'none'}",
            )
        config = full.task(name).spec.load
        if config is not None and getattr(config, "mode", None) == "replace":
            raise SelectionError(
                f"load {name!r} replaces its target; replaying would leave only the replayed rows "
                "in it",
                hint="run the pipeline normally instead, or replay into an append or merge load",
            )
    chosen = {task_id, *downstream}
    feed = task.validate_.input
    needed: dict[str, str] = {}  # task -> the run whose output this replay reads
    for planned in full.tasks:
        if planned.id not in chosen:
            continue
        for name in planned.inputs:
            if name in chosen or (name == feed and planned.id == task_id):
                continue
            latest = catalog.latest_output(spec.name, name)
            if latest is None:
                raise StateError(f"task {planned.id!r} reads {name!r}, which has no output yet")
            needed[name] = latest.run_id
    tasks = []
    for planned in full.tasks:
        if planned.id == feed:
            tasks.append(replace(planned, action="reuse", reuse_run=full.run_id))
        # what a replay writes is the replayed rows alone: never a cache's output, nor reused
        elif planned.id == task_id:
            tasks.append(replace(_sorting(planned), cache=None))
        elif planned.id in chosen:
            tasks.append(replace(planned, cache=None))
        elif planned.id in needed:
            tasks.append(replace(planned, action="reuse", reuse_run=needed[planned.id]))
    staging = workspace.prepare_staging(workspace.staging(spec.name, feed, full.run_id, 0))
    source.write_input(staging)
    workspace.publish(staging, spec.name, feed, full.run_id)
    plan = replace(full, tasks=tuple(tasks), selected=tuple(sorted(chosen)))
    return plan, source

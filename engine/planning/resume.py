"""Continue a run that did not succeed, under its own run id.

`plan_resume` rebuilds the plan of an ended run (FAILED, CANCELLED or INTERRUPTED) with the
parameters, logical date and selection it ran with, and marks every task that succeeded in it,
and whose definition and upstream are unchanged, as reused: its published output (or, for a
load, its committed rows) stands. The rest run again. Keeping the run id keeps loads idempotent:
file sinks name their files by run id and overwrite them, database sinks find their own row in
the `arrowline_state.loads` ledger when the earlier attempt committed after all.

When the definition changed since the run, resuming would mix two versions of the pipeline in one
run; it is refused with a diff unless forced, and a forced resume re-runs every task whose
definition changed, with everything downstream of it.
"""

from __future__ import annotations

import difflib
from dataclasses import replace
from datetime import datetime

from engine.core.errors import StateError
from engine.core.secrets import without_masked
from engine.core.states import RESUMABLE, RunState, TaskState
from engine.planning.build import Plan, PlannedTask, build_plan, kept_outputs
from engine.spec.definition import Definition
from engine.state.catalog import CatalogReader, RunRow

__all__ = [
    "ResumeRefused",
    "definition_diff",
    "find_run_to_resume",
    "plan_resume",
]


class ResumeRefused(StateError):
    """The pipeline changed since the run; the message carries the diff."""


def find_run_to_resume(catalog: CatalogReader, pipeline: str, run_ref: str) -> RunRow:
    run = catalog.run_of(pipeline, run_ref)
    if run.state is RunState.SUCCESS:
        raise StateError(f"run {run.run_id} succeeded; there is nothing to resume")
    if run.state not in RESUMABLE:
        raise StateError(
            f"run {run.run_id} is {run.state.value} and its process is alive; "
            "it cannot be resumed while it runs"
        )
    return run


def definition_diff(run: RunRow, plan: Plan, fingerprints: dict[str, str | None]) -> str:
    """What changed between the run's definition and the current one, for people."""
    lines = []
    current = {task.id: task.fingerprint for task in plan.tasks}
    changed = sorted(t for t in current if t in fingerprints and fingerprints[t] != current[t])
    added = sorted(set(current) - set(fingerprints))
    removed = sorted(set(fingerprints) - set(current))
    if changed:
        lines.append(f"tasks changed: {', '.join(changed)}")
    if added:
        lines.append(f"tasks added: {', '.join(added)}")
    if removed:
        lines.append(f"tasks removed: {', '.join(removed)}")
    if run.definition and plan.definition:
        diff = difflib.unified_diff(
            run.definition.splitlines(),
            plan.definition.splitlines(),
            fromfile=f"run {run.run_id}",
            tofile=plan.pipeline_file or "current definition",
            lineterm="",
        )
        lines.extend(diff)
    return "\n".join(lines) or "the pipeline's settings changed"


def _still_there(catalog: CatalogReader, run_id: str, task_id: str) -> bool:
    """Whether an output the run reused from an earlier run can be reused again: retention
    may have removed it since (a run it no longer keeps), and then the task runs instead."""
    row = catalog.task_run(run_id, task_id)
    return row is None or row.output_on_disk


def plan_resume(
    definition: Definition, catalog: CatalogReader, run: RunRow, *, force: bool = False
) -> Plan:
    spec = definition.spec
    # secret parameters were recorded masked: they come from the defaults and environment again
    recorded = without_masked(run.params)
    params = {name: value for name, value in recorded.items() if name in spec.params}
    reused_before = catalog.reused(run.run_id)
    fresh = build_plan(
        definition,
        params=params,
        select=_recorded_selection(run.selected),
        catalog=None,
        run_id=run.run_id,
        logical_date=datetime.fromisoformat(run.logical_date),
        kept=kept_outputs(spec, catalog, params, before=run.run_id),
    )
    rows = {row.task_id: row for row in catalog.task_runs(run.run_id)}
    fingerprints: dict[str, str | None] = {t: r.fingerprint for t, r in rows.items()}
    if fresh.pipeline_version != run.pipeline_version and not force:
        raise ResumeRefused(
            f"pipeline {spec.name!r} changed since run {run.run_id}; resuming would mix two "
            "versions in one run:\n" + definition_diff(run, fresh, fingerprints),
            hint="run it afresh, or pass --force to re-run the changed tasks and their downstream",
        )
    reused: set[str] = set()
    ephemeral: set[str] = set()
    tasks = []
    for task in fresh.tasks:  # dependency order: upstream decisions are known
        row = rows.get(task.id)
        upstream_kept = all(dep in reused for dep in task.upstream if dep in fresh)
        if (
            task.id in reused_before
            and task.id not in rows
            and _still_there(catalog, reused_before[task.id], task.id)
        ):
            tasks.append(replace(task, action="reuse", reuse_run=reused_before[task.id]))
            reused.add(task.id)
        elif (
            row is not None
            and row.state is TaskState.SUCCESS
            and row.fingerprint == task.fingerprint
            and upstream_kept
            # with a shared catalog the run may have started on another host, whose published
            # outputs are on its own disk: a task whose output is not here runs again
            and row.output_on_disk
        ):
            if task.produces_table and row.output_path is None:
                # an ephemeral output was never kept: the loads that read it stand as they are
                # (running them again from a fresh extract would overwrite what they wrote with
                # other rows: an incremental extract starts past what they committed); it is
                # extracted again only for those that run again (below)
                ephemeral.add(task.id)
            tasks.append(replace(task, action="reuse", reuse_run=run.run_id))
            reused.add(task.id)
        else:
            tasks.append(replace(task, action="run", reuse_run=None))
    # what runs again needs the ephemeral outputs it reads made again, and those theirs
    upstream = {t.id: t.upstream for t in tasks}
    rerun = {t.id for t in tasks if t.action == "run"}
    frontier = list(rerun)
    while frontier:
        for dep in upstream[frontier.pop()]:
            if dep in ephemeral and dep not in rerun:
                rerun.add(dep)
                frontier.append(dep)
    tasks = [
        replace(t, action="run", reuse_run=None) if t.id in ephemeral & rerun else t for t in tasks
    ]
    return replace(fresh, tasks=tuple(_said(task) for task in tasks), resumed=True)


def _said(task: PlannedTask) -> PlannedTask:
    """What the plan says of a kept task: the output that stands for it."""
    if task.action != "reuse" or task.cache is None:
        return task
    said = replace(task.cache, reason=f"cached (run {task.reuse_run})", detail="kept by --resume")
    return replace(task, cache=said)


def _recorded_selection(selected: list[str] | None) -> list[str] | None:
    """The selection a run recorded, as terms of today's grammar. Runs now record task ids;
    runs recorded before it record what was typed, where a comma meant "or" (it now means
    "and"), so each comma-separated part is a term of its own: the same tasks as then."""
    if selected is None:
        return None
    return [part.strip() for item in selected for part in item.split(",") if part.strip()]

"""`arrowline table optimize|vacuum|expire-snapshots PIPELINE TASK`: maintenance of the table a
task reads or writes, when its connector keeps tables of an open table format."""

from __future__ import annotations

from typing import Any

from connectors.base import ConnectorContext, Maintenance
from engine.core.errors import SelectionError
from engine.core.problems import did_you_mean
from engine.execution.connections import resolve_plan_connections
from engine.planning.build import build_plan
from engine.spec.definition import Definition

__all__ = ["maintain_table"]


def maintain_table(definition: Definition, task_id: str, job: Maintenance) -> dict[str, Any]:
    """Run `job` on the table of task `task_id`; what it did, as figures."""
    plan = build_plan(definition)
    tasks = {task.id: task for task in plan.tasks}
    tables = [
        task.id
        for task in plan.tasks
        if task.spec.connector is not None and task.spec.connector.capabilities.tables
    ]
    task = tasks.get(task_id)
    if task is None or task_id not in tables:
        what = "no task" if task is None else "not a task reading or writing a table format's"
        raise SelectionError(
            f"{task_id!r} is {what} table in {plan.pipeline}.{did_you_mean(task_id, tables)}",
            hint=f"tables of {plan.pipeline}: {', '.join(tables) or 'none'}",
        )
    owner = task.spec.connector
    config = task.spec.load if task.spec.load is not None else task.spec.extract
    assert owner is not None
    assert config is not None
    ctx = ConnectorContext(
        base_dir=plan.base_dir,
        pipeline=plan.pipeline,
        run_id="maintenance",
        task_id=task_id,
        connections=resolve_plan_connections(plan),
    )
    return owner.maintain(config, job, ctx)

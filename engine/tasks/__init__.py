"""Task kinds: one module per kind (extract, sql, udf, validate, load) behind one protocol
(`engine.tasks.base.Kind`), and the `KINDS` registry the planner, the checks, the dry run,
lineage and the executor read instead of branching on a task's kind."""

from __future__ import annotations

from typing import assert_never

from engine.spec.model import TaskKind, TaskSpec
from engine.tasks import extract, load, sql, udf, validate
from engine.tasks.base import Kind, TaskContext, TaskOutcome, TaskRunner

__all__ = ["KINDS", "Kind", "TaskContext", "TaskOutcome", "TaskRunner", "kind_of", "run_task"]

KINDS: dict[TaskKind, Kind] = {
    TaskKind.EXTRACT: extract.KIND,
    TaskKind.SQL: sql.KIND,
    TaskKind.UDF: udf.KIND,
    TaskKind.VALIDATE: validate.KIND,
    TaskKind.LOAD: load.KIND,
}
"""Every kind a task can have; a kind's module imports its heavy code where it runs."""


def kind_of(task: TaskSpec) -> Kind:
    kind = task.kind
    match kind:
        case TaskKind.EXTRACT | TaskKind.SQL | TaskKind.UDF | TaskKind.VALIDATE | TaskKind.LOAD:
            return KINDS[kind]
        case _:
            assert_never(kind)


def run_task(context: TaskContext) -> TaskOutcome:
    """The default runner: one attempt of the task, by its kind."""
    return kind_of(context.task.spec).run(context)

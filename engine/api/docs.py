"""A pipeline's documentation, as `arrowline docs` and the monitor show it: every task with its
description, settings, file and tests, its output's columns with their types, descriptions and
the columns each is computed from (column lineage), and the task graph.

    docs = pipeline_docs(project, "shop")
    docs.tasks[0].columns[0].sources     # ("stg_orders.order_id (value)",)

Everything comes from the pipeline as defined now and its plan: schemas from the plan's dry
runs (the last run's output where a source cannot say), lineage from the same code `arrowline
lineage` uses. Nothing runs.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.api.pictures import task_boxes
from engine.views.svg import dag_svg

if TYPE_CHECKING:
    from engine.api.project import PipelineLike, Project

__all__ = ["ColumnDoc", "PipelineDocs", "TaskDoc", "pipeline_docs"]


@dataclass(frozen=True)
class ColumnDoc:
    name: str
    type: str
    description: str
    sources: tuple[str, ...]
    """The columns it is computed from: `task.column (value)` or `(filter)`."""
    tests: tuple[str, ...]


@dataclass(frozen=True)
class TaskDoc:
    id: str
    kind: str
    description: str
    tags: tuple[str, ...]
    output: str
    """Where its output goes: the workspace, inlined, a load's target."""
    file: str | None
    """A sql task's file, relative to the pipeline's folder."""
    upstream: tuple[str, ...]
    downstream: tuple[str, ...]
    columns: tuple[ColumnDoc, ...]
    tests: tuple[str, ...]
    """Tests not of one column: singular and custom tests of the whole output."""
    unknown: str | None
    """Why its columns are not known, when they are not."""


@dataclass(frozen=True)
class PipelineDocs:
    name: str
    description: str
    tasks: tuple[TaskDoc, ...]
    svg: str
    """The task graph; each box links to its task's section (`#task-<id>`)."""


def pipeline_docs(project: Project, pipeline: PipelineLike) -> PipelineDocs:
    from engine.tasks.lineage import pipeline_lineage

    definition = project.definition(pipeline)
    plan = project.plan(definition)
    report = project.plan_schemas(definition, plan)
    known = [task for task in plan.tasks if task.id in report.schemas]
    graph = pipeline_lineage(known, report.schemas, plan.base_dir, call_udfs=False)
    sources: dict[str, list[str]] = defaultdict(list)
    for edge in graph.edges:
        sources[edge.target].append(f"{edge.source} ({edge.kind})")
    downstream: dict[str, list[str]] = defaultdict(list)
    for task in plan.tasks:
        for upstream in task.upstream:
            downstream[upstream].append(task.id)
    tasks = []
    for task in plan.tasks:
        spec = task.spec
        schema = report.schemas.get(task.id)
        tested: dict[str, list[str]] = defaultdict(list)
        whole: list[str] = []
        for test in spec.tests:
            column = test.tested_column
            (tested[column] if column is not None else whole).append(test.name)
        columns = tuple(
            ColumnDoc(
                field.name,
                str(field.type),
                spec.column_descriptions.get(field.name, ""),
                tuple(sorted(sources.get(f"{task.id}.{field.name}", ()))),
                tuple(tested.get(field.name, ())),
            )
            for field in (schema or ())
        )
        sql = definition.spec.task(task.id).sql  # as declared: the rendered one has no file
        tasks.append(
            TaskDoc(
                task.id,
                task.kind.value,
                spec.description or "",
                spec.tags,
                task.describe_output(),
                sql.file if sql is not None and sql.file is not None else None,
                task.upstream,
                tuple(downstream.get(task.id, ())),
                columns,
                tuple(whole),
                report.unknown.get(task.id) if schema is None else None,
            )
        )
    boxes = task_boxes(project, definition, href=lambda task_id: f"#task-{task_id}", plan=plan)
    return PipelineDocs(
        definition.name, definition.spec.description or "", tuple(tasks), dag_svg(boxes)
    )

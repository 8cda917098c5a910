"""Render a task for one run and work out which tasks it depends on.

Dependencies come from three places: what the task's kind reads (the `input:` of udf, validate
and load tasks; the tables a sql task's statement names, parsed after rendering since a template
can choose the table); and explicit `depends_on:`. Validation and planning both call
`resolve_task`, so the dependencies `arrowline validate` checks are the ones `arrowline run`
follows.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.spec.definition import Definition
from engine.spec.model import TaskSpec
from engine.spec.params import RenderContext
from engine.spec.resolve import render_task
from engine.tasks import kind_of
from lineage.tables import TableRef

__all__ = ["ResolvedTask", "resolve_task"]


@dataclass(frozen=True)
class ResolvedTask:
    """A task with its templates rendered and its upstream tasks known."""

    spec: TaskSpec
    inputs: tuple[str, ...]
    """Tasks whose output this task reads as data."""
    upstream: tuple[str, ...]
    """Inputs plus explicit `depends_on`, in order, without repeats."""
    sql: str | None = None
    """The rendered statement of a sql task."""
    tables: tuple[TableRef, ...] = ()
    """Tables the sql statement reads (task ids, when the pipeline is valid)."""


def resolve_task(task: TaskSpec, context: RenderContext, definition: Definition) -> ResolvedTask:
    """Render `task` and find its upstream tasks. SQL that does not parse raises DefinitionError
    (`engine.tasks.sql.SqlDoesNotParse`, with the place in the statement)."""
    rendered = render_task(task, context, definition)
    reads = kind_of(rendered).inputs(rendered)
    upstream = tuple(dict.fromkeys([*reads.tasks, *rendered.depends_on]))
    return ResolvedTask(rendered, reads.tasks, upstream, reads.sql, reads.tables)

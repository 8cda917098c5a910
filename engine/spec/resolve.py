"""Render a task's templates for one run: every string of its kind's config, a sql task's
statement (from its `file:` too) and a source's `query` as SQL (quoting filters, raw numbers in
parentheses). Which tasks a rendered task reads is its kind's answer (`engine.tasks.resolve`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ValidationError

from engine.core.errors import DefinitionError, ParameterError
from engine.spec.definition import Definition
from engine.spec.model import KIND_FIELDS, TaskKind, TaskSpec
from engine.spec.params import RenderContext, render
from transforms.config import SqlSpec

__all__ = ["render_task", "sql_text", "template_texts"]


def sql_text(task: TaskSpec, definition: Definition) -> str:
    """The unrendered statement of a sql task, read from `file:` when it has one."""
    config = task.sql
    assert config is not None
    if config.query is not None:
        return config.query
    assert config.file is not None
    path = definition.resolve_path(config.file)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DefinitionError(
            f"cannot read SQL file {config.file!r} of task {task.id!r}: {exc.strerror}"
        ) from None


def template_texts(task: TaskSpec, definition: Definition) -> list[str]:
    """The texts of a task that are templates: a sql task's statement (from its file, too),
    else every string of its kind config. Raises DefinitionError for an unreadable SQL file."""
    if task.kind is TaskKind.SQL:
        return [sql_text(task, definition)]
    return list(_strings(task.config.model_dump(by_alias=True)))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _render_value(value: Any, context: RenderContext, task_id: str) -> Any:
    if isinstance(value, str):
        return render(value, context, task_id)
    if isinstance(value, dict):
        return {key: _render_value(item, context, task_id) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_render_value(item, context, task_id) for item in value]
    return value


def render_task(task: TaskSpec, context: RenderContext, definition: Definition) -> TaskSpec:
    """Render every string in the task's kind config. Raises ParameterError or DefinitionError."""
    kind_field = KIND_FIELDS[task.kind]
    config = getattr(task, kind_field)
    if task.kind is TaskKind.SQL:
        statement = render(sql_text(task, definition), context, task.id, sql=True)
        rendered: BaseModel = SqlSpec(query=statement)
    else:
        assert isinstance(config, BaseModel)
        raw = config.model_dump(by_alias=True, exclude_unset=True)
        raw = {
            # a source's `query` is SQL: it renders as a sql task's statement does
            key: render(value, context, task.id, sql=True)
            if key == "query" and isinstance(value, str)
            else _render_value(value, context, task.id)
            for key, value in raw.items()
        }
        try:
            rendered = type(config).model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ParameterError(
                f"after rendering templates, {task.kind.value}.{where} is invalid: {first['msg']}"
            ) from None
    return task.model_copy(update={kind_field: rendered})

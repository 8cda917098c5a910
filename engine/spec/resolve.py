"""Render a task's templates for one run: every string of its kind's config, a sql task's
statement (from its `file:` too) and a source's `query` as SQL (quoting filters, raw numbers in
parentheses). Which tasks a rendered task reads is its kind's answer (`engine.tasks.resolve`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from engine.core.config import ConfigModel, field_roles
from engine.core.errors import DefinitionError, ParameterError
from engine.spec.definition import Definition
from engine.spec.hooks import HOOK_WHEN, HooksSpec
from engine.spec.model import KIND_FIELDS, TaskKind, TaskSpec
from engine.spec.params import RenderContext, is_template, literal_prints, render
from engine.spec.templates import referenced_params

__all__ = ["render_task", "sql_text", "template_texts", "test_blocks_as_macros"]


def sql_text(task: TaskSpec, definition: Definition) -> str:
    """The unrendered statement of a sql task, read from `file:` when it has one, with dbt's
    quoted prints as literals (`engine.spec.params.literal_prints`)."""
    config = task.sql
    assert config is not None
    if config.query is not None:
        return literal_prints(config.query)
    assert config.file is not None
    path = definition.resolve_path(config.file)
    try:
        return literal_prints(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DefinitionError(
            f"cannot read SQL file {config.file!r} of task {task.id!r}: {exc.strerror}"
        ) from None


def macro_texts(definition: Definition) -> tuple[tuple[str, str], ...]:
    """The pipeline's macro files as (name, text), each named as the pipeline names it.
    Raises DefinitionError for one that cannot be read."""
    found = []
    for name in definition.spec.macros:
        try:
            text = definition.resolve_path(name).read_text(encoding="utf-8")
            found.append((name, test_blocks_as_macros(text)))
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise DefinitionError(f"cannot read macro file {name!r}: {reason}") from None
    return tuple(found)


_TEST_BLOCK = re.compile(r"({%-?\s*)test(\s+)(\w+)")
_END_TEST = re.compile(r"({%-?\s*)endtest(\s*-?%})")


def test_blocks_as_macros(text: str) -> str:
    """dbt's custom generic tests (`{% test name(model, column_name) %} ... {% endtest %}`) as
    the macros dbt makes of them, `test_name`: a property file's test `name` calls it."""
    if "test" not in text:
        return text
    return _END_TEST.sub(r"\1endmacro\2", _TEST_BLOCK.sub(r"\1macro\2test_\3", text))


def template_texts(task: TaskSpec, definition: Definition) -> list[str]:
    """The texts of a task that are templates: a sql task's statement (from its file, too),
    else every string of its kind config. Raises DefinitionError for an unreadable SQL file."""
    if task.kind is TaskKind.SQL:  # its statement, and its tests' queries
        return [sql_text(task, definition), *(t.sql for t in task.tests if t.sql is not None)]
    hooks = [*task.hooks.pre, *task.hooks.post] if task.hooks is not None else []
    return [*_strings(task.config.model_dump(by_alias=True)), *hooks]


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


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):  # a files source's paths (a tuple once validated)
        return [item for item in value if isinstance(item, str)]
    return []


def _refuse_templated_code(value: Any, where: str) -> None:
    for text in _texts(value):
        if is_template(text):
            raise ParameterError(
                f"{where} names code to run, so no template may choose it: {text!r}",
                hint="name the function or schema itself; a parameter can be an argument "
                "(udf.args) but not the code",
            )


def _check_path(template: Any, rendered: Any, context: RenderContext, where: str) -> None:
    """A parameter rendered into a path names something inside the folder the template points
    into: its value is relative and never climbs (`..`), and the rendered path climbs no
    further and starts no higher than the template's own text does."""
    for text, result in zip(_texts(template), _texts(rendered), strict=True):
        if not is_template(text):
            continue
        for name in sorted(referenced_params(text)):
            value = str(context.params.get(name, ""))
            if _climbs(value) or _rooted(value):
                raise ParameterError(
                    f"parameter {name!r} puts {value!r} into {where}: a parameter may name a "
                    "file or folder inside the one the path points into, not leave it",
                    hint="give a name relative to that folder, without '..'",
                )
        literal = _TEMPLATE_PARTS.sub("", text)
        if _climbs(result) > _climbs(literal) or (_rooted(result) and not _rooted(literal)):
            raise ParameterError(
                f"{where} rendered to {result!r}, which leaves the folder {text!r} points into",
                hint="parameters may name files and folders inside it, without '..'",
            )


_TEMPLATE_PARTS = re.compile(r"{{.*?}}|{%.*?%}|{#.*?#}", re.DOTALL)


def _climbs(path: str) -> int:
    """How many `..` steps a path takes (either slash)."""
    return sum(1 for part in re.split(r"[/\\]", path) if part == "..")


def _rooted(path: str) -> bool:
    """Absolute, home-relative, a Windows drive, a URI (`file:///...`, `s3://...`), or holding a
    NUL."""
    return (
        path.startswith(("/", "\\", "~"))
        or bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", path))
        or "\x00" in path
    )


def render_task(task: TaskSpec, context: RenderContext, definition: Definition) -> TaskSpec:
    """Render every string in the task's kind config. Raises ParameterError or DefinitionError."""
    kind_field = KIND_FIELDS[task.kind]
    config = getattr(task, kind_field)
    if task.kind is TaskKind.SQL:
        statement = render(sql_text(task, definition), context, task.id, sql=True)
        rendered: BaseModel = config.rendered(statement)
        if any(t.sql is not None for t in task.tests):
            tests = tuple(
                t
                if t.sql is None
                else t.model_copy(update={"sql": render(t.sql, context, task.id, sql=True)})
                for t in task.tests
            )
            task = task.model_copy(update={"tests": tests})
    else:
        assert isinstance(config, BaseModel)
        raw = config.model_dump(by_alias=True, exclude_unset=True)
        roles = field_roles(type(config))
        rendered_raw = {}
        for key, value in raw.items():
            where = f"{task.kind.value}.{key}"
            if roles.get(key) == "code":
                _refuse_templated_code(value, where)
            if (key == "query" or roles.get(key) == "sql") and isinstance(value, str):
                # a source's `query` and every SQL field render as a sql task's statement does
                rendered_raw[key] = render(value, context, task.id, sql=True)
            else:
                rendered_raw[key] = _render_value(value, context, task.id)
            if roles.get(key) == "path":
                _check_path(value, rendered_raw[key], context, where)
        raw = rendered_raw
        try:
            rendered = type(config).model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ParameterError(
                f"after rendering templates, {task.kind.value}.{where} is invalid: {first['msg']}"
            ) from None
    if task.hooks is not None:
        hooks = _rendered_hooks(task, task.hooks, rendered, context, definition)
        task = task.model_copy(update={"hooks": hooks})
    return task.model_copy(update={kind_field: rendered})


def _rendered_hooks(
    task: TaskSpec,
    hooks: HooksSpec,
    config: BaseModel,
    context: RenderContext,
    definition: Definition,
) -> HooksSpec:
    """A load's hooks rendered as SQL, `{{ this }}` its table as the load writes it, each
    knowing the file and line it is written at (what its failure names)."""
    owner = task.connector
    this = owner.relation(config) if owner is not None and isinstance(config, ConfigModel) else None
    rendered: dict[str, tuple[str, ...]] = {}
    places: dict[str, tuple[str | None, ...]] = {}
    for when in HOOK_WHEN:
        texts = getattr(hooks, when)
        located = [definition.task_location(task.id, "hooks", when, i) for i in range(len(texts))]
        made = []
        for number, (text, (file, line)) in enumerate(zip(texts, located, strict=True), 1):
            try:
                made.append(render(text, context, task.id, sql=True, this=this))
            except ParameterError as exc:  # said where the hook is written, not the load
                at = exc.place or ((str(Path(file).resolve()), line) if file else None)
                raise ParameterError(
                    f"{when}-hook {number}: {exc.message}", hint=exc.hint, place=at
                ) from None
        rendered[when] = tuple(made)
        places[when] = tuple(f"{f}:{line}" if f and line else f for f, line in located)
    return HooksSpec(**rendered).placed(places)

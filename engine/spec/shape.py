"""The structural pass of validation: does the file have the shape of a pipeline?

pydantic checks the shape; this module turns its errors into `Problem`s a person can act on:
the file and line of the value, the key as written (without pydantic's union tags), the valid
keys for an unknown one, "did you mean" for a misspelt connector or task kind. Each task is
checked on its own, so one broken task does not hide the problems of the others.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from engine.core.problems import Problem, did_you_mean
from engine.core.yaml_source import PathKey, SourceMap
from engine.spec.model import PipelineSpec, TaskKind, TaskSpec

__all__ = ["KIND_KEYS", "structural_check"]

KIND_KEYS = {kind.value for kind in TaskKind}
_TAG_KEYS = {"extract": "from", "load": "to"}
_HEADER_CHECK_TASK = {"id": "header_check", "sql": "select 1"}
"""Stands in for the tasks while the header (name, params, defaults) is checked on its own."""


# ---------------------------------------------------------------------------------------------
# structural pass


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types inside Optional / Union / Annotated."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        result: list[Any] = []
        for arg in typing.get_args(annotation):
            result.extend(_unwrap(arg))
        return result
    return [annotation]


def _aliases(model: type[BaseModel]) -> dict[str, Any]:
    return {(info.alias or name): info.annotation for name, info in model.model_fields.items()}


def _model_for(annotation: Any, raw: Any) -> type[BaseModel] | None:
    """The model a raw mapping is validated against (a tagged union picks by its tag)."""
    candidates = [
        t for t in _unwrap(annotation) if isinstance(t, type) and issubclass(t, BaseModel)
    ]
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    for candidate in candidates:
        for key, field_annotation in _aliases(candidate).items():
            tags = (
                typing.get_args(field_annotation)
                if typing.get_origin(field_annotation) is typing.Literal
                else ()
            )
            if isinstance(raw, dict) and key in raw and raw[key] in tags and len(tags) == 1:
                return candidate
    return None


def _item_annotation(annotation: Any) -> Any:
    """The element type of a list, tuple or dict annotation (inside Optional/Annotated)."""
    for candidate in _unwrap(annotation):
        origin = typing.get_origin(candidate)
        args = typing.get_args(candidate)
        if origin in (list, tuple) and args:
            return args[0]
        if origin is dict and len(args) == 2:
            return args[1]
    return None


def _walk(
    root: type[BaseModel], raw: Any, loc: tuple[Any, ...]
) -> tuple[PathKey, type[BaseModel] | None]:
    """Follow a pydantic error location through the raw data.

    Returns the location without pydantic's bookkeeping elements (a union member's tag, a type
    name), and the model class of the value it ends at, when that value is a model.
    """
    shown: list[str | int] = []
    annotation: Any = root
    value = raw
    for element in loc:
        if isinstance(value, dict) and element in value:
            model = _model_for(annotation, value)
            annotation = (
                _aliases(model).get(str(element)) if model else _item_annotation(annotation)
            )
        elif isinstance(value, list) and isinstance(element, int) and element < len(value):
            annotation = _item_annotation(annotation)
        else:
            continue
        shown.append(element)
        value = value[element]
    return tuple(shown), _model_for(annotation, value)


def _display(path: PathKey) -> str:
    text = ""
    for element in path:
        text += (
            f"[{element}]"
            if isinstance(element, int)
            else (f".{element}" if text else str(element))
        )
    return text


def _pydantic_problems(
    error: ValidationError,
    root: type[BaseModel],
    raw: Any,
    prefix: PathKey,
    source: SourceMap | None,
    file: str | None,
    task_id: str | None,
) -> list[Problem]:
    problems = []
    for item in error.errors():
        path, _ = _walk(root, raw, tuple(item["loc"]))
        full = (*prefix, *path)
        at, line = source.locate(full, file) if source else (file, None)
        kind = item["type"]
        where = _display(path) or "task"
        ctx = item.get("ctx") or {}
        hint = None
        if kind == "extra_forbidden":
            key = str(item["loc"][-1])
            parent, parent_model = _walk(root, raw, tuple(item["loc"][:-1]))
            valid = sorted(_aliases(parent_model)) if parent_model else []
            message = (
                f"unknown key {key!r}"
                + (f" in {_display(parent)}" if parent else "")
                + f".{did_you_mean(key, valid)}"
            )
            if valid:
                hint = f"valid keys: {', '.join(valid)}"
            code = "unknown-key"
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            said = str(ctx.get("discriminator", "")).strip("'")
            named = said if said.isidentifier() else None  # not aliases, not a callable's repr
            tag_key = named or _TAG_KEYS.get(str(path[-1]) if path else "", "from")
            expected = str(ctx.get("expected_tags", "")).replace("'", "")
            if kind == "union_tag_invalid":
                tag = str(ctx.get("tag"))
                message = (
                    f"{where}: unknown {tag_key!r} value {tag!r}."
                    f"{did_you_mean(tag, [t.strip() for t in expected.split(',')])}"
                )
            else:
                message = f"{where}: missing {tag_key!r}"
            hint = f"valid values of {tag_key!r}: {expected}"
            code = "unknown-connector" if tag_key in ("from", "to", "kind") else "unknown-value"
        elif kind == "missing":
            key = str(item["loc"][-1])
            # a missing key is not in the data, so the path walked ends at its parent
            message = f"{_display(path) or 'pipeline'}: missing required key {key!r}"
            if path and path[-1] == item["loc"][-1]:
                message = f"missing required key {where!r}"
            code = "missing-key"
        else:
            message_text = str(item["msg"]).removeprefix("Value error, ")
            given = item.get("input")
            shown = (
                ""
                if isinstance(given, dict | list) or kind == "value_error"
                else f" (got {given!r})"
            )
            message = f"{where}: {message_text}{shown}"
            code = "invalid-value"
        problems.append(Problem(code, message, file=at, line=line, task_id=task_id, hint=hint))
    return problems


def _task_kind_problem(
    raw: dict[str, Any], index: int, source: SourceMap | None, file: str | None, task_id: str | None
) -> Problem | None:
    """A task without a known kind key, reported as a kind (not an unknown key) problem."""
    if KIND_KEYS & raw.keys():
        return None
    known = set(_aliases(TaskSpec))
    unknown = [key for key in raw if key not in known]
    kinds = ", ".join(k.value for k in TaskKind)
    if unknown:
        key = unknown[0]
        line = source.line_of(("tasks", index, key)) if source else None
        return Problem(
            "unknown-kind",
            f"unknown task kind {key!r}.{did_you_mean(key, list(KIND_KEYS))}",
            file=file,
            line=line,
            task_id=task_id,
            hint=f"valid kinds: {kinds}",
        )
    line = source.line_of(("tasks", index)) if source else None
    return Problem(
        "missing-kind",
        f"the task has no kind; add exactly one of: {kinds}",
        file=file,
        line=line,
        task_id=task_id,
    )


def structural_check(
    data: Any, source: SourceMap | None, file: str | None
) -> tuple[PipelineSpec | None, list[Problem], tuple[str | None, ...]]:
    """Shape checks. Returns the spec of the valid tasks (or None), problems, and the ids of all
    tasks in file order (None for a task without a usable id)."""
    if not isinstance(data, dict):
        return (
            None,
            [
                Problem(
                    "not-a-mapping",
                    "the pipeline file must be a mapping with at least 'pipeline:' and 'tasks:'",
                    file=file,
                    line=1,
                )
            ],
            (),
        )
    problems: list[Problem] = []
    raw_tasks = data.get("tasks")
    header = {key: value for key, value in data.items() if key != "tasks"}
    if isinstance(raw_tasks, list) and raw_tasks:
        header["tasks"] = [_HEADER_CHECK_TASK]
    elif "tasks" in data:
        header["tasks"] = raw_tasks
    try:
        PipelineSpec.model_validate(header)
        header_ok = True
    except ValidationError as exc:
        header_ok = False
        problems += _pydantic_problems(exc, PipelineSpec, header, (), source, file, None)

    all_ids: list[str | None] = []
    valid_raw: list[dict[str, Any]] = []
    for index, raw in enumerate(raw_tasks if isinstance(raw_tasks, list) else []):
        raw_id = raw.get("id") if isinstance(raw, dict) else None
        all_ids.append(raw_id if isinstance(raw_id, str) else None)
        if not isinstance(raw, dict):
            line = source.line_of(("tasks", index)) if source else None
            problems.append(
                Problem(
                    "task-not-a-mapping",
                    f"tasks[{index}] must be a mapping with an 'id' and one kind key, "
                    f"got {type(raw).__name__}",
                    file=file,
                    line=line,
                )
            )
            continue
        task_id = all_ids[-1]
        kind_problem = _task_kind_problem(raw, index, source, file, task_id)
        if kind_problem:
            problems.append(kind_problem)
            continue
        try:
            TaskSpec.model_validate(raw)
        except ValidationError as exc:
            problems += _pydantic_problems(
                exc, TaskSpec, raw, ("tasks", index), source, file, task_id
            )
            continue
        valid_raw.append(raw)

    ids = tuple(all_ids)
    if not header_ok or not valid_raw:
        return None, problems, ids
    return PipelineSpec.model_validate({**data, "tasks": valid_raw}), problems, ids

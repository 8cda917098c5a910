"""dbt's functions as templates call them: `ref`, `source`, `var` and `config`
(engine.spec.params gives them to every template).

    {{ ref('orders') }}               task `orders`'s table (dbt's `ref('project', 'orders')` too)
    {{ source('shop', 'orders') }}    the task a SQL project makes of that declared source table
    {{ var('start_date') }}           a parameter, as `params.start_date`; var('n', 3) defaults
    {{ config(materialized=...) }}    read when the project is loaded; prints nothing

dbt's model versions (`ref('orders', v=2)`, `version=2`) are not supported: a model is named by
its file, so a version is the model of its own file (dbt names it `orders_v2.sql`). Validation
says so at the call's line (engine.tasks.template_checks), with what to write instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

import jinja2

from engine.core.errors import ParameterError

__all__ = ["VERSION_KEYWORDS", "config", "ref", "source", "source_task", "var_of", "versioned_ref"]

VERSION_KEYWORDS = frozenset({"v", "version"})
"""The keywords dbt's `ref` takes: a model's version."""
_NO_DEFAULT = object()
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def source_task(source: str, table: str) -> str:
    """The id of the task a SQL project makes of a declared source table."""
    return f"{source}__{table}"


def source(source: Any, table: Any) -> str:
    """`{{ source('shop', 'orders') }}`: the table of the task a SQL project makes of that
    declared source (engine.spec.sqlproject); validation checks it is declared."""
    return ref(source_task(str(source), str(table)))


def ref(*names: Any, **keywords: Any) -> str:
    """`{{ ref('orders') }}` (or dbt's `ref('project', 'orders')`): task `orders`'s table."""
    shown = ", ".join([*map(repr, names), *(f"{k}={v!r}" for k, v in keywords.items())])
    if keywords.keys() & VERSION_KEYWORDS:
        version = next(keywords[k] for k in ("v", "version") if k in keywords)
        model = names[-1] if names and isinstance(names[-1], str) else None
        message, hint = versioned_ref(model, version, ())
        raise ParameterError(message, hint=hint)
    if keywords:
        raise ParameterError(
            f"ref({shown}): ref takes a model's name, and no {next(iter(keywords))}="
        )
    if not names or not isinstance(names[-1], str) or not _IDENTIFIER.fullmatch(names[-1]):
        raise ParameterError(f"ref({shown}): a task id is letters, digits and _")
    return names[-1]


def versioned_ref(model: str | None, version: Any, known: Collection[str]) -> tuple[str, str]:
    """What is said of `ref(model, v=version)`, and what to write instead: the model of the
    version's own file when `known` (the pipeline's task ids) has it, else the model itself."""
    shown = f"ref({model!r}, v={version!r})" if model is not None else "ref(..., v=...)"
    message = (
        f"{shown}: dbt's model versions are not supported; a model is named by its file, so a "
        "version is the model of its own file"
    )
    if model is None:
        return message, "ref() the model by its name alone"
    own = f"{model}_v{version}"
    if own in known:
        return message, f"write ref({own!r}), the model of that version's file"
    return message, f"write ref({model!r}): there are no versions of {model!r} here"


def config(**settings: Any) -> str:
    """`{{ config(materialized='ephemeral') }}` in a model: read when the project is loaded
    (engine.spec.sqlproject); it prints nothing."""
    return ""


def var_of(params: Mapping[str, Any]) -> Callable[..., Any]:
    """`var` for a template: a plain function (a `partial` would hand a template its `args`,
    the whole parameter mapping, as an attribute the sandbox allows)."""

    def var(name: Any, default: Any = _NO_DEFAULT) -> Any:
        """`{{ var('n') }}` is `{{ params.n }}`; `{{ var('n', 3) }}` is 3 without an `n`."""
        if isinstance(name, str) and name in params:
            return params[name]
        if default is not _NO_DEFAULT:
            return default
        raise jinja2.UndefinedError(f"var({name!r}) names no parameter")

    return var

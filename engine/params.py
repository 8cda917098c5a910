"""Parameters and Jinja2 templates.

Precedence, lowest first: the pipeline's `params:` defaults < environment variables
`ARROWLINE_PARAM_<NAME>` < values given for one run (`--param name=value`, trigger payloads, the
Python API). Values from the environment and the command line are text; they are converted to the
type of the parameter's default, so `--param limit=10` stays an integer when the default is one.

Templates render with `StrictUndefined` in a sandboxed environment. Built-ins: `params`,
`run_id`, `logical_date` (aware datetime, UTC), `ds` (YYYY-MM-DD of the logical date),
`ds_nodash`, `pipeline` and `task` (ids). Values reach SQL through two filters:

    where region = {{ params.region | sql_literal }}      -> 'north'   (quotes doubled)
    select * from {{ params.table | sql_identifier }}     -> "orders"  (quotes doubled)

`sql_literal` makes any text a single SQL string literal, so a value such as
`x'; drop table t; --` stays data and cannot change the statement.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import jinja2
import yaml
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.errors import ParameterError
from engine.problems import did_you_mean

__all__ = [
    "ENV_PREFIX",
    "RenderContext",
    "coerce_value",
    "parse_assignments",
    "referenced_params",
    "render",
    "resolve_params",
    "sql_identifier",
    "sql_literal",
    "template_environment",
    "unfiltered_sql_params",
]

ENV_PREFIX = "ARROWLINE_PARAM_"
SAFE_SQL_FILTERS = frozenset({"sql_literal", "sql_identifier"})
BUILTINS = frozenset({"params", "run_id", "logical_date", "ds", "ds_nodash", "pipeline", "task"})


def sql_literal(value: Any) -> str:
    """Render a Python value as one SQL literal (DuckDB and PostgreSQL syntax)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ParameterError(f"cannot write {value!r} as a SQL literal")
        return repr(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ParameterError(f"cannot write {value!r} as a SQL literal")
        return str(value)
    if isinstance(value, datetime):
        kind = "TIMESTAMPTZ" if value.tzinfo is not None else "TIMESTAMP"
        return f"{kind} '{value.isoformat(sep=' ')}'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        if not items:
            raise ParameterError("an empty list has no SQL literal (IN () is not valid SQL)")
        return "(" + ", ".join(sql_literal(item) for item in items) + ")"
    if isinstance(value, str):
        if "\x00" in value:
            raise ParameterError("text with a NUL character cannot be a SQL literal")
        return "'" + value.replace("'", "''") + "'"
    raise ParameterError(f"cannot write a {type(value).__name__} as a SQL literal")


def sql_identifier(value: Any) -> str:
    """Render text as one quoted SQL identifier; dots are part of the name, not separators."""
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ParameterError(f"{value!r} is not a usable SQL identifier")
    return '"' + value.replace('"', '""') + '"'


class _NullUndefined(jinja2.ChainableUndefined):
    """Renders an undefined value as SQL NULL, so validation can still parse the statement."""

    def __str__(self) -> str:
        return "NULL"


@functools.cache
def template_environment() -> ImmutableSandboxedEnvironment:
    """The shared Jinja2 environment (sandboxed, StrictUndefined, SQL filters)."""
    env = ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # SQL, paths and YAML values: HTML escaping would corrupt them
        keep_trailing_newline=True,
    )
    env.filters["sql_literal"] = sql_literal
    env.filters["sql_identifier"] = sql_identifier
    return env


@functools.cache
def _lenient_environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=_NullUndefined, autoescape=False)
    env.filters.update(template_environment().filters)
    # Validation renders SQL only to parse it: an undefined value through a SQL filter renders
    # as NULL (or an identifier) so the statement still parses; the undefined name itself is
    # reported by the strict environment.
    env.filters["sql_literal"] = lambda v: (
        "NULL" if isinstance(v, jinja2.Undefined) else sql_literal(v)
    )
    env.filters["sql_identifier"] = lambda v: (
        '"undefined"' if isinstance(v, jinja2.Undefined) else sql_identifier(v)
    )
    return env


@dataclass(frozen=True)
class RenderContext:
    """Everything a template can see for one run."""

    pipeline: str
    params: Mapping[str, Any]
    run_id: str
    logical_date: datetime

    def variables(self, task_id: str | None = None) -> dict[str, Any]:
        when = self.logical_date
        return {
            "params": dict(self.params),
            "run_id": self.run_id,
            "logical_date": when,
            "ds": when.date().isoformat(),
            "ds_nodash": when.strftime("%Y%m%d"),
            "pipeline": self.pipeline,
            "task": task_id,
        }


def render_lenient(text: str, context: RenderContext, task_id: str | None = None) -> str | None:
    """Render with undefined values as NULL, for validation only; None when that fails too."""
    try:
        return _lenient_environment().from_string(text).render(context.variables(task_id))
    except Exception:
        return None


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


def render(text: str, context: RenderContext, task_id: str | None = None) -> str:
    """Render one template. Raises ParameterError for undefined names and template errors."""
    if not is_template(text):
        return text
    env = template_environment()
    try:
        return env.from_string(text).render(context.variables(task_id))
    except jinja2.UndefinedError as exc:
        defined = ", ".join(sorted(context.params)) or "none"
        raise ParameterError(
            f"template uses an undefined value ({exc.message}); defined parameters: {defined}"
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        raise ParameterError(f"template syntax error on line {exc.lineno}: {exc.message}") from None
    except ParameterError:
        raise
    except Exception as exc:
        raise ParameterError(f"template failed: {type(exc).__name__}: {exc}") from exc


def template_syntax_error(text: str) -> str | None:
    """What is wrong with a template that does not parse, or None."""
    if not is_template(text):
        return None
    try:
        template_environment().parse(text)
    except jinja2.TemplateSyntaxError as exc:
        return f"template syntax error on line {exc.lineno}: {exc.message}"
    return None


def referenced_params(text: str) -> set[str]:
    """Names used as `params.NAME` or `params['NAME']` in a template (parse only, no render)."""
    if not is_template(text):
        return set()
    ast = template_environment().parse(text)
    names: set[str] = set()
    for node in ast.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.name == "params":
            names.add(node.attr)
    for item in ast.find_all(nodes.Getitem):
        if (
            isinstance(item.node, nodes.Name)
            and item.node.name == "params"
            and isinstance(item.arg, nodes.Const)
            and isinstance(item.arg.value, str)
        ):
            names.add(item.arg.value)
    return names


def undeclared_names(text: str) -> set[str]:
    """Top-level template variables that are not built-ins (and so are undefined)."""
    if not is_template(text):
        return set()
    ast = template_environment().parse(text)
    return set(meta.find_undeclared_variables(ast)) - BUILTINS


def unfiltered_sql_params(text: str) -> set[str]:
    """Parameters printed into SQL without `sql_literal`/`sql_identifier`: injection risks."""
    if not is_template(text):
        return set()
    ast = template_environment().parse(text)
    risky: set[str] = set()
    for output in ast.find_all(nodes.Output):
        for expr in output.nodes:
            if isinstance(expr, nodes.TemplateData):
                continue
            if isinstance(expr, nodes.Filter) and expr.name in SAFE_SQL_FILTERS:
                continue
            # find_all yields descendants only; `{{ params.a }}` is itself the Getattr node.
            for node in [expr, *expr.find_all(nodes.Getattr)]:
                if (
                    isinstance(node, nodes.Getattr)
                    and isinstance(node.node, nodes.Name)
                    and node.node.name == "params"
                ):
                    risky.add(node.attr)
    return risky


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def coerce_value(name: str, text: str, default: Any, source: str) -> Any:
    """Convert a text value to the type of the parameter's default."""
    try:
        if isinstance(default, bool):
            lowered = text.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError("expected true or false")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, datetime):
            return datetime.fromisoformat(text)
        if isinstance(default, date):
            return date.fromisoformat(text)
        if isinstance(default, list | dict):
            value = json.loads(text) if text.strip()[:1] in "[{" else yaml.safe_load(text)
            if not isinstance(value, type(default)):
                raise ValueError(f"expected a {type(default).__name__}")
            return value
    except (ValueError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ParameterError(
            f"parameter {name!r} from {source}: cannot read {text!r} as "
            f"{type(default).__name__} like its default {default!r} ({exc})"
        ) from None
    return text


def parse_assignments(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """`["a=1", "b=x=y"]` -> {"a": "1", "b": "x=y"}; a missing `=` is an error."""
    values: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ParameterError(f"--param expects name=value, got {item!r}")
        values[name.strip()] = value
    return values


def resolve_params(
    defaults: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Merge defaults < environment < overrides. Unknown override names are errors."""
    environ = os.environ if environ is None else environ
    resolved = dict(defaults)
    by_upper = {name.upper(): name for name in defaults}
    for key, text in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = by_upper.get(key[len(ENV_PREFIX) :].upper())
        if name is not None:  # variables for other pipelines are not ours to judge
            resolved[name] = coerce_value(name, text, defaults[name], f"${key}")
    for name, value in (overrides or {}).items():
        if name not in defaults:
            known = ", ".join(sorted(defaults)) or "none are declared"
            raise ParameterError(
                f"unknown parameter {name!r}.{did_you_mean(name, list(defaults))} "
                f"Parameters of this pipeline: {known}",
                hint="declare it under `params:` in the pipeline with a default value",
            )
        resolved[name] = (
            coerce_value(name, value, defaults[name], "--param")
            if isinstance(value, str)
            else value
        )
    return resolved


_RUN_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$")


def new_run_id(now: datetime | None = None) -> str:
    """Sortable, readable and unique enough: `20241102T030000Z-a1b2c3`."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{os.urandom(3).hex()}"


def is_run_id(text: str) -> bool:
    return bool(_RUN_ID.match(text))


def short_run_id(run_id: str) -> str:
    """A run id short enough for a terminal line: the random part of a generated id
    (`a1b2c3`: its time is on the line already), else at most 12 characters of a given one."""
    if is_run_id(run_id):
        return run_id.rsplit("-", 1)[1]
    return run_id if len(run_id) <= 12 else run_id[:11] + "…"

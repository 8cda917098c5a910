"""Parameters and Jinja2 templates.

Precedence, lowest first: the pipeline's `params:` defaults < environment variables
`ARROWLINE_PARAM_<NAME>` < values given for one run (`--param name=value`, trigger payloads, the
HTTP API, the Python API).

Every parameter has a type (`ParamType`): declared (`n: {type: int, default: 3}`) or that of its
default (`n: 3`). Every value, wherever it comes from, is checked against it by `check_value`:
text (the command line, the environment, JSON strings) is read as the type, so `--param limit=10`
is an integer; any other value must already be of the type, so a list or an object sent for an
integer is refused instead of reaching a template as its Python text.

Templates render with `StrictUndefined` in a sandboxed environment. Built-ins: `params`,
`run_id`, `logical_date` (aware datetime, UTC), `ds` (YYYY-MM-DD of the logical date),
`ds_nodash`, `pipeline` and `task` (ids), `target` (engine.spec.targets), and dbt's functions:
`ref('task')` (the task's table: another way to name it, which validation checks),
`source('src', 'table')` (the task a SQL project makes of a declared source), `var('name')` or
`var('name', default)` (a parameter's value, exactly as `params.name`) and `log(message,
info=False)` (to loguru at debug, or info; it prints nothing, and secrets are masked in it).
dbt's `{% do ... %}` statement calls something for its effect (`{% do log('...') %}`); the
sandbox lets no template change a list or mapping in place (`{% do cols.append(c) %}` is
refused, with the way that works: `{% set cols = cols + [c] %}`, or a `namespace` in a loop),
so nothing a template is given (parameters, imported macro modules, shared between tasks and
runs) can be changed by it, and validation can follow every value. Values reach SQL through
two filters:

    where region = {{ params.region | sql_literal }}      -> 'north'   (quotes doubled)
    select * from {{ params.table | sql_identifier }}     -> "orders"  (quotes doubled)

`sql_literal` makes any text a single SQL string literal, so a value such as
`x'; drop table t; --` stays data and cannot change the statement. Only a parameter whose every
value is a number or a boolean (`Param.prints_as_sql`) may be printed into SQL without a filter;
validation reports any other as an error (`unfiltered_sql_params`).
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, assert_never

import jinja2
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.core.errors import ParameterError
from engine.core.problems import did_you_mean
from engine.core.runids import is_run_id, new_run_id
from engine.core.sqltext import sql_identifier, sql_literal, sql_number
from engine.core.tables import THIS
from engine.spec.dbt_functions import config, ref, source, source_task, var_of
from engine.spec.quoted import literal_prints
from engine.spec.targets import TARGET_PARAM, target_variable
from engine.spec.template_log import template_log

__all__ = [
    "ENV_PREFIX",
    "Param",
    "ParamType",
    "RenderContext",
    "as_type",
    "check_value",
    "coerce_value",
    "infer_param",
    "literal_prints",
    "new_run_id",
    "parse_assignments",
    "render",
    "resolve_params",
    "source_task",
    "template_environment",
]

ENV_PREFIX = "ARROWLINE_PARAM_"
SAFE_SQL_FILTERS = frozenset({"sql_literal", "sql_identifier"})
BUILTINS = frozenset(
    {
        *("params", "run_id", "logical_date", "ds", "ds_nodash", "pipeline", "task"),
        *("ref", "source", "var", "config", "is_incremental", "this", "target", "log"),
    }
)


def _finalize_sql(value: Any) -> Any:
    """How SQL text prints a value: numbers (printed raw, they are allowed to be) keep their
    sign inside parentheses, so `10-{{ n }}` with n = -5 cannot comment out the rest of the line."""
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return sql_number(value)
    return value


class _NullUndefined(jinja2.ChainableUndefined):
    """Renders an undefined value as SQL NULL, so validation can still parse the statement."""

    def __str__(self) -> str:
        return "NULL"


_EXTENSIONS = ("jinja2.ext.do",)
"""dbt's `{% do expression %}`."""


@functools.cache
def template_environment(sql: bool = False) -> ImmutableSandboxedEnvironment:
    """The shared Jinja2 environment (sandboxed, immutable, StrictUndefined, SQL filters,
    `do`); with `sql`, the one SQL statements render in, where a number's sign cannot start a
    comment. Immutable: a template that could change a list in place could hide a parameter
    in it from validation, or change an imported macro module other renders share."""
    env = ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # SQL, paths and YAML values: HTML escaping would corrupt them
        keep_trailing_newline=True,
        finalize=_finalize_sql if sql else None,
        extensions=_EXTENSIONS,
    )
    env.filters["sql_literal"] = sql_literal
    env.filters["sql_identifier"] = sql_identifier
    return env


@functools.cache
def _lenient_environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=_NullUndefined, autoescape=False, extensions=_EXTENSIONS
    )
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
    macros: tuple[tuple[str, str], ...] = ()
    """Macro files (name, text): every macro they define is callable by name in templates, and
    each file can be imported by its name."""
    incremental: frozenset[str] = frozenset()
    """The incremental sql tasks that add to a kept output this run (`is_incremental()`)."""
    quiet: bool = False
    """Renders for validation: `log()` writes nothing (a run's own renders write once)."""

    def variables(
        self, task_id: str | None = None, *, quiet: bool = False, this: str | None = None
    ) -> dict[str, Any]:
        """What a template of task `task_id` sees (`quiet`: its `log()` writes nothing, for
        validation's and planning's renders). `this`: what `{{ this }}` prints (a hook's
        table), instead of an incremental task's output."""
        when = self.logical_date
        params = dict(self.params)
        adding = task_id in self.incremental
        return {
            "params": params,
            "ref": ref,
            "source": source,
            "var": var_of(params),
            "config": config,
            "is_incremental": lambda: adding,
            "this": THIS if this is None else this,
            "target": target_variable(params.get(TARGET_PARAM), self.pipeline),
            "log": template_log(task_id, self.params, quiet=quiet or self.quiet),
            "run_id": self.run_id,
            "logical_date": when,
            "ds": when.date().isoformat(),
            "ds_nodash": when.strftime("%Y%m%d"),
            "pipeline": self.pipeline,
            "task": task_id,
        }


def _with_macros(
    env: ImmutableSandboxedEnvironment, context: RenderContext, variables: dict[str, Any]
) -> ImmutableSandboxedEnvironment:
    """`env` able to import the context's macro files by name, and `variables` given every
    macro they define (each module made with the same variables, so a macro sees `ref`,
    `var` and `params` as the template calling it does)."""
    if not context.macros:
        return env
    overlay = _overlay(env, context.macros)
    defined: dict[str, Any] = {}
    for name, _ in context.macros:
        module = overlay.get_template(name).make_module(variables)
        defined |= {k: v for k, v in vars(module).items() if not k.startswith("_")}
    variables.update({k: v for k, v in defined.items() if k not in variables})
    return overlay


@functools.lru_cache(maxsize=32)
def _overlay(
    env: ImmutableSandboxedEnvironment, macros: tuple[tuple[str, str], ...]
) -> ImmutableSandboxedEnvironment:
    """`env` with the macro files to load: one per set of files, so each file is parsed once
    however many templates a plan renders, not once per template."""
    files = dict(macros)

    def load(name: str) -> tuple[str, str, Callable[[], bool]] | None:
        # the name as the file name, so a macro's frames in a traceback say which file
        if name in files:
            return files[name], name, lambda: True
        # a project included from another folder lists `../shop/macros/money.sql`, and its
        # models import `macros/money.sql`: the one file whose path ends so
        ending = "/" + name.lstrip("./")
        found = [f for f in files if os.path.normpath(f).replace(os.sep, "/").endswith(ending)]
        return (files[found[0]], found[0], lambda: True) if len(found) == 1 else None

    overlay = env.overlay(loader=jinja2.FunctionLoader(load))
    assert isinstance(overlay, ImmutableSandboxedEnvironment)
    return overlay


def _macro_frame(exc: BaseException, context: RenderContext) -> tuple[str, int | None] | None:
    """The macro file and line a template error was raised in (the innermost), or None when
    it was raised in the template itself."""
    import traceback

    names = {name for name, _ in context.macros}
    found = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename in names:
            found = (frame.filename, frame.lineno)
    return found


def render_lenient(text: str, context: RenderContext, task_id: str | None = None) -> str | None:
    """Render with undefined values as NULL, for validation only; None when that fails too."""
    try:
        variables = context.variables(task_id, quiet=True)
        env = _with_macros(_lenient_environment(), context, variables)
        return env.from_string(text).render(variables)
    except Exception:
        return None


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


def render(
    text: str,
    context: RenderContext,
    task_id: str | None = None,
    *,
    sql: bool = False,
    this: str | None = None,
) -> str:
    """Render one template (`sql`: a SQL statement; `this`: what `{{ this }}` prints, see
    `RenderContext.variables`). Raises ParameterError for undefined names and template
    errors."""
    if not is_template(text):
        return text
    if sql:
        text = literal_prints(text)
    try:
        variables = context.variables(task_id, this=this)
        env = _with_macros(template_environment(sql), context, variables)
        return env.from_string(text).render(variables)
    except jinja2.UndefinedError as exc:
        defined = ", ".join(sorted(set(context.params) - {TARGET_PARAM})) or "none"
        place = _macro_frame(exc, context)
        where = f" in {place[0]} on line {place[1]}" if place else ""
        raise ParameterError(
            f"template uses an undefined value{where} ({exc.message}); defined parameters: "
            f"{defined}",
            place=place,
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        where = f" in {exc.name}" if exc.name else ""
        raise ParameterError(
            f"template syntax error{where} on line {exc.lineno}: {exc.message}",
            place=(exc.name, exc.lineno) if exc.name else None,
        ) from None
    except ParameterError:
        raise
    except jinja2.exceptions.SecurityError as exc:
        raise ParameterError(
            f"template refused: {exc}",
            hint="a template changes no list or mapping in place: build a new one "
            "({% set cols = cols + [c] %}; in a loop, a namespace: "
            "{% set ns.cols = ns.cols + [c] %})",
        ) from None
    except Exception as exc:
        raise ParameterError(f"template failed: {type(exc).__name__}: {exc}") from exc


class ParamType(StrEnum):
    """The types a parameter can have: declared (`{type: int, default: 3}`) or its default's."""

    STR = "str"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    DATE = "date"
    DATETIME = "datetime"
    LIST = "list"
    DICT = "dict"


_PRINTABLE_IN_SQL = frozenset({ParamType.INT, ParamType.FLOAT, ParamType.BOOL})


@dataclass(frozen=True)
class Param:
    """One parameter of a pipeline: its type and its default (null makes it optional)."""

    name: str
    type: ParamType
    default: Any
    description: str | None = None

    @property
    def nullable(self) -> bool:
        """A parameter whose default is null takes null as a value too."""
        return self.default is None

    @property
    def expected(self) -> str:
        """The type as an error message or an API answer names it: `int`, `int or null`."""
        return f"{self.type.value} or null" if self.nullable else self.type.value

    @property
    def prints_as_sql(self) -> bool:
        """Every value reads as SQL as it is: a number or a boolean (never null, never text)."""
        return self.type in _PRINTABLE_IN_SQL and not self.nullable


_INFERRED: tuple[tuple[type | tuple[type, ...], ParamType], ...] = (
    ((str, type(None)), ParamType.STR),
    (bool, ParamType.BOOL),  # before int: a bool is an int to isinstance
    (int, ParamType.INT),
    (float, ParamType.FLOAT),
    (datetime, ParamType.DATETIME),  # before date, for the same reason
    (date, ParamType.DATE),
    ((list, tuple), ParamType.LIST),
    (dict, ParamType.DICT),
)


def infer_param(name: str, default: Any) -> Param:
    """A parameter declared by its default alone (`limit: 10`): it has the default's type; a
    null default makes it optional text."""
    inferred = next((kind for types, kind in _INFERRED if isinstance(default, types)), None)
    if inferred is None:
        raise ParameterError(
            f"parameter {name!r}: a default of type {type(default).__name__} has no parameter "
            f"type (types: {', '.join(t.value for t in ParamType)})",
            hint=f"declare it as {name}: {{type: str, default: ...}} with one of those types",
            parameter=name,
        )
    return Param(name, inferred, default)


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def check_value(param: Param, value: Any, source: str) -> Any:
    """`value` as `param`'s type, or ParameterError naming the parameter, its type, the value
    and `source` (where the value came from: `--param`, `$ARROWLINE_PARAM_N`, a request)."""
    if value is None and param.nullable:
        return None
    try:
        return as_type(param.type, value)
    except ValueError as exc:
        raise ParameterError(
            f"parameter {param.name!r} from {source}: {exc}",
            parameter=param.name,
            expected=param.expected,
            received=_shown(value),
        ) from None


def as_type(kind: ParamType, value: Any) -> Any:
    """`value` as a `kind`, or ValueError saying what was expected and what came. Text is read
    as the type (it is all the command line and the environment can give); any other value
    must already be of it, and lists and mappings hold only scalars."""
    try:
        return _read(kind, value) if isinstance(value, str) else _typed(kind, value)
    except (ValueError, TypeError, ArithmeticError, yaml.YAMLError) as exc:
        shown = _shown(value)
        what = (
            f"cannot read {shown} as {kind.value}"
            if isinstance(value, str)
            else f"expected {kind.value}, got {_kind(value)} {shown}"
        )
        raise ValueError(what + (f" ({exc})" if str(exc) else "")) from None


def _read(kind: ParamType, text: str) -> Any:
    """Text as a value of `kind`."""
    if kind is ParamType.STR:
        return text
    if kind is ParamType.BOOL:
        lowered = text.strip().lower()
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise ValueError("expected true or false")
    if kind is ParamType.INT:
        return int(text)
    if kind is ParamType.FLOAT:
        return _finite(float(text))
    if kind is ParamType.DATETIME:
        return datetime.fromisoformat(text)
    if kind is ParamType.DATE:
        return date.fromisoformat(text)
    parsed = json.loads(text) if text.strip()[:1] in "[{" else yaml.safe_load(text)
    return _typed(kind, parsed)


def _typed(kind: ParamType, value: Any) -> Any:
    """`value` when it is of `kind` (ints widen to float); TypeError when it is not."""
    match kind:
        case ParamType.STR:
            ok = isinstance(value, str)
        case ParamType.BOOL:
            ok = isinstance(value, bool)
        case ParamType.INT:
            ok = isinstance(value, int) and not isinstance(value, bool)
        case ParamType.FLOAT:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return _finite(float(value))
            ok = False
        case ParamType.DATETIME:
            ok = isinstance(value, datetime)
        case ParamType.DATE:
            ok = isinstance(value, date) and not isinstance(value, datetime)
        case ParamType.LIST:
            if isinstance(value, list | tuple):
                return [_scalar(item, f"item {i}") for i, item in enumerate(value)]
            ok = False
        case ParamType.DICT:
            if isinstance(value, dict) and all(isinstance(key, str) for key in value):
                return {key: _scalar(item, f"key {key!r}") for key, item in value.items()}
            ok = False
        case _:
            assert_never(kind)
    if not ok:
        raise TypeError("")
    return value


def _finite(number: float) -> float:
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def _scalar(value: Any, where: str) -> Any:
    """An item of a list or mapping parameter: text, a number, a boolean, a date or null."""
    if value is None or isinstance(value, str | bool | int | date):
        return value
    if isinstance(value, float):
        return _finite(value)
    raise ValueError(f"{where} is {_kind(value)}; items are text, numbers, booleans, dates or null")


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "text"}
    names |= {list: "a list", tuple: "a list", dict: "an object", type(None): "null"}
    return names.get(type(value), f"a {type(value).__name__}")


def _shown(value: Any, limit: int = 80) -> str:
    """The value as sent, shortened: an attacker's megabyte does not belong in a log line."""
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def coerce_value(name: str, text: str, default: Any, source: str) -> Any:
    """Convert a text value to the type of the parameter's default."""
    return check_value(infer_param(name, default), text, source)


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
    declared: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    source: str = "--param",
) -> dict[str, Any]:
    """Merge defaults < environment < overrides, each value checked against its parameter's
    type. `declared` maps names to `Param`s (`PipelineSpec.parameters`) or to plain defaults.
    Unknown override names are errors; `source` names where the overrides came from."""
    environ = os.environ if environ is None else environ
    params = {
        name: value if isinstance(value, Param) else infer_param(name, value)
        for name, value in declared.items()
    }
    resolved = {name: param.default for name, param in params.items()}
    by_upper = {name.upper(): name for name in params}
    for key, text in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = by_upper.get(key[len(ENV_PREFIX) :].upper())
        if name is not None:  # variables for other pipelines are not ours to judge
            _settable(name, f"${key}")
            resolved[name] = check_value(params[name], text, f"${key}")
    for name, value in (overrides or {}).items():
        _settable(str(name), source)
        if name not in params:
            known = ", ".join(sorted(set(params) - {TARGET_PARAM})) or "none are declared"
            raise ParameterError(
                f"unknown parameter {name!r}.{did_you_mean(str(name), list(params))} "
                f"Parameters of this pipeline: {known}",
                hint="declare it under `params:` in the pipeline with a default value",
                parameter=str(name),
            )
        resolved[name] = check_value(params[name], value, source)
    return resolved


def _settable(name: str, source: str) -> None:
    """A parameter arrowline keeps for itself (a SQL project's chosen target) is set by no
    value from outside: a target's values would reach SQL as the project never wrote them."""
    if name == TARGET_PARAM:
        raise ParameterError(
            f"{source} may not set {name!r}: it holds the target the pipeline runs for",
            hint="choose the target by name with --target or $ARROWLINE_TARGET",
            parameter=name,
        )


def short_run_id(run_id: str) -> str:
    """A run id short enough for a terminal line: the random part of a generated id
    (`a1b2c3`: its time is on the line already), else at most 12 characters of a given one."""
    if is_run_id(run_id):
        return run_id.rsplit("-", 1)[1]
    return run_id if len(run_id) <= 12 else run_id[:11] + "…"

"""What a template reads and prints, found by parsing it, never by rendering it: the
parameters it reads (for the cache's fingerprint and validation), the tasks and sources it names
(`ref`, `source`), the names it leaves undefined, and the parameters it prints into SQL without
a filter (an injection risk validation refuses; see engine.spec.params).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jinja2
from jinja2 import meta, nodes

from engine.spec.params import BUILTINS, SAFE_SQL_FILTERS, is_template, template_environment

__all__ = [
    "ANY_PARAM",
    "config_call",
    "line_with",
    "ordered_refs",
    "param_spellings",
    "referenced_params",
    "referenced_sources",
    "referenced_tasks",
    "template_syntax_error",
    "undeclared_names",
    "unfiltered_sql_params",
    "versioned_refs",
]


def template_syntax_error(text: str) -> str | None:
    """What is wrong with a template that does not parse or compile (an unknown filter or
    test is found by compiling), or None."""
    if not is_template(text):
        return None
    try:
        template_environment().compile(text)
    except jinja2.TemplateSyntaxError as exc:  # TemplateAssertionError too
        return f"template syntax error on line {exc.lineno}: {exc.message}"
    return None


def referenced_params(text: str, *, required: bool = False, var: bool = True) -> set[str]:
    """Names used as `params.NAME`, `params['NAME']` or `var('NAME')` in a template (parse
    only, no render); `required`: without those read only through `var('NAME', default)`;
    `var=False`: only those read through `params`."""
    if not is_template(text):
        return set()
    ast = template_environment().parse(text)
    names: set[str] = set()
    for name, has_default in _var_calls(ast) if var else ():
        if name is not None and not (required and has_default):
            names.add(name)
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


def referenced_tasks(text: str) -> set[str]:
    """Task ids named by `ref('ID')` with a literal id (parse only, no render); dbt's
    two-argument `ref('project', 'ID')` names the second."""
    return set(ordered_refs(text))


def ordered_refs(text: str) -> list[str]:
    """`referenced_tasks` in the order the text names them first."""
    named = []
    for call in _ref_calls(text):
        if 1 <= len(call.args) <= 2 and all(
            isinstance(a, nodes.Const) and isinstance(a.value, str) for a in call.args
        ):
            named.append(str(call.args[-1].value))  # type: ignore[attr-defined]
    return list(dict.fromkeys(named))


def _ref_calls(text: str) -> Iterator[nodes.Call]:
    """The `ref(...)` calls of a template (parsed, not rendered)."""
    if not is_template(text):
        return
    for call in template_environment().parse(text).find_all(nodes.Call):
        if isinstance(call.node, nodes.Name) and call.node.name == "ref":
            yield call


def versioned_refs(text: str) -> list[tuple[str | None, Any, int]]:
    """Each `ref(...)` given a model version (dbt's `v=`, `version=`): the model it names
    (None when not a literal), the version (None when not a literal), and its line."""
    from engine.spec.dbt_functions import VERSION_KEYWORDS

    found = []
    for call in _ref_calls(text):
        for keyword in call.kwargs:
            if keyword.key in VERSION_KEYWORDS:
                last = call.args[-1] if call.args else None
                model = last.value if isinstance(last, nodes.Const) else None
                version = keyword.value.value if isinstance(keyword.value, nodes.Const) else None
                found.append((model if isinstance(model, str) else None, version, call.lineno))
                break
    return found


def referenced_sources(text: str) -> set[tuple[str, str]]:
    """(source, table) named by `source('SOURCE', 'TABLE')` with literal names."""
    return {(args[0], args[1]) for args in _literal_calls(text, "source", 2)}


def _literal_calls(text: str, function: str, count: int) -> list[tuple[str, ...]]:
    """The literal text arguments of each call of `function` given `count` of them."""
    if not is_template(text):
        return []
    ast = template_environment().parse(text)
    found = []
    for call in ast.find_all(nodes.Call):
        if not (isinstance(call.node, nodes.Name) and call.node.name == function):
            continue
        args = call.args[:count]
        if len(args) == count and all(
            isinstance(a, nodes.Const) and isinstance(a.value, str) for a in args
        ):
            found.append(tuple(a.value for a in args if isinstance(a, nodes.Const)))
    return found


def _var_calls(ast: nodes.Node) -> list[tuple[str | None, bool]]:
    """Each `var(...)` call: the parameter it names (None when not a literal), and whether it
    gives a default."""
    found: list[tuple[str | None, bool]] = []
    calls = [ast] if isinstance(ast, nodes.Call) else []
    for call in [*calls, *ast.find_all(nodes.Call)]:
        if not (isinstance(call.node, nodes.Name) and call.node.name == "var"):
            continue
        first = call.args[0] if call.args else None
        name = (
            first.value if isinstance(first, nodes.Const) and isinstance(first.value, str) else None
        )
        found.append((name, len(call.args) > 1 or bool(call.kwargs)))
    return found


def param_spellings(name: str) -> tuple[str, ...]:
    """How a template can name parameter `name`, to find the line it is on."""
    return (
        f"params.{name}",
        f"params['{name}']",
        f'params["{name}"]',
        f"var('{name}'",
        f'var("{name}"',
    )


def line_with(text: str, needles: Iterable[str]) -> int | None:
    """The first line of `text` holding one of `needles` as a whole word (counted from 1):
    `c` is not found in `customer`, nor `params.region` in `params.regionx`; else None."""
    patterns = [
        re.compile(
            (r"(?<![\w.])" if needle[:1].isidentifier() else "")
            + re.escape(needle)
            + (r"(?!\w)" if needle[-1:].isalnum() or needle[-1:] == "_" else "")
        )
        for needle in needles
    ]
    for number, line in enumerate(text.splitlines(), start=1):
        if any(pattern.search(line) for pattern in patterns):
            return number
    return None


def undeclared_names(text: str) -> set[str]:
    """Top-level template variables that are not built-ins (and so are undefined)."""
    if not is_template(text):
        return set()
    ast = template_environment().parse(text)
    return set(meta.find_undeclared_variables(ast)) - BUILTINS


ANY_PARAM = "*"
"""Stands for every parameter in `unfiltered_sql_params`: which one a template prints cannot be
told before it runs (`{{ params[name] }}`, `{{ params | attr(x) }}`)."""


def unfiltered_sql_params(text: str) -> set[str]:
    """Parameters printed into SQL without `sql_literal`/`sql_identifier`: injection risks.

    Conservative: a parameter counts when it is printed directly (`params.a`, `params['a']`),
    through a variable set from it (`{% set x = params.a %}`, `{% for x in params.a %}`,
    `namespace`, `{% do x.append(params.a) %}`), or inside any expression that does not end
    in a SQL filter. ANY_PARAM stands for all of them when the name is only known at run
    time."""
    if not is_template(text):
        return set()
    ast = template_environment().parse(text)
    held = _variables_holding_params(ast)
    risky: set[str] = set()
    for output in ast.find_all(nodes.Output):
        for expr in output.nodes:
            if isinstance(expr, nodes.TemplateData):
                continue
            if isinstance(expr, nodes.Filter) and expr.name in _PRINTS_SAFELY:
                continue
            risky |= _params_in(expr, held)
    for block in ast.find_all(nodes.CallBlock):  # `{% call m(x) %}` prints what m makes of x
        risky |= _params_in(block.call, held)
    return risky


_PRINTS_SAFELY = SAFE_SQL_FILTERS | {"length", "count", "int", "float", "abs", "round"}
"""Filters whose result cannot carry a parameter's text into SQL: the quoting ones, and those
that make a number of anything (`{{ var('methods') | length }}`)."""


def _params_in(expr: nodes.Node, held: Mapping[str, set[str]]) -> set[str]:
    """The parameters an expression may evaluate to (or contain)."""
    found: set[str] = set()
    looked_up = 0  # `params` names accounted for by `params.a` / `params['a']`
    for node in [expr, *expr.find_all((nodes.Getattr, nodes.Getitem))]:
        if not (isinstance(node, nodes.Getattr | nodes.Getitem) and _is_params(node.node)):
            continue
        looked_up += 1
        if isinstance(node, nodes.Getattr):
            found.add(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            found.add(node.arg.value)
        else:
            found.add(ANY_PARAM)
    names = [expr] if isinstance(expr, nodes.Name) else list(expr.find_all(nodes.Name))
    if sum(_is_params(name) for name in names) > looked_up:
        found.add(ANY_PARAM)  # `params` itself, passed to a filter or printed whole
    calls = _var_calls(expr)
    for var, _ in calls:  # var('a') prints what params.a prints
        found.add(var if var is not None else ANY_PARAM)
    if sum(isinstance(name, nodes.Name) and name.name == "var" for name in names) > len(calls):
        found.add(ANY_PARAM)  # `var` itself, handed on (set, an argument, a list): any of them
    for name in names:
        found |= held.get(name.name, set())
    return found


def _is_params(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == "params"


def _variables_holding_params(ast: nodes.Template) -> dict[str, set[str]]:
    """Template variables (`set`, `for`, `with`) and the parameters each may hold, followed
    through chains (`{% set a = params.x %}{% set b = a %}`) until nothing changes."""
    bindings: list[tuple[nodes.Node, nodes.Node]] = []
    for node in ast.find_all((nodes.Assign, nodes.For, nodes.With, nodes.Macro, nodes.CallBlock)):
        if isinstance(node, nodes.Assign):
            bindings.append((node.target, node.node))
        elif isinstance(node, nodes.For):
            bindings.append((node.target, node.iter))
        elif isinstance(node, nodes.With):
            bindings.extend(zip(node.targets, node.values, strict=False))
        else:  # a macro's (or call block's) defaults: `{% macro m(p=params) %}`
            assert isinstance(node, nodes.Macro | nodes.CallBlock)
            with_defaults = node.args[len(node.args) - len(node.defaults) :]
            bindings.extend(zip(with_defaults, node.defaults, strict=False))
    for call in ast.find_all(nodes.Call):  # `{% do cols.append(params.a) %}`: cols holds it
        if isinstance(call.node, nodes.Getattr) and isinstance(call.node.node, nodes.Name):
            bindings.append((call.node.node, call))
    held: dict[str, set[str]] = {}
    changed = True
    while changed:
        changed = False
        for target, value in bindings:
            found = _params_in(value, held)
            for name in _target_names(target):
                if not found <= held.setdefault(name, set()):
                    held[name] |= found
                    changed = True
    return held


def _target_names(target: nodes.Node) -> Iterable[str]:
    if isinstance(target, nodes.Name | nodes.NSRef):
        yield target.name
    elif isinstance(target, nodes.Tuple):
        for item in target.items:
            yield from _target_names(item)


def config_call(text: str, allowed: set[str]) -> tuple[dict[str, Any], list[tuple[str, str, int]]]:
    """The settings a template's `{{ config(key=value, ...) }}` gives (literal values only),
    and (code, message, line) of each one written wrong: not a literal, or not `allowed`."""
    try:
        ast = template_environment().parse(text)
    except jinja2.TemplateSyntaxError:
        return {}, []  # reported where the template is checked
    found: dict[str, Any] = {}
    wrong: list[tuple[str, str, int]] = []
    for call in ast.find_all(nodes.Call):
        if not (isinstance(call.node, nodes.Name) and call.node.name == "config"):
            continue
        for keyword in call.kwargs:
            try:
                value = keyword.value.as_const()
            except nodes.Impossible:
                message = f"config({keyword.key}=...) must be a literal value"
                wrong.append(("invalid-value", message, call.lineno))
                continue
            if keyword.key not in allowed:
                known = ", ".join(sorted(allowed))
                message = f"config: unknown setting {keyword.key!r} (known: {known})"
                wrong.append(("unknown-key", message, call.lineno))
                continue
            found[keyword.key] = value
    return found, wrong

"""dbt's generic tests, as a property file writes them, turned into a task's `tests:`
(transforms.config.ModelTest), or the reason one is not run here."""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from engine.core.problems import did_you_mean
from engine.core.yaml_source import PathKey, SourceMap

__all__ = ["Said", "dbt_test", "jinja_literal", "property_tests"]


_BUILT_IN = ("unique", "not_null", "accepted_values", "relationships")
_CONFIG = {"severity", "warn_if", "error_if", "enabled", "store_failures", "tags", "meta"}
"""What a test's `config:` takes (or beside its arguments); the rest are its arguments."""
_OTHER_ROWS = {"where", "fail_calc", "limit"}
NOT_STORED = (
    "store_failures keeps rows of the output, which a custom or singular test's query need "
    "not return: its failures are said, not stored"
)


def dbt_test(
    column: str | None, test: Any, *, model: str, custom: Collection[str] = ()
) -> tuple[dict[str, Any] | None, str]:
    """One of dbt's generic tests of `column` (None: of the whole `model`) as a task's test,
    or None and why not: 'disabled', a reason it is not run here, or '!' and what is written
    wrong. `unique`, `not_null`, `accepted_values: {values}`, `relationships: {to:
    ref('x') | source('s', 't'), field}`, and the `custom` tests the macro files define
    (`{% test name(model, column_name, ...) %}`); their arguments beside the name or under
    `arguments:` (dbt 1.10), with `config: {severity, warn_if, error_if, enabled,
    store_failures}` (or those beside them)."""
    from engine.spec.params import source_task

    name: Any = test if isinstance(test, str) else None
    given: Any = {}
    if isinstance(test, dict) and len(test) == 1:
        name, given = next(iter(test.items()))
    if not isinstance(name, str):
        return None, "!a test is a name, or one name with its arguments"
    if name not in _BUILT_IN and name not in custom:
        if "." in name:  # a package's test (dbt_utils.expression_is_true)
            return None, "packages are not read: write it as a test in macros/"
        known = [*_BUILT_IN, *sorted(custom)]
        return None, f"!unknown test {name!r}.{did_you_mean(name, known)}"
    if given is None:
        given = {}
    if not isinstance(given, dict):
        return None, f"!{name}: its arguments must be a mapping"
    arguments = {**given, **(given.get("arguments") or {})}
    config = given.get("config") or {}
    if not isinstance(config, dict) or not isinstance(arguments, dict):
        return None, f"!{name}: config and arguments must be mappings"
    config = {**{k: v for k, v in arguments.items() if k in _CONFIG | _OTHER_ROWS}, **config}
    arguments = {
        k: v
        for k, v in arguments.items()
        if k not in _CONFIG | _OTHER_ROWS | {"config", "arguments"}
    }
    wrong = _unknown(name, config, arguments, custom)
    if wrong is not None:
        return None, wrong
    if config.get("enabled") is False:
        return None, "disabled"
    ignored = sorted(_OTHER_ROWS & set(config))
    if ignored:
        return None, f"{', '.join(ignored)} not supported: the test would judge other rows"
    made: dict[str, Any] = {
        key: str(config[key]).lower() if key == "severity" else str(config[key])
        for key in ("severity", "warn_if", "error_if")
        if key in config
    }
    if name in custom:
        call = {"model": model, **({"column_name": column} if column else {}), **arguments}
        listed = ", ".join(f"{key}={_argument(value)}" for key, value in call.items())
        label = f"{name}({column})" if column else name
        test = {"sql": f"{{{{ test_{name}({listed}) }}}}", "label": label, **made}
        if column:
            test["column"] = column
        return test, NOT_STORED if config.get("store_failures") else ""
    if config.get("store_failures"):
        made["store_failures"] = True
    if column is None:
        return None, f"!{name} tests a column: list it under the column's tests"
    if name in ("unique", "not_null"):
        return {name: column, **made}, ""
    if name == "accepted_values":
        values = arguments.get("values")
        if not isinstance(values, list) or not values:
            return None, "!accepted_values needs values: [...]"
        return {"accepted_values": {"column": column, "values": values}, **made}, ""
    target, field = str(arguments.get("to", "")), arguments.get("field")
    if not target or not isinstance(field, str):
        return None, "!relationships needs to: ref('model') and field: COLUMN"
    ref = re.fullmatch(r"""\s*ref\(\s*['"](\w+)['"]\s*\)\s*""", target)
    source = re.fullmatch(r"""\s*source\(\s*['"](\w+)['"]\s*,\s*['"](\w+)['"]\s*\)\s*""", target)
    to = ref[1] if ref else source_task(source[1], source[2]) if source else target
    return {"relationships": {"column": column, "to": to, "field": field}, **made}, ""


_ARGUMENTS = {
    "unique": set(),
    "not_null": set(),
    "accepted_values": {"values", "quote"},
    "relationships": {"to", "field"},
}
_CONFIG_KEYS = _CONFIG | _OTHER_ROWS | {"store_failures_as", "database", "schema", "alias"}
"""dbt's test configs: those not run here are refused by name, not as unknown keys."""


def _unknown(
    name: str, config: dict[str, Any], arguments: dict[str, Any], custom: Collection[str]
) -> str | None:
    """'!' and what is misspelt among a test's config keys and a built-in test's arguments
    (a custom test's are its macro's to check), or None."""
    for key in config:
        if key not in _CONFIG_KEYS:
            return f"!{name}: unknown config {key!r}.{did_you_mean(str(key), sorted(_CONFIG_KEYS))}"
    if name in custom:
        return None
    allowed = _ARGUMENTS[name]
    for key in arguments:
        if key not in allowed:
            meant = did_you_mean(str(key), sorted(allowed | _CONFIG_KEYS))
            takes = f" ({name} takes {', '.join(sorted(allowed))})" if allowed else ""
            return f"!{name}: unknown argument {key!r}.{meant}{takes}"
    return None


_RELATION = re.compile(
    r"""\s*(ref\(\s*['"]\w+['"]\s*\)|source\(\s*['"]\w+['"]\s*,\s*['"]\w+['"]\s*\))\s*"""
)


def _argument(value: Any) -> str:
    """A custom test's argument as Jinja: `ref('customers')` (or `source(...)`) as the call
    itself, which names the task (and makes it an input), anything else as its value."""
    if isinstance(value, str) and (found := _RELATION.fullmatch(value)):
        return found[1]
    return jinja_literal(value)


def jinja_literal(value: Any) -> str:
    """A YAML value as a Jinja expression that evaluates to it (a test's argument)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value)  # Jinja reads JSON's strings and numbers
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{json.dumps(str(k))}: {jinja_literal(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, list | tuple):
        return "[" + ", ".join(jinja_literal(v) for v in value) + "]"
    return json.dumps(str(value))  # a date YAML read: its text


@dataclass(frozen=True)
class Said:
    """A problem of a property file, at its line there."""

    code: str
    message: str
    line: int | None
    severity: str = "error"


_MODEL_KEYS = {
    "name", "description", "columns", "tests", "data_tests", "config", "docs", "meta",
    "access", "group", "latest_version", "versions", "constraints", "contract",
    "deprecation_date", "time_spine",
}  # fmt: skip
_COLUMN_KEYS = {
    "name", "description", "tests", "data_tests", "data_type", "quote", "meta", "tags",
    "constraints", "policy_tags", "granularity", "config", "docs",
}  # fmt: skip


def property_tests(
    model: dict[str, Any], lines: SourceMap, at: PathKey, custom: Collection[str]
) -> tuple[list[tuple[dict[str, Any], int | None]], list[Said]]:
    """A property file's model (`model`, at `at`): its tests as a task's tests with their
    lines, and what is wrong or not run (keys dbt does not know, with did-you-mean)."""
    name = model["name"]
    made: list[tuple[dict[str, Any], int | None]] = []
    said: list[Said] = []

    def unknown_keys(value: dict[str, Any], known: set[str], where: PathKey, what: str) -> None:
        for key in sorted(k for k in value if isinstance(k, str) and k not in known):
            said.append(
                Said(
                    "unknown-key",
                    f"{what}: unknown key {key!r}.{did_you_mean(key, sorted(known))}",
                    lines.line_of((*where, key)),
                )
            )

    def collect(column: str | None, holder: dict[str, Any], where: PathKey) -> None:
        what = f"model {name!r}" + (f", column {column!r}" if column else "")
        for key in ("tests", "data_tests"):
            listed = holder.get(key) or []
            for index, test in enumerate(listed if isinstance(listed, list) else [listed]):
                place = (*where, key, index)
                found, reason = dbt_test(column, test, model=name, custom=custom)
                if found is not None:
                    made.append((found, lines.line_of(place)))
                    if reason:  # run, with a reservation
                        said.append(
                            Said(
                                "not-supported",
                                f"{what}: {reason}",
                                lines.line_of(place),
                                "warning",
                            )
                        )
                elif reason.startswith("!"):  # written wrong
                    said.append(
                        Said("invalid-value", f"{what}: {reason[1:]}", lines.line_of(place))
                    )
                elif reason != "disabled":
                    said.append(
                        Said(
                            "not-supported",
                            f"{what}: test {test!r} is not run ({reason})",
                            lines.line_of(place),
                            severity="warning",
                        )
                    )

    unknown_keys(model, _MODEL_KEYS, at, f"model {name!r}")
    collect(None, model, at)
    for number, column in enumerate(model.get("columns") or []):
        if not isinstance(column, dict) or not isinstance(column.get("name"), str):
            said.append(
                Said(
                    "invalid-value",
                    f"model {name!r}: a column needs a name",
                    lines.line_of((*at, "columns", number)),
                )
            )
            continue
        unknown_keys(
            column,
            _COLUMN_KEYS,
            (*at, "columns", number),
            f"model {name!r}, column {column['name']!r}",
        )
        collect(column["name"], column, (*at, "columns", number))
    return made, said

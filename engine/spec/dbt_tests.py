"""dbt's generic tests, as a property file writes them, turned into a task's `tests:`
(transforms.config.ModelTest), or the reason one is not run here."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["dbt_test"]


def dbt_test(column: str, test: Any) -> tuple[dict[str, Any] | None, str]:
    """One of dbt's generic tests of `column` as a task's test, or None and why not: 'disabled',
    a reason it is not run here, or '!' and what is written wrong. `unique`, `not_null`,
    `accepted_values: {values}`, `relationships: {to: ref('x') | source('s', 't'), field}`;
    their arguments beside the name or under `arguments:` (dbt 1.10), with `config:
    {severity, warn_if, error_if, enabled}` (or those beside them)."""
    from engine.spec.params import source_task

    name: Any = test if isinstance(test, str) else None
    given: Any = {}
    if isinstance(test, dict) and len(test) == 1:
        name, given = next(iter(test.items()))
    if name not in ("unique", "not_null", "accepted_values", "relationships"):
        return None, "only unique, not_null, accepted_values and relationships run"
    if given is None:
        given = {}
    if not isinstance(given, dict):
        return None, f"!{name}: its arguments must be a mapping"
    arguments = {**given, **(given.get("arguments") or {})}
    config = given.get("config") or {}
    if not isinstance(config, dict) or not isinstance(arguments, dict):
        return None, f"!{name}: config and arguments must be mappings"
    config = {**arguments, **config}
    if config.get("enabled") is False:
        return None, "disabled"
    ignored = sorted({"where", "fail_calc", "limit", "store_failures"} & set(config))
    if ignored:
        return None, f"{', '.join(ignored)} not supported: the test would judge other rows"
    made: dict[str, Any] = {
        key: str(config[key]).lower() if key == "severity" else str(config[key])
        for key in ("severity", "warn_if", "error_if")
        if key in config
    }
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

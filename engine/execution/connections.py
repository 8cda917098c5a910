"""Named connections of a pipeline: resolved (secrets filled in) when a run or a check starts.

Resolution registers every secret with `engine.core.secrets`, so from then on it is masked in logs,
errors and the catalog. Nothing is resolved during validation: a pipeline validates in CI
without its production secrets.
"""

from __future__ import annotations

from typing import Any

from connectors.base import CheckResult
from connectors.registry import connector_of
from engine.planning.build import Plan
from engine.spec.definition import Definition

__all__ = ["check_connections", "resolve_connections", "resolve_plan_connections"]


def resolve_connections(definition: Definition, names: set[str] | None = None) -> dict[str, Any]:
    """{name: resolved connection} for `names` (default: every connection of the pipeline)."""
    resolved = {}
    for name, spec in definition.spec.connections.items():
        if names is not None and name not in names:
            continue
        resolved[name] = connector_of(spec).resolve(name, spec, definition.base_dir)
    return resolved


def resolve_plan_connections(plan: Plan) -> dict[str, Any]:
    """Resolve the connections a plan uses, when its run starts."""
    return {
        name: connector_of(spec).resolve(name, spec, plan.base_dir)
        for name, spec in plan.connections.items()
    }


def check_connections(definition: Definition) -> list[CheckResult]:
    """Try every connection; one CheckResult each (a failure is a result, not an exception)."""
    from engine.core.errors import ArrowlineError

    results = []
    for name, spec in definition.spec.connections.items():
        owner = connector_of(spec)
        try:
            server = owner.resolve(name, spec, definition.base_dir)
        except ArrowlineError as exc:
            results.append(CheckResult(name, "-", False, exc.message))
            continue
        uses = [
            task.config
            for task in definition.spec.tasks
            if task.connection == name and task.config is not None
        ]
        results.append(owner.check_connection(server, uses))
    return results

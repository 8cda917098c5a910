"""Typed options of the application's entry points, instead of a keyword list repeated on each.

- `PlanOptions`: what a run covers (parameters, selection, interval, run id);
- `RunOptions`: how it is carried out (parallelism, runner, listeners, lock policy), from
  engine.execution.launch, where the scheduler reads it too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.execution.launch import RunOptions

__all__ = ["PlanOptions", "RunOptions"]


@dataclass(frozen=True)
class PlanOptions:
    """What one run covers. The defaults plan the whole pipeline with its default parameters,
    for an interval starting now."""

    params: Mapping[str, Any] | None = None
    """Parameter values over the pipeline's defaults and the environment's."""
    select: Sequence[str] | None = None
    """Only these tasks and the upstream they need, in dbt's selector grammar
    (engine.planning.select: `+t`, `t+`, `tag:x`, `state:modified`, ...); the upstream is
    reused from the last successful run where unchanged."""
    full_refresh: bool = False
    """Incremental extracts read everything, ignoring their watermarks."""
    logical_date: datetime | None = None
    """The start of the interval the run covers (default: now)."""
    run_id: str | None = None
    """The run's id (default: a new one)."""
    force: bool = False
    """Run every task, whatever the cache holds (engine.planning.cache)."""
    exclude: Sequence[str] | None = None
    """Tasks left out of the selection (or of the whole pipeline), in the same grammar."""

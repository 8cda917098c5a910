"""What the scheduler watches besides starting runs: scheduled runs that missed their SLA, and
incremental extracts whose watermark lags more than their freshness allows. Each becomes an
alert (`engine.scheduling.alerts` sends and de-duplicates them)."""

from __future__ import annotations

from datetime import datetime

from engine.scheduling.alerts import Alert
from engine.scheduling.discover import Loaded
from engine.state.catalog import Catalog
from engine.state.values import parse

__all__ = ["late_runs", "stale_watermarks"]


def late_runs(store: Catalog, loaded: Loaded, now: datetime) -> list[Alert]:
    """A scheduled run not successful `sla` after its time, once per interval."""
    assert loaded.definition is not None
    spec = loaded.definition.spec
    if spec.sla is None or spec.alerts is None:
        return []
    alerts = []
    for missed in store.late_intervals(loaded.name, now - spec.sla):
        late = now - parse(missed.fire_at)
        message = (
            f"the run due {missed.fire_at} has not succeeded {late} after its time "
            f"(sla {spec.sla}; run {missed.run_id or 'not started'}, "
            f"{missed.state or 'no state'})"
        )
        alerts.append(Alert(loaded.name, "sla", missed.fire_at, message, now, {}))
    return alerts


def stale_watermarks(store: Catalog, loaded: Loaded, now: datetime) -> list[Alert]:
    """An incremental extract whose watermark lags now by more than its freshness (said on the
    pipeline, `freshness: {task: ...}`, or on the source, `incremental.max_staleness`)."""
    from engine.scheduling.metrics import watermark_time

    assert loaded.definition is not None
    spec = loaded.definition.spec
    limits = dict(spec.freshness)
    for task in spec.tasks:
        said = task.incremental.max_staleness if task.incremental else None
        if said is not None:
            limits.setdefault(task.id, said)
    if not limits or spec.alerts is None:
        return []
    alerts = []
    for task_id, allowed in limits.items():
        rows = store.watermarks(loaded.name, task_id)
        times = [t for t in (watermark_time(r.value) for r in rows) if t is not None]
        if not times:
            continue
        lag = now - min(times)
        if lag > allowed:
            message = f"{task_id}'s watermark is {lag} behind now (max_staleness {allowed})"
            alerts.append(Alert(loaded.name, "freshness", task_id, message, now, {}))
    return alerts

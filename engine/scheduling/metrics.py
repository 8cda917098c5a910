"""Prometheus metrics, read from the catalog when scraped (so every process that writes runs is
counted, and a restart loses nothing): `/metrics` on the scheduler's port, and `arrowline
metrics` for a node-exporter textfile.

    arrowline_runs{pipeline,state}                       runs in the catalog by state (gauge)
    arrowline_task_duration_seconds{pipeline,task}       summary (_sum, _count) of attempts' runs
    arrowline_task_last_duration_seconds{pipeline,task}  the newest finished run's duration
    arrowline_rows_total{pipeline,task,direction}        rows in and out of finished tasks
    arrowline_bytes_total{pipeline,task}                 bytes written to the workspace
    arrowline_retries_total{pipeline,task}               attempts beyond the first
    arrowline_quarantined_rows_total{pipeline,task}      rows set aside by validation or files
    arrowline_dead_letters{pipeline,status}              dead letters by status
    arrowline_watermark_lag_seconds{pipeline,task,sink}  now minus a time watermark
    arrowline_scheduler_lag_seconds{pipeline}            newest scheduled start minus due time
    arrowline_schedule_paused{pipeline}                  1 when the schedule is paused
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector, CollectorRegistry

from engine.state.catalog import CatalogReader
from engine.state.db import CatalogLocation
from engine.state.reports import Count

__all__ = ["CatalogCollector", "render"]


class CatalogCollector(Collector):
    def __init__(self, location: CatalogLocation) -> None:
        self.location = location

    def collect(self) -> Iterator[Metric]:
        if not self.location.exists():
            return
        with CatalogReader(self.location) as catalog:
            yield from _runs(catalog)
            yield from _tasks(catalog)
            yield from _dead_letters(catalog)
            yield from _watermarks(catalog)
            yield from _scheduler(catalog)


def _by_pipeline(name: str, documentation: str, label: str, counts: list[Count]) -> Metric:
    """Counts per pipeline and `label` as a gauge."""
    family = GaugeMetricFamily(name, documentation, labels=["pipeline", label])
    for count in counts:
        family.add_metric([count.pipeline, count.value], count.count)
    return family


def _runs(catalog: CatalogReader) -> Iterator[Metric]:
    yield _by_pipeline(
        "arrowline_runs", "Runs in the catalog by state.", "state", catalog.reports.runs_by_state()
    )


def _tasks(catalog: CatalogReader) -> Iterator[Metric]:
    labels = ["pipeline", "task"]
    duration = SummaryMetricFamily(
        "arrowline_task_duration_seconds",
        "Time tasks took, over finished task runs.",
        labels=labels,
    )
    rows_total = CounterMetricFamily(
        "arrowline_rows", "Rows into and out of finished tasks.", labels=[*labels, "direction"]
    )
    bytes_total = CounterMetricFamily("arrowline_bytes", "Bytes tasks wrote.", labels=labels)
    retries = CounterMetricFamily("arrowline_retries", "Attempts beyond the first.", labels=labels)
    quarantined = CounterMetricFamily(
        "arrowline_quarantined_rows", "Rows set aside as bad.", labels=labels
    )
    for task in catalog.reports.task_totals():
        key = [task.pipeline, task.task_id]
        duration.add_metric(key, count_value=task.timed_runs, sum_value=task.seconds)
        rows_total.add_metric([*key, "in"], task.rows_in)
        rows_total.add_metric([*key, "out"], task.rows_out)
        bytes_total.add_metric(key, task.bytes_out)
        retries.add_metric(key, task.retries)
        quarantined.add_metric(key, task.rows_rejected)
    last = GaugeMetricFamily(
        "arrowline_task_last_duration_seconds",
        "The newest finished run of each task.",
        labels=labels,
    )
    for newest in catalog.reports.last_durations():
        last.add_metric([newest.pipeline, newest.task_id], newest.seconds)
    yield from (duration, last, rows_total, bytes_total, retries, quarantined)


def _dead_letters(catalog: CatalogReader) -> Iterator[Metric]:
    yield _by_pipeline(
        "arrowline_dead_letters",
        "Dead letters by status.",
        "status",
        catalog.reports.dead_letters_by_status(),
    )


def watermark_time(value: str) -> datetime | None:
    """The cursor of a stored watermark as an instant, when it is a date or a timestamp."""
    from engine.core.watermark import Watermark

    try:
        cursor = Watermark.from_json(value).cursor
    except (ValueError, KeyError, TypeError):
        return None
    if isinstance(cursor, datetime):
        return cursor if cursor.tzinfo else cursor.replace(tzinfo=UTC)
    if isinstance(cursor, date):
        return datetime(cursor.year, cursor.month, cursor.day, tzinfo=UTC)
    return None


def _watermarks(catalog: CatalogReader) -> Iterator[Metric]:
    family = GaugeMetricFamily(
        "arrowline_watermark_lag_seconds",
        "How far an incremental extract's time watermark is behind now.",
        labels=["pipeline", "task", "sink"],
    )
    now = datetime.now(UTC)
    for mark in catalog.every_watermark():
        when = watermark_time(mark.value)
        if when is not None:
            family.add_metric(
                [mark.pipeline, mark.task_id, mark.sink_id], (now - when).total_seconds()
            )
    yield family


def _scheduler(catalog: CatalogReader) -> Iterator[Metric]:
    lag = GaugeMetricFamily(
        "arrowline_scheduler_lag_seconds",
        "The newest scheduled run's start minus its due time.",
        labels=["pipeline"],
    )
    for newest in catalog.reports.scheduler_lags():
        delay = datetime.fromisoformat(newest.started_at) - datetime.fromisoformat(newest.fire_at)
        lag.add_metric([newest.pipeline], delay.total_seconds())
    paused = GaugeMetricFamily(
        "arrowline_schedule_paused",
        "1 when the pipeline's schedule is paused.",
        labels=["pipeline"],
    )
    for schedule in catalog.schedules():
        paused.add_metric([schedule.pipeline], int(schedule.paused))
    yield from (lag, paused)


def render(location: CatalogLocation) -> bytes:
    """The metrics in Prometheus' text exposition format."""
    from prometheus_client import generate_latest

    registry = CollectorRegistry()
    registry.register(CatalogCollector(location))
    return generate_latest(registry)

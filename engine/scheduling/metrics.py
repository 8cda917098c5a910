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

__all__ = ["CatalogCollector", "render"]


class CatalogCollector(Collector):
    def __init__(self, location: CatalogLocation) -> None:
        self.location = location

    def collect(self) -> Iterator[Metric]:
        from engine.state.schedules import SchedulerReader

        if not self.location.exists():
            return
        with SchedulerReader(self.location) as catalog:
            yield from _runs(catalog)
            yield from _tasks(catalog)
            yield from _dead_letters(catalog)
            yield from _watermarks(catalog)
            yield from _scheduler(catalog)


def _by_pipeline(
    catalog: CatalogReader, name: str, documentation: str, table: str, column: str
) -> GaugeMetricFamily:
    """Rows of `table` counted per pipeline and `column`."""
    family = GaugeMetricFamily(name, documentation, labels=["pipeline", column])
    for pipeline, value, count in catalog.query(
        f"select pipeline, {column}, count(*) from {table} group by 1, 2 order by 1, 2"
    ):
        family.add_metric([pipeline, value], count)
    return family


def _runs(catalog: CatalogReader) -> Iterator[Metric]:
    yield _by_pipeline(catalog, "arrowline_runs", "Runs in the catalog by state.", "runs", "state")


def _tasks(catalog: CatalogReader) -> Iterator[Metric]:
    rows = catalog.query(
        # sums cast back to integers: PostgreSQL sums bigints as numeric
        "select r.pipeline, t.task_id, count(t.duration_s), coalesce(sum(t.duration_s), 0), "
        "cast(coalesce(sum(t.rows_in), 0) as bigint), "
        "cast(coalesce(sum(t.rows_out), 0) as bigint), "
        "cast(coalesce(sum(t.bytes_out), 0) as bigint), "
        "cast(coalesce(sum(case when t.attempts > 1 then t.attempts - 1 else 0 end), 0) "
        "as bigint), "
        "cast(coalesce(sum(t.rows_rejected), 0) as bigint) "
        "from task_runs t join runs r using (run_id) where t.ended_at is not null "
        "group by 1, 2 order by 1, 2"
    )
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
    for pipeline, task, count, seconds, rows_in, rows_out, written, extra, rejected in rows:
        duration.add_metric([pipeline, task], count_value=count, sum_value=seconds)
        rows_total.add_metric([pipeline, task, "in"], rows_in)
        rows_total.add_metric([pipeline, task, "out"], rows_out)
        bytes_total.add_metric([pipeline, task], written)
        retries.add_metric([pipeline, task], extra)
        quarantined.add_metric([pipeline, task], rejected)
    last = GaugeMetricFamily(
        "arrowline_task_last_duration_seconds",
        "The newest finished run of each task.",
        labels=labels,
    )
    for pipeline, task, seconds in catalog.query(
        "select pipeline, task_id, duration_s from (select r.pipeline, t.task_id, t.duration_s, "
        "row_number() over (partition by r.pipeline, t.task_id order by t.ended_at desc) as n "
        "from task_runs t join runs r using (run_id) where t.duration_s is not null) as newest "
        "where n = 1"
    ):
        last.add_metric([pipeline, task], seconds)
    yield from (duration, last, rows_total, bytes_total, retries, quarantined)


def _dead_letters(catalog: CatalogReader) -> Iterator[Metric]:
    yield _by_pipeline(
        catalog, "arrowline_dead_letters", "Dead letters by status.", "dead_letters", "status"
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
    for pipeline, task, sink, value in catalog.query(
        "select pipeline, task_id, sink_id, value from watermarks order by 1, 2, 3"
    ):
        when = watermark_time(value)
        if when is not None:
            family.add_metric([pipeline, task, sink], (now - when).total_seconds())
    yield family


def _scheduler(catalog: CatalogReader) -> Iterator[Metric]:
    lag = GaugeMetricFamily(
        "arrowline_scheduler_lag_seconds",
        "The newest scheduled run's start minus its due time.",
        labels=["pipeline"],
    )
    for pipeline, fire_at, started_at in catalog.query(
        "select pipeline, fire_at, started_at from (select *, row_number() over (partition by "
        "pipeline order by fire_at desc) as n from intervals where started_at is not null) "
        "as newest where n = 1"
    ):
        delay = datetime.fromisoformat(started_at) - datetime.fromisoformat(fire_at)
        lag.add_metric([pipeline], delay.total_seconds())
    paused = GaugeMetricFamily(
        "arrowline_schedule_paused",
        "1 when the pipeline's schedule is paused.",
        labels=["pipeline"],
    )
    for pipeline, flag in catalog.query("select pipeline, paused from schedules"):
        paused.add_metric([pipeline], flag)
    yield from (lag, paused)


def render(location: CatalogLocation) -> bytes:
    """The metrics in Prometheus' text exposition format."""
    from prometheus_client import generate_latest

    registry = CollectorRegistry()
    registry.register(CatalogCollector(location))
    return generate_latest(registry)

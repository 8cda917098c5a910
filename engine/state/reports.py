"""Aggregates over the whole catalog, for the reports that read it when asked: the Prometheus
metrics (engine.scheduling.metrics). Read-only; each answers one question in one query."""

from __future__ import annotations

from dataclasses import dataclass

from engine.state.db import Database

__all__ = ["Count", "LastDuration", "Reports", "SchedulerLag", "TaskTotals"]


@dataclass(frozen=True)
class Count:
    """How many rows of a pipeline have one value (a run state, a dead letter status)."""

    pipeline: str
    value: str
    count: int


@dataclass(frozen=True)
class TaskTotals:
    """A task's finished runs, summed over every run of its pipeline."""

    pipeline: str
    task_id: str
    timed_runs: int
    """Finished runs with a duration."""
    seconds: float
    rows_in: int
    rows_out: int
    bytes_out: int
    retries: int
    """Attempts beyond the first."""
    rows_rejected: int


@dataclass(frozen=True)
class LastDuration:
    pipeline: str
    task_id: str
    seconds: float
    """How long the task's newest finished run took."""


@dataclass(frozen=True)
class SchedulerLag:
    pipeline: str
    fire_at: str
    """When the newest started interval fell due."""
    started_at: str
    """When the scheduler started its run."""


@dataclass(frozen=True)
class Reports:
    db: Database

    def runs_by_state(self) -> list[Count]:
        rows = self.db.execute(
            "select pipeline, state, count(*) from runs group by 1, 2 order by 1, 2"
        )
        return [Count(*row) for row in rows]

    def dead_letters_by_status(self) -> list[Count]:
        rows = self.db.execute(
            "select pipeline, status, count(*) from dead_letters group by 1, 2 order by 1, 2"
        )
        return [Count(*row) for row in rows]

    def task_totals(self) -> list[TaskTotals]:
        """Per pipeline and task, over its finished runs."""
        rows = self.db.execute(
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
        return [TaskTotals(*row) for row in rows]

    def last_durations(self) -> list[LastDuration]:
        """Per pipeline and task, its newest finished run's duration."""
        rows = self.db.execute(
            "select pipeline, task_id, duration_s from (select r.pipeline, t.task_id, "
            "t.duration_s, row_number() over (partition by r.pipeline, t.task_id "
            "order by t.ended_at desc) as n "
            "from task_runs t join runs r using (run_id) where t.duration_s is not null) "
            "as newest where n = 1"
        )
        return [LastDuration(*row) for row in rows]

    def scheduler_lags(self) -> list[SchedulerLag]:
        """Per pipeline, the newest interval the scheduler started."""
        rows = self.db.execute(
            "select pipeline, fire_at, started_at from (select *, row_number() over "
            "(partition by pipeline order by fire_at desc) as n from intervals "
            "where started_at is not null) as newest where n = 1"
        )
        return [SchedulerLag(*row) for row in rows]

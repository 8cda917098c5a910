"""The questions the web monitor asks of the catalog, each one indexed query, so a page stays
fast with 100,000 runs: a page of runs by keyset (never OFFSET), each pipeline's recent runs,
what needs attention, and a run's task graph as planned.

Rows here are light (no definition text, no schemas): a list page must not read what only a
detail page shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from engine.core.states import RunState
from engine.state.db import Database
from engine.state.rows import TaskRunRow, task_row
from engine.state.values import parse

__all__ = ["Attention", "MonitorStore", "RunPage", "RunSummary"]

_SUMMARY = "run_id, pipeline, state, logical_date, created_at, started_at, ended_at, error, resumes"


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    pipeline: str
    state: RunState
    logical_date: str
    created_at: str
    started_at: str | None
    ended_at: str | None
    error: str | None
    resumes: int

    @property
    def duration_s(self) -> float | None:
        if not self.started_at or not self.ended_at:
            return None
        return (parse(self.ended_at) - parse(self.started_at)).total_seconds()


@dataclass(frozen=True)
class RunPage:
    runs: list[RunSummary]
    next_key: str | None
    """Where the next page starts (`created_at|run_id` of this page's last run), or None at
    the end."""


@dataclass(frozen=True)
class Attention:
    """What waits for a person in one pipeline: open dead letters, and rows its last run
    quarantined."""

    dead_letters: int
    quarantined: int


def _summary(row: object) -> RunSummary:
    values = dict(row)  # type: ignore[call-overload]
    return RunSummary(**values | {"state": RunState(values["state"])})


@dataclass(frozen=True)
class MonitorStore:
    db: Database

    def runs_page(
        self,
        *,
        pipeline: str | None = None,
        state: RunState | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> RunPage:
        """Runs newest first, filtered; `after` is a previous page's `next_key`. Times are
        compared as the catalog stores them (UTC ISO text, which sorts as time)."""
        where: list[str] = []
        args: list[object] = []
        if pipeline is not None:
            where.append("pipeline = ?")
            args.append(pipeline)
        if state is not None:
            where.append("state = ?")
            args.append(state.value)
        if since is not None:
            where.append("created_at >= ?")
            args.append(since.isoformat())
        if until is not None:
            where.append("created_at < ?")
            args.append(until.isoformat())
        if after is not None:
            created_at, _, run_id = after.partition("|")
            where.append("(created_at < ? or (created_at = ? and run_id < ?))")
            args.extend([created_at, created_at, run_id])
        sql = f"select {_SUMMARY} from runs"
        if where:
            sql += " where " + " and ".join(where)
        sql += " order by created_at desc, run_id desc limit ?"
        rows = self.db.execute(sql, (*args, limit + 1))
        runs = [_summary(row) for row in rows[:limit]]
        more = len(rows) > limit
        next_key = f"{runs[-1].created_at}|{runs[-1].run_id}" if more and runs else None
        return RunPage(runs, next_key)

    def recent_runs(self, pipeline: str, limit: int = 20) -> list[RunSummary]:
        """The pipeline's newest runs, newest first (the overview's trend)."""
        rows = self.db.execute(
            f"select {_SUMMARY} from runs where pipeline = ? order by created_at desc limit ?",
            (pipeline, limit),
        )
        return [_summary(row) for row in rows]

    def attention(self, pipeline: str, last_run: str | None) -> Attention:
        open_letters = self.db.execute(
            "select count(*) as n from dead_letters where status = 'open' and pipeline = ?",
            (pipeline,),
        )[0]["n"]
        quarantined = 0
        if last_run is not None:
            rows = self.db.execute(
                "select coalesce(sum(rows_rejected), 0) as n from task_runs where run_id = ?",
                (last_run,),
            )
            quarantined = int(rows[0]["n"] or 0)
        return Attention(int(open_letters), quarantined)

    def run_graph(self, run_id: str) -> list[tuple[str, str, tuple[str, ...]]] | None:
        """The run's tasks as planned, (id, kind, upstream) in plan order; None for a run
        recorded before the catalog kept graphs (or read from a catalog not yet migrated, which
        a read-only reader of an embedded catalog leaves as it is)."""
        if not self.db.table_exists("task_graphs"):
            return None
        rows = self.db.execute(
            "select g.tasks from run_graphs r join task_graphs g using (digest) where r.run_id = ?",
            (run_id,),
        )
        if not rows:
            return None
        return [(task, kind, tuple(up)) for task, kind, up in json.loads(rows[0]["tasks"])]

    def previous_output(self, pipeline: str, task_id: str, before: str) -> TaskRunRow | None:
        """The task's newest successful run in a run of `pipeline` created before `before`:
        what a task's schema drift is measured against."""
        rows = self.db.execute(
            "select t.* from task_runs t join runs r using (run_id) "
            "where r.pipeline = ? and t.task_id = ? and t.state = 'SUCCESS' "
            "and r.created_at < ? order by r.created_at desc limit 1",
            (pipeline, task_id, before),
        )
        return task_row(rows[0]) if rows else None

    def last_success(self, pipeline: str) -> RunSummary | None:
        """The pipeline's newest successful run, however many failed since (freshness)."""
        rows = self.db.execute(
            f"select {_SUMMARY} from runs where pipeline = ? and state = 'SUCCESS' "
            "order by created_at desc limit 1",
            (pipeline,),
        )
        return _summary(rows[0]) if rows else None

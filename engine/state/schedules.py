"""The scheduler's state in the catalog: schedules, decided intervals, run requests, triggers seen
and alerts sent (tables in engine.state.schema), and the questions the scheduler asks of them.

Every decision is one transaction, and an interval's primary key (pipeline, fire time) is what
keeps it from ever being started twice, whichever scheduler process decides it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from engine.core.runids import new_run_id
from engine.state.db import Database
from engine.state.rows import (
    IntervalRow,
    RequestRow,
    ScheduleRow,
    request_row,
    schedule_row,
)
from engine.state.values import iso, now_text, parse

__all__ = ["IntervalRow", "LateInterval", "RequestRow", "ScheduleRow", "ScheduleStore"]


@dataclass(frozen=True)
class LateInterval:
    """A decided interval whose run has not succeeded (an SLA miss once it is old enough)."""

    fire_at: str
    run_id: str | None
    """None while it was not started."""
    state: str | None
    """The run's state; None while it was not started."""


@dataclass(frozen=True)
class ScheduleStore:
    db: Database

    # -- reading -----------------------------------------------------------------------------

    def schedules(self) -> list[ScheduleRow]:
        rows = self.db.execute("select * from schedules order by pipeline")
        return [schedule_row(row) for row in rows]

    def schedule(self, pipeline: str) -> ScheduleRow | None:
        rows = self.db.execute("select * from schedules where pipeline = ?", (pipeline,))
        return schedule_row(rows[0]) if rows else None

    def intervals(self, pipeline: str, state: str | None = None) -> list[IntervalRow]:
        rows = self.db.execute(
            "select * from intervals where pipeline = ? "
            "and (cast(? as text) is null or state = ?) "
            "order by fire_at",
            (pipeline, state, state),
        )
        return [IntervalRow(**dict(row)) for row in rows]

    def requests(self, pipeline: str | None = None, state: str | None = None) -> list[RequestRow]:
        rows = self.db.execute(
            "select * from run_requests where (cast(? as text) is null or pipeline = ?) "
            "and (cast(? as text) is null or state = ?) order by id",
            (pipeline, pipeline, state, state),
        )
        return [request_row(row) for row in rows]

    def request_for_run(self, run_id: str) -> RequestRow | None:
        rows = self.db.execute(
            "select * from run_requests where run_id = ? order by id desc limit 1", (run_id,)
        )
        return request_row(rows[0]) if rows else None

    def trigger_seen(self, pipeline: str, kind: str, key: str) -> bool:
        rows = self.db.execute(
            "select 1 from triggers_seen where pipeline = ? and kind = ? and key = ?",
            (pipeline, kind, key),
        )
        return bool(rows)

    def pipelines_with_queued_work(self) -> set[str]:
        """Pipelines with an interval queued or a run request pending: one question per tick,
        so that an idle pipeline costs the scheduler no query of its own."""
        rows = self.db.execute(
            "select pipeline from intervals where state = 'queued' union "
            "select pipeline from run_requests where state = 'pending'"
        )
        return {row[0] for row in rows}

    def untriggered_successes(self, upstream: str, since: str, pipeline: str) -> list[str]:
        """Runs of `upstream` that succeeded after `since` and have not yet triggered
        `pipeline` (`trigger: {after: upstream}`), oldest first."""
        rows = self.db.execute(
            "select run_id from runs where pipeline = ? and state = 'SUCCESS' and ended_at > ? "
            "and run_id not in (select key from triggers_seen where pipeline = ? "
            "and kind = 'after') order by ended_at",
            (upstream, since, pipeline),
        )
        return [row[0] for row in rows]

    def late_intervals(
        self, pipeline: str, due_by: datetime, limit: int = 20
    ) -> list[LateInterval]:
        """Intervals that fell due by `due_by`, were not skipped and whose run has not
        succeeded (or never started), newest first."""
        rows = self.db.execute(
            "select i.fire_at, i.run_id, r.state from intervals i left join runs r using (run_id) "
            "where i.pipeline = ? and i.fire_at <= ? and i.state != 'skipped' "
            "and (r.state is null or r.state != 'SUCCESS') order by i.fire_at desc limit ?",
            (pipeline, iso(due_by), limit),
        )
        return [LateInterval(*row) for row in rows]

    # -- deciding ----------------------------------------------------------------------------

    def ensure_schedule(
        self, pipeline: str, pipeline_file: str, last_fire: datetime | None
    ) -> ScheduleRow:
        """The pipeline's schedule row, created on first sight with `last_fire` (the fire time
        before now: a new schedule starts from now, not from the epoch). A row made without one
        (`schedule pause` before any scheduler saw the pipeline, a schedule added to a pipeline
        that had only triggers) gets it now: a schedule without a last fire never falls due."""
        with self.db.transaction() as connection:
            connection.execute(
                "insert into schedules (pipeline, pipeline_file, last_fire, registered_at) "
                "values (?, ?, ?, ?) on conflict (pipeline) do update set "
                "pipeline_file = excluded.pipeline_file, "
                "last_fire = coalesce(schedules.last_fire, excluded.last_fire)",
                (pipeline, pipeline_file, iso(last_fire) if last_fire else None, now_text()),
            )
        row = self.schedule(pipeline)
        assert row is not None
        return row

    def set_paused(
        self, pipeline: str, pipeline_file: str, paused: bool, reason: str | None, by: str
    ) -> None:
        with self.db.transaction() as connection:
            connection.execute(
                "insert into schedules (pipeline, pipeline_file, registered_at) values (?, ?, ?) "
                "on conflict (pipeline) do nothing",
                (pipeline, pipeline_file, now_text()),
            )
            connection.execute(
                "update schedules set paused = ?, reason = ?, changed_at = ?, changed_by = ? "
                "where pipeline = ?",
                (int(paused), reason, now_text(), by, pipeline),
            )

    def claim_intervals(
        self,
        pipeline: str,
        last_fire: datetime | None,
        decided: Sequence[tuple[datetime, datetime, str, str | None]],
    ) -> list[IntervalRow]:
        """Record each (fire, logical date, state, reason) and move the schedule's last fire
        forward to `last_fire`, in one transaction; None leaves it (a backfill's intervals are
        not where the schedule is). An interval already recorded (by this or another scheduler)
        is left as it was; the rows returned are the ones this call recorded."""
        at = now_text()
        recorded = []
        with self.db.transaction() as connection:
            for fire, logical, state, reason in decided:
                inserted = connection.execute(
                    "insert into intervals (pipeline, fire_at, logical_date, state, reason, "
                    "decided_at) values (?, ?, ?, ?, ?, ?) on conflict do nothing returning 1",
                    (pipeline, iso(fire), iso(logical), state, reason, at),
                )
                if inserted:
                    recorded.append(
                        IntervalRow(
                            pipeline, iso(fire), iso(logical), state, None, reason, at, None
                        )
                    )
            if last_fire is not None:
                connection.execute(
                    "update schedules set last_fire = ? where pipeline = ? "
                    "and (last_fire is null or last_fire < ?)",
                    (iso(last_fire), pipeline, iso(last_fire)),
                )
        return recorded

    def start_interval(self, pipeline: str, fire_at: str, run_id: str) -> bool:
        """Queued -> started with this run id; False when it was not queued any more."""
        with self.db.transaction() as connection:
            started = connection.execute(
                "update intervals set state = 'started', run_id = ?, started_at = ? "
                "where pipeline = ? and fire_at = ? and state = 'queued' returning 1",
                (run_id, now_text(), pipeline, fire_at),
            )
            return bool(started)

    def skip_interval(self, pipeline: str, fire_at: str, reason: str) -> None:
        with self.db.transaction() as connection:
            connection.execute(
                "update intervals set state = 'skipped', reason = ? "
                "where pipeline = ? and fire_at = ? and state = 'queued'",
                (reason, pipeline, fire_at),
            )

    def request_run(
        self,
        pipeline: str,
        pipeline_file: str,
        params: dict[str, Any],
        source: str,
        run_id: str | None = None,
    ) -> RequestRow:
        run_id = run_id or new_run_id()
        at = now_text()
        with self.db.transaction() as connection:
            rows = connection.execute(
                "insert into run_requests (pipeline, pipeline_file, params, run_id, source, "
                "requested_at) values (?, ?, ?, ?, ?, ?) returning id",
                (pipeline, pipeline_file, json.dumps(params, sort_keys=True), run_id, source, at),
            )
            request_id = int(rows[0][0])
        return RequestRow(
            request_id, pipeline, pipeline_file, params, run_id, source, at, "pending", None, None
        )

    def settle_request(self, request_id: int, state: str, reason: str | None = None) -> bool:
        """pending -> started or skipped; False when it was not pending any more."""
        with self.db.transaction() as connection:
            settled = connection.execute(
                "update run_requests set state = ?, reason = ?, started_at = ? "
                "where id = ? and state = 'pending' returning 1",
                (state, reason, now_text() if state == "started" else None, request_id),
            )
            return bool(settled)

    def record_trigger(self, pipeline: str, kind: str, key: str) -> bool:
        """True the first time (pipeline, kind, key) is seen, False ever after."""
        with self.db.transaction() as connection:
            seen = connection.execute(
                "insert into triggers_seen (pipeline, kind, key, seen_at) values (?, ?, ?, ?) "
                "on conflict do nothing returning 1",
                (pipeline, kind, key, now_text()),
            )
            return bool(seen)

    def alert_due(
        self, key: str, pipeline: str, kind: str, now: datetime, window: timedelta
    ) -> int | None:
        """None when an alert of this key went out within `window` (counted as suppressed);
        else the number suppressed since the last one sent (and this one counts as sent)."""
        with self.db.transaction() as connection:
            found = connection.execute(
                "select last_sent_at, suppressed from alerts_sent where key = ?", (key,)
            )
            row = found[0] if found else None
            if row is not None and now - parse(row[0]) < window:
                connection.execute(
                    "update alerts_sent set suppressed = suppressed + 1 where key = ?", (key,)
                )
                return None
            connection.execute(
                "insert into alerts_sent (key, pipeline, kind, first_at, last_sent_at) "
                "values (?, ?, ?, ?, ?) on conflict (key) do update set "
                "last_sent_at = excluded.last_sent_at, suppressed = 0",
                (key, pipeline, kind, iso(now), iso(now)),
            )
            return int(row[1]) if row is not None else 0

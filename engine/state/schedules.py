"""The scheduler's state in the catalog: schedules, decided intervals, run requests, triggers seen
and alerts sent (tables in engine.state.catalog). Every decision is one transaction, and an
interval's primary key (pipeline, fire time) is what keeps it from ever being started twice,
whichever scheduler process decides it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.core.runids import new_run_id
from engine.state.catalog import Catalog, CatalogReader, now_text

__all__ = ["IntervalRow", "RequestRow", "ScheduleRow", "SchedulerStore"]


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat()


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@dataclass(frozen=True)
class ScheduleRow:
    pipeline: str
    pipeline_file: str
    paused: bool
    reason: str | None
    changed_at: str | None
    changed_by: str | None
    last_fire: str | None
    registered_at: str


@dataclass(frozen=True)
class IntervalRow:
    pipeline: str
    fire_at: str
    logical_date: str
    state: str
    """queued, started or skipped."""
    run_id: str | None
    reason: str | None
    decided_at: str
    started_at: str | None


@dataclass(frozen=True)
class RequestRow:
    id: int
    pipeline: str
    pipeline_file: str
    params: dict[str, Any]
    run_id: str
    source: str
    """manual, http, files:<path>, after:<pipeline>:<run>, resume."""
    requested_at: str
    state: str
    """pending, started or skipped."""
    started_at: str | None
    reason: str | None


def _request(row: Any) -> RequestRow:
    values = dict(row)
    values["params"] = json.loads(values["params"])
    return RequestRow(**values)


class SchedulerReader(CatalogReader):
    def schedules(self) -> list[ScheduleRow]:
        rows = self._query("select * from schedules order by pipeline")
        return [ScheduleRow(**{**dict(r), "paused": bool(r["paused"])}) for r in rows]

    def schedule(self, pipeline: str) -> ScheduleRow | None:
        rows = self._query("select * from schedules where pipeline = ?", (pipeline,))
        return ScheduleRow(**{**dict(rows[0]), "paused": bool(rows[0]["paused"])}) if rows else None

    def intervals(self, pipeline: str, state: str | None = None) -> list[IntervalRow]:
        rows = self._query(
            "select * from intervals where pipeline = ? "
            "and (cast(? as text) is null or state = ?) "
            "order by fire_at",
            (pipeline, state, state),
        )
        return [IntervalRow(**dict(r)) for r in rows]

    def requests(self, pipeline: str | None = None, state: str | None = None) -> list[RequestRow]:
        rows = self._query(
            "select * from run_requests where (cast(? as text) is null or pipeline = ?) "
            "and (cast(? as text) is null or state = ?) order by id",
            (pipeline, pipeline, state, state),
        )
        return [_request(r) for r in rows]

    def request_for_run(self, run_id: str) -> RequestRow | None:
        rows = self._query(
            "select * from run_requests where run_id = ? order by id desc limit 1", (run_id,)
        )
        return _request(rows[0]) if rows else None


class SchedulerStore(SchedulerReader, Catalog):
    def ensure_schedule(
        self, pipeline: str, pipeline_file: str, last_fire: datetime | None
    ) -> ScheduleRow:
        """The pipeline's schedule row, created on first sight with `last_fire` (the fire time
        before now: a new schedule starts from now, not from the epoch). A row made without one
        (`schedule pause` before any scheduler saw the pipeline, a schedule added to a pipeline
        that had only triggers) gets it now: a schedule without a last fire never falls due."""
        with self._transaction() as connection:
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
        with self._transaction() as connection:
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
        with self._transaction() as connection:
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
        with self._transaction() as connection:
            started = connection.execute(
                "update intervals set state = 'started', run_id = ?, started_at = ? "
                "where pipeline = ? and fire_at = ? and state = 'queued' returning 1",
                (run_id, now_text(), pipeline, fire_at),
            )
            return bool(started)

    def skip_interval(self, pipeline: str, fire_at: str, reason: str) -> None:
        with self._transaction() as connection:
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
        with self._transaction() as connection:
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
        with self._transaction() as connection:
            settled = connection.execute(
                "update run_requests set state = ?, reason = ?, started_at = ? "
                "where id = ? and state = 'pending' returning 1",
                (state, reason, now_text() if state == "started" else None, request_id),
            )
            return bool(settled)

    def record_trigger(self, pipeline: str, kind: str, key: str) -> bool:
        """True the first time (pipeline, kind, key) is seen, False ever after."""
        with self._transaction() as connection:
            seen = connection.execute(
                "insert into triggers_seen (pipeline, kind, key, seen_at) values (?, ?, ?, ?) "
                "on conflict do nothing returning 1",
                (pipeline, kind, key, now_text()),
            )
            return bool(seen)

    def trigger_seen(self, pipeline: str, kind: str, key: str) -> bool:
        rows = self._query(
            "select 1 from triggers_seen where pipeline = ? and kind = ? and key = ?",
            (pipeline, kind, key),
        )
        return bool(rows)

    def alert_due(
        self, key: str, pipeline: str, kind: str, now: datetime, window: timedelta
    ) -> int | None:
        """None when an alert of this key went out within `window` (counted as suppressed);
        else the number suppressed since the last one sent (and this one counts as sent)."""
        with self._transaction() as connection:
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

"""The catalog: runs, task runs, every state transition, row counts, bytes, durations, schemas,
watermarks, dead letters, lineage and the scheduler's decisions.

Embedded in SQLite (WAL) at `.arrowline/catalog.db` by default, or shared in PostgreSQL
(`ARROWLINE_CATALOG`, see engine.state.db). `CatalogReader` (engine.state.reader) is the read
side; `Catalog` adds the writes. Both are thin facades over one store per entity, which hold
every statement:

    runs, task runs, reused outputs   engine.state.runs          (reads)
    creating and moving runs          engine.state.transitions   (the state machine's writes)
    watermarks and their audit        engine.state.watermarks
    dead letters                      engine.state.dead_letters
    column lineage                    engine.state.lineage
    removed outputs                   engine.state.outputs
    schedules, intervals, requests,   engine.state.schedules
    triggers seen, alerts sent
    aggregates for metrics            engine.state.reports
    tables / migrations               engine.state.schema / engine.state.migrations

The executor writes a run; the scheduler writes its decisions; both through this one object, so
neither needs to know which store holds what.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from engine.core.states import RunState, TaskState
from engine.core.usage import RunUsage
from engine.state.db import CatalogLocation, catalog_location
from engine.state.reader import CatalogReader
from engine.state.rows import (
    AuditRow,
    DeadLetterRow,
    IntervalRow,
    RemovedOutputRow,
    RequestRow,
    RunRow,
    ScheduleRow,
    TaskRunRow,
    TransitionRow,
    WatermarkRow,
)
from engine.state.transitions import TransitionStore
from engine.state.values import now_text

__all__ = [
    "AuditRow",
    "Catalog",
    "CatalogReader",
    "DeadLetterRow",
    "RemovedOutputRow",
    "RunRow",
    "TaskRunRow",
    "TransitionRow",
    "WatermarkRow",
    "catalog_location",
    "now_text",
]


class Catalog(CatalogReader):
    """The writing side: the executor's, the scheduler's and the operator commands'."""

    def __init__(self, location: CatalogLocation | Path) -> None:
        super().__init__(location, _writable=True)
        self._transitions = TransitionStore(self._db)

    # -- runs and their tasks (engine.state.transitions) -------------------------------------

    def create_run(
        self,
        run_id: str,
        pipeline: str,
        pipeline_version: str,
        pipeline_file: str | None,
        params: dict[str, Any],
        logical_date: str,
        selected: list[str] | None,
        tasks: Sequence[tuple[str, str, int, str]],
        reused: dict[str, str],
        definition: str | None = None,
        graph: Sequence[tuple[str, str, Sequence[str]]] = (),
    ) -> None:
        """A run and its tasks, all PENDING; `tasks` are (id, kind, level, fingerprint), `graph`
        the whole plan's (id, kind, upstream)."""
        self._transitions.create_run(
            run_id,
            pipeline,
            pipeline_version,
            pipeline_file,
            params,
            logical_date,
            selected,
            tasks,
            reused,
            definition,
            graph,
        )

    def transition_run(
        self,
        run_id: str,
        target: RunState,
        event: str,
        error: str | None = None,
        usage: RunUsage | None = None,
    ) -> None:
        """Move a run to `target`; `usage`, at its end, is what it cost its process."""
        self._transitions.transition_run(run_id, target, event, error, usage)

    def transition_task(
        self,
        run_id: str,
        task_id: str,
        target: TaskState,
        event: str,
        *,
        attempt: int | None = None,
        error: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        """Move a task to `target`, checked against the state machine, with optional metrics."""
        self._transitions.transition_task(
            run_id, task_id, target, event, attempt=attempt, error=error, fields=fields
        )

    def interrupt_run(self, run_id: str, reason: str) -> list[str]:
        """A run whose process died: INTERRUPTED, its unfinished tasks CANCELLED (returned)."""
        return self._transitions.interrupt_run(run_id, reason)

    def resume_run(
        self,
        run_id: str,
        tasks: Sequence[tuple[str, str, int, str]],
        definition: str | None,
        pipeline_version: str,
        graph: Sequence[tuple[str, str, Sequence[str]]] = (),
    ) -> None:
        """An ended run back to PENDING with `tasks` (id, kind, level, fingerprint) again."""
        self._transitions.resume_run(run_id, tasks, definition, pipeline_version, graph)

    def heartbeat(self, run_id: str) -> None:
        self._transitions.heartbeat(run_id)

    def record_reuse(self, run_id: str, task_id: str, from_run_id: str) -> None:
        """The run's task stands on an earlier run's output (a cache hit while it ran)."""
        self._transitions.record_reuse(run_id, task_id, from_run_id)

    # -- watermarks, dead letters, lineage, removed outputs ----------------------------------

    def set_watermark(
        self,
        pipeline: str,
        task_id: str,
        sink_id: str,
        value: str | None,
        *,
        action: str,
        run_id: str | None = None,
        actor: str | None = None,
    ) -> None:
        """Store (or with None, delete) a watermark, with an audit row, in one transaction."""
        self._watermarks.set_watermark(
            pipeline, task_id, sink_id, value, action=action, run_id=run_id, actor=actor
        )

    def add_dead_letter(
        self,
        *,
        run_id: str,
        pipeline: str,
        task_id: str,
        pipeline_version: str,
        pipeline_file: str | None,
        params: dict[str, Any],
        logical_date: str,
        error_kind: str,
        transient: bool,
        reason: str,
        attempts: list[dict[str, Any]],
    ) -> int:
        return self._dead_letters.add_dead_letter(
            run_id=run_id,
            pipeline=pipeline,
            task_id=task_id,
            pipeline_version=pipeline_version,
            pipeline_file=pipeline_file,
            params=params,
            logical_date=logical_date,
            error_kind=error_kind,
            transient=transient,
            reason=reason,
            attempts=attempts,
        )

    def settle_dead_letters(
        self, run_id: str, task_ids: Sequence[str], result: str, before: str
    ) -> None:
        """A resumed or requeued run ended: settle the letters it ran the tasks of again."""
        self._dead_letters.settle_dead_letters(run_id, task_ids, result, before)

    def resolve_dead_letter(
        self, letter_id: int, note: str, *, by: str | None = None
    ) -> DeadLetterRow:
        """Dismiss a dead letter an operator dealt with some other way, saying why."""
        return self._dead_letters.resolve_dead_letter(letter_id, note, by=by)

    def record_lineage(self, run_id: str, graph: Mapping[str, Any]) -> None:
        self._lineage.record_lineage(run_id, graph)

    def record_removed_outputs(
        self, pipeline: str, outputs: Sequence[tuple[str, str, int]], reason: str
    ) -> None:
        """Note (run_id, task_id, bytes) outputs as removed, before their folders go."""
        self._outputs.record_removed_outputs(pipeline, outputs, reason)

    # -- the scheduler's decisions (engine.state.schedules) ----------------------------------

    def ensure_schedule(
        self, pipeline: str, pipeline_file: str, last_fire: datetime | None
    ) -> ScheduleRow:
        """The pipeline's schedule row, created on first sight with `last_fire`."""
        return self._schedules.ensure_schedule(pipeline, pipeline_file, last_fire)

    def set_paused(
        self, pipeline: str, pipeline_file: str, paused: bool, reason: str | None, by: str
    ) -> None:
        self._schedules.set_paused(pipeline, pipeline_file, paused, reason, by)

    def claim_intervals(
        self,
        pipeline: str,
        last_fire: datetime | None,
        decided: Sequence[tuple[datetime, datetime, str, str | None]],
    ) -> list[IntervalRow]:
        """Record decided intervals (those not recorded yet) and move the last fire forward."""
        return self._schedules.claim_intervals(pipeline, last_fire, decided)

    def start_interval(self, pipeline: str, fire_at: str, run_id: str) -> bool:
        """Queued -> started with this run id; False when it was not queued any more."""
        return self._schedules.start_interval(pipeline, fire_at, run_id)

    def skip_interval(self, pipeline: str, fire_at: str, reason: str) -> None:
        self._schedules.skip_interval(pipeline, fire_at, reason)

    def request_run(
        self,
        pipeline: str,
        pipeline_file: str,
        params: dict[str, Any],
        source: str,
        run_id: str | None = None,
    ) -> RequestRow:
        """Queue a run for the scheduler; a new run id unless one is given."""
        return self._schedules.request_run(pipeline, pipeline_file, params, source, run_id)

    def settle_request(self, request_id: int, state: str, reason: str | None = None) -> bool:
        """pending -> started or skipped; False when it was not pending any more."""
        return self._schedules.settle_request(request_id, state, reason)

    def record_trigger(self, pipeline: str, kind: str, key: str) -> bool:
        """True the first time (pipeline, kind, key) is seen, False ever after."""
        return self._schedules.record_trigger(pipeline, kind, key)

    def alert_due(
        self, key: str, pipeline: str, kind: str, now: datetime, window: timedelta
    ) -> int | None:
        """None when this alert went out within `window`; else how many were suppressed."""
        return self._schedules.alert_due(key, pipeline, kind, now, window)

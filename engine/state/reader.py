"""The catalog's read side: one object over the per-entity stores, for everything that only
looks (the planner, the notebook, the CLI's reports, the scheduler's decisions).

It is a thin facade: each method hands the question to the store that owns the tables
(engine.state.runs, watermarks, dead_letters, lineage, outputs, schedules) and the aggregates
to `reports`. Readers never block a running pipeline: an embedded catalog is opened read-only,
a shared one in read-only transactions.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Self

from engine.state.db import CatalogLocation
from engine.state.dead_letters import DeadLetterStore
from engine.state.lineage import LineageStore
from engine.state.migrations import prepare_once
from engine.state.monitor import MonitorStore
from engine.state.outputs import OutputStore
from engine.state.reports import Reports
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
from engine.state.runs import RunStore
from engine.state.schedules import LateInterval, ScheduleStore
from engine.state.watermarks import WatermarkStore

__all__ = ["CatalogReader"]


class CatalogReader:
    """Read-only access; safe while another process runs a pipeline."""

    def __init__(self, location: CatalogLocation | Path, *, _writable: bool = False) -> None:
        if isinstance(location, Path):
            location = CatalogLocation(location)
        self.location = location
        self.path = location.path
        self._db = location.connect(writable=_writable)
        prepare_once(location, self._db, writable=_writable)
        if location.shared and not _writable:
            self._db.execute("set default_transaction_read_only = on")
        self._runs = RunStore(self._db)
        self._watermarks = WatermarkStore(self._db)
        self._dead_letters = DeadLetterStore(self._db)
        self._lineage = LineageStore(self._db)
        self._outputs = OutputStore(self._db)
        self._schedules = ScheduleStore(self._db)
        self.reports = Reports(self._db)
        """Aggregates over the whole catalog, for metrics."""
        self.monitor = MonitorStore(self._db)
        """The web monitor's list and overview questions (engine.state.monitor)."""

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def shared(self) -> bool:
        """True for a catalog in PostgreSQL, shared by several hosts."""
        return self.location.shared

    # -- runs and their tasks (engine.state.runs) --------------------------------------------

    def runs(self, pipeline: str | None = None, limit: int = 50) -> list[RunRow]:
        """Most recent first."""
        return self._runs.runs(pipeline, limit)

    def run(self, run_id: str) -> RunRow:
        """A run by id or unambiguous prefix, or 'last' for the most recent."""
        return self._runs.run(run_id)

    def has_run(self, run_id: str) -> bool:
        """Whether a run has exactly this id (no prefix, no 'last')."""
        return self._runs.has_run(run_id)

    def run_of(self, pipeline: str, run_id: str) -> RunRow:
        """A run of `pipeline` by id or prefix; 'last' is the pipeline's most recent."""
        return self._runs.run_of(pipeline, run_id)

    def last_run(self, pipeline: str) -> RunRow | None:
        return self._runs.last_run(pipeline)

    def unfinished_runs(self, pipeline: str) -> list[RunRow]:
        """Runs of a pipeline the catalog still calls PENDING or RUNNING."""
        return self._runs.unfinished_runs(pipeline)

    def run_states(self, pipeline: str) -> list[tuple[str, str]]:
        """(run_id, state) of every run of the pipeline, newest first."""
        return self._runs.run_states(pipeline)

    def latest_definition(self, pipeline: str) -> str | None:
        """The definition (YAML) the pipeline's newest run that stored one executed."""
        return self._runs.latest_definition(pipeline)

    def pipelines(self) -> list[str]:
        return self._runs.pipelines()

    def task_runs(self, run_id: str) -> list[TaskRunRow]:
        return self._runs.task_runs(run_id)

    def task_run(self, run_id: str, task_id: str) -> TaskRunRow | None:
        return self._runs.task_run(run_id, task_id)

    def task_ids(self, pipeline: str) -> list[str]:
        """Every task id the runs of a pipeline ever had."""
        return self._runs.task_ids(pipeline)

    def kept_outputs(
        self, pipeline: str, task_id: str, limit: int = 20
    ) -> list[tuple[TaskRunRow, str | None]]:
        """The newest successful outputs of a task with their runs' parameters (JSON)."""
        return self._runs.kept_outputs(pipeline, task_id, limit)

    def latest_output(self, pipeline: str, task_id: str) -> TaskRunRow | None:
        """The newest successful output of a task, or None."""
        return self._runs.latest_output(pipeline, task_id)

    def last_success(self, pipeline: str, task_id: str) -> TaskRunRow | None:
        """The newest successful run of a task, with an output in the workspace or not."""
        return self._runs.last_success(pipeline, task_id)

    def outputs_with_key(self, pipeline: str, task_id: str, cache_key: str) -> list[TaskRunRow]:
        """The newest successful outputs of a task made with this cache key, newest first."""
        return self._runs.outputs_with_key(pipeline, task_id, cache_key)

    def latest_outputs(self, pipeline: str) -> dict[str, TaskRunRow]:
        """The newest successful output of every task of a pipeline."""
        return self._runs.latest_outputs(pipeline)

    def viewed_outputs(self, pipeline: str) -> set[tuple[str, str]]:
        """(task_id, run_id) of the outputs a `materialize: view` load's view reads now."""
        return self._runs.viewed_outputs(pipeline)

    def reused(self, run_id: str) -> dict[str, str]:
        return self._runs.reused(run_id)

    def reuses_in(self, pipeline: str) -> list[tuple[str, str, str]]:
        """(run_id, task_id, from_run_id) of every reuse by a run of the pipeline."""
        return self._runs.reuses_in(pipeline)

    def transitions(self, run_id: str, task_id: str | None = None) -> list[TransitionRow]:
        return self._runs.transitions(run_id, task_id)

    # -- watermarks, dead letters, lineage, removed outputs ----------------------------------

    def watermarks(self, pipeline: str, task_id: str | None = None) -> list[WatermarkRow]:
        return self._watermarks.watermarks(pipeline, task_id)

    def every_watermark(self) -> list[WatermarkRow]:
        """Every pipeline's watermarks."""
        return self._watermarks.every_watermark()

    def watermark_audit(self, pipeline: str, task_id: str | None = None) -> list[AuditRow]:
        return self._watermarks.watermark_audit(pipeline, task_id)

    def dead_letters(
        self, pipeline: str | None = None, status: str | None = "open", limit: int = 100
    ) -> list[DeadLetterRow]:
        """Newest first; `status=None` lists every status."""
        return self._dead_letters.dead_letters(pipeline, status, limit)

    def dead_letter(self, letter_id: int) -> DeadLetterRow:
        return self._dead_letters.dead_letter(letter_id)

    def lettered_runs(self, pipeline: str) -> set[str]:
        """Runs of the pipeline with a dead letter a requeue may still resume."""
        return self._dead_letters.lettered_runs(pipeline)

    def lineage(self, run_id: str) -> dict[str, Any] | None:
        """The column lineage recorded when the run ended (lineage.graph.LineageGraph data)."""
        return self._lineage.lineage(run_id)

    def removed_output(self, run_id: str, task_id: str) -> RemovedOutputRow | None:
        """How a task's output of a run left the workspace, if retention removed it."""
        return self._outputs.removed_output(run_id, task_id)

    # -- the scheduler's state (engine.state.schedules) --------------------------------------

    def schedules(self) -> list[ScheduleRow]:
        return self._schedules.schedules()

    def schedule(self, pipeline: str) -> ScheduleRow | None:
        return self._schedules.schedule(pipeline)

    def intervals(self, pipeline: str, state: str | None = None) -> list[IntervalRow]:
        return self._schedules.intervals(pipeline, state)

    def requests(self, pipeline: str | None = None, state: str | None = None) -> list[RequestRow]:
        return self._schedules.requests(pipeline, state)

    def request_for_run(self, run_id: str) -> RequestRow | None:
        return self._schedules.request_for_run(run_id)

    def trigger_seen(self, pipeline: str, kind: str, key: str) -> bool:
        return self._schedules.trigger_seen(pipeline, kind, key)

    def pipelines_with_queued_work(self) -> set[str]:
        """Pipelines with an interval queued or a run request pending."""
        return self._schedules.pipelines_with_queued_work()

    def untriggered_successes(self, upstream: str, since: str, pipeline: str) -> list[str]:
        """Successes of `upstream` after `since` that have not yet triggered `pipeline`."""
        return self._schedules.untriggered_successes(upstream, since, pipeline)

    def late_intervals(
        self, pipeline: str, due_by: datetime, limit: int = 20
    ) -> list[LateInterval]:
        """Intervals due by `due_by`, not skipped, whose run has not succeeded; newest first."""
        return self._schedules.late_intervals(pipeline, due_by, limit)

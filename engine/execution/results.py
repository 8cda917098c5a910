"""What a run gives back: its result and each task's, and the events a listener hears."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from engine.core.errors import RunFailed
from engine.core.states import RunState, TaskState
from engine.core.tables import InputTable
from engine.planning.build import Plan
from transforms.sql import DuckDBSettings

__all__ = ["ExecutionSettings", "RunEvent", "RunResult", "TaskResult", "final_state"]


@dataclass(frozen=True)
class ExecutionSettings:
    max_parallel: int = max(2, os.cpu_count() or 2)
    cancel_grace: float = 10.0
    """Seconds a task gets to stop after a timeout or cancel before its attempt is abandoned."""
    heartbeat_interval: float = 5.0
    pipelined: bool = True
    """Loads start on an extract's first batch when they can (engine.execution.riders)."""
    duckdb: DuckDBSettings = field(default_factory=DuckDBSettings)


@dataclass
class TaskResult:
    task_id: str
    state: TaskState
    attempts: int = 0
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    duration_s: float = 0.0
    error: str | None = None
    error_kind: str | None = None
    output: InputTable | None = None
    target: str | None = None
    reused_from: str | None = None
    started_at: str | None = None
    """When its first attempt started (UTC, ISO), for observers that report the run."""
    ended_at: str | None = None


@dataclass
class RunResult:
    run_id: str
    pipeline: str
    state: RunState
    tasks: dict[str, TaskResult]
    duration_s: float
    project_dir: Path
    plan: Plan

    @property
    def ok(self) -> bool:
        return self.state is RunState.SUCCESS

    @property
    def failed(self) -> list[TaskResult]:
        return [t for t in self.tasks.values() if t.state is TaskState.FAILED]

    def raise_for_status(self) -> RunResult:
        """Raise RunFailed, naming the failed tasks and their errors, when the run did not
        succeed; return the result when it did, so a script can write
        `result = pipeline.run().raise_for_status()` and not go on after a failure unawares."""
        if self.ok:
            return self
        error = RunFailed(
            f"run {self.run_id} of pipeline {self.pipeline!r} {self.state.value}: "
            f"{self._outcome()}",
            hint=f"`arrowline runs {self.run_id}` shows every task and attempt",
            failed=tuple(t.task_id for t in self.failed),
        )
        error.pipeline, error.run_id = self.pipeline, self.run_id
        raise error

    def _outcome(self) -> str:
        """The failed tasks with their errors' first lines, then the skipped ones."""
        where = {t.id: t.at for t in self.plan.tasks}
        parts = [
            f"task {t.task_id!r}{where.get(t.task_id, '')} failed ({t.error_kind}): "
            f"{(t.error or '').splitlines()[0]}"
            if t.error
            else f"task {t.task_id!r}{where.get(t.task_id, '')} failed"
            for t in self.failed
        ]
        skipped = [t.task_id for t in self.tasks.values() if t.state is TaskState.SKIPPED]
        if skipped:
            parts.append(f"skipped: {', '.join(skipped)}")
        return "; ".join(parts) or "no task failed"

    def _repr_html_(self) -> str:
        """What a notebook shows: the outcome, each task's state, rows and time, and the Gantt
        chart of its attempts (engine.execution.display)."""
        from engine.execution.display import result_html

        return result_html(self)

    def __repr__(self) -> str:
        if self.ok:
            return (
                f"<RunResult {self.pipeline} {self.run_id} SUCCESS in {self.duration_s:.2f}s, "
                f"{len(self.tasks)} tasks>"
            )
        return f"<RunResult {self.pipeline} {self.run_id} {self.state.value}: {self._outcome()}>"


@dataclass(frozen=True)
class RunEvent:
    """What a listener (progress display, tests) hears: a task changed state."""

    task_id: str | None
    state: str
    attempt: int = 0
    error: str | None = None


def final_state(states: Iterable[TaskState], cancelling: bool) -> RunState:
    """What a run's tasks ended as. A cancel stops what had not finished; when it came too late
    to stop anything (every task succeeded, the loads committed), the run did succeed, and
    calling it CANCELLED would send the user to resume a finished run."""
    ended = list(states)
    if all(state is TaskState.SUCCESS for state in ended):
        return RunState.SUCCESS
    if cancelling and TaskState.CANCELLED in ended:
        return RunState.CANCELLED
    return RunState.FAILED

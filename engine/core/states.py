"""Task and run states, and the only transitions between them.

    PENDING ──> QUEUED ──> RUNNING ──> SUCCESS
       │          │          │ ├────> FAILED
       │          │          │ └────> RETRYING ──> QUEUED   (while attempts remain)
       ├──> SKIPPED (an upstream task failed)
       └──────────┴──────────┴──> CANCELLED (from any state that is not terminal)

    RUNNING ──> PENDING   a load streaming from an extract whose attempt failed: its attempt is
                          void, and it waits for the extract's next attempt

SUCCESS, FAILED, SKIPPED and CANCELLED are terminal. A run goes PENDING -> RUNNING -> SUCCESS,
FAILED or CANCELLED; a run whose process died (kill -9, power loss) is found by the next process
that takes the pipeline's run lock and moved to INTERRUPTED, with its unfinished tasks CANCELLED.
Anything else is refused with StateError; the catalog records every transition that is allowed,
with its time, event and error.

Resuming is the one way back: a FAILED, CANCELLED or INTERRUPTED run goes to PENDING again
(`RESUMABLE`), its tasks that did not succeed go back to PENDING, and the run continues under
the same run id, so its loads write the same deterministic files and ledger rows.
"""

from __future__ import annotations

from enum import StrEnum

from engine.core.errors import StateError

__all__ = [
    "RESUMABLE",
    "RUN_TRANSITIONS",
    "TASK_TRANSITIONS",
    "RunState",
    "TaskState",
    "check_run_transition",
    "check_task_transition",
]


class TaskState(StrEnum):
    PENDING = "PENDING"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return not TASK_TRANSITIONS[self]


class RunState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    INTERRUPTED = "INTERRUPTED"

    @property
    def terminal(self) -> bool:
        return not RUN_TRANSITIONS[self]


TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.PENDING: frozenset({TaskState.QUEUED, TaskState.SKIPPED, TaskState.CANCELLED}),
    TaskState.QUEUED: frozenset({TaskState.RUNNING, TaskState.CANCELLED}),
    TaskState.RUNNING: frozenset(
        {
            TaskState.SUCCESS,
            TaskState.FAILED,
            TaskState.RETRYING,
            TaskState.CANCELLED,
            TaskState.PENDING,
        }
    ),
    TaskState.RETRYING: frozenset({TaskState.QUEUED, TaskState.CANCELLED}),
    TaskState.SUCCESS: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.SKIPPED: frozenset(),
    TaskState.CANCELLED: frozenset(),
}

_ENDED = frozenset({RunState.FAILED, RunState.CANCELLED, RunState.INTERRUPTED})

RUN_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.PENDING: frozenset({RunState.RUNNING}) | _ENDED,
    RunState.RUNNING: frozenset({RunState.SUCCESS}) | _ENDED,
    RunState.SUCCESS: frozenset(),
    RunState.FAILED: frozenset(),
    RunState.CANCELLED: frozenset(),
    RunState.INTERRUPTED: frozenset(),
}

RESUMABLE = _ENDED
"""Run states `arrowline run --resume` continues from."""


def _refuse(what: str, current: str, target: str, allowed: frozenset[str]) -> StateError:
    choices = ", ".join(sorted(allowed)) if allowed else f"none, {current} is terminal"
    return StateError(
        f"{what} cannot go from {current} to {target}; allowed from {current}: {choices}"
    )


def check_task_transition(task_id: str, current: TaskState, target: TaskState) -> None:
    if target not in TASK_TRANSITIONS[current]:
        raise _refuse(f"task {task_id!r}", current, target, TASK_TRANSITIONS[current])


def check_run_transition(run_id: str, current: RunState, target: RunState) -> None:
    if target not in RUN_TRANSITIONS[current]:
        raise _refuse(f"run {run_id}", current, target, RUN_TRANSITIONS[current])

"""One attempt of a task on its worker thread, and how attempts are stopped.

Workers are daemon threads rather than a ThreadPoolExecutor, so an attempt abandoned after its
grace period can never keep the process alive at exit. A worker reports its outcome (or the
exception it raised) on the dispatcher's queue and touches nothing else: the dispatcher owns the
state machine and the catalog.
"""

from __future__ import annotations

import queue
import time
import traceback
from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from engine.core.cancel import CancelToken
from engine.core.errors import ArrowlineError, Classification, TaskTimeout, classify
from engine.core.secrets import redact
from engine.planning.build import PlannedTask
from engine.state.catalog import now_text
from engine.state.workspace import Workspace
from engine.tasks import TaskContext, TaskOutcome, TaskRunner

__all__ = [
    "WAKE",
    "Attempt",
    "classify_error",
    "describe_error",
    "overdue",
    "start_attempt",
    "stop_overdue",
    "unstopped",
    "wind_down",
]

WAKE = object()
"""Put on the results queue to wake the dispatcher without a result."""


@dataclass
class Attempt:
    task: PlannedTask
    number: int
    cancel: CancelToken
    staging: Path
    started: float
    deadline: float | None
    stop_requested_at: float | None = None
    rows: int = 0
    started_wall: str = field(default_factory=now_text)

    def report_rows(self, rows: int) -> None:
        """The task's progress callback (any thread)."""
        self.rows = rows

    def stop(self, now: float, reason: BaseException) -> None:
        """Ask the attempt to stop: DuckDB queries are interrupted, streaming loops stop at
        their next batch."""
        self.stop_requested_at = now
        self.cancel.cancel(reason)


def describe_error(exc: BaseException) -> str:
    """The error as stored and shown: secrets masked, a short traceback for unexpected ones."""
    if isinstance(exc, ArrowlineError):
        return redact(str(exc))
    text = f"{type(exc).__name__}: {exc}"
    frames = traceback.format_tb(exc.__traceback__)[-3:]
    return redact(text + ("\n" + "".join(frames).rstrip() if frames else ""))


def classify_error(task: PlannedTask, exc: BaseException) -> Classification:
    """Whether an error is worth retrying: the task's connector knows its libraries' errors;
    arrowline's own say it in their type (engine.core.errors.classify)."""
    owner = task.spec.connector
    found = owner.classify(exc) if owner is not None else None
    return found if found is not None else classify(exc)


def start_attempt(
    attempt: Attempt,
    context: TaskContext,
    runner: TaskRunner,
    finished: queue.SimpleQueue[Any],
) -> None:
    """Run the attempt on a daemon thread; its (attempt, outcome or exception) goes on
    `finished`."""
    import threading

    def work() -> None:
        result: TaskOutcome | BaseException
        with logger.contextualize(
            pipeline=context.pipeline, run_id=context.run_id, task_id=context.task.id
        ):
            try:
                result = runner(context)
            except BaseException as exc:  # reported to the dispatcher, which decides
                result = exc
        finished.put((attempt, result))

    name = f"arrowline-{attempt.task.id}"
    threading.Thread(target=work, name=name, daemon=True).start()


def overdue(running: Iterable[Attempt], now: float) -> Iterator[Attempt]:
    """Attempts past their task's timeout that were not asked to stop yet."""
    for attempt in list(running):
        if (
            attempt.stop_requested_at is None
            and attempt.deadline is not None
            and now >= attempt.deadline
        ):
            yield attempt


def stop_overdue(running: Iterable[Attempt], now: float) -> None:
    """Ask the attempts past their task's timeout to stop."""
    for attempt in overdue(running, now):
        timeout = attempt.task.timeout
        assert timeout is not None
        seconds = timeout.total_seconds()
        attempt.stop(
            now, TaskTimeout(f"ran longer than its timeout of {seconds:g}s and was stopped")
        )
        logger.bind(task_id=attempt.task.id).warning(
            "timed out after {:.1f}s; stopping", now - attempt.started
        )


def unstopped(running: Iterable[Attempt], now: float, grace: float) -> Iterator[Attempt]:
    """Attempts asked to stop more than `grace` seconds ago that are still running."""
    for attempt in list(running):
        if attempt.stop_requested_at is not None and now >= attempt.stop_requested_at + grace:
            yield attempt


def wind_down(
    running: MutableMapping[str, Attempt],
    finished: queue.SimpleQueue[Any],
    grace: float,
    workspace: Workspace,
) -> None:
    """Wait (up to `grace`) for cancelled attempts to stop, and discard what they staged. Their
    space is what a full disk needs back before the run's end can be recorded, and a worker
    still inside DuckDB or Arrow when the interpreter exits can abort it ("Fatal Python
    error", exit 134) instead of letting it report the error."""
    deadline = time.monotonic() + grace
    while running and time.monotonic() < deadline:
        try:
            item = finished.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if item is WAKE:
            continue
        stopped: Attempt = item[0]
        if running.get(stopped.task.id) is stopped:
            del running[stopped.task.id]
        workspace.discard(stopped.staging)
    for late in running.values():  # did not stop in time: at least free its space
        workspace.discard(late.staging)

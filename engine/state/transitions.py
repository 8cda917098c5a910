"""Creating runs and moving them and their tasks through the state machine (engine.core.states),
each move checked and logged in `transitions` in the same transaction as the change.

The executor is the one writer of a run while it runs; it commits every transition as it
happens, so a crash loses at most the transition in flight.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.core.errors import StateError
from engine.core.states import (
    RESUMABLE,
    RunState,
    TaskState,
    check_run_transition,
    check_task_transition,
)
from engine.core.usage import RunUsage
from engine.state.db import Database
from engine.state.values import now_text, params_text

__all__ = ["TASK_FIELDS", "TransitionStore"]

TASK_FIELDS = frozenset(
    {
        "details",
        "started_at",
        "ended_at",
        "duration_s",
        "attempts",
        "rows_in",
        "rows_out",
        "rows_rejected",
        "bytes_out",
        "output_path",
        "output_schema",
        "target",
        "error",
        "error_kind",
        "error_transient",
        "cache_key",
        "fingerprint_parts",
        "output_hash",
    }
)
"""The task run columns a transition may set besides its state (and the only names ever
written into the statement's text)."""

_INSERT_TASK = (
    "insert into task_runs (run_id, task_id, kind, state, level, fingerprint, ordinal) "
    "values (?, ?, ?, 'PENDING', ?, ?, ?)"
)


@dataclass(frozen=True)
class TransitionStore:
    db: Database

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
        """A run and its tasks, all PENDING; `tasks` are (id, kind, level, fingerprint) and
        `graph` every task of the plan (run or reused) as (id, kind, upstream)."""
        at = now_text()
        with self.db.transaction() as connection:
            connection.execute(
                "insert into runs (run_id, pipeline, pipeline_version, pipeline_file, state, "
                "params, logical_date, selected, created_at, pid, host, definition) "
                "values (?, ?, ?, ?, 'PENDING', ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    pipeline,
                    pipeline_version,
                    pipeline_file,
                    params_text(params),
                    logical_date,
                    json.dumps(selected) if selected else None,
                    at,
                    os.getpid(),
                    socket.gethostname(),
                    definition,
                ),
            )
            connection.executemany(
                _INSERT_TASK,
                [
                    (run_id, task_id, kind, level, fp, ordinal)
                    for ordinal, (task_id, kind, level, fp) in enumerate(tasks)
                ],
            )
            connection.executemany(
                "insert into reused (run_id, task_id, from_run_id) values (?, ?, ?)",
                [(run_id, task_id, source) for task_id, source in reused.items()],
            )
            _record_graph(connection, run_id, graph)
            _log(connection, run_id, None, None, "PENDING", at, "created")

    def transition_run(
        self,
        run_id: str,
        target: RunState,
        event: str,
        error: str | None = None,
        usage: RunUsage | None = None,
    ) -> None:
        """Move a run to `target`; `usage`, at its end, is what it cost its process."""
        at = now_text()
        cpu_s, peak = (usage.cpu_s, usage.peak_rss_bytes) if usage else (None, None)
        with self.db.transaction() as connection:
            current = _run_state(connection, run_id)
            check_run_transition(run_id, current, target)
            stamp = "started_at" if target is RunState.RUNNING else "ended_at"
            connection.execute(
                f"update runs set state = ?, {stamp} = ?, heartbeat_at = ?, "
                "error = coalesce(?, error), cpu_s = coalesce(?, cpu_s), "
                "peak_rss_bytes = coalesce(?, peak_rss_bytes) "
                "where run_id = ?",
                (target.value, at, at, error, cpu_s, peak, run_id),
            )
            _log(connection, run_id, None, current.value, target.value, at, event, error=error)

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
        at = now_text()
        updates = dict(fields or {})
        if target is TaskState.RUNNING:
            updates.setdefault("started_at", at)
        if target.terminal:
            updates.setdefault("ended_at", at)
        if attempt is not None:
            updates["attempts"] = attempt
        if error is not None:
            updates["error"] = error
        unknown = set(updates) - TASK_FIELDS
        if unknown:
            raise StateError(f"unknown task run fields {sorted(unknown)}")
        with self.db.transaction() as connection:
            rows = connection.execute(
                "select state from task_runs where run_id = ? and task_id = ?", (run_id, task_id)
            )
            if not rows:
                raise StateError(f"run {run_id} has no task {task_id!r}")
            current = TaskState(rows[0]["state"])
            check_task_transition(task_id, current, target)
            assignments = ", ".join(f"{column} = ?" for column in ["state", *updates])
            connection.execute(
                f"update task_runs set {assignments} where run_id = ? and task_id = ?",
                (target.value, *updates.values(), run_id, task_id),
            )
            _log(
                connection, run_id, task_id, current.value, target.value, at, event, attempt, error
            )

    def interrupt_run(self, run_id: str, reason: str) -> list[str]:
        """Mark a run whose process died INTERRUPTED and its unfinished tasks CANCELLED, in one
        transaction; returns the tasks it cancelled."""
        at = now_text()
        with self.db.transaction() as connection:
            current = _run_state(connection, run_id)
            check_run_transition(run_id, current, RunState.INTERRUPTED)
            cancelled = []
            for task in connection.execute(
                "select task_id, state, attempts from task_runs where run_id = ?", (run_id,)
            ):
                state = TaskState(task["state"])
                if state.terminal:
                    continue
                cancelled.append(task["task_id"])
                connection.execute(
                    "update task_runs set state = 'CANCELLED', ended_at = ?, error = ? "
                    "where run_id = ? and task_id = ?",
                    (at, reason, run_id, task["task_id"]),
                )
                _log(
                    connection,
                    run_id,
                    task["task_id"],
                    state.value,
                    "CANCELLED",
                    at,
                    "interrupted",
                    task["attempts"],
                    reason,
                )
            connection.execute(
                "update runs set state = 'INTERRUPTED', ended_at = ?, error = ? where run_id = ?",
                (at, reason, run_id),
            )
            _log(
                connection,
                run_id,
                None,
                current.value,
                "INTERRUPTED",
                at,
                "interrupted",
                error=reason,
            )
        return cancelled

    def resume_run(
        self,
        run_id: str,
        tasks: Sequence[tuple[str, str, int, str]],
        definition: str | None,
        pipeline_version: str,
        graph: Sequence[tuple[str, str, Sequence[str]]] = (),
    ) -> None:
        """Put an ended run back to PENDING with `tasks` (id, kind, level, fingerprint) PENDING
        again, keeping the rows of the tasks it reuses; one transaction."""
        at = now_text()
        with self.db.transaction() as connection:
            current = _run_state(connection, run_id)
            if current not in RESUMABLE:
                raise StateError(
                    f"run {run_id} is {current.value}; only a FAILED, CANCELLED or INTERRUPTED "
                    "run can be resumed"
                )
            for ordinal, (task_id, kind, level, fingerprint) in enumerate(tasks):
                found = connection.execute(
                    "select state from task_runs where run_id = ? and task_id = ?",
                    (run_id, task_id),
                )
                old = found[0] if found else None
                if old is None:
                    connection.execute(
                        _INSERT_TASK, (run_id, task_id, kind, level, fingerprint, ordinal)
                    )
                else:
                    connection.execute(
                        "update task_runs set state = 'PENDING', kind = ?, level = ?, "
                        "fingerprint = ?, ordinal = ?, attempts = 0, started_at = null, "
                        "ended_at = null, "
                        "duration_s = null, rows_in = null, rows_out = null, "
                        "rows_rejected = null, bytes_out = null, output_path = null, "
                        "output_schema = null, target = null, error = null, error_kind = null, "
                        "error_transient = null, details = null, cache_key = null, "
                        "fingerprint_parts = null, output_hash = null "
                        "where run_id = ? and task_id = ?",
                        (kind, level, fingerprint, ordinal, run_id, task_id),
                    )
                previous = old["state"] if old else None
                _log(connection, run_id, task_id, previous, "PENDING", at, "resumed")
            connection.execute(
                "update runs set state = 'PENDING', ended_at = null, error = null, "
                "cpu_s = null, peak_rss_bytes = null, resumes = resumes + 1, pid = ?, host = ?, "
                "heartbeat_at = ?, "
                "definition = coalesce(?, definition), pipeline_version = ? where run_id = ?",
                (os.getpid(), socket.gethostname(), at, definition, pipeline_version, run_id),
            )
            _record_graph(connection, run_id, graph)
            _log(connection, run_id, None, current.value, "PENDING", at, "resumed")

    def record_reuse(self, run_id: str, task_id: str, from_run_id: str) -> None:
        """The run's task stands on an earlier run's output (a cache hit decided while the run
        ran), so retention keeps that output while it keeps the run."""
        with self.db.transaction() as connection:
            connection.execute(
                "insert into reused (run_id, task_id, from_run_id) values (?, ?, ?) "
                "on conflict (run_id, task_id) do nothing",
                (run_id, task_id, from_run_id),
            )

    def heartbeat(self, run_id: str) -> None:
        """The run's process is alive (what `arrowline runs` shows for a RUNNING run)."""
        with self.db.transaction() as connection:
            connection.execute(
                "update runs set heartbeat_at = ? where run_id = ?", (now_text(), run_id)
            )


def _run_state(connection: Database, run_id: str) -> RunState:
    rows = connection.execute("select state from runs where run_id = ?", (run_id,))
    if not rows:
        raise StateError(f"no run {run_id!r}")
    return RunState(rows[0]["state"])


def _record_graph(
    connection: Database, run_id: str, graph: Sequence[tuple[str, str, Sequence[str]]]
) -> None:
    if not graph:
        return
    tasks = json.dumps([[task_id, kind, list(upstream)] for task_id, kind, upstream in graph])
    digest = hashlib.sha256(tasks.encode()).hexdigest()
    connection.execute(
        "insert into task_graphs (digest, tasks) values (?, ?) on conflict (digest) do nothing",
        (digest, tasks),
    )
    connection.execute(
        "insert into run_graphs (run_id, digest) values (?, ?) "
        "on conflict (run_id) do update set digest = excluded.digest",
        (run_id, digest),
    )


def _log(
    connection: Database,
    run_id: str,
    task_id: str | None,
    from_state: str | None,
    to_state: str,
    at: str,
    event: str,
    attempt: int | None = None,
    error: str | None = None,
) -> None:
    """One row of the transition history; `task_id` None for the run's own transitions."""
    connection.execute(
        "insert into transitions "
        "(run_id, task_id, from_state, to_state, at, event, attempt, error) "
        "values (?, ?, ?, ?, ?, ?, ?, ?)",
        (run_id, task_id, from_state, to_state, at, event, attempt, error),
    )

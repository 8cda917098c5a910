"""The rows the catalog answers with: frozen values, decoded from what the database holds
(JSON text, 0/1 flags, state names) and with secrets masked on the way out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.core.secrets import mask_document, mask_secrets
from engine.core.states import RunState, TaskState
from engine.state.db import Row

__all__ = [
    "AuditRow",
    "DeadLetterRow",
    "IntervalRow",
    "RemovedOutputRow",
    "RequestRow",
    "RunRow",
    "ScheduleRow",
    "TaskRunRow",
    "TransitionRow",
    "WatermarkRow",
    "dead_letter_row",
    "request_row",
    "run_row",
    "schedule_row",
    "task_row",
]


@dataclass(frozen=True)
class RunRow:
    run_id: str
    pipeline: str
    pipeline_version: str
    pipeline_file: str | None
    state: RunState
    params: dict[str, Any]
    logical_date: str
    selected: list[str] | None
    created_at: str
    started_at: str | None
    ended_at: str | None
    error: str | None
    pid: int | None
    host: str | None
    heartbeat_at: str | None
    definition: str | None = None
    """The definition this run executed, as YAML, for the diff `--resume` shows."""
    resumes: int = 0
    cpu_s: float | None = None
    """CPU seconds its process spent on it (engine.core.usage); None before it ended, or when
    the catalog predates the measurement."""
    peak_rss_bytes: int | None = None
    """Its process's peak resident memory when it ended."""

    @property
    def duration_s(self) -> float | None:
        if not self.started_at or not self.ended_at:
            return None
        return (
            datetime.fromisoformat(self.ended_at) - datetime.fromisoformat(self.started_at)
        ).total_seconds()


@dataclass(frozen=True)
class TaskRunRow:
    run_id: str
    task_id: str
    kind: str
    state: TaskState
    level: int
    attempts: int
    fingerprint: str | None
    started_at: str | None
    ended_at: str | None
    duration_s: float | None
    rows_in: int | None
    rows_out: int | None
    rows_rejected: int | None
    bytes_out: int | None
    output_path: str | None
    output_schema: list[dict[str, str]] | None
    target: str | None
    error: str | None
    error_kind: str | None
    error_transient: bool | None
    details: dict[str, Any] | None
    cache_key: str | None = None
    """Its fingerprint over the contents of its upstream outputs (engine.planning.cache)."""
    fingerprint_parts: dict[str, str] | None = None
    """One digest per component of the fingerprint: what `arrowline plan` says changed."""
    output_hash: str | None = None
    """A digest of its output's contents (a load: none)."""

    @property
    def output_run(self) -> str:
        """The run whose folder holds this output: its own, or the earlier run whose output the
        cache found to stand for it."""
        cached = (self.details or {}).get("cached_from")
        return cached if isinstance(cached, str) else self.run_id

    @property
    def output_on_disk(self) -> bool:
        """False when its published output is gone: deleted, or (a local workspace's) written
        by another host sharing the catalog; an object store's is asked for its manifest
        (StateError when the store does not answer). A load (no output) is always True."""
        from engine.state.objectstore import output_present

        return self.output_path is None or output_present(self.output_path)


@dataclass(frozen=True)
class WatermarkRow:
    pipeline: str
    task_id: str
    sink_id: str
    """The load task that committed it; '' for an extract that no load consumes."""
    value: str
    run_id: str | None
    updated_at: str


@dataclass(frozen=True)
class AuditRow:
    id: int
    pipeline: str
    task_id: str
    sink_id: str
    action: str
    old_value: str | None
    new_value: str | None
    run_id: str | None
    actor: str
    at: str


@dataclass(frozen=True)
class DeadLetterRow:
    id: int
    run_id: str
    pipeline: str
    task_id: str
    pipeline_version: str
    pipeline_file: str | None
    params: dict[str, Any]
    logical_date: str
    error_kind: str
    transient: bool
    reason: str
    attempts: list[dict[str, Any]]
    """Every attempt: number, started_at, duration_s, error_kind, transient, error."""
    created_at: str
    status: str
    """open, requeued (a requeue is running or failed again) or resolved."""
    requeued_at: str | None
    requeue_result: str | None
    resolved_at: str | None = None
    resolved_by: str | None = None
    """Who dismissed it with `arrowline dlq resolve` (user@host); None when a requeue that
    succeeded resolved it."""
    resolution_note: str | None = None

    @property
    def resolution(self) -> str:
        """How it was resolved, for messages: `by ann@host at <time>: <note>`."""
        if self.resolved_by:
            return f"by {self.resolved_by} at {self.resolved_at}: {self.resolution_note}"
        if self.status == "resolved":
            return f"by a requeue that succeeded at {self.requeued_at}"
        return ""


@dataclass(frozen=True)
class RemovedOutputRow:
    run_id: str
    task_id: str
    pipeline: str
    bytes: int
    removed_at: str
    reason: str
    """Why it went, e.g. 'gc: keep_runs 3'."""


@dataclass(frozen=True)
class TransitionRow:
    id: int
    run_id: str
    task_id: str | None
    from_state: str | None
    to_state: str
    at: str
    event: str
    attempt: int | None
    error: str | None


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


def request_row(row: Row) -> RequestRow:
    values = dict(row)
    values["params"] = json.loads(values["params"])
    return RequestRow(**values)


def schedule_row(row: Row) -> ScheduleRow:
    return ScheduleRow(**{**dict(row), "paused": bool(row["paused"])})


def run_row(row: Row) -> RunRow:
    values = dict(row)
    definition = values["definition"]
    return RunRow(
        **values
        | {
            "state": RunState(values["state"]),
            # masked again on the way out: rows stored before masking existed kept secrets
            "params": mask_secrets(json.loads(values["params"])),
            "definition": mask_document(definition) if definition else definition,
            "selected": json.loads(values["selected"]) if values["selected"] else None,
        }
    )


def task_row(row: Row) -> TaskRunRow:
    values = {key: row[key] for key in TaskRunRow.__dataclass_fields__}
    transient = values["error_transient"]
    return TaskRunRow(
        **values
        | {
            "state": TaskState(values["state"]),
            "output_schema": json.loads(values["output_schema"])
            if values["output_schema"]
            else None,
            "details": json.loads(values["details"]) if values["details"] else None,
            "fingerprint_parts": json.loads(values["fingerprint_parts"])
            if values["fingerprint_parts"]
            else None,
            "error_transient": None if transient is None else bool(transient),
        }
    )


def dead_letter_row(row: Row) -> DeadLetterRow:
    values = dict(row)
    return DeadLetterRow(
        **values
        | {
            "params": mask_secrets(json.loads(values["params"])),
            "attempts": json.loads(values["attempts"]),
            "transient": bool(values["transient"]),
        }
    )

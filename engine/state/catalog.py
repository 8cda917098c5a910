"""The catalog: runs, task runs, every state transition, row counts, bytes, durations, schemas.

Embedded in SQLite (WAL) at `.arrowline/catalog.db` by default, or shared in PostgreSQL
(`ARROWLINE_CATALOG`, see engine.state.db). Readers (notebooks, `arrowline runs`, the planner)
never block a running pipeline; the executor is the one writer per run and commits every
transition as it happens, so a crash loses at most the transition in flight. `CatalogReader` is
the read side; `Catalog` adds the writes.
"""

from __future__ import annotations

import json
import os
import re
import socket
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from engine.core.errors import ParameterError, StateError
from engine.core.secrets import mask_document, mask_secrets, redact
from engine.core.states import (
    RESUMABLE,
    RunState,
    TaskState,
    check_run_transition,
    check_task_transition,
)
from engine.state.db import (
    CatalogLocation,
    Database,
    Row,
    catalog_location,
)

__all__ = [
    "TABLES",
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
]

SCHEMA_VERSION = 7
_SCHEDULER_TABLES = """
create table if not exists schedules (
    pipeline text primary key,
    pipeline_file text not null,
    paused integer not null default 0,
    reason text,
    changed_at text,
    changed_by text,
    last_fire text,
    registered_at text not null
);
create table if not exists intervals (
    pipeline text not null,
    fire_at text not null,
    logical_date text not null,
    state text not null,
    run_id text,
    reason text,
    decided_at text not null,
    started_at text,
    primary key (pipeline, fire_at)
);
create table if not exists run_requests (
    id integer primary key autoincrement,
    pipeline text not null,
    pipeline_file text not null,
    params text not null,
    run_id text not null,
    source text not null,
    requested_at text not null,
    state text not null default 'pending',
    started_at text,
    reason text
);
create table if not exists triggers_seen (
    pipeline text not null,
    kind text not null,
    key text not null,
    seen_at text not null,
    request_id integer,
    primary key (pipeline, kind, key)
);
create table if not exists alerts_sent (
    key text primary key,
    pipeline text not null,
    kind text not null,
    first_at text not null,
    last_sent_at text not null,
    suppressed integer not null default 0
);
"""
"""What the scheduler keeps (engine.scheduling.scheduler): per pipeline its schedule state, every
interval it decided (the primary key is what stops an interval from running twice), requested runs,
the trigger events it has seen, and the alerts it sent (for de-duplication)."""
_REMOVED_OUTPUTS = """
create table if not exists removed_outputs (
    run_id text not null,
    task_id text not null,
    pipeline text not null,
    bytes integer not null,
    removed_at text not null,
    reason text not null,
    primary key (run_id, task_id)
)"""
"""Task outputs retention removed from the workspace (engine.state.retention), so that reading one
says so instead of failing on a missing file."""
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # version reached -> statements that reach it from the one before
    2: ("alter table task_runs add column details text",),
    3: (
        "alter table runs add column definition text",
        "alter table runs add column resumes integer not null default 0",
    ),
    4: ("create table if not exists run_lineage (run_id text primary key, graph text not null)",),
    5: tuple(part.strip() for part in _SCHEDULER_TABLES.split(";") if part.strip()),
    # task order without SQLite's rowid, which PostgreSQL does not have
    6: (
        "alter table task_runs add column ordinal integer",
        "update task_runs set ordinal = rowid",
    ),
    # who dismissed a dead letter, when and why (`arrowline dlq resolve`); what gc removed
    7: (
        "alter table dead_letters add column resolved_at text",
        "alter table dead_letters add column resolved_by text",
        "alter table dead_letters add column resolution_note text",
        _REMOVED_OUTPUTS.strip(),
    ),
}

_SCHEMA = (
    """
create table if not exists meta (key text primary key, value text not null);
create table if not exists runs (
    run_id text primary key,
    pipeline text not null,
    pipeline_version text not null,
    pipeline_file text,
    state text not null,
    params text not null,
    logical_date text not null,
    selected text,
    created_at text not null,
    started_at text,
    ended_at text,
    error text,
    pid integer,
    host text,
    heartbeat_at text,
    definition text,
    resumes integer not null default 0
);
create index if not exists runs_by_pipeline on runs (pipeline, created_at);
create table if not exists task_runs (
    run_id text not null references runs (run_id),
    task_id text not null,
    kind text not null,
    state text not null,
    level integer not null default 0,
    attempts integer not null default 0,
    fingerprint text,
    started_at text,
    ended_at text,
    duration_s real,
    rows_in integer,
    rows_out integer,
    rows_rejected integer,
    bytes_out integer,
    output_path text,
    output_schema text,
    target text,
    error text,
    error_kind text,
    error_transient integer,
    details text,
    ordinal integer,
    primary key (run_id, task_id)
);
create index if not exists task_runs_success on task_runs (task_id, state, ended_at);
create table if not exists reused (
    run_id text not null references runs (run_id),
    task_id text not null,
    from_run_id text not null,
    primary key (run_id, task_id)
);
create table if not exists transitions (
    id integer primary key autoincrement,
    run_id text not null,
    task_id text,
    from_state text,
    to_state text not null,
    at text not null,
    event text not null,
    attempt integer,
    error text
);
create index if not exists transitions_by_run on transitions (run_id, id);
create table if not exists watermarks (
    pipeline text not null,
    task_id text not null,
    sink_id text not null,
    value text not null,
    run_id text,
    updated_at text not null,
    primary key (pipeline, task_id, sink_id)
);
create table if not exists dead_letters (
    id integer primary key autoincrement,
    run_id text not null,
    pipeline text not null,
    task_id text not null,
    pipeline_version text not null,
    pipeline_file text,
    params text not null,
    logical_date text not null,
    error_kind text not null,
    transient integer not null,
    reason text not null,
    attempts text not null,
    created_at text not null,
    status text not null default 'open',
    requeued_at text,
    requeue_result text,
    resolved_at text,
    resolved_by text,
    resolution_note text,
    unique (run_id, task_id, created_at)
);
create index if not exists dead_letters_open on dead_letters (status, pipeline);
create table if not exists run_lineage (
    run_id text primary key references runs (run_id),
    graph text not null
);
"""
    + _SCHEDULER_TABLES
    + """
create table if not exists watermark_audit (
    id integer primary key autoincrement,
    pipeline text not null,
    task_id text not null,
    sink_id text not null,
    action text not null,
    old_value text,
    new_value text,
    run_id text,
    actor text not null,
    at text not null
);
"""
    + _REMOVED_OUTPUTS
    + ";\n"
)


TABLES = tuple(
    name
    for name in re.findall(r"create table if not exists (\w+)", _SCHEMA)
    if name != "meta"  # its schema version belongs to each catalog
)
"""The catalog's tables in the order they are created, parents before the tables that reference
them (what a copy walks)."""
IDENTITY_TABLES = tuple(
    re.findall(
        r"create table if not exists (\w+) \(\s*id integer primary key autoincrement", _SCHEMA
    )
)
"""Tables whose `id` the database assigns."""

_TASK_FIELDS = frozenset(
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
    }
)


_PREPARED: set[tuple[str | None, str]] = set()
"""Shared catalogs this process has created or migrated: a run need not pay the DDL's round
trips again (an embedded one is local and cheap to check, and may be deleted between runs)."""


def _prepare(db: Database) -> None:
    """Create the catalog's tables, or bring a catalog written by an older arrowline up to
    SCHEMA_VERSION; each step is one writer transaction, so a second process doing the same at
    the same moment waits, then finds it done."""
    with db.transaction() as connection:
        fresh = not connection.table_exists("task_runs")
        connection.create([part.strip() for part in _SCHEMA.split(";") if part.strip()])
        if fresh:
            _set_version(connection, SCHEMA_VERSION, only_if_missing=True)
    for target in range(2, SCHEMA_VERSION + 1):
        with db.transaction() as connection:
            rows = connection.execute("select value from meta where key = 'schema_version'")
            if (int(rows[0][0]) if rows else 1) >= target:
                continue
            connection.create(_MIGRATIONS[target])
            _set_version(connection, target)


def _set_version(connection: Database, version: int, *, only_if_missing: bool = False) -> None:
    connection.execute(
        "insert into meta (key, value) values ('schema_version', ?) on conflict (key) do "
        + ("nothing" if only_if_missing else "update set value = excluded.value"),
        (str(version),),
    )


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def current_actor() -> str:
    """Who is making a change by hand, for the audit: user@host."""
    return f"{os.environ.get('USER', 'unknown')}@{socket.gethostname()}"


NOTE_MAX = 2000


def checked_note(note: str) -> str:
    """A note from outside (the command line, an API caller) as the catalog stores it: not
    blank, not past NOTE_MAX characters, free of control characters (they would rewrite a
    terminal that shows it), registered secrets masked."""
    text = note.strip()
    if not text:
        raise ParameterError("the note is empty; say why, e.g. 'source fixed, reloaded by hand'")
    if len(text) > NOTE_MAX:
        raise ParameterError(f"the note is {len(text):,} characters; at most {NOTE_MAX:,}")
    bad = next((c for c in text if unicodedata.category(c) == "Cc" and c not in "\t\n"), None)
    if bad is not None:
        raise ParameterError(
            f"the note contains the control character {bad!r} at position {text.index(bad) + 1}"
        )
    return redact(text)


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

    @property
    def output_on_disk(self) -> bool:
        """False when its published output is not on this machine's disk: deleted, or written
        by another host sharing the catalog. A load (no output) is always True."""
        return self.output_path is None or Path(self.output_path).exists()


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


def _params_text(params: Mapping[str, Any]) -> str:
    """Parameters as stored: secret ones masked (a resume takes those from the environment)."""
    return json.dumps(mask_secrets(params), default=str, sort_keys=True)


def _run_row(row: Row) -> RunRow:
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


def _task_row(row: Row) -> TaskRunRow:
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
            "error_transient": None if transient is None else bool(transient),
        }
    )


def _dead_letter_row(row: Row) -> DeadLetterRow:
    values = dict(row)
    return DeadLetterRow(
        **values
        | {
            "params": mask_secrets(json.loads(values["params"])),
            "attempts": json.loads(values["attempts"]),
            "transient": bool(values["transient"]),
        }
    )


def _run_state(connection: Database, run_id: str) -> RunState:
    rows = connection.execute("select state from runs where run_id = ?", (run_id,))
    if not rows:
        raise StateError(f"no run {run_id!r}")
    return RunState(rows[0]["state"])


def _log_transition(
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


class CatalogReader:
    """Read-only access; safe while another process runs a pipeline."""

    def __init__(self, location: CatalogLocation | Path, *, _writable: bool = False) -> None:
        if isinstance(location, Path):
            location = CatalogLocation(location)
        self.location = location
        self.path = location.path
        self._db = location.connect(writable=_writable)
        self._lock = self._db.lock
        if location.shared:  # created by whoever comes first; checked once per process
            if (location.uri, location.schema) not in _PREPARED:
                _prepare(self._db)
                _PREPARED.add((location.uri, location.schema))
        elif _writable:
            _prepare(self._db)
        if location.shared and not _writable:
            self._db.execute("set default_transaction_read_only = on")

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

    def _query(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        return self._db.execute(sql, parameters)

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one consistent state of the catalog, whatever is written meanwhile
        (a run may be committing transitions while a copy or a report reads)."""
        with self._db.snapshot():
            yield

    def query(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        """Read SQL over the catalog, for reports (metrics, status)."""
        return self._query(sql, parameters)

    def batches(self, sql: str, size: int = 10_000) -> Iterator[list[Row]]:
        """A query's rows a batch at a time, for reading a whole table inside `snapshot()`."""
        return self._db.batches(sql, size)

    def runs(self, pipeline: str | None = None, limit: int = 50) -> list[RunRow]:
        """Most recent first."""
        if pipeline is None:
            rows = self._query("select * from runs order by created_at desc limit ?", (limit,))
        else:
            rows = self._query(
                "select * from runs where pipeline = ? order by created_at desc limit ?",
                (pipeline, limit),
            )
        return [_run_row(row) for row in rows]

    def run(self, run_id: str) -> RunRow:
        """A run by id or unambiguous prefix, or 'last' for the most recent."""
        if run_id == "last":
            rows = self._query("select * from runs order by created_at desc limit 1")
        else:
            rows = self._query(
                "select * from runs where run_id like ? escape '\\' "
                "order by created_at desc limit 2",
                (run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",),
            )
        if not rows:
            raise StateError(
                f"no run {run_id!r} in the catalog", hint="`arrowline runs` lists runs"
            )
        if len(rows) > 1 and rows[0]["run_id"] != run_id:
            raise StateError(f"run id prefix {run_id!r} is ambiguous; give more characters")
        return _run_row(rows[0])

    def run_of(self, pipeline: str, run_id: str) -> RunRow:
        """A run of `pipeline`, as `run` finds one, except that 'last' is the pipeline's most
        recent run rather than the catalog's."""
        run = self.last_run(pipeline) if run_id == "last" else self.run(run_id)
        if run is None:
            raise StateError(
                f"pipeline {pipeline!r} has no runs yet", hint="`arrowline runs` lists runs"
            )
        if run.pipeline != pipeline:
            raise StateError(
                f"run {run.run_id} belongs to pipeline {run.pipeline!r}, not {pipeline!r}"
            )
        return run

    def task_runs(self, run_id: str) -> list[TaskRunRow]:
        rows = self._query(
            "select * from task_runs where run_id = ? order by level, ordinal", (run_id,)
        )
        return [_task_row(row) for row in rows]

    def task_run(self, run_id: str, task_id: str) -> TaskRunRow | None:
        rows = self._query(
            "select * from task_runs where run_id = ? and task_id = ?", (run_id, task_id)
        )
        return _task_row(rows[0]) if rows else None

    def reused(self, run_id: str) -> dict[str, str]:
        rows = self._query("select task_id, from_run_id from reused where run_id = ?", (run_id,))
        return {row["task_id"]: row["from_run_id"] for row in rows}

    def transitions(self, run_id: str, task_id: str | None = None) -> list[TransitionRow]:
        if task_id is None:
            rows = self._query("select * from transitions where run_id = ? order by id", (run_id,))
        else:
            rows = self._query(
                "select * from transitions where run_id = ? and task_id = ? order by id",
                (run_id, task_id),
            )
        return [TransitionRow(**dict(row)) for row in rows]

    def latest_output(self, pipeline: str, task_id: str) -> TaskRunRow | None:
        """The newest successful output of a task, or None."""
        return self._newest_success(pipeline, task_id, "and t.output_path is not null ")

    def last_success(self, pipeline: str, task_id: str) -> TaskRunRow | None:
        """The newest successful run of a task, with an output in the workspace or not (a load
        keeps none: its `target` says where its rows went)."""
        return self._newest_success(pipeline, task_id, "")

    def _newest_success(self, pipeline: str, task_id: str, condition: str) -> TaskRunRow | None:
        rows = self._query(
            "select t.* from task_runs t join runs r using (run_id) "
            "where r.pipeline = ? and t.task_id = ? and t.state = 'SUCCESS' "
            f"{condition}order by t.ended_at desc limit 1",
            (pipeline, task_id),
        )
        return _task_row(rows[0]) if rows else None

    def task_ids(self, pipeline: str) -> list[str]:
        """Every task id the runs of a pipeline ever had."""
        rows = self._query(
            "select distinct t.task_id from task_runs t join runs r using (run_id) "
            "where r.pipeline = ? order by 1",
            (pipeline,),
        )
        return [row[0] for row in rows]

    def latest_outputs(self, pipeline: str) -> dict[str, TaskRunRow]:
        """The newest successful output of every task of a pipeline."""
        rows = self._query(
            "select * from (select t.*, row_number() over (partition by t.task_id "
            "order by t.ended_at desc) as newest from task_runs t join runs r using (run_id) "
            "where r.pipeline = ? and t.state = 'SUCCESS' and t.output_path is not null) "
            "as ranked where newest = 1 order by task_id",
            (pipeline,),
        )
        return {row["task_id"]: _task_row(row) for row in rows}

    def watermarks(self, pipeline: str, task_id: str | None = None) -> list[WatermarkRow]:
        if task_id is None:
            rows = self._query(
                "select * from watermarks where pipeline = ? order by task_id, sink_id", (pipeline,)
            )
        else:
            rows = self._query(
                "select * from watermarks where pipeline = ? and task_id = ? order by sink_id",
                (pipeline, task_id),
            )
        return [WatermarkRow(**dict(row)) for row in rows]

    def watermark_audit(self, pipeline: str, task_id: str | None = None) -> list[AuditRow]:
        rows = self._query(
            "select * from watermark_audit where pipeline = ? "
            "and (cast(? as text) is null or task_id = ?) "
            "order by id",
            (pipeline, task_id, task_id),
        )
        return [AuditRow(**dict(row)) for row in rows]

    def unfinished_runs(self, pipeline: str) -> list[RunRow]:
        """Runs of a pipeline the catalog still calls PENDING or RUNNING."""
        rows = self._query(
            "select * from runs where pipeline = ? and state in ('PENDING', 'RUNNING') "
            "order by created_at",
            (pipeline,),
        )
        return [_run_row(row) for row in rows]

    def last_run(self, pipeline: str) -> RunRow | None:
        rows = self._query(
            "select * from runs where pipeline = ? order by created_at desc limit 1", (pipeline,)
        )
        return _run_row(rows[0]) if rows else None

    def dead_letters(
        self, pipeline: str | None = None, status: str | None = "open", limit: int = 100
    ) -> list[DeadLetterRow]:
        """Newest first; `status=None` lists every status."""
        rows = self._query(
            "select * from dead_letters where (cast(? as text) is null or pipeline = ?) "
            "and (cast(? as text) is null or status = ?) order by id desc limit ?",
            (pipeline, pipeline, status, status, limit),
        )
        return [_dead_letter_row(row) for row in rows]

    def dead_letter(self, letter_id: int) -> DeadLetterRow:
        rows = self._query("select * from dead_letters where id = ?", (letter_id,))
        if not rows:
            raise StateError(
                f"no dead letter {letter_id}", hint="`arrowline dlq list --all` lists them"
            )
        return _dead_letter_row(rows[0])

    def lineage(self, run_id: str) -> dict[str, Any] | None:
        """The column lineage recorded when the run ended (lineage.graph.LineageGraph data)."""
        rows = self._query("select graph from run_lineage where run_id = ?", (run_id,))
        return json.loads(rows[0]["graph"]) if rows else None

    def removed_output(self, run_id: str, task_id: str) -> RemovedOutputRow | None:
        """How a task's output of a run left the workspace, if retention removed it."""
        rows = self._query(
            "select * from removed_outputs where run_id = ? and task_id = ?", (run_id, task_id)
        )
        return RemovedOutputRow(**dict(rows[0])) if rows else None

    def pipelines(self) -> list[str]:
        return [row[0] for row in self._query("select distinct pipeline from runs order by 1")]


class Catalog(CatalogReader):
    """The writing side, used by the executor."""

    def __init__(self, location: CatalogLocation | Path) -> None:
        super().__init__(location, _writable=True)

    def _transaction(self) -> AbstractContextManager[Database]:
        return self._db.transaction()

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
    ) -> None:
        """A run and its tasks, all PENDING; `tasks` are (id, kind, level, fingerprint)."""
        at = now_text()
        with self._transaction() as connection:
            connection.execute(
                "insert into runs (run_id, pipeline, pipeline_version, pipeline_file, state, "
                "params, logical_date, selected, created_at, pid, host, definition) "
                "values (?, ?, ?, ?, 'PENDING', ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    pipeline,
                    pipeline_version,
                    pipeline_file,
                    _params_text(params),
                    logical_date,
                    json.dumps(selected) if selected else None,
                    at,
                    os.getpid(),
                    socket.gethostname(),
                    definition,
                ),
            )
            connection.executemany(
                "insert into task_runs (run_id, task_id, kind, state, level, fingerprint, "
                "ordinal) values (?, ?, ?, 'PENDING', ?, ?, ?)",
                [
                    (run_id, task_id, kind, level, fp, ordinal)
                    for ordinal, (task_id, kind, level, fp) in enumerate(tasks)
                ],
            )
            connection.executemany(
                "insert into reused (run_id, task_id, from_run_id) values (?, ?, ?)",
                [(run_id, task_id, source) for task_id, source in reused.items()],
            )
            _log_transition(connection, run_id, None, None, "PENDING", at, "created")

    def transition_run(
        self, run_id: str, target: RunState, event: str, error: str | None = None
    ) -> None:
        at = now_text()
        with self._transaction() as connection:
            current = _run_state(connection, run_id)
            check_run_transition(run_id, current, target)
            stamp = "started_at" if target is RunState.RUNNING else "ended_at"
            connection.execute(
                f"update runs set state = ?, {stamp} = ?, heartbeat_at = ?, "
                "error = coalesce(?, error) "
                "where run_id = ?",
                (target.value, at, at, error, run_id),
            )
            _log_transition(
                connection, run_id, None, current.value, target.value, at, event, error=error
            )

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
        unknown = set(updates) - _TASK_FIELDS
        if unknown:
            raise StateError(f"unknown task run fields {sorted(unknown)}")
        with self._transaction() as connection:
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
            _log_transition(
                connection, run_id, task_id, current.value, target.value, at, event, attempt, error
            )

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
        at = now_text()
        who = actor or current_actor()
        with self._transaction() as connection:
            rows = connection.execute(
                "select value from watermarks where pipeline = ? and task_id = ? and sink_id = ?",
                (pipeline, task_id, sink_id),
            )
            old = rows[0]["value"] if rows else None
            if old == value:
                return
            if value is None:
                connection.execute(
                    "delete from watermarks where pipeline = ? and task_id = ? and sink_id = ?",
                    (pipeline, task_id, sink_id),
                )
            else:
                connection.execute(
                    "insert into watermarks "
                    "(pipeline, task_id, sink_id, value, run_id, updated_at) "
                    "values (?, ?, ?, ?, ?, ?) on conflict (pipeline, task_id, sink_id) do update "
                    "set value = excluded.value, run_id = excluded.run_id, "
                    "updated_at = excluded.updated_at",
                    (pipeline, task_id, sink_id, value, run_id, at),
                )
            connection.execute(
                "insert into watermark_audit (pipeline, task_id, sink_id, action, old_value, "
                "new_value, run_id, actor, at) values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (pipeline, task_id, sink_id, action, old, value, run_id, who, at),
            )

    def interrupt_run(self, run_id: str, reason: str) -> list[str]:
        """Mark a run whose process died INTERRUPTED and its unfinished tasks CANCELLED, in one
        transaction; returns the tasks it cancelled."""
        at = now_text()
        with self._transaction() as connection:
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
                _log_transition(
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
            _log_transition(
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
    ) -> None:
        """Put an ended run back to PENDING with `tasks` (id, kind, level, fingerprint) PENDING
        again, keeping the rows of the tasks it reuses; one transaction."""
        at = now_text()
        with self._transaction() as connection:
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
                        "insert into task_runs (run_id, task_id, kind, state, level, "
                        "fingerprint, ordinal) values (?, ?, ?, 'PENDING', ?, ?, ?)",
                        (run_id, task_id, kind, level, fingerprint, ordinal),
                    )
                else:
                    connection.execute(
                        "update task_runs set state = 'PENDING', kind = ?, level = ?, "
                        "fingerprint = ?, ordinal = ?, attempts = 0, started_at = null, "
                        "ended_at = null, "
                        "duration_s = null, rows_in = null, rows_out = null, "
                        "rows_rejected = null, bytes_out = null, output_path = null, "
                        "output_schema = null, target = null, error = null, error_kind = null, "
                        "error_transient = null, details = null "
                        "where run_id = ? and task_id = ?",
                        (kind, level, fingerprint, ordinal, run_id, task_id),
                    )
                previous = old["state"] if old else None
                _log_transition(connection, run_id, task_id, previous, "PENDING", at, "resumed")
            connection.execute(
                "update runs set state = 'PENDING', ended_at = null, error = null, "
                "resumes = resumes + 1, pid = ?, host = ?, heartbeat_at = ?, "
                "definition = coalesce(?, definition), pipeline_version = ? where run_id = ?",
                (os.getpid(), socket.gethostname(), at, definition, pipeline_version, run_id),
            )
            _log_transition(connection, run_id, None, current.value, "PENDING", at, "resumed")

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
        with self._transaction() as connection:
            rows = connection.execute(
                "insert into dead_letters (run_id, pipeline, task_id, pipeline_version, "
                "pipeline_file, params, logical_date, error_kind, transient, reason, attempts, "
                "created_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) returning id",
                (
                    run_id,
                    pipeline,
                    task_id,
                    pipeline_version,
                    pipeline_file,
                    _params_text(params),
                    logical_date,
                    error_kind,
                    int(transient),
                    reason,
                    json.dumps(attempts, default=str),
                    now_text(),
                ),
            )
            return int(rows[0][0])

    def settle_dead_letters(
        self, run_id: str, task_ids: Sequence[str], result: str, before: str
    ) -> None:
        """A resumed or requeued run ended: the letters written before it (`before`) for the
        tasks it ran again become resolved when it succeeded, or requeued with its result (a
        task that failed again has a new open letter of its own)."""
        with self._transaction() as connection:
            for task_id in task_ids:
                connection.execute(
                    "update dead_letters set status = ?, requeued_at = ?, requeue_result = ? "
                    "where run_id = ? and task_id = ? and status in ('open', 'requeued') "
                    "and created_at < ?",
                    (
                        "resolved" if result == "SUCCESS" else "requeued",
                        now_text(),
                        result,
                        run_id,
                        task_id,
                        before,
                    ),
                )

    def resolve_dead_letter(
        self, letter_id: int, note: str, *, by: str | None = None
    ) -> DeadLetterRow:
        """Dismiss a dead letter an operator dealt with some other way (the source was fixed
        and reloaded by hand, the run is obsolete): resolved, with who, when and why. It leaves
        `dlq list` and stops holding its run's outputs (engine.state.retention). A resolved letter
        stays resolved: resolving it again is refused, naming who did it first."""
        text = checked_note(note)
        with self._transaction() as connection:
            rows = connection.execute("select * from dead_letters where id = ?", (letter_id,))
            if not rows:
                raise StateError(
                    f"no dead letter {letter_id}", hint="`arrowline dlq list --all` lists them"
                )
            letter = _dead_letter_row(rows[0])
            if letter.status == "resolved":
                raise StateError(f"dead letter {letter_id} is already resolved {letter.resolution}")
            updated = connection.execute(
                "update dead_letters set status = 'resolved', resolved_at = ?, resolved_by = ?, "
                "resolution_note = ? where id = ? returning *",
                (now_text(), by or current_actor(), text, letter_id),
            )
        return _dead_letter_row(updated[0])

    def record_removed_outputs(
        self, pipeline: str, outputs: Sequence[tuple[str, str, int]], reason: str
    ) -> None:
        """Note (run_id, task_id, bytes) outputs as removed, before their folders go: a crash
        in between leaves a folder the next collection removes, never a silent gap."""
        at = now_text()
        with self._transaction() as connection:
            connection.executemany(
                "insert into removed_outputs "
                "(run_id, task_id, pipeline, bytes, removed_at, reason) values (?, ?, ?, ?, ?, ?) "
                "on conflict (run_id, task_id) do update set bytes = excluded.bytes, "
                "removed_at = excluded.removed_at, reason = excluded.reason",
                [(run, task, pipeline, size, at, reason) for run, task, size in outputs],
            )

    def record_lineage(self, run_id: str, graph: Mapping[str, Any]) -> None:
        with self._transaction() as connection:
            connection.execute(
                "insert into run_lineage (run_id, graph) values (?, ?) "
                "on conflict (run_id) do update set graph = excluded.graph",
                (run_id, json.dumps(graph, sort_keys=True)),
            )

    def heartbeat(self, run_id: str) -> None:
        with self._transaction() as connection:
            connection.execute(
                "update runs set heartbeat_at = ? where run_id = ?", (now_text(), run_id)
            )

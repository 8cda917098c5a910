"""The catalog's tables, as each entity of engine.state keeps them, in SQLite's spelling
(engine.state.db turns it into PostgreSQL's).

A fresh catalog is created from `SCHEMA` at `engine.state.migrations.SCHEMA_VERSION`; a catalog
written by an older arrowline is brought forward by the migrations, so a change here is always
paired with a migration step there.
"""

from __future__ import annotations

import re

__all__ = [
    "DEAD_LETTERS",
    "IDENTITY_TABLES",
    "LINEAGE",
    "META",
    "REMOVED_OUTPUTS",
    "RUNS",
    "SCHEDULER",
    "SCHEMA",
    "TABLES",
    "WATERMARKS",
    "WATERMARK_AUDIT",
    "statements",
]

META = "create table if not exists meta (key text primary key, value text not null);"
"""Settings of the catalog itself: its schema version."""

RUNS = """
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
    resumes integer not null default 0,
    cpu_s real,
    peak_rss_bytes integer
);
create index if not exists runs_by_pipeline on runs (pipeline, created_at);
create index if not exists runs_by_created on runs (created_at);
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
    cache_key text,
    fingerprint_parts text,
    output_hash text,
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
"""
"""Runs, their tasks, what they reused from earlier runs, and every state transition. A run's
`cpu_s` and `peak_rss_bytes` are what it cost its process (engine.core.usage). A task
run's `cache_key` (its fingerprint over its upstream outputs' contents), `fingerprint_parts`
(one digest per component, JSON) and `output_hash` (its output's contents) are what the cache
compares (engine.planning.cache); no value a key query returned is stored, only digests."""

WATERMARKS = """
create table if not exists watermarks (
    pipeline text not null,
    task_id text not null,
    sink_id text not null,
    value text not null,
    run_id text,
    updated_at text not null,
    primary key (pipeline, task_id, sink_id)
);
"""
"""Where each incremental extract continues from, per load task that consumes it."""

DEAD_LETTERS = """
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
"""
"""Tasks that failed for good, with every attempt, until requeued or resolved."""

LINEAGE = """
create table if not exists run_lineage (
    run_id text primary key references runs (run_id),
    graph text not null
);
"""
"""The column lineage recorded when a run ended."""

RUN_GRAPHS = """
create table if not exists task_graphs (
    digest text primary key,
    tasks text not null
);
create table if not exists run_graphs (
    run_id text primary key references runs (run_id),
    digest text not null references task_graphs (digest)
);
"""
"""Each run's task graph as planned, `[[task, kind, [upstream, ...]], ...]` in plan order: what
the run's pictures draw without planning the pipeline again (a 5,000-task plan takes seconds).
A graph is kept once by its digest; runs of an unchanged pipeline share it."""

SCHEDULER = """
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
"""What the scheduler keeps (engine.state.schedules): per pipeline its schedule state, every
interval it decided (the primary key is what stops an interval from running twice), requested runs,
the trigger events it has seen, and the alerts it sent (for de-duplication)."""

WATERMARK_AUDIT = """
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
"""Every change of a watermark: by a run, or by hand (`arrowline watermark set/reset`)."""

REMOVED_OUTPUTS = """
create table if not exists removed_outputs (
    run_id text not null,
    task_id text not null,
    pipeline text not null,
    bytes integer not null,
    removed_at text not null,
    reason text not null,
    primary key (run_id, task_id)
);
"""
"""Task outputs retention removed from the workspace (engine.state.retention), so that reading one
says so instead of failing on a missing file."""


def statements(ddl: str) -> tuple[str, ...]:
    """The statements of a block of DDL, one per `;`."""
    return tuple(part.strip() for part in ddl.split(";") if part.strip())


SCHEMA = (
    statements(META)
    + statements(RUNS)
    + statements(WATERMARKS)
    + statements(DEAD_LETTERS)
    + statements(LINEAGE)
    + statements(SCHEDULER)
    + statements(WATERMARK_AUDIT)
    + statements(REMOVED_OUTPUTS)
    + statements(RUN_GRAPHS)
)
"""Every statement that creates the current catalog, parents before the tables that reference
them (in the order the catalog has always created them)."""

_CREATE = re.compile(
    r"create table if not exists (\w+) \(\s*(id integer primary key autoincrement)?"
)

TABLES = tuple(
    match[1]
    for statement in SCHEMA
    if (match := _CREATE.match(statement)) and match[1] != "meta"  # its version is each catalog's
)
"""The catalog's tables in the order they are created, parents before the tables that reference
them (what a copy walks)."""

IDENTITY_TABLES = tuple(
    match[1] for statement in SCHEMA if (match := _CREATE.match(statement)) and match[2]
)
"""Tables whose `id` the database assigns."""

"""Creating the catalog, and bringing one written by an older arrowline up to date.

The version is a row of `meta`. Each step is one writer transaction (engine.state.db serializes
writers on both databases), so two processes preparing the same catalog at the same moment take
turns and the second finds the work done.
"""

from __future__ import annotations

from engine.state.db import CatalogLocation, Database
from engine.state.schema import REMOVED_OUTPUTS, RUN_GRAPHS, SCHEDULER, SCHEMA, statements

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "forget_prepared",
    "prepare",
    "prepare_once",
    "schema_version",
]

SCHEMA_VERSION = 10

MIGRATIONS: dict[int, tuple[str, ...]] = {
    # version reached -> statements that reach it from the one before
    2: ("alter table task_runs add column details text",),
    3: (
        "alter table runs add column definition text",
        "alter table runs add column resumes integer not null default 0",
    ),
    4: ("create table if not exists run_lineage (run_id text primary key, graph text not null)",),
    5: statements(SCHEDULER),
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
        *statements(REMOVED_OUTPUTS),
    ),
    # the cache: what each task output was made of, by component, and what it holds
    8: (
        "alter table task_runs add column cache_key text",
        "alter table task_runs add column fingerprint_parts text",
        "alter table task_runs add column output_hash text",
    ),
    # each run's task graph (the monitor's pictures), and the runs list newest first unfiltered
    9: (
        *statements(RUN_GRAPHS),
        "create index if not exists runs_by_created on runs (created_at)",
    ),
    # what a run cost its process, for `arrowline runs compare`
    10: (
        "alter table runs add column cpu_s real",
        "alter table runs add column peak_rss_bytes integer",
    ),
}

_PREPARED: set[tuple[str | None, str]] = set()
"""Shared catalogs this process has created or migrated: a run need not pay the DDL's round
trips again (an embedded one is local and cheap to check, and may be deleted between runs)."""


def prepare(db: Database) -> None:
    """Create the catalog's tables, or bring a catalog written by an older arrowline up to
    SCHEMA_VERSION."""
    with db.transaction() as connection:
        fresh = not connection.table_exists("task_runs")
        connection.create(SCHEMA)
        if fresh:
            _set_version(connection, SCHEMA_VERSION, only_if_missing=True)
    for target in range(2, SCHEMA_VERSION + 1):
        with db.transaction() as connection:
            if schema_version(connection) >= target:
                continue
            connection.create(MIGRATIONS[target])
            _set_version(connection, target)


def prepare_once(location: CatalogLocation, db: Database, *, writable: bool) -> None:
    """Prepare the catalog `db` is connected to when it may need it: a shared catalog once per
    process (created by whoever comes first, readers included), an embedded one each time it is
    opened for writing (a reader of an embedded catalog finds it made or fails to open it)."""
    if location.shared:
        if (location.uri, location.schema) not in _PREPARED:
            prepare(db)
            _PREPARED.add((location.uri, location.schema))
    elif writable:
        prepare(db)


def forget_prepared() -> None:
    """Look at every shared catalog's version again, as a new process would."""
    _PREPARED.clear()


def _set_version(connection: Database, version: int, *, only_if_missing: bool = False) -> None:
    connection.execute(
        "insert into meta (key, value) values ('schema_version', ?) on conflict (key) do "
        + ("nothing" if only_if_missing else "update set value = excluded.value"),
        (str(version),),
    )


def schema_version(db: Database) -> int:
    """The version the catalog says it is at (1 before versions were recorded)."""
    rows = db.execute("select value from meta where key = 'schema_version'")
    return int(rows[0][0]) if rows else 1

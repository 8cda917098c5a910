"""The state tables that transactional sinks keep next to their data.

    arrowline_state.watermarks (pipeline, task, sink, value, run_id, updated_at)
    arrowline_state.loads      (pipeline, task, run_id, rows, committed_at)

A sink writes its rows and the watermarks of the extracts feeding them in one transaction, so
after a crash at any point the data and the watermark agree: either both moved or neither did.
The same transaction adds a row to `loads`, the ledger of which run's load committed: when a
process dies after the commit and before the catalog heard of it, the resumed run finds its own
row there and does not load the same rows twice.
The SQL here runs unchanged on PostgreSQL and DuckDB (both take `$n` parameters and
`ON CONFLICT`); each connector passes a function that executes one statement on its open
connection, inside its transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from engine.core.watermark import Watermark, WatermarkUpdate

__all__ = [
    "LOADS_TABLE",
    "STATE_TABLE",
    "committed_load",
    "delete_state",
    "ensure_state_table",
    "read_state",
    "record_load",
    "with_changes",
    "write_state",
]

STATE_SCHEMA = "arrowline_state"
STATE_TABLE = f"{STATE_SCHEMA}.watermarks"
LOADS_TABLE = f"{STATE_SCHEMA}.loads"

Execute = Callable[[str, Sequence[Any]], Any]
Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


def ensure_state_table(execute: Execute) -> None:
    execute(f"create schema if not exists {STATE_SCHEMA}", ())
    execute(
        f"create table if not exists {STATE_TABLE} ("
        "pipeline text not null, task text not null, sink text not null, value text not null, "
        "run_id text not null, updated_at text not null, primary key (pipeline, task, sink))",
        (),
    )
    execute(
        f"create table if not exists {LOADS_TABLE} ("
        "pipeline text not null, task text not null, run_id text not null, rows bigint not null, "
        "committed_at text not null, primary key (pipeline, task, run_id))",
        (),
    )


def committed_load(
    execute: Execute, query: Query, pipeline: str, task: str, run_id: str
) -> int | None:
    """Rows this run's load committed earlier, or None. Call first in the sink's transaction."""
    ensure_state_table(execute)
    rows = query(
        f"select rows from {LOADS_TABLE} where pipeline = $1 and task = $2 and run_id = $3",
        (pipeline, task, run_id),
    )
    return int(rows[0][0]) if rows else None


def record_load(execute: Execute, pipeline: str, task: str, run_id: str, rows: int) -> None:
    """Note that this run's load committed; call inside the transaction that writes the data."""
    ensure_state_table(execute)
    execute(
        f"insert into {LOADS_TABLE} (pipeline, task, run_id, rows, committed_at) "
        "values ($1, $2, $3, $4, $5)",
        (pipeline, task, run_id, rows, datetime.now(UTC).isoformat(timespec="seconds")),
    )


def write_state(
    execute: Execute, pipeline: str, sink: str, updates: Sequence[WatermarkUpdate], run_id: str
) -> None:
    """Upsert one row per update; call inside the transaction that writes the data."""
    if not updates:
        return
    ensure_state_table(execute)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for update in updates:
        execute(
            f"insert into {STATE_TABLE} (pipeline, task, sink, value, run_id, updated_at) "
            "values ($1, $2, $3, $4, $5, $6) on conflict (pipeline, task, sink) do update set "
            "value = excluded.value, run_id = excluded.run_id, updated_at = excluded.updated_at",
            (pipeline, update.task_id, sink, update.watermark.to_json(), run_id, now),
        )


def read_state(query: Query, pipeline: str, sink: str) -> dict[str, tuple[Watermark, str]]:
    """{task: (watermark, run_id)} committed by one sink; empty when there is no state table."""
    rows = query(
        f"select task, value, run_id from {STATE_TABLE} where pipeline = $1 and sink = $2",
        (pipeline, sink),
    )
    return {task: (Watermark.from_json(value), run_id) for task, value, run_id in rows}


def delete_state(execute: Execute, pipeline: str, sink: str, task: str | None) -> None:
    if task is None:
        execute(f"delete from {STATE_TABLE} where pipeline = $1 and sink = $2", (pipeline, sink))
    else:
        execute(
            f"delete from {STATE_TABLE} where pipeline = $1 and sink = $2 and task = $3",
            (pipeline, sink, task),
        )


def with_changes(
    held: dict[str, tuple[Watermark, str]], change: dict[str, tuple[Watermark, str] | None]
) -> dict[str, tuple[Watermark, str]]:
    """The watermarks a table-format sink keeps in its ledger entry (extract -> (value, the
    run that set it)) after `change`: a value sets one, None forgets it."""
    after = dict(held)
    for task, value in change.items():
        if value is None:
            after.pop(task, None)
        else:
            after[task] = value
    return after

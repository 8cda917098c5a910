"""Copy a whole catalog into another one: embedded -> PostgreSQL when a project moves to
scheduler replicas, PostgreSQL -> a file for a backup, or file -> file.

Watermarks are the reason this exists: pointing ARROWLINE_CATALOG at an empty database would
make every incremental extract whose sink keeps no ledger start again from nothing. The copy
carries everything (runs and their history, watermarks and their audit, dead letters, lineage,
schedules and decided intervals, run requests, triggers seen, alerts sent) with the same ids.

It reads one consistent snapshot of the source (a run may be writing to it meanwhile) and writes
the target in one transaction, so a failed copy leaves the target as it was. The target must
hold no runs: two histories are never merged.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.errors import StateError
from engine.state.db import CatalogLocation, Database
from engine.state.migrations import prepare
from engine.state.schema import IDENTITY_TABLES, TABLES

__all__ = ["CopyReport", "copy_catalog"]


@dataclass(frozen=True)
class CopyReport:
    source: str
    target: str
    rows: dict[str, int]
    """Rows copied per table."""


def copy_catalog(
    source: CatalogLocation, target: CatalogLocation, *, batch_size: int = 10_000
) -> CopyReport:
    """Every row of `source` into the empty `target`, reading `batch_size` rows at a time."""
    if (source.uri, source.schema, source.path) == (target.uri, target.schema, target.path):
        raise StateError(f"the source and the target are the same catalog ({source.describe()})")
    if not source.exists():
        raise StateError(
            f"no arrowline catalog at {source.describe()}",
            hint="run a pipeline first, or name the catalog to copy from with --from",
        )
    # both opened for writing and prepared: an older source is migrated first, so the columns
    # agree, and the target gets the tables
    reader, writer = source.connect(writable=True), target.connect(writable=True)
    try:
        prepare(reader)
        prepare(writer)
        return CopyReport(
            source.describe(), target.describe(), _copy(reader, writer, target, batch_size)
        )
    finally:
        reader.close()
        writer.close()


def _copy(
    reader: Database, writer: Database, target: CatalogLocation, batch_size: int
) -> dict[str, int]:
    held = {t: n for t in TABLES if (n := writer.execute(f"select count(*) from {t}")[0][0])}
    if held:
        what = ", ".join(f"{n} {t}" for t, n in held.items())
        raise StateError(
            f"the target catalog {target.describe()} is not empty ({what}); a copy goes "
            "into an empty catalog and never merges two histories"
        )
    rows: dict[str, int] = {}
    with reader.snapshot(), writer.transaction() as connection:
        for table in TABLES:
            rows[table] = 0
            for batch in reader.batches(f"select * from {table}", batch_size):
                columns = list(batch[0].keys())
                connection.executemany(
                    f"insert into {table} ({', '.join(columns)}) "
                    f"values ({', '.join('?' for _ in columns)})",
                    [tuple(row) for row in batch],
                )
                rows[table] += len(batch)
        if target.shared:
            for table in IDENTITY_TABLES:  # the next id the database assigns follows them
                connection.execute(
                    f"select setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"coalesce((select max(id) from {table}), 0) + 1, false)"
                )
    return rows

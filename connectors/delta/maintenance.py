"""`arrowline table optimize|vacuum|expire-snapshots` on a Delta table.

optimize compacts small files (delta-rs's bin-packing, 100 MB files unless said otherwise);
vacuum removes the data files no version within the retention still references (7 days unless
said otherwise; a kill during a load leaves such files); expire-snapshots removes the commit log
older than the table's `delta.logRetentionDuration` (30 days by default) behind a fresh
checkpoint. Every commit these make carries the newest ledger entry of each load
(connectors.delta.table), so no watermark goes with the log it cleans.
"""

from __future__ import annotations

import json
import math
from typing import Any

from connectors.base import ConnectorContext, Maintenance
from connectors.delta.table import (
    CARRIED_KEY,
    TableAt,
    arrow_schema,
    ledger,
    located,
    open_table,
    translate,
)
from engine.core.errors import DataError, DefinitionError

__all__ = ["maintain_delta"]


def _carrying(table: Any) -> Any:
    from deltalake import CommitProperties

    return CommitProperties(custom_metadata={CARRIED_KEY: json.dumps(ledger(table))})


def maintain_delta(config: Any, job: Maintenance, ctx: ConnectorContext) -> dict[str, Any]:
    location = located(config, ctx)
    try:
        return _maintain(location, job)
    except (DataError, DefinitionError):
        raise
    except Exception as exc:
        raise translate(exc, f"{job.action} of the Delta table {location}") from None


def _maintain(location: TableAt, job: Maintenance) -> dict[str, Any]:
    table = open_table(location)
    if table is None:
        raise DataError(f"no Delta table at {location}", hint="its first load creates it")
    before = table.version()
    if job.action == "optimize":
        if job.dry_run:
            raise DefinitionError("optimize has no --dry-run: it removes nothing")
        metrics = table.optimize.compact(
            target_size=job.target_size, commit_properties=_carrying(table)
        )
        return {
            "files_removed": metrics.get("numFilesRemoved", 0),
            "files_added": metrics.get("numFilesAdded", 0),
            "version": table.version(),
        }
    if job.action == "vacuum":
        # whole hours, rounded up: a retention never removes a file younger than it says
        hours = None if job.retention is None else math.ceil(job.retention.total_seconds() / 3600)
        try:
            removed = table.vacuum(
                retention_hours=hours,
                dry_run=job.dry_run,
                enforce_retention_duration=not job.unsafe_retention,
                commit_properties=_carrying(table),
            )
        except Exception as exc:
            if "retention" in str(exc).lower():
                raise DataError(
                    f"vacuum of {location}: {str(exc).strip().splitlines()[0]}",
                    hint="a shorter retention can remove files a reader of an older version "
                    "still needs: pass --unsafe-retention when no such reader exists",
                ) from None
            raise
        key = "would_remove" if job.dry_run else "files_removed"
        return {key: len(removed), "version": before}
    if job.retention is not None or job.dry_run:
        raise DefinitionError(
            "a Delta table's expire-snapshots follows its delta.logRetentionDuration and takes "
            "no --retention or --dry-run",
            hint="change the table's setting to keep more or less history",
        )
    from deltalake import write_deltalake

    # the newest entries carried to the newest commit, behind a checkpoint the cleanup keeps
    write_deltalake(
        table, arrow_schema(table).empty_table(), mode="append", commit_properties=_carrying(table)
    )
    table = open_table(location)
    assert table is not None
    table.create_checkpoint()
    held = len(table.history())
    table.cleanup_metadata()
    table = open_table(location)
    assert table is not None
    return {"versions_forgotten": held - len(table.history()), "version": table.version()}

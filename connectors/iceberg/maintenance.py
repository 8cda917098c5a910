"""`arrowline table optimize|vacuum|expire-snapshots` on an Iceberg table.

optimize rewrites each partition's small files (below half the target size, 128 MB unless
said otherwise) into full ones, in one snapshot that changes no row (marked so, as pyiceberg
commits no `replace` snapshot); vacuum removes
files under the table's `data/` folder that no snapshot references and that are older than the
retention (3 days unless said otherwise: a load still writing has files no snapshot names yet);
expire-snapshots forgets snapshots older than the retention (5 days unless said otherwise, and
no less without --unsafe-retention: an incremental reader's last snapshot may be among them),
keeping the current one. The ledger lives in the table's properties, which none of these touch.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.base import ConnectorContext, Maintenance
from connectors.iceberg.catalog import REWRITE_KEY, catalog_for, load_table
from connectors.iceberg.files import bounds_as_written
from engine.core.errors import DataError, DefinitionError

__all__ = ["maintain_iceberg"]

TARGET_SIZE = 128 * 1024 * 1024
ORPHAN_AGE = timedelta(days=3)
SNAPSHOT_AGE = timedelta(days=5)


def _optimize(table: Any, job: Maintenance) -> dict[str, Any]:
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files

    if job.dry_run:
        raise DefinitionError("optimize has no --dry-run: it removes nothing")
    target = job.target_size or TARGET_SIZE
    if table.current_snapshot() is None:
        return {"files_removed": 0, "files_added": 0}
    groups: dict[Any, list[Any]] = defaultdict(list)
    for task in table.scan().plan_files():
        if task.delete_files:
            raise DataError("the table has delete files (merge-on-read); optimize leaves it as is")
        if task.file.file_size_in_bytes < target // 2:
            groups[(task.file.spec_id, task.file.partition)].append(task)
    groups = {k: v for k, v in groups.items() if len(v) > 1}
    if not groups:
        return {"files_removed": 0, "files_added": 0}
    metadata = table.metadata
    write_uuid, counter = uuid.uuid4(), itertools.count(0)
    removed: list[Any] = []
    added: list[Any] = []
    for tasks in groups.values():
        rows = ArrowScan(metadata, table.io, metadata.schema(), AlwaysTrue()).to_table(tasks)
        removed += [task.file for task in tasks]
        made = _dataframe_to_data_files(metadata, rows, table.io, write_uuid, counter)
        added += [bounds_as_written(f, table.io, metadata.schema()) for f in made]
    # rows moved, none changed: pyiceberg cannot commit a `replace` snapshot, so the overwrite
    # says it, and incremental readers skip its files as they skip a replace's
    moved = {REWRITE_KEY: "compaction"}
    with (
        table.transaction() as tx,
        tx.update_snapshot(snapshot_properties=moved).overwrite(write_uuid) as change,
    ):
        for data_file in removed:
            change.delete_data_file(data_file)
        for data_file in added:
            change.append_data_file(data_file)
    return {"files_removed": len(removed), "files_added": len(added)}


def _referenced(table: Any) -> set[str]:
    referenced: set[str] = set()
    for snapshot in table.snapshots():
        for manifest in snapshot.manifests(table.io):
            referenced.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
                referenced.add(entry.data_file.file_path)
        if snapshot.manifest_list:
            referenced.add(snapshot.manifest_list)
    return referenced


def _vacuum(table: Any, job: Maintenance) -> dict[str, Any]:
    import pyarrow.fs as pafs

    retention = job.retention if job.retention is not None else ORPHAN_AGE
    if retention < ORPHAN_AGE and not job.unsafe_retention:
        raise DataError(
            f"a vacuum retention below {ORPHAN_AGE.days} days can remove the files of a load "
            "still writing",
            hint="pass --unsafe-retention when no load of this table is running",
        )
    filesystem, root = pafs.FileSystem.from_uri(table.location())
    referenced = {pafs.FileSystem.from_uri(p)[1] for p in _referenced(table)}
    cutoff = time.time() - retention.total_seconds()
    selector = pafs.FileSelector(f"{root.rstrip('/')}/data", allow_not_found=True, recursive=True)
    orphans = [
        info.path
        for info in filesystem.get_file_info(selector)
        if info.type == pafs.FileType.File
        and info.path not in referenced
        and (info.mtime is None or info.mtime.timestamp() <= cutoff)
    ]
    if not job.dry_run:
        for path in orphans:
            filesystem.delete_file(path)
    return {("would_remove" if job.dry_run else "files_removed"): len(orphans)}


def _expire(table: Any, job: Maintenance) -> dict[str, Any]:
    retention = job.retention if job.retention is not None else SNAPSHOT_AGE
    if retention < SNAPSHOT_AGE and not (job.unsafe_retention or job.dry_run):
        raise DataError(
            f"an expire-snapshots retention below {SNAPSHOT_AGE.days} days can forget the "
            "snapshot an incremental extract of this table last read, or one a notebook or "
            "`snapshot_id` reads (they then need a --full-refresh)",
            hint="pass --unsafe-retention when no reader needs those snapshots; --dry-run "
            "says how many would go",
        )
    before = len(table.snapshots())
    cutoff = datetime.now(UTC) - retention
    # a snapshot a branch or tag points at stays, the current one among them
    protected = {ref.snapshot_id for ref in table.refs().values()}
    old = [
        s.snapshot_id
        for s in table.snapshots()
        if s.timestamp_ms / 1000 < cutoff.timestamp() and s.snapshot_id not in protected
    ]
    if job.dry_run:
        return {"would_forget": len(old), "snapshots_kept": before - len(old)}
    if old:
        table.maintenance.expire_snapshots().by_ids(old).commit()
    return {"snapshots_forgotten": len(old), "snapshots_kept": before - len(old)}


def maintain_iceberg(config: Any, job: Maintenance, ctx: ConnectorContext) -> dict[str, Any]:
    with catalog_for(config, ctx) as catalog:
        table = load_table(catalog, config.table)
        if table is None:
            raise DataError(f"no Iceberg table {config.table}", hint="its first load creates it")
        action = {"optimize": _optimize, "vacuum": _vacuum, "expire-snapshots": _expire}
        result: dict[str, Any] = action[job.action](table, job)
    return result

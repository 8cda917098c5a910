"""The cache while a run runs: what each task's output holds, and early cutoff.

Planning decides the tasks whose upstream outputs it knows (engine.planning.cache). A task
below one that runs in this run is decided here, when it is ready: its cache key is computed
from what its upstream outputs hold now, and when an earlier output of that key stands, the task
takes it instead of running. So a task whose input file was touched but whose output came out
the same, byte for byte, does not make everything below it run again.

What an output holds is a SHA-256 over its Parquet parts' bytes, taken on the worker thread
right after the attempt wrote them (the files are in the page cache then), and recorded with the
task's cache key and fingerprint components when it succeeds. Bytes, not rows: the same rows in
another order or in other row groups count as different, which costs a cache hit and never
hands back a stale output.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core.errors import StateError
from engine.core.tables import InputTable, output_parts
from engine.planning.build import Plan, PlannedTask
from engine.planning.cache import inlined, kept_output, output_identity
from engine.state.catalog import Catalog
from engine.state.workspace import Workspace
from engine.tasks import TaskContext, TaskOutcome, TaskRunner

__all__ = ["CacheHit", "ExecutionCache", "content_hash"]


def content_hash(directory: Path) -> str | None:
    """SHA-256 over the bytes of an output folder's parts, in order; None without parts."""
    return combined_digest(part_digest(part) for part in output_parts(directory))


def part_digest(part: Path) -> bytes:
    """SHA-256 of one part's bytes (`content_hash` combines them)."""
    with part.open("rb") as file:
        return hashlib.file_digest(file, "sha256").digest()


def combined_digest(digests: Iterable[bytes]) -> str | None:
    """An output's content hash from its parts' digests, in part order (parts written on
    several hosts hash as the same parts written in one folder); None without parts."""
    total, any_part = hashlib.sha256(), False
    for digest in digests:
        total.update(digest)
        any_part = True
    return total.hexdigest() if any_part else None


@dataclass(frozen=True)
class CacheHit:
    """An earlier output that stands for a task of this run."""

    run_id: str
    """The run whose output it is."""
    output: InputTable | None
    fields: dict[str, Any]
    """What the task's row records: the earlier output's counts and place, the key."""


class ExecutionCache:
    """One run's cache: the identity of each finished task's output, and the late decisions."""

    def __init__(self, plan: Plan, catalog: Catalog, workspace: Workspace) -> None:
        self.plan = plan
        self.catalog = catalog
        self.workspace = workspace
        self.identities: dict[str, str | None] = {}
        """Task id -> what its output holds (a load: its cache key), once known."""
        for task in plan.tasks:
            if task.action == "reuse" and task.reuse_run is not None:
                known = task.cache.identity if task.cache else None
                if known is None:  # kept by --resume, which plans without the cache
                    row = catalog.task_run(task.reuse_run, task.id)
                    known = output_identity(row, task.produces_table) if row else None
                self.identities[task.id] = known
        self._hashes: dict[tuple[str, int], str | None] = {}
        self._lock = threading.Lock()

    def hashing(self, runner: TaskRunner) -> TaskRunner:
        """`runner`, then the content hash of what the attempt wrote, on the worker's thread."""

        @functools.wraps(runner)  # keeps what the runner says of itself (`remote`)
        def run(context: TaskContext) -> TaskOutcome:
            outcome = runner(context)
            if outcome.produces_output:
                elsewhere = outcome.elsewhere
                found = (
                    elsewhere.content_hash
                    if elsewhere is not None
                    else content_hash(context.staging_path)
                )
                with self._lock:
                    self._hashes[(context.task.id, context.attempt)] = found
            return outcome

        return run

    def _upstream(self, task: PlannedTask) -> dict[str, str] | None:
        """What each upstream output holds; None while one is not known."""
        known = {dep: self.identities.get(dep) for dep in task.upstream}
        found = {dep: value for dep, value in known.items() if value is not None}
        return found if len(found) == len(known) else None

    def succeeded(self, task: PlannedTask, attempt: int) -> dict[str, Any]:
        """The fields a successful attempt records for the cache: its key, fingerprint
        components and content hash; remembered for the tasks below it."""
        with self._lock:
            content = self._hashes.pop((task.id, attempt), None)
        upstream = self._upstream(task)
        fields: dict[str, Any] = {"output_hash": content}
        key = None
        if task.cache is not None and upstream is not None:
            key = task.cache.fingerprint.key(upstream)
            fields["cache_key"] = key
            fields["fingerprint_parts"] = json.dumps(task.cache.fingerprint.recorded(upstream))
        by_key = not task.produces_table or inlined(task.spec)
        self.identities[task.id] = key if by_key else content
        return fields

    def hit(self, task: PlannedTask) -> CacheHit | None:
        """An earlier output that stands for `task` now that its upstream has run, when its
        cache allows one and planning could not decide (it did not know the upstream)."""
        decision = task.cache
        if decision is None or not decision.allowed or decision.key is not None:
            return None
        upstream = self._upstream(task)
        if upstream is None:
            return None
        key = decision.fingerprint.key(upstream)
        row = kept_output(self.catalog, self.plan.pipeline, task.id, key, task.produces_table)
        if row is None:
            return None
        source = row.output_run
        output = None
        if task.produces_table:
            directory = self.workspace.output_dir(self.plan.pipeline, task.id, source)
            try:
                output = self.workspace.table(task.id, source, directory)
            except StateError:  # removed since it was looked up: the task runs
                return None
        self.identities[task.id] = output_identity(row, task.produces_table)
        self.catalog.record_reuse(self.plan.run_id, task.id, source)
        fields = {
            "duration_s": 0.0,
            "rows_in": row.rows_in,
            "rows_out": row.rows_out,
            "rows_rejected": row.rows_rejected,
            "bytes_out": row.bytes_out,
            "output_path": row.output_path,
            "output_schema": json.dumps(row.output_schema) if row.output_schema else None,
            "target": row.target,
            "details": json.dumps({"cached_from": source}),
            "cache_key": key,
            "fingerprint_parts": json.dumps(decision.fingerprint.recorded(upstream)),
            "output_hash": row.output_hash,
        }
        return CacheHit(source, output, fields)

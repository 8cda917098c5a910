"""The cache: which tasks of a run stand on an earlier output instead of running, and why each
of the others runs.

A task is cached when its cache is on (`cache:` on the task, else the pipeline's; a load only
by its own), `--force` was not given, and what its source reads can be told without reading it
(files by size and time; a database by the task's `cache: {key: <query>}`). It then reuses an
earlier output whose cache key equals its own: the task's fingerprint components
(engine.planning.fingerprint) with, in place of its upstream tasks' fingerprints, what their
outputs hold (each output's content hash, recorded when it was published). An output stands
while its folder is in the workspace; a load stands only on its own last success (what its
target holds now).

Keying on contents gives early cutoff: when an upstream task runs again (its input file was
touched) and writes the same rows, the tasks below it keep their outputs. Planning knows the
contents of the upstream outputs it reuses; a task below one that runs is decided when that one
has run (engine.execution.cache), from the same `CacheDecision`.

Every task says why it runs: `new`, `definition changed`, `parameter changed`, `code changed`
(its code, or a library version), `input changed` (files, key query, watermark), `upstream
changed`, `forced` (--force, cache off, a source that cannot be observed), or why it does not:
`cached (run <id>)`. An ephemeral sql task keeps nothing to stand on: it always runs, said
`ephemeral` (it binds its statement, which its readers inline), and what it hands them is told
by its key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.core.errors import error_context
from engine.planning.fingerprint import PARTS, Fingerprint
from engine.spec.definition import Definition
from engine.spec.model import CacheKey, PipelineSpec, TaskSpec
from engine.state.catalog import CatalogReader, TaskRunRow
from engine.tasks import kind_of
from engine.tasks.resolve import ResolvedTask
from transforms.identity import digest

__all__ = [
    "CacheDecision",
    "cache_enabled",
    "decide",
    "inlined",
    "kept_output",
    "observe_inputs",
    "output_identity",
]

_CHANGED = {
    "definition": "definition changed",
    "params": "parameter changed",
    "code": "code changed",
    "libraries": "code changed",
    "input": "input changed",
}


@dataclass(frozen=True)
class CacheDecision:
    """What the cache decided for one task of a plan."""

    fingerprint: Fingerprint
    allowed: bool
    """It may stand on an earlier output: cache on (or reused by a selection), no --force, and
    a source that can be observed."""
    key: str | None
    """Its cache key, when planning knows what all its upstream outputs hold."""
    reason: str
    """Why it runs, or `cached (run <id>)`."""
    detail: str | None = None
    reuse_run: str | None = None
    """The run whose output stands for it."""
    identity: str | None = None
    """What that output holds (its content hash; a load's cache key)."""

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "reason_detail": self.detail, "cache_key": self.key}


def cache_enabled(spec: PipelineSpec, task: TaskSpec) -> bool:
    """The task's own `cache`, else the pipeline's; a load's only by its own, since skipping it
    leaves its target as the last run left it."""
    if task.sql is not None and task.sql.incremental is not None:
        return False  # its output adds to the last one: never the same from the same inputs
    if task.cache is not None:
        return task.cache is not False
    return spec.cache and kind_of(task).produces_table


def observe_inputs(
    definition: Definition,
    resolved: Mapping[str, ResolvedTask],
    catalog: CatalogReader | None,
    enabled: Mapping[str, bool],
) -> dict[str, Any]:
    """What says, per extract, what its source holds now besides its files: the watermarks its
    loads committed (incremental reads start there), and the digest of the rows its cache key
    query returns (run only for tasks whose cache is on; the rows are never kept)."""
    from connectors.registry import connector_of

    spec = definition.spec
    seen: dict[str, Any] = {}
    for task_id, task in resolved.items():
        rendered, owner = task.spec, task.spec.connector
        if rendered.extract is None or owner is None:
            continue
        found: dict[str, Any] = {}
        if rendered.incremental is not None:  # no catalog yet: nothing committed
            marks = catalog.watermarks(spec.name, task_id) if catalog is not None else []
            found["watermarks"] = sorted((mark.sink_id, mark.value) for mark in marks)
        setting, name = rendered.cache, rendered.connection
        if isinstance(setting, CacheKey) and enabled[task_id] and name in spec.connections:
            connection = spec.connections[name]
            with error_context(pipeline=spec.name, task_id=task_id):
                server = connector_of(connection).resolve(name, connection, definition.base_dir)
                rows = owner.key_rows(rendered.extract, setting.key, server)
            found["key"] = digest([list(row) for row in rows])
        if found:
            seen[task_id] = found
    return seen


def inlined(task: TaskSpec) -> bool:
    """Whether the task keeps no output and hands its readers its query (ephemeral sql): what
    it hands over is told by its cache key, its definition's and its inputs'."""
    return task.materialize == "ephemeral" and kind_of(task).inlines


def output_identity(row: TaskRunRow, produces_table: bool) -> str | None:
    """What a task's recorded output holds, for the keys of the tasks below it."""
    return row.output_hash if produces_table else row.cache_key


def kept_output(
    catalog: CatalogReader, pipeline: str, task_id: str, key: str, produces_table: bool
) -> TaskRunRow | None:
    """An earlier output made with cache key `key` that still stands: a table's, in the
    workspace with its contents recorded; a load's, its last success."""
    if not produces_table:
        last = catalog.last_success(pipeline, task_id)
        return last if last is not None and last.cache_key == key else None
    for row in catalog.outputs_with_key(pipeline, task_id, key):
        if row.output_on_disk and row.output_hash is not None:
            return row
    return None


def decide(
    spec: PipelineSpec,
    order: Sequence[str],
    upstream: Mapping[str, tuple[str, ...]],
    fingerprints: Mapping[str, Fingerprint],
    catalog: CatalogReader | None,
    *,
    observable: Mapping[str, bool],
    force: bool = False,
    chosen: set[str] | None = None,
) -> dict[str, CacheDecision]:
    """Every task's decision, upstream first (`order` is topological). With a selection
    (`chosen`), the tasks outside it stand on an earlier output whenever one has their key,
    whatever their cache setting: that is what a selection reuses."""
    decisions: dict[str, CacheDecision] = {}
    for task_id in order:
        task = spec.task(task_id)
        produces = kind_of(task).produces_table
        enabled = cache_enabled(spec, task)
        selected_away = chosen is not None and task_id not in chosen
        allowed = not force and (selected_away or (enabled and observable[task_id]))
        fingerprint = fingerprints[task_id]
        seen = {dep: decisions[dep].identity for dep in upstream[task_id]}
        known = {dep: value for dep, value in seen.items() if value is not None}
        key = fingerprint.key(known) if len(known) == len(seen) else None
        if inlined(task):
            inline = "inlined into the statements of its readers"
            decisions[task_id] = CacheDecision(
                fingerprint, False, key, "ephemeral", inline, identity=key
            )
            continue
        hit = None
        if allowed and key is not None and catalog is not None:
            hit = kept_output(catalog, spec.name, task_id, key, produces)
        if hit is not None:
            decisions[task_id] = CacheDecision(
                fingerprint,
                allowed,
                key,
                f"cached (run {hit.output_run})",
                reuse_run=hit.output_run,
                identity=output_identity(hit, produces),
            )
            continue
        previous = catalog.last_success(spec.name, task_id) if catalog is not None else None
        reason: str
        detail: str | None
        if force:
            reason, detail = "forced", "--force"
        elif previous is None:
            reason, detail = "new", "no earlier output"
        elif task.sql is not None and task.sql.incremental is not None and not selected_away:
            reason, detail = "incremental", "it adds to its output every run"
        elif not enabled and not selected_away:
            reason, detail = "forced", "cache off"
        elif not observable[task_id] and not selected_away:
            reason, detail = "forced", "its source cannot tell what it would read: set cache.key"
        else:
            runs_first = [dep for dep, value in seen.items() if value is None]
            reason, detail = _changed(previous, fingerprint, key, known, runs_first)
        decisions[task_id] = CacheDecision(fingerprint, allowed, key, reason, detail)
    return decisions


def _changed(
    previous: TaskRunRow,
    fingerprint: Fingerprint,
    key: str | None,
    upstream: Mapping[str, str],
    runs_first: list[str],
) -> tuple[str, str | None]:
    """Which component differs from the task's last success, the first in PARTS order."""
    recorded = previous.fingerprint_parts
    if recorded is None:
        return "new", f"run {previous.run_id} recorded no fingerprint components"
    for part in PARTS:
        if recorded.get(part) != fingerprint.parts[part]:
            detail = "library versions" if part == "libraries" else f"since run {previous.run_id}"
            return _CHANGED[part], detail
    if key is None:
        return "upstream changed", (
            f"{', '.join(runs_first)} runs first; the same output there still reuses this one"
        )
    if recorded.get("upstream") != fingerprint.recorded(upstream)["upstream"]:
        return "upstream changed", f"since run {previous.run_id}"
    return "new", f"the output of run {previous.run_id} is no longer in the workspace"

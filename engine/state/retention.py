"""Retention: which task outputs the workspace keeps, and removing the rest.

Every run publishes each task's output under `.arrowline/workspace/<pipeline>/<task>/<run_id>/`;
without retention they pile up forever (a dozen quickstart runs held 652 MB for 49 MB of data).
A pipeline's `retention: {keep_runs: N}` says how many recent runs keep everything. Beyond those,
an output stays while something may still read it:

- the latest successful output of every task: `--select` reuses it, drift compares with it, the
  notebook and `arrowline show` read it;
- the output a `materialize: view` load last made a DuckDB view of, which reads its files;
- every output of a run that is PENDING or RUNNING, or that can still be resumed (FAILED,
  CANCELLED or INTERRUPTED, and newer than the pipeline's last success or holding an open dead
  letter that a requeue would resume), with the outputs of earlier runs it reuses.

Everything else in the pipeline's folder that belongs to one of its runs is removed: after each
run (holding the pipeline's run lock, so no run of it starts meanwhile) and by `arrowline gc`.
Each removal is written to the catalog first, so reading a removed output says "removed by gc"
rather than failing on a missing file. Folders that belong to no run in the catalog (another
catalog's, a copy) and unpublished staging folders are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.core.errors import StateError
from engine.core.states import RESUMABLE
from engine.state.catalog import Catalog, CatalogReader, TaskRunRow
from engine.state.workspace import Workspace

__all__ = [
    "Collection",
    "Removal",
    "collect",
    "format_bytes",
    "missing_output",
    "plan_collection",
    "recorded_keep_runs",
]


@dataclass(frozen=True)
class Removal:
    """One published output that retention removes."""

    task_id: str
    run_id: str
    path: Path
    bytes: int


@dataclass(frozen=True)
class Collection:
    """What retention keeps and removes in one pipeline's workspace, decided before anything
    is removed (so `--dry-run` shows exactly what a collection would do)."""

    pipeline: str
    keep_runs: int
    removals: tuple[Removal, ...]
    kept: int
    """Published outputs of the pipeline's runs that stay."""
    resumable: tuple[str, ...]
    """Runs kept whole because they can still be resumed."""
    workspace: Workspace = field(repr=False, compare=False)
    """Where the outputs are (what `collect` removes them from)."""

    @property
    def bytes(self) -> int:
        return sum(removal.bytes for removal in self.removals)

    @property
    def reason(self) -> str:
        return f"gc: keep_runs {self.keep_runs}"


def _resumable(catalog: CatalogReader, pipeline: str, runs: list[tuple[str, str]]) -> set[str]:
    """Ended runs a resume or a requeue may still continue: those since the last success (the
    next `--resume last`), and those an open dead letter points at."""
    lettered = catalog.lettered_runs(pipeline)
    resumable: set[str] = set()
    superseded = False
    for run_id, state in runs:  # newest first
        if state == "SUCCESS":
            superseded = True
        elif state in RESUMABLE and (not superseded or run_id in lettered):
            resumable.add(run_id)
    return resumable


def _kept(
    catalog: CatalogReader, pipeline: str, protected: set[str], latest: dict[str, TaskRunRow]
) -> set[tuple[str, str]]:
    """(task_id, run_id) outputs to keep: every output of the protected runs and what they
    reuse from earlier runs, and the latest successful output of each task."""
    # a cache hit's row points at the earlier run whose folder holds the output
    kept = {(task_id, row.output_run) for task_id, row in latest.items()}
    kept |= catalog.viewed_outputs(pipeline)  # a DuckDB view reads these files
    for run_id, task_id, from_run_id in catalog.reuses_in(pipeline):
        if run_id in protected:
            kept.add((task_id, from_run_id))
    return kept


def plan_collection(
    catalog: CatalogReader, workspace: Workspace, pipeline: str, keep_runs: int
) -> Collection:
    """Decide what to remove from `pipeline`'s outputs, keeping the last `keep_runs` runs."""
    runs = catalog.run_states(pipeline)
    resumable = _resumable(catalog, pipeline, runs)
    protected = {run_id for run_id, _ in runs[:keep_runs]} | resumable
    protected |= {run_id for run_id, state in runs if state in ("PENDING", "RUNNING")}
    kept = _kept(catalog, pipeline, protected, catalog.latest_outputs(pipeline))
    known = {run_id for run_id, _ in runs}
    removals = []
    staying = 0
    for output in workspace.outputs(pipeline):
        if output.run_id not in known:
            continue  # not a run of this catalog: not ours to judge
        if output.run_id in protected or (output.task_id, output.run_id) in kept:
            staying += 1
            continue
        size = workspace.output_bytes(output.path)
        removals.append(Removal(output.task_id, output.run_id, output.path, size))
    return Collection(
        pipeline,
        keep_runs,
        tuple(removals),
        staying,
        tuple(run_id for run_id, _ in runs if run_id in resumable),
        workspace,
    )


def collect(catalog: Catalog, collection: Collection) -> None:
    """Remove what `collection` lists: noted in the catalog first, then deleted."""
    if not collection.removals:
        return
    catalog.record_removed_outputs(
        collection.pipeline,
        [(r.run_id, r.task_id, r.bytes) for r in collection.removals],
        collection.reason,
    )
    for removal in collection.removals:
        collection.workspace.remove_output(removal.path)


def recorded_keep_runs(catalog: CatalogReader, pipeline: str, default: int) -> int:
    """The `retention.keep_runs` the pipeline's latest run had (its definition is stored with
    it): what `arrowline gc PIPELINE` applies when given a name rather than a file. `default`
    (the pipeline model's) when the run recorded none: a pipeline that never set one, or a run
    from before retention existed."""
    import yaml

    definition = catalog.latest_definition(pipeline)
    try:
        stored = yaml.safe_load(definition) if definition is not None else None
    except yaml.YAMLError:  # not a definition we wrote
        return default
    retention = stored.get("retention") if isinstance(stored, dict) else None
    keep = retention.get("keep_runs") if isinstance(retention, dict) else None
    # checked when the run loaded it; anything else was not written by arrowline
    return keep if isinstance(keep, int) and not isinstance(keep, bool) and keep >= 0 else default


def missing_output(catalog: CatalogReader, row: TaskRunRow) -> StateError:
    """The error for a published output that is not on disk: removed by gc (when and why), or
    gone some other way."""
    removed = catalog.removed_output(row.run_id, row.task_id)
    if removed is not None:
        return StateError(
            f"the output of task {row.task_id!r} from run {row.run_id} was removed by gc at "
            f"{removed.removed_at[:19].replace('T', ' ')} ({removed.reason})",
            hint="gc keeps the latest successful output of each task (the default when no run "
            "is named) and those of the last `retention.keep_runs` runs; run the task again "
            "to get this one back",
        )
    if row.output_path is not None and row.output_path.startswith("s3://"):
        return StateError(
            f"the output of task {row.task_id!r} from run {row.run_id} is not in its object "
            f"store ({row.output_path}: no manifest there)",
            hint="it was deleted from the bucket by hand or by a lifecycle rule, or this host "
            "reads the bucket at another endpoint than the one that wrote it",
        )
    return StateError(
        f"the output of task {row.task_id!r} from run {row.run_id} is not on this disk "
        f"({row.output_path})",
        hint="it was deleted by hand, or written by another host sharing the catalog",
    )


def format_bytes(size: int) -> str:
    """`512 B`, `12.3 kB`, `652.0 MB`: decimal units, as `du --si` and file managers show."""
    if size < 1000:
        return f"{size} B"
    value = size / 1000
    for unit in ("kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"

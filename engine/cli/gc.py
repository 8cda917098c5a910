"""`arrowline gc`: remove the task outputs a pipeline's retention no longer keeps."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table
from rich.text import Text

from engine.cli.common import PIPELINE, errors, find_project, format_option, out, project_option
from engine.core.errors import StateError
from engine.state.catalog import Catalog, CatalogReader
from engine.state.retention import Collection, format_bytes, recorded_keep_runs

if TYPE_CHECKING:
    from engine.api.project import Project

__all__ = ["COMMANDS"]


@dataclass(frozen=True)
class _Outcome:
    collection: Collection | None
    pipeline: str
    skipped: str | None = None
    """Why nothing was collected (the pipeline is running)."""


def _files_workspaces(
    project: Project, names: list[str], workspaces: dict[str, str | None]
) -> None:
    """A pipeline given by name keeps its outputs where its file in this project says (the
    user's own file, never the catalog: it is no authority on what this host may delete); a
    file that cannot be read now leaves the environment's or the project's workspace."""
    from loguru import logger

    from engine.core.errors import ArrowlineError
    from engine.spec.settings import use_workspace_connection
    from engine.tasks.checks import load_definition

    files = project.pipelines()
    for name in names:
        if name not in files:
            continue
        try:
            definition = load_definition(files[name])
            spec = definition.spec
            use_workspace_connection(spec.workspace, spec.connections, definition.base_dir)
        except ArrowlineError as exc:
            logger.warning("pipeline {}: its file cannot say its workspace: {}", name, exc.message)
            continue
        workspaces[name] = spec.workspace


def _targets(
    project: Project,
    catalog: CatalogReader,
    given: str | None,
    keep_runs: int | None,
    workspaces: dict[str, str | None],
) -> list[tuple[str, int]]:
    """(pipeline, runs to keep) for each pipeline to collect: the one named by a file or a
    name, or every pipeline the catalog has runs of. Runs to keep: --keep-runs, else what the
    file says, else what the pipeline's latest run recorded. `workspaces` is given the
    `workspace:` a file sets."""
    import re

    from engine.api.project import looks_like_file
    from engine.core.errors import ParameterError
    from engine.core.problems import did_you_mean
    from engine.spec.model import NAME_PATTERN, RetentionSpec
    from engine.spec.settings import use_workspace_connection

    known = catalog.pipelines()
    if given is None:
        names, from_file = known, None
    elif looks_like_file(given):
        definition = project.definition(given)
        spec = definition.spec
        names, from_file = [spec.name], spec.retention.keep_runs
        workspaces[spec.name] = spec.workspace
        use_workspace_connection(spec.workspace, spec.connections, definition.base_dir)
    elif re.fullmatch(NAME_PATTERN, given):
        # A name is the catalog's: the pipeline's file may be gone, its outputs are not.
        names, from_file = [given], None
    else:
        raise ParameterError(
            f"{given!r} is neither a pipeline file (.yaml) nor a pipeline name "
            "(letters, digits and _)"
        )
    for name in names:
        if name not in known:
            raise StateError(
                f"the catalog has no runs of pipeline {name!r}.{did_you_mean(name, known)}",
                hint=f"pipelines with runs: {', '.join(known) or 'none'}",
            )
    _files_workspaces(project, [n for n in names if n not in workspaces], workspaces)
    if keep_runs is not None:
        return [(name, keep_runs) for name in names]
    if from_file is not None:
        return [(name, from_file) for name in names]
    default = RetentionSpec().keep_runs
    return [(name, recorded_keep_runs(catalog, name, default)) for name in names]


def _collect(
    project: Project,
    catalog: CatalogReader,
    name: str,
    keep: int,
    dry_run: bool,
    workspaces: dict[str, str | None],
) -> _Outcome:
    """A pipeline running now is skipped: its run applies retention when it ends. Its outputs
    are in the workspace its file names, else the environment's ($ARROWLINE_WORKSPACE), else
    the project's: never one read back from the catalog, which is no authority on what this
    host may delete."""
    from engine.execution.launch import collect_outputs
    from engine.state.locks import ConcurrentRun

    layout = project.layout.with_workspace(workspaces.get(name))
    try:
        collection = collect_outputs(layout, catalog, name, keep, dry_run=dry_run)
    except ConcurrentRun as exc:
        return _Outcome(None, name, skipped=exc.message)
    return _Outcome(collection, name)


def _to_dict(outcome: _Outcome, project: Path, dry_run: bool) -> dict[str, object]:
    collection = outcome.collection
    if collection is None:
        return {"pipeline": outcome.pipeline, "skipped": outcome.skipped}
    return {
        "pipeline": collection.pipeline,
        "keep_runs": collection.keep_runs,
        "dry_run": dry_run,
        "removed": [
            {
                "task": r.task_id,
                "run_id": r.run_id,
                "path": _shown(collection.workspace.locator(r.path), project),
                "bytes": r.bytes,
            }
            for r in collection.removals
        ],
        "bytes": collection.bytes,
        "kept": collection.kept,
        "resumable_runs": list(collection.resumable),
    }


def _shown(locator: str, project: Path) -> str:
    """An output's place: relative to the project when it is in it, else as recorded."""
    path = Path(locator)
    return str(path.relative_to(project)) if path.is_relative_to(project) else locator


def _print(outcome: _Outcome, dry_run: bool) -> None:
    collection = outcome.collection
    if collection is None:
        out.print(Text(f"{outcome.pipeline}: skipped, {outcome.skipped}", style="yellow"))
        return
    verb = "would remove" if dry_run else "removed"
    if collection.removals:
        table = Table(title=f"{collection.pipeline}: {verb}", title_justify="left")
        for column, justify in (("task", "left"), ("run", "left"), ("size", "right")):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for removal in collection.removals:
            table.add_row(removal.task_id, removal.run_id, format_bytes(removal.bytes))
        out.print(table)
    resumable, removed = len(collection.resumable), len(collection.removals)
    runs = collection.keep_runs
    kept = (
        f"kept {collection.kept} (the last {runs} run{'s' * (runs != 1)}, the latest output of "
        "each task"
        + (f", {resumable} resumable run{'s' * (resumable != 1)}" if resumable else "")
        + ")"
    )
    out.print(
        Text.assemble(
            (f"{collection.pipeline}: ", "bold"),
            f"{verb} {removed} output{'s' * (removed != 1)}, "
            f"{format_bytes(collection.bytes)} {'would be ' if dry_run else ''}freed; {kept}",
        )
    )


@click.command()
@click.argument("pipeline", required=False, type=PIPELINE, metavar="[PIPELINE]")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option(
    "--keep-runs",
    type=click.IntRange(min=0, max=100_000),
    default=None,
    help="Keep every output of this many most recent runs (default: the pipeline's "
    "retention.keep_runs, as its file or its latest run says).",
)
@project_option
@format_option
def gc(
    pipeline: str | None,
    dry_run: bool,
    keep_runs: int | None,
    project_dir: Path | None,
    fmt: str,
) -> None:
    """Remove task outputs that retention no longer keeps, for PIPELINE (a name or a file) or
    every pipeline, and say what went and the bytes freed. Always kept: the latest successful
    output of each task, the outputs of the last N runs, and those a running or resumable run
    needs. Runs apply this by themselves when they end."""
    with errors():
        project = find_project(project_dir)
        location = project.layout.catalog
        if not location.exists():
            raise StateError(
                f"no arrowline catalog at {location.describe()}",
                hint="pass the folder you ran `arrowline run` in with --project-dir",
            )
        with (CatalogReader if dry_run else Catalog)(location) as catalog:
            workspaces: dict[str, str | None] = {}
            targets = _targets(project, catalog, pipeline, keep_runs, workspaces)
            outcomes = [_collect(project, catalog, n, k, dry_run, workspaces) for n, k in targets]
    if fmt == "json":
        out.print_json(json.dumps([_to_dict(o, project.path, dry_run) for o in outcomes]))
        return
    if not outcomes:
        out.print("no runs yet: nothing to collect")
    for outcome in outcomes:
        _print(outcome, dry_run)


COMMANDS = (gc,)

"""`arrowline lineage`: where a column comes from, or what depends on it."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.text import Text

from engine.cli.common import (
    err,
    errors,
    fail,
    find_project,
    out,
    pipeline_argument,
    project_option,
    select_option,
    target_option,
)

__all__ = ["COMMANDS"]


@click.command()
@pipeline_argument
@click.argument("column")
@click.option(
    "--upstream/--downstream",
    "upstream",
    default=True,
    help="Where COLUMN comes from (the default), or what depends on it.",
)
@click.option("--kind", type=click.Choice(["value", "filter"]), default=None)
@click.option(
    "--run",
    "run_id",
    default=None,
    help="The lineage recorded by this run: id, prefix or 'last' (default: as defined now).",
)
@select_option(
    "Walk only these tasks' columns: a branch ends before a column of a task left out, in "
    "every --format (JSON adds `selected`); TASK of TASK.COLUMN must be selected. Read against "
    "the pipeline as defined now, as `plan` reads it, also with --run."
)
@target_option
@project_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "mermaid", "dot"]),
    default="text",
    show_default=True,
)
def lineage(
    pipeline: str,
    column: str,
    upstream: bool,
    kind: str | None,
    run_id: str | None,
    select: tuple[str, ...],
    exclude: tuple[str, ...],
    project_dir: Path | None,
    fmt: str,
) -> None:
    """Where COLUMN (task.column) comes from, or what depends on it, across the pipeline.

    By default, the pipeline as defined now, over the output schemas `plan` computes (or the
    last run's, for sources not known before running); with --run, what that run recorded.
    --select and --exclude keep the walk inside the tasks they name: `-s path:models/marts`
    stops where the marts read staging, `--exclude tag:pii` stops before those tasks."""
    from engine.api.pictures import lineage_within, selected_tasks
    from lineage.graph import render_graph

    downstream = not upstream
    if "." not in column:
        fail(f"give the column as TASK.COLUMN, not {column!r}")
    with errors(), find_project(project_dir) as project:
        definition = project.definition(pipeline)
        chosen = selected_tasks(project, definition, select, exclude)
        report = project.lineage(definition, column, downstream=downstream, kind=kind, run=run_id)
        if chosen is not None:
            report = lineage_within(report, chosen)
    if fmt == "json":
        out.print_json(json.dumps(report))
        return
    if fmt in ("mermaid", "dot"):
        click.echo(render_graph(report, fmt), nl=False)
        return
    out.print(Text(column, style="bold"))

    def show(branch: dict[str, object], depth: int) -> None:
        for name, below in branch.items():
            out.print("  " * depth + ("└─ " if depth else "") + name)
            if isinstance(below, dict):
                show(below, depth + 1)

    show(report["tree"], 1)
    if not report["tree"]:
        among = " among the selected tasks" if chosen is not None else ""
        none = "dependents" if downstream else "sources"
        out.print(Text(f"  (no {none}{among})", style="dim"))
    for name, reasons in report["unresolved"].items():
        for reason in reasons:
            err.print(Text(f"unresolved in {name}: {reason}", style="yellow"))


COMMANDS = (lineage,)

"""`arrowline status | metrics`: a project's pipelines at a glance, and its Prometheus metrics."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from engine.cli.common import (
    err,
    errors,
    find_project,
    format_option,
    one_project_dir,
    out,
    project_argument,
    project_option,
)

__all__ = ["COMMANDS"]


@click.command()
@project_argument
@project_option
@format_option
def status(folder: Path | None, project_dir: Path | None, fmt: str) -> None:
    """At a glance: what is scheduled next, what is running, what is failing."""
    with errors():
        project = find_project(one_project_dir(folder, project_dir))
        rows = project.status()
    if fmt == "json":
        out.print_json(json.dumps(rows))
        return
    with errors():
        leader = "a scheduler leads" if project.scheduler_running() else "no scheduler running"
    table = Table(
        title=f"arrowline status: {project.path}",
        title_justify="left",
        caption=f"catalog {project.layout.catalog.describe()}; {leader}",
        caption_justify="left",
    )
    for column in ("pipeline", "next run (UTC)", "running", "last run", "failing"):
        table.add_column(column)
    for row in rows:
        if row.get("problem"):
            # whole and wrapped, long paths folded rather than cut
            problem = Text(row["problem"], style="red", overflow="fold")
            table.add_row(row["pipeline"], "", "", "", problem)
            continue
        if row["paused"]:
            next_run = Text(f"paused: {row['pause_reason']}", style="yellow")
        elif row.get("next_run"):
            next_run = Text(row["next_run"][:19].replace("T", " "))
        else:
            next_run = Text("on trigger" if row.get("triggers") else "")
        last = row.get("last_run")
        last_text = Text(
            f"{last['state']} {last['ended_at'][:19]}" if last else "never",
            style="green" if last and last["state"] == "SUCCESS" else "red" if last else "dim",
        )
        failing = row.get("failing")
        failing_text = (
            Text(f"{failing['runs']} runs since {failing['since'][:19]}", style="red")
            if failing
            else Text("")
        )
        table.add_row(row["pipeline"], next_run, ", ".join(row["running"]), last_text, failing_text)
    out.print(table)


@click.command()
@project_argument
@project_option
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file atomically (for node-exporter's textfile collector).",
)
def metrics(folder: Path | None, project_dir: Path | None, output: Path | None) -> None:
    """The catalog's metrics in Prometheus' text format."""
    with errors():
        text = find_project(one_project_dir(folder, project_dir)).metrics()
    if output is None:
        sys.stdout.buffer.write(text)
        return
    temporary = output.with_name(f".{output.name}.tmp")
    temporary.write_bytes(text)
    temporary.replace(output)
    err.print(f"wrote {output}")


COMMANDS = (status, metrics)

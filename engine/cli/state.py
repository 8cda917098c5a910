"""`arrowline state show | set | reset`: the watermarks of incremental extracts, by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from engine.cli.common import (
    EXIT_FAILED,
    errors,
    find_project,
    out,
    pipeline_argument,
    project_option,
)

__all__ = ["COMMANDS"]


@click.group()
def state() -> None:
    """Watermarks of incremental extracts: show, set or reset them (every change is audited)."""


@state.command("show")
@pipeline_argument
@click.argument("task", required=False)
@project_option
@click.option("--audit", is_flag=True, help="Also list every recorded change.")
def state_show(pipeline: str, task: str | None, project_dir: Path | None, audit: bool) -> None:
    """Show each incremental extract's watermark, in the catalog and in each sink."""
    with errors(), find_project(project_dir) as project:
        definition = project.definition(pipeline)
        rows = project.watermarks(definition, task)
        table = Table()
        for column in ("extract", "load (sink)", "kept in", "watermark", "run", "note"):
            table.add_column(column)
        for row in rows:
            table.add_row(
                row.task_id,
                row.sink_id or "(none)",
                row.where,
                row.value or "(none: full load next)",
                row.run_id or "",
                Text(row.note, style="yellow"),
            )
        out.print(table)
        if not audit:
            return
        for entry in project.catalog.watermark_audit(definition.name, task):
            out.print(
                Text(
                    f"{entry.at[:19]}  {entry.action:<8} {entry.task_id} -> "
                    f"{entry.sink_id or '(none)'} by {entry.actor}: "
                    f"{entry.old_value} => {entry.new_value}",
                    style="dim",
                )
            )


@state.command("set")
@pipeline_argument
@click.argument("task")
@click.option("--cursor", required=True, help="The new cursor value (ISO timestamp, date, number).")
@click.option("--key", "keys", multiple=True, help="Tie-break key values, in key order.")
@click.option(
    "--type",
    "kind",
    type=click.Choice(["auto", "int", "timestamp", "date", "decimal", "string"]),
    default="auto",
    show_default=True,
    help="How to read --cursor.",
)
@project_option
def state_set(
    pipeline: str,
    task: str,
    cursor: str,
    keys: tuple[str, ...],
    kind: str,
    project_dir: Path | None,
) -> None:
    """Set an extract's watermark in every sink and the catalog."""
    from engine.api.state import parse_value
    from engine.core.errors import ParameterError
    from engine.core.watermark import Watermark

    with errors(), find_project(project_dir) as project:
        definition = project.definition(pipeline)
        try:
            value = Watermark(parse_value(cursor, kind), tuple(parse_value(k) for k in keys))
        except ValueError as exc:
            raise ParameterError(f"--cursor {cursor!r}: {exc}") from None
        changed = project.set_watermark(definition, task, value)
    for line in changed:
        out.print(f"set {line}: {value.describe()}")


@state.command("reset")
@pipeline_argument
@click.argument("task", required=False)
@click.option("--yes", is_flag=True, help="Reset a change-capture extract without asking.")
@project_option
def state_reset(pipeline: str, task: str | None, yes: bool, project_dir: Path | None) -> None:
    """Forget watermarks (one extract's, or all): the next run reads everything. A
    change-capture extract then also drops its replication slot and reads the table again
    from a new one: asked first, or --yes."""
    from engine.api.state import change_streams
    from engine.core.errors import ParameterError

    with errors(), find_project(project_dir) as project:
        streams = change_streams(project.definition(pipeline), task)
        if streams and not yes:
            said = (
                f"{', '.join(streams)} read a change stream: their next run drops the "
                "replication slot and reads the table again (a snapshot that replaces what "
                "their loads hold)"
            )
            if not sys.stdin.isatty():
                raise ParameterError(said, hint="pass --yes to reset them")
            if not click.confirm(said + ". Reset?", default=False, err=True):
                raise SystemExit(EXIT_FAILED)
        changed = project.reset_watermarks(pipeline, task)
    for line in changed:
        out.print(f"reset {line}")


COMMANDS = (state,)

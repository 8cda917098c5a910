"""`arrowline cdc status`: where each change-capture slot stands on its server."""

from __future__ import annotations

import json
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
def cdc() -> None:
    """Change data capture: the replication slots of `cdc` extracts."""


@cdc.command("status")
@pipeline_argument
@click.argument("task", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@project_option
def cdc_status(pipeline: str, task: str | None, as_json: bool, project_dir: Path | None) -> None:
    """Each CDC extract's slot: its confirmed position, the position the loads committed, how
    far the server is ahead (lag: WAL bytes, and at most how long ago the last change the loads
    hold was complete) and how much WAL the slot keeps there. Exits 1 when a slot is missing or
    lost, or keeps more than its max_retained_wal."""
    from engine.core.durations import format_duration
    from engine.core.sizes import format_bytes

    def lag(row: dict[str, object]) -> str:
        if "lag_bytes" not in row:
            return ""
        said = format_bytes(int(str(row["lag_bytes"])))
        if "lag_seconds" in row:
            said += f", at most {format_duration(float(str(row['lag_seconds'])))} behind"
        return said

    with errors(), find_project(project_dir) as project:
        rows = project.source_status(pipeline, task)
    if as_json:
        out.print_json(json.dumps(rows))
    else:
        table = Table()
        for column in ("extract", "slot", "state", "confirmed", "committed", "lag", "WAL kept"):
            table.add_column(column)
        for row in rows:
            state = row["state"] + (f" ({row['alert']})" if row.get("alert") else "")
            table.add_row(
                row["task"],
                row["slot"],
                Text(state, style="" if row["state"] in ("idle", "active") else "red"),
                row.get("confirmed", ""),
                row.get("committed") or "(none: a snapshot next)",
                lag(row),
                format_bytes(row["retained_bytes"]) if "retained_bytes" in row else "",
            )
        out.print(table if rows else "no extract of this pipeline reads a change stream")
    if any(row["state"] in ("missing", "lost") or row.get("alert") for row in rows):
        raise SystemExit(EXIT_FAILED)


COMMANDS = (cdc,)

"""`arrowline table optimize | vacuum | expire-snapshots`: keep a lakehouse table healthy."""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli.common import errors, find_project, out, pipeline_argument, project_option

__all__ = ["COMMANDS"]


@click.command("table")
@click.argument("action", type=click.Choice(["optimize", "vacuum", "expire-snapshots"]))
@pipeline_argument
@click.argument("task")
@click.option(
    "--retention",
    default=None,
    help="vacuum: remove files unreferenced for longer than this (e.g. 7d, 12h; default: the "
    "table's own, 7 days for Delta, 3 for Iceberg). expire-snapshots on Iceberg: forget "
    "snapshots older than this (default 5d); a Delta table follows its own "
    "delta.logRetentionDuration.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="vacuum, and expire-snapshots of an Iceberg table: say what would be removed; "
    "remove nothing.",
)
@click.option(
    "--target-size", type=click.IntRange(min=1), default=None, help="optimize: MB per file."
)
@click.option(
    "--unsafe-retention",
    is_flag=True,
    help="Allow a retention shorter than the table's minimum (vacuum: 7 days for Delta, 3 for "
    "Iceberg; expire-snapshots of Iceberg: 5): a reader of an older version may find it gone.",
)
@project_option
def table(
    action: str,
    pipeline: str,
    task: str,
    retention: str | None,
    dry_run: bool,
    target_size: int | None,
    unsafe_retention: bool,
    project_dir: Path | None,
) -> None:
    """Maintain the table TASK reads or writes (a Delta or Iceberg load or extract): optimize
    compacts small files, vacuum removes files no version within the retention needs (a
    killed load leaves some), expire-snapshots forgets old versions. Watermarks kept in the
    table's history survive all three."""
    from connectors.base import Maintenance
    from engine.api.tables import maintain_table
    from engine.core.durations import parse_duration
    from engine.core.errors import ParameterError

    with errors(), find_project(project_dir) as project:
        try:
            kept = parse_duration(retention) if retention is not None else None
        except ValueError as exc:
            raise ParameterError(f"--retention {retention!r}: {exc}") from None
        job = Maintenance(
            action,
            kept,
            dry_run,
            target_size * 1024 * 1024 if target_size else None,
            unsafe_retention,
        )
        done = maintain_table(project.definition(pipeline), task, job)
    figures = ", ".join(f"{key.replace('_', ' ')}: {value}" for key, value in done.items())
    out.print(f"{action} {task}: {figures}")


COMMANDS = (table,)

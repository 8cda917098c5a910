"""`arrowline catalog ...`: where a project's catalog lives, and copying it elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from engine.cli.common import errors, find_project, format_option, out, project_option
from engine.state.db import CATALOG_ENV

__all__ = ["COMMANDS"]


@click.group()
def catalog() -> None:
    """The catalog: embedded SQLite, or PostgreSQL shared by several hosts ($ARROWLINE_CATALOG)."""


@catalog.command("copy")
@click.argument("target")
@click.option(
    "--from",
    "source",
    default=None,
    help=f"The catalog to copy (a file or postgresql:// URI; default: the project's, which "
    f"${CATALOG_ENV} names, else .arrowline/catalog.db).",
)
@project_option
@format_option
def catalog_copy(target: str, source: str | None, project_dir: Path | None, fmt: str) -> None:
    """Copy every run, watermark, dead letter and schedule into TARGET, an empty catalog: a file
    path or a postgresql://...?schema=... URI. Moving to scheduler replicas:
    `arrowline catalog copy postgresql://db/ops?schema=arrowline`, then set $ARROWLINE_CATALOG."""
    from engine.state.copy import copy_catalog

    with errors():
        layout = find_project(project_dir).layout
        report = copy_catalog(layout.catalog_at(source), layout.catalog_at(target))
    if fmt == "json":
        out.print_json(json.dumps({"from": report.source, "to": report.target, **report.rows}))
        return
    table = Table(title=f"copied {report.source} -> {report.target}", title_justify="left")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, count in report.rows.items():
        table.add_row(name, f"{count:,}")
    out.print(table)


COMMANDS = (catalog,)

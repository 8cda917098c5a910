"""The `arrowline` command: this root group lists its subgroups, one module per group.

    common      the options every command shares, the consoles, errors -> exit codes
    run         validate, plan, check, render, run
    runs        runs [list | compare], show
    state       state show | set | reset
    lineage     lineage
    dlq         dlq list | show | requeue | resolve
    quarantine  quarantine show | replay
    schedule    scheduler, schedule list | pause | resume, trigger, backfill
    status      status, metrics
    catalog     catalog copy
    gc          gc
    ui          ui, graph
    tools       bench, schema

A command module exports its commands as COMMANDS and never imports this root, so they depend
on `common` and the application (engine.api), never on each other's helpers. Every command
calls the one `Project` (engine.api.project) and prints what it returns.
"""

from __future__ import annotations

import click

from engine.cli import (
    catalog,
    cdc,
    dlq,
    gc,
    lineage,
    quarantine,
    run,
    runs,
    schedule,
    state,
    status,
    tables,
    tools,
    ui,
)

__all__ = ["main"]

_GROUPS = (
    run,
    runs,
    state,
    cdc,
    tables,
    lineage,
    dlq,
    quarantine,
    schedule,
    status,
    catalog,
    gc,
    ui,
    tools,
)


@click.group(
    commands=[command for group in _GROUPS for command in group.COMMANDS],
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="arrowline", prog_name="arrowline")
def main() -> None:
    """arrowline: Arrow-native batch pipelines (DuckDB SQL, Polars UDFs, Pandera checks)."""

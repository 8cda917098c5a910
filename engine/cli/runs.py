"""`arrowline runs | show`: what ran, and what it produced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table
from rich.text import Text

from engine.cli.common import (
    err,
    errors,
    find_project,
    format_option,
    open_project,
    out,
    pipeline_option,
    project_option,
)
from engine.cli.frames import print_quarantine, to_csv

if TYPE_CHECKING:
    from engine.state.catalog import RunRow
    from engine.state.layout import ProjectLayout

__all__ = ["COMMANDS"]


@click.command()
@click.argument("run_id", required=False)
@pipeline_option("Only runs of this pipeline (name or file).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--transitions", is_flag=True, help="With RUN_ID: every state transition too.")
@project_option
@format_option
def runs(
    run_id: str | None,
    pipeline: str | None,
    limit: int,
    transitions: bool,
    project_dir: Path | None,
    fmt: str,
) -> None:
    """List runs, or show one run's tasks (RUN_ID may be a prefix or 'last')."""
    from dataclasses import asdict

    from engine.cli.progress import STYLES
    from engine.core.durations import format_duration

    with errors(), find_project(project_dir) as project:
        catalog = project.catalog
        layout = project.layout
        if run_id is None:
            name = project.pipeline_name(pipeline) if pipeline else None
            rows = catalog.runs(name, limit)
            if fmt == "json":
                out.print_json(json.dumps([asdict(r) for r in rows], default=str))
                return
            table = Table()
            for column in ("run", "pipeline", "state", "started", "duration", "error"):
                table.add_column(column)
            for r in rows:
                state = Text(r.state.value, style=STYLES.get(r.state.value, ""))
                if _stale(layout, r):
                    state = Text(f"{r.state.value} (stale: process gone)", style="red")
                table.add_row(
                    r.run_id,
                    r.pipeline,
                    state,
                    (r.started_at or r.created_at)[:19].replace("T", " "),
                    format_duration(r.duration_s) if r.duration_s is not None else "",
                    (r.error or "")[:60],
                )
            out.print(table)
            return
        the_run = catalog.run(run_id)
        tasks = catalog.task_runs(the_run.run_id)
        reused = catalog.reused(the_run.run_id)
        history = catalog.transitions(the_run.run_id) if transitions else []
    if fmt == "json":
        payload = {
            "run": asdict(the_run),
            "tasks": [asdict(t) for t in tasks],
            "reused": reused,
            "transitions": [asdict(t) for t in history],
        }
        out.print_json(json.dumps(payload, default=str))
        return
    stale = " (stale: its process is gone; the next run or --resume marks it INTERRUPTED)"
    out.print(
        Text.assemble(
            (f"run {the_run.run_id}", "bold"),
            f"  {the_run.pipeline}  ",
            (the_run.state.value, STYLES.get(the_run.state.value, "")),
            (stale if _stale(layout, the_run) else "", "red"),
            f"  version {the_run.pipeline_version}  params {json.dumps(the_run.params)}",
            f"  resumed {the_run.resumes}x" if the_run.resumes else "",
        )
    )
    if the_run.error and the_run.state.value != "SUCCESS":
        out.print(Text(the_run.error, style="red"))
    table = Table()
    for column in (
        "task",
        "kind",
        "state",
        "attempts",
        "rows in",
        "rows out",
        "rejected",
        "time",
        "error",
    ):
        table.add_column(column)
    ran = {t.task_id for t in tasks}  # a task the cache settled while the run ran has a row
    for task_id, source in reused.items():
        if task_id in ran:
            continue
        table.add_row(
            task_id, "", Text(f"reused from {source}", style="green dim"), "", "", "", "", "", ""
        )
    for t in tasks:
        error = ""
        if t.error:
            kind = (
                f"{t.error_kind}, {'transient' if t.error_transient else 'terminal'}: "
                if t.error_kind
                else ""
            )
            error = kind + t.error.splitlines()[0]
        table.add_row(
            t.task_id,
            t.kind,
            Text(t.state.value, style=STYLES.get(t.state.value, "")),
            str(t.attempts),
            _n(t.rows_in),
            _n(t.rows_out),
            _n(t.rows_rejected),
            format_duration(t.duration_s) if t.duration_s else "",
            error,
        )
    out.print(table)
    for t in tasks:
        for note in _details(t.details or {}):
            out.print(Text.assemble((f"  {t.task_id}: ", "bold"), note))
    for row in history:
        who = row.task_id or "(run)"
        out.print(
            Text(
                f"{row.at[11:23]}  {who:<24} {row.from_state or '':<9} → "
                f"{row.to_state:<9} {row.event}",
                style="dim",
            )
        )


def _stale(layout: ProjectLayout, run: RunRow) -> bool:
    """A run the catalog calls PENDING or RUNNING whose pipeline lock nobody holds."""
    from engine.state.locks import lock_is_held

    if run.state.value not in ("PENDING", "RUNNING"):
        return False
    return not lock_is_held(layout.state_dir, run.pipeline, layout.catalog)


def _details(details: dict[str, object]) -> list[str]:
    """The facts worth a line under the table: schema changes, watermarks, deleted rows."""
    notes = []
    for change in details.get("schema_changes") or []:  # type: ignore[attr-defined]
        before, after = change.get("before"), change.get("after")
        shown = {
            "added": f"added ({after})",
            "dropped": f"dropped ({before})",
            "renamed": f"renamed from {before!r}",
            "widened": f"widened {before} -> {after}",
            "narrowed": f"NARROWED {before} -> {after}",
            "changed": f"type changed {before} -> {after}",
            "nullability": f"{before} -> {after}",
        }.get(change["change"], change["change"])
        notes.append(f"schema change: column {change['column']!r} {shown}")
    if "watermark_to" in details:
        start = details.get("watermark_from") or "nothing (full load)"
        notes.append(
            f"read rows after {start}; new watermark {details['watermark_to'] or 'unchanged'}"
        )
    if details.get("deleted"):
        notes.append(f"deleted {details['deleted']} rows missing from the input")
    if details.get("created"):
        notes.append("created the target table")
    return notes


def _n(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


@click.command()
@click.argument("task")
@click.option("--run", "run_id", default=None, help="Output of this run (id, prefix or 'last').")
@pipeline_option("The pipeline (name or file), when several have this task.")
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(min=0))
@click.option("--quarantine", is_flag=True, help="Show the rows a validate task set aside.")
@project_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
def show(
    task: str,
    run_id: str | None,
    pipeline: str | None,
    limit: int,
    quarantine: bool,
    project_dir: Path | None,
    fmt: str,
) -> None:
    """Preview a task's output (the latest successful one unless --run)."""
    import polars as pl

    with errors(), open_project(project_dir) as project:
        name = project.pipeline_name(pipeline) if pipeline else None
        frame = (
            project.quarantine(task, run_id, name)
            if quarantine
            else project.table(task, run_id, name)
        )
        total = frame.select(pl.len()).collect().item()
        preview = frame.head(limit).collect()
    if fmt == "csv":
        click.echo(to_csv(preview), nl=False)
    elif fmt == "json":
        click.echo(preview.write_json())
    elif quarantine:
        print_quarantine(preview)
        err.print(Text(f"{min(limit, total):,} of {total:,} rows", style="dim"))
    else:
        with pl.Config(tbl_rows=limit, tbl_cols=30, fmt_str_lengths=60, tbl_width_chars=160):
            click.echo(str(preview))
        err.print(Text(f"{min(limit, total):,} of {total:,} rows", style="dim"))


COMMANDS = (runs, show)

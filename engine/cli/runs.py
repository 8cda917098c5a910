"""`arrowline runs [RUN_ID] | runs compare A B | show`: what ran, how two runs differ, and what
a run produced."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table
from rich.text import Text

from engine.cli.common import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_OK,
    err,
    errors,
    fail,
    find_project,
    format_option,
    open_project,
    out,
    pipeline_option,
    project_option,
)
from engine.cli.frames import print_quarantine, to_csv

if TYPE_CHECKING:
    from engine.api.compare import Delta, Regression, RunComparison, TaskComparison
    from engine.state.catalog import RunRow
    from engine.state.layout import ProjectLayout

__all__ = ["COMMANDS"]


class _RunsGroup(click.Group):
    """`arrowline runs [RUN_ID]` as it always was, beside `arrowline runs compare A B`: a first
    word that names no subcommand (a run id, an option, or nothing) goes to `runs list`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands:
            args = ["list", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_RunsGroup)
def runs() -> None:
    """List runs, or show one run's tasks (`runs [RUN_ID]`); `runs compare A B` puts two runs
    side by side."""


@runs.command("list")
@click.argument("run_id", required=False)
@pipeline_option("Only runs of this pipeline (name or file).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--transitions", is_flag=True, help="With RUN_ID: every state transition too.")
@project_option
@format_option
def list_runs(
    run_id: str | None,
    pipeline: str | None,
    limit: int,
    transitions: bool,
    project_dir: Path | None,
    fmt: str,
) -> None:
    """List runs, or show one run's tasks (RUN_ID may be a prefix or 'last'). `arrowline runs`
    is `arrowline runs list`; `arrowline runs compare A B` sets two runs side by side."""
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


@runs.command()
@click.argument("run_a", metavar="A")
@click.argument("run_b", metavar="B")
@click.option(
    "--threshold",
    type=click.FloatRange(min=0),
    default=None,
    metavar="PCT",
    help="Exit 1 when the run or a task took more than PCT percent longer in B than in A. "
    "Only what succeeded in both and took at least 50 ms in A counts: below that, the time "
    "is mostly noise.",
)
@project_option
@format_option
def compare(
    run_a: str, run_b: str, threshold: float | None, project_dir: Path | None, fmt: str
) -> None:
    """Put two runs side by side (ids, prefixes or 'last'; of one pipeline or two): each
    task's time, rows in and out, bytes out, attempts and state, and the run's wall time, CPU
    time and peak memory. Exit 1 when --threshold finds B slower, 2 when a run is unknown."""
    from engine.api.compare import FLOOR_S, compare_runs
    from engine.core.errors import StateError

    with errors(), find_project(project_dir) as project:
        try:
            comparison = compare_runs(project.catalog, run_a, run_b)
        except StateError as exc:  # exit 1 says "slower": anything else wrong is the input
            fail(exc.message, exc.hint, EXIT_INVALID)
    slower = comparison.regressions(threshold, FLOOR_S) if threshold is not None else []
    if fmt == "json":
        payload = comparison.to_dict() | {
            "threshold_pct": threshold,
            "floor_s": FLOOR_S,
            "slower": [r.to_dict() for r in slower] if threshold is not None else None,
        }
        out.print_json(json.dumps(payload))
    else:
        _print_comparison(comparison, threshold)
        if threshold is not None:
            _print_verdict(slower, threshold, FLOOR_S)
    sys.exit(EXIT_FAILED if slower else EXIT_OK)


def _print_comparison(comparison: RunComparison, threshold: float | None) -> None:
    from engine.cli.progress import STYLES
    from engine.core.durations import format_duration
    from engine.core.sizes import format_bytes

    for label, run in (("A", comparison.a), ("B", comparison.b)):
        out.print(
            Text.assemble(
                (f"{label}  run {run.run_id}", "bold"),
                f"  {run.pipeline}  ",
                (run.state.value, STYLES.get(run.state.value, "")),
                f"  started {(run.started_at or run.created_at)[:19].replace('T', ' ')}",
            )
        )
    if not comparison.same_pipeline:
        out.print(
            Text(
                f"different pipelines: A ran {comparison.a.pipeline!r}, B ran "
                f"{comparison.b.pipeline!r}; tasks are matched by id",
                style="bold yellow",
            )
        )
    whole = Table(title="run", title_justify="left")
    for column in ("", "A", "B", "change"):
        whole.add_column(column, justify="left" if not column else "right")
    slower_run = comparison.run_slower_by()
    for name, delta, show in (
        ("wall time", comparison.wall_s, format_duration),
        ("CPU time", comparison.cpu_s, format_duration),
        ("peak memory", comparison.peak_rss_bytes, format_bytes),
    ):
        # the threshold is about time: CPU and memory are shown, never judged
        judged = (slower_run, threshold) if name == "wall time" else (delta.relative, None)
        whole.add_row(name, _shown(delta.a, show), _shown(delta.b, show), _change(delta, *judged))
    out.print(whole)
    table = Table(title="tasks", title_justify="left")
    for column in ("task", "kind", "state", "time A", "time B", "change"):
        table.add_column(
            column, justify="right" if column.startswith(("time", "change")) else "left"
        )
    for column in ("rows in", "rows out", "bytes out", "attempts"):
        table.add_column(column, justify="right")
    for task in comparison.tasks:
        table.add_row(
            task.task_id,
            task.kind,
            _state(task),
            _shown(task.duration_s.a, format_duration),
            _shown(task.duration_s.b, format_duration),
            _change(task.duration_s, task.slower_by(), threshold),
            _side_by_side(task.rows_in, _count),
            _side_by_side(task.rows_out, _count),
            _side_by_side(task.bytes_out, format_bytes),
            _side_by_side(task.attempts, _count),
        )
    out.print(table)


def _shown(value: float | None, show: Callable[[float], str]) -> str:
    return "" if value is None else show(value)


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _change(delta: Delta, counted: float | None, threshold: float | None) -> Text:
    """B against A in percent: red when more, green when less, bold red and marked past the
    threshold; dim when it does not count (under the floor, or not a success in both)."""
    relative = delta.relative
    if relative is None:
        return Text("")
    shown = f"{100 * relative:+.0f}%" if round(100 * relative) else "0%"
    if counted is None:
        return Text(shown, style="dim")
    if threshold is not None and 100 * counted > threshold:
        return Text(f"{shown} ✗", style="bold red")
    if abs(relative) < 0.05:
        return Text(shown)
    return Text(shown, style="red" if relative > 0 else "green")


def _side_by_side(delta: Delta, show: Callable[[float], str]) -> Text:
    """One value when A and B agree, else `A → B`, highlighted."""
    if not delta.changed:
        return Text(_shown(delta.a, show))
    return Text(f"{_shown(delta.a, show) or '-'} → {_shown(delta.b, show) or '-'}", style="yellow")


def _state(task: TaskComparison) -> Text:
    from engine.cli.progress import STYLES

    a, b = task.state_a or "-", task.state_b or "-"
    if a == b:
        return Text(a, style=STYLES.get(a, ""))
    return Text.assemble((a, STYLES.get(a, "")), (" → ", "yellow"), (b, STYLES.get(b, "")))


def _print_verdict(slower: list[Regression], threshold: float, floor_s: float) -> None:
    if not slower:
        out.print(
            Text(
                f"nothing took more than {threshold:g}% longer in B (tasks under "
                f"{floor_s * 1000:.0f} ms in A not counted)",
                style="green",
            )
        )
        return
    from engine.core.durations import format_duration

    out.print(Text(f"failed, or more than {threshold:g}% longer, in B:", style="bold red"))
    for found in slower:
        what = "the run" if found.task_id is None else f"task {found.task_id}"
        if found.failed:
            out.print(Text(f"  {what}: succeeded in A, failed in B", style="red"))
            continue
        a, b = found.duration_s.a or 0.0, found.duration_s.b or 0.0
        out.print(
            Text(
                f"  {what}: {format_duration(a)} → {format_duration(b)} "
                f"({100 * found.relative:+.0f}%)",
                style="red",
            )
        )


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

"""`arrowline dlq list | show | requeue | resolve`: tasks that failed for good."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table
from rich.text import Text

from engine.cli.common import (
    EXIT_CANCELLED,
    cancel_on_signals,
    configure_logs,
    errors,
    exit_code,
    fail,
    find_project,
    format_option,
    out,
    pipeline_option,
    project_option,
)

if TYPE_CHECKING:
    from engine.execution.executor import Executor

__all__ = ["COMMANDS"]


@click.group()
def dlq() -> None:
    """Dead letters: tasks that failed for good, with every attempt, ready to requeue."""


@dlq.command("list")
@pipeline_option("Only this pipeline's letters (name or file).")
@click.option("--all", "every", is_flag=True, help="Also resolved and requeued letters.")
@project_option
@format_option
def dlq_list(pipeline: str | None, every: bool, project_dir: Path | None, fmt: str) -> None:
    """List dead letters (open ones unless --all), newest first."""
    from dataclasses import asdict

    with errors(), find_project(project_dir) as project:
        name = project.pipeline_name(pipeline) if pipeline else None
        letters = project.catalog.dead_letters(name, status=None if every else "open")
    if fmt == "json":
        out.print_json(json.dumps([asdict(letter) for letter in letters], default=str))
        return
    if not letters:
        out.print("no dead letters" if every else "no open dead letters")
        return
    table = Table()
    for column in ("id", "pipeline", "task", "run", "status", "kind", "attempts", "last error"):
        table.add_column(column)
    for letter in letters:
        last = letter.attempts[-1]["error"] if letter.attempts else letter.reason
        table.add_row(
            str(letter.id),
            letter.pipeline,
            letter.task_id,
            letter.run_id,
            letter.status,
            f"{letter.error_kind} ({'transient' if letter.transient else 'terminal'})",
            str(len(letter.attempts)),
            last.splitlines()[0][:70],
        )
    out.print(table)


@dlq.command("show")
@click.argument("letter_id", type=int)
@project_option
@format_option
def dlq_show(letter_id: int, project_dir: Path | None, fmt: str) -> None:
    """Everything about one dead letter: run, version, parameters, every attempt."""
    from dataclasses import asdict

    with errors(), find_project(project_dir) as project:
        letter = project.catalog.dead_letter(letter_id)
    if fmt == "json":
        out.print_json(json.dumps(asdict(letter), default=str))
        return
    out.print(Text(f"dead letter {letter.id}: task {letter.task_id!r}", style="bold"))
    facts = [
        ("pipeline", f"{letter.pipeline} (version {letter.pipeline_version})"),
        ("file", letter.pipeline_file or "(defined in Python)"),
        ("run", letter.run_id),
        ("logical date", letter.logical_date),
        ("parameters", json.dumps(letter.params)),
        (
            "classification",
            f"{letter.error_kind}, {'transient' if letter.transient else 'terminal'}",
        ),
        ("why it stopped", letter.reason),
        (
            "status",
            letter.status
            + (f" (requeue: {letter.requeue_result})" if letter.requeue_result else ""),
        ),
        ("recorded", letter.created_at),
    ]
    if letter.resolved_by:
        facts.append(("resolved", letter.resolution))
    for name, value in facts:
        out.print(Text.assemble((f"  {name:<15}", "dim"), value))
    for attempt in letter.attempts:
        out.print(
            Text(
                f"  attempt {attempt['attempt']} at {attempt['started_at']} "
                f"({attempt['duration_s']:.3f}s, {attempt['error_kind']}):",
                style="bold",
            )
        )
        for line in str(attempt["error"]).splitlines():
            out.print(Text("    " + line))
    if letter.status != "resolved":
        out.print(Text(f"requeue with: arrowline dlq requeue {letter.id}", style="yellow"))
        out.print(
            Text(
                f"or, dealt with otherwise: arrowline dlq resolve {letter.id} --note '...'",
                style="yellow",
            )
        )


@dlq.command("requeue")
@click.argument("letter_id", type=int)
@click.option("--attempts", type=click.IntRange(min=1, max=100), default=None, help="New attempts.")
@click.option("--backoff", default=None, help="New base backoff, e.g. 5s or 1m.")
@click.option("--force", is_flag=True, help="Requeue although the pipeline changed since.")
@project_option
def dlq_requeue(
    letter_id: int,
    attempts: int | None,
    backoff: str | None,
    force: bool,
    project_dir: Path | None,
) -> None:
    """Run a dead letter's task again: resume its run (same run id, parameters and logical
    date), so tasks that succeeded are reused and loads stay idempotent."""
    from engine.api.options import RunOptions
    from engine.cli.progress import summary

    configure_logs("text", "INFO", None)
    executors: list[Executor] = []
    cancel_on_signals(executors)
    try:
        with errors(), find_project(project_dir) as project:
            result = project.requeue_dead_letter(
                letter_id,
                attempts=attempts,
                backoff=backoff,
                force=force,
                options=RunOptions(on_executor=executors.append),
            )
    except KeyboardInterrupt:
        fail("interrupted before the run could wind down", code=EXIT_CANCELLED)
    summary(result.plan, result, out)
    sys.exit(exit_code(result))


@dlq.command("resolve")
@click.argument("letter_id", type=click.IntRange(min=1))
@click.option("--note", required=True, help="Why it needs no requeue; kept with who and when.")
@project_option
def dlq_resolve(letter_id: int, note: str, project_dir: Path | None) -> None:
    """Dismiss a dead letter dealt with otherwise (fixed by hand, obsolete): it is marked
    resolved with your note, user and time, and leaves `dlq list` (`--all` still shows it)."""
    with errors(), find_project(project_dir) as project:
        letter = project.resolve_dead_letter(letter_id, note)
    out.print(
        Text.assemble(
            (f"resolved dead letter {letter.id}", "bold"),
            f" (task {letter.task_id!r} of run {letter.run_id}) by {letter.resolved_by}",
        )
    )


COMMANDS = (dlq,)

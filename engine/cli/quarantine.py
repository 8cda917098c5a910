"""`arrowline quarantine show | replay`: rows validate tasks set aside."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.text import Text

from engine.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    configure_logs,
    errors,
    exit_code,
    find_project,
    open_project,
    out,
    pipeline_argument,
    pipeline_option,
    project_option,
)
from engine.cli.frames import print_quarantine, to_csv

__all__ = ["COMMANDS"]


@click.group()
def quarantine() -> None:
    """Rows validate tasks set aside: look at them, replay them after a fix."""


@quarantine.command("show")
@click.argument("task")
@click.option("--run", "run_id", default=None, help="This run's quarantine (id, prefix, 'last').")
@pipeline_option("The pipeline (name or file), when several have this task.")
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(min=0))
@project_option
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json", "csv"]), default="text", show_default=True
)
def quarantine_show(
    task: str,
    run_id: str | None,
    pipeline: str | None,
    limit: int,
    project_dir: Path | None,
    fmt: str,
) -> None:
    """The quarantined rows of a validate task, with their row numbers and reasons, and the
    count of rows per reason."""
    import polars as pl

    with errors(), open_project(project_dir) as project:
        name = project.pipeline_name(pipeline) if pipeline else None
        frame = project.quarantine(task, run_id, name)
        preview = frame.head(limit).collect()
        total = frame.select(pl.len()).collect().item()
        reasons = (  # a row failing two checks counts under both
            frame.select(pl.col("_arrowline_errors").explode().struct.unnest())
            .group_by("column", "check")
            .agg(pl.len().alias("rows"))
            .sort(["rows", "column", "check"], descending=[True, False, False])
            .collect()
        )
    if fmt == "csv":
        click.echo(to_csv(preview), nl=False)
        return
    if fmt == "json":
        click.echo(
            json.dumps(
                {"rows": total, "by_reason": reasons.to_dicts(), "preview": preview.to_dicts()},
                default=str,
            )
        )
        return
    print_quarantine(preview)
    with pl.Config(tbl_rows=limit, tbl_cols=30, fmt_str_lengths=80, tbl_width_chars=160):
        out.print(Text(f"{total:,} quarantined rows; failures by check:", style="bold"))
        click.echo(str(reasons))


@quarantine.command("replay")
@pipeline_argument
@click.argument("task")
@click.option(
    "--run", "run_id", default=None, help="Replay this run's quarantine (default: latest)."
)
@click.option(
    "--then",
    "downstream",
    multiple=True,
    help="A task after TASK that the rows that now pass go on to (repeatable), e.g. a load.",
)
@project_option
def quarantine_replay(
    pipeline: str,
    task: str,
    run_id: str | None,
    downstream: tuple[str, ...],
    project_dir: Path | None,
) -> None:
    """Validate quarantined rows again after a fix; report how many pass now and how many fail
    again and stay quarantined. Exit 0 when every row passed (and the --then tasks succeeded),
    1 when some rows are still quarantined or a task failed."""
    from engine.cli.progress import summary

    configure_logs("text", "INFO", None)
    with errors(), find_project(project_dir) as project:
        result, replayed = project.replay_quarantine(
            pipeline, task, from_run=run_id, downstream=downstream
        )
    summary(result.plan, result, out)
    outcome = result.tasks[task]
    if outcome.state.value == "SUCCESS":
        again = outcome.rows_rejected
        out.print(
            Text(
                f"replayed {replayed:,} quarantined rows of {task}: {outcome.rows_out:,} passed, "
                f"{again:,} failed again and stay quarantined (run {result.run_id})",
                style="bold" if not again else "bold yellow",
            )
        )
        if again:
            out.print(
                Text(
                    f"see them with: arrowline quarantine show {task} --run {result.run_id}",
                    style="yellow",
                )
            )
    code = exit_code(result)
    sys.exit(EXIT_FAILED if code == EXIT_OK and outcome.rows_rejected else code)


COMMANDS = (quarantine,)

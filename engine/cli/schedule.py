"""`arrowline scheduler | schedule | trigger | backfill`: running pipelines on time."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from engine.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    configure_logs,
    err,
    errors,
    fail,
    find_project,
    format_option,
    log_options,
    one_project_dir,
    out,
    param_option,
    parse_params,
    pipeline_argument,
    project_argument,
    project_option,
    scheduler_target_option,
    target_option,
)

__all__ = ["COMMANDS"]

MAX_BACKFILL = 10_000
"""Intervals one backfill may run: a range reaching far back is refused, not walked for ever."""


@click.command()
@project_argument
@project_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Where the HTTP API listens.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve the HTTP API and /metrics here (GET / lists the endpoints).",
)
@click.option(
    "--token",
    envvar="ARROWLINE_API_TOKEN",
    default=None,
    help="Bearer token the API requires ($ARROWLINE_API_TOKEN); needed off loopback.",
)
@click.option("--tick", type=float, default=1.0, show_default=True, help="Seconds between ticks.")
@click.option("--max-runs", type=int, default=8, show_default=True, help="Runs at once, in all.")
@click.option(
    "--shutdown-timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="On SIGTERM, seconds running runs get to finish before they are cancelled.",
)
@scheduler_target_option
@log_options
def scheduler(
    folder: Path | None,
    project_dir: Path | None,
    host: str,
    port: int | None,
    token: str | None,
    tick: float,
    max_runs: int,
    shutdown_timeout: float,
    log_format: str,
    log_level: str,
) -> None:
    """Run the project's schedules and triggers until SIGTERM. One scheduler acts per project;
    start more as standbys: one takes over within a tick when the active one dies."""
    from engine.core.errors import ArrowlineError
    from engine.scheduling.http import ApiServer
    from engine.scheduling.scheduler import Scheduler, SchedulerSettings

    configure_logs(log_format, log_level.upper(), None)
    settings = SchedulerSettings(tick=tick, max_runs=max_runs, shutdown_timeout=shutdown_timeout)
    with errors():
        project = find_project(one_project_dir(folder, project_dir))
        the_scheduler = Scheduler(project.layout, settings)
        try:
            api = ApiServer(the_scheduler, host, port, token) if port is not None else None
        except ArrowlineError:  # a busy port: give up the leadership taken, then say so
            the_scheduler.close()
            raise
    if api is not None:
        api.start()
        err.print(Text(f"API on {api.address}", style="dim"))
    try:
        code = the_scheduler.serve()
    finally:
        if api is not None:
            api.stop()
    sys.exit(code)


@click.group()
def schedule() -> None:
    """List schedules; pause and resume them (with a reason)."""


@schedule.command("list")
@project_argument
@project_option
@format_option
def schedule_list(folder: Path | None, project_dir: Path | None, fmt: str) -> None:
    """Every pipeline with a schedule or trigger: next run, paused or not, and why."""
    with errors():
        project = find_project(one_project_dir(folder, project_dir))
        rows = [r for r in project.status() if r.get("schedule") or r.get("triggers")]
    if fmt == "json":
        out.print_json(json.dumps(rows))
        return
    table = Table()
    for column in ("pipeline", "schedule", "triggers", "next run (UTC)", "paused"):
        table.add_column(column)
    for row in rows:
        paused = (
            Text(f"paused: {row['pause_reason'] or ''}", style="yellow") if row["paused"] else ""
        )
        table.add_row(
            row["pipeline"],
            row.get("schedule") or "",
            ", ".join(row.get("triggers") or []),
            (row.get("next_run") or "")[:19],
            paused,
        )
    out.print(table)


def _set_paused(project_dir: Path | None, pipeline: str, paused: bool, reason: str | None) -> None:
    from engine.state.catalog import Catalog

    who = os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown"
    with errors():
        project = find_project(project_dir)
        name, path = project.locate(pipeline)
        with Catalog(project.layout.catalog) as store:
            store.set_paused(name, str(path), paused, reason, who)
    verb = "paused" if paused else "resumed"
    out.print(f"{name}: schedule {verb}" + (f" ({reason})" if reason else ""))


@schedule.command("pause")
@pipeline_argument
@click.option("--reason", required=True, help="Why; shown by `schedule list` and `status`.")
@project_option
def schedule_pause(pipeline: str, reason: str, project_dir: Path | None) -> None:
    """Stop starting runs of PIPELINE (a name or a file) until it is resumed."""
    _set_paused(project_dir, pipeline, True, reason)


@schedule.command("resume")
@pipeline_argument
@project_option
def schedule_resume(pipeline: str, project_dir: Path | None) -> None:
    """Start scheduling PIPELINE again; missed intervals follow its `catchup`."""
    _set_paused(project_dir, pipeline, False, None)


@click.command()
@pipeline_argument
@param_option
@click.option(
    "--direct",
    is_flag=True,
    help="Run here and now, even when a scheduler is running (default: hand it to the scheduler).",
)
@target_option
@project_option
def trigger(pipeline: str, params: tuple[str, ...], direct: bool, project_dir: Path | None) -> None:
    """Start a run of PIPELINE (a name or a file): through the running scheduler, which starts it
    within a tick and applies its overlap policy, or directly when none runs (or --direct)."""
    from engine.api.options import PlanOptions, RunOptions

    targeted = click.get_current_context().get_parameter_source("target")
    with errors(), find_project(project_dir) as project:
        name, path = project.locate(pipeline)
        values = parse_params(params)
        if not direct and project.scheduler_running():
            if targeted is click.core.ParameterSource.COMMANDLINE:
                fail(
                    "--target: the running scheduler runs its pipelines for its own target "
                    "(its --target or $ARROWLINE_TARGET), not this command's",
                    hint="add --direct to run here for this target",
                )
            request = project.request_run(name, values, "manual")
            out.print(f"{name}: run {request.run_id} queued with the scheduler")
            return
        result = project.run(path, PlanOptions(params=values), RunOptions(if_running="wait"))
    out.print(f"{name}: run {result.run_id} {result.state.value}")
    sys.exit(EXIT_OK if result.ok else EXIT_FAILED)


def _when(text: str, zone: str, *, end: bool = False) -> datetime:
    """A --from/--to value in the pipeline's time zone; a date alone as --to means through the
    end of that day."""
    from zoneinfo import ZoneInfo

    value = datetime.fromisoformat(text)
    if end and len(text.strip()) == 10:
        value = value + timedelta(days=1) - timedelta(microseconds=1)
    return (value if value.tzinfo else value.replace(tzinfo=ZoneInfo(zone))).astimezone(UTC)


@click.command()
@pipeline_argument
@click.option("--from", "start", required=True, help="First fire time (date or datetime, local).")
@click.option(
    "--to", "end", required=True, help="Last fire time, inclusive (local; a date: that whole day)."
)
@click.option("--parallel", type=int, default=1, show_default=True, help="Runs at once.")
@target_option
@project_option
def backfill(pipeline: str, start: str, end: str, parallel: int, project_dir: Path | None) -> None:
    """One run per scheduled interval whose fire time falls in [--from, --to], oldest first.
    Intervals already run (by the scheduler or an earlier backfill) are left alone. A pipeline
    with incremental extracts keeps one watermark, so its intervals run one after another."""
    from concurrent.futures import ThreadPoolExecutor

    from engine.api.options import PlanOptions, RunOptions
    from engine.scheduling.cron import Schedule
    from engine.spec.params import new_run_id
    from engine.state.catalog import Catalog
    from engine.state.schedules import IntervalRow

    with errors():
        project = find_project(project_dir)
        name, path = project.locate(pipeline)
        spec = project.definition(str(path)).spec
        if not spec.schedule:
            fail(f"pipeline {name!r} has no schedule, so it has no intervals to backfill")
        incremental = [
            t.id
            for t in spec.tasks
            if t.incremental is not None or (t.sql is not None and t.sql.incremental is not None)
        ]
        if parallel > 1 and incremental:
            fail(
                f"--parallel {parallel}: {name}'s incremental tasks ({', '.join(incremental)}) "
                "keep one watermark or one growing output that parallel runs would race on",
                hint="backfill them with --parallel 1 (the default)",
            )
        sched = Schedule(spec.schedule, spec.timezone)
        first, last = _when(start, spec.timezone), _when(end, spec.timezone, end=True)
        # `first` itself counts; one more than the cap tells a range that is too long
        fires = sched.due(first - timedelta(microseconds=1), last, limit=MAX_BACKFILL + 1)
        if len(fires) > MAX_BACKFILL:
            fail(
                f"--from {start} --to {end} holds more than {MAX_BACKFILL} intervals of "
                f"{name}'s schedule {spec.schedule!r}",
                hint="backfill a shorter range at a time",
            )
        with Catalog(project.layout.catalog) as store:
            store.ensure_schedule(name, str(path), sched.previous(datetime.now(UTC)))
            decided = [(f, sched.interval_ending(f).start, "queued", "backfill") for f in fires]
            recorded = store.claim_intervals(name, None, decided)
            plan: list[tuple[IntervalRow, str]] = []
            for row in recorded:
                run_id = new_run_id()
                store.start_interval(name, row.fire_at, run_id)
                plan.append((row, run_id))
    skipped = len(fires) - len(recorded)
    err.print(
        Text(
            f"{name}: {len(recorded)} intervals to run"
            + (f", {skipped} already run or decided" if skipped else ""),
            style="dim",
        )
    )

    def one(item: tuple[IntervalRow, str]) -> tuple[str, str, str]:
        row, run_id = item
        logical = datetime.fromisoformat(row.logical_date)
        result = project.run(
            path,
            PlanOptions(logical_date=logical, run_id=run_id),
            RunOptions(if_running="share" if parallel > 1 else "wait"),
        )
        return row.fire_at, run_id, result.state.value

    failed = 0
    with ThreadPoolExecutor(max(1, parallel)) as pool:
        for fire_at, run_id, state in pool.map(one, plan):
            failed += state != "SUCCESS"
            out.print(f"  {fire_at}  run {run_id}  {state}")
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


COMMANDS = (scheduler, schedule, trigger, backfill)

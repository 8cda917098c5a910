"""The scheduler's commands: scheduler, schedule, trigger, backfill, status, metrics."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from engine.cli.commands import (
    EXIT_FAILED,
    EXIT_OK,
    _errors,
    _fail,
    _logging,
    _params,
    err,
    format_option,
    log_options,
    main,
    out,
    param_option,
)
from engine.state.db import catalog_location

__all__: list[str] = []

MAX_BACKFILL = 10_000
"""Intervals one backfill may run: a range reaching far back is refused, not walked for ever."""

project_argument = click.argument(
    "project_dir", required=False, type=click.Path(file_okay=False, path_type=Path)
)


def _project(project_dir: Path | None) -> Path:
    from engine.api.pipeline import find_project_dir

    return find_project_dir(project_dir).resolve()


def _pipeline(project: Path, name_or_file: str) -> tuple[str, Path]:
    """A pipeline given by name (found in the project) or by its file."""
    from engine.api.pipeline import load
    from engine.scheduling.scheduler import discover_pipelines

    candidate = Path(name_or_file)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return load(candidate).spec.name, candidate.resolve()
    found = discover_pipelines(project)
    if name_or_file not in found:
        names = ", ".join(sorted(found)) or "none"
        _fail(f"no pipeline {name_or_file!r} in {project} (pipelines: {names})")
    return name_or_file, found[name_or_file]


@main.command()
@project_argument
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
@log_options
def scheduler(
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

    _logging(log_format, log_level.upper(), None)
    project = _project(project_dir)
    settings = SchedulerSettings(tick=tick, max_runs=max_runs, shutdown_timeout=shutdown_timeout)
    with _errors():
        the_scheduler = Scheduler(project, settings)
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


@main.group()
def schedule() -> None:
    """List schedules; pause and resume them (with a reason)."""


@schedule.command("list")
@project_argument
@format_option
def schedule_list(project_dir: Path | None, fmt: str) -> None:
    """Every pipeline with a schedule or trigger: next run, paused or not, and why."""
    from engine.scheduling.status import status_rows

    project = _project(project_dir)
    with _errors():
        rows = [r for r in status_rows(project) if r.get("schedule") or r.get("triggers")]
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

    project = _project(project_dir)
    name, path = _pipeline(project, pipeline)
    who = os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown"
    with Catalog(catalog_location(project)) as store:
        store.set_paused(name, str(path), paused, reason, who)
    verb = "paused" if paused else "resumed"
    out.print(f"{name}: schedule {verb}" + (f" ({reason})" if reason else ""))


@schedule.command("pause")
@click.argument("pipeline")
@click.option("--reason", required=True, help="Why; shown by `schedule list` and `status`.")
@click.option("--project-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def schedule_pause(pipeline: str, reason: str, project_dir: Path | None) -> None:
    """Stop starting runs of PIPELINE (a name or a file) until it is resumed."""
    _set_paused(project_dir, pipeline, True, reason)


@schedule.command("resume")
@click.argument("pipeline")
@click.option("--project-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def schedule_resume(pipeline: str, project_dir: Path | None) -> None:
    """Start scheduling PIPELINE again; missed intervals follow its `catchup`."""
    _set_paused(project_dir, pipeline, False, None)


@main.command()
@click.argument("pipeline")
@param_option
@click.option(
    "--direct",
    is_flag=True,
    help="Run here and now, even when a scheduler is running (default: hand it to the scheduler).",
)
@click.option("--project-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def trigger(pipeline: str, params: tuple[str, ...], direct: bool, project_dir: Path | None) -> None:
    """Start a run of PIPELINE (a name or a file): through the running scheduler, which starts it
    within a tick and applies its overlap policy, or directly when none runs (or --direct)."""
    import engine.api.pipeline as api
    from engine.scheduling.scheduler import request_run, scheduler_running

    project = _project(project_dir)
    name, path = _pipeline(project, pipeline)
    with _errors():
        values = _params(params)
        if not direct and scheduler_running(project):
            request = request_run(project, name, values, "manual")
            out.print(f"{name}: run {request.run_id} queued with the scheduler")
            return
        result = api.run(path, params=values, project_dir=project, if_running="wait")
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


@main.command()
@click.argument("pipeline")
@click.option("--from", "start", required=True, help="First fire time (date or datetime, local).")
@click.option(
    "--to", "end", required=True, help="Last fire time, inclusive (local; a date: that whole day)."
)
@click.option("--parallel", type=int, default=1, show_default=True, help="Runs at once.")
@click.option("--project-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def backfill(pipeline: str, start: str, end: str, parallel: int, project_dir: Path | None) -> None:
    """One run per scheduled interval whose fire time falls in [--from, --to], oldest first.
    Intervals already run (by the scheduler or an earlier backfill) are left alone. A pipeline
    with incremental extracts keeps one watermark, so its intervals run one after another."""
    from concurrent.futures import ThreadPoolExecutor

    import engine.api.pipeline as api
    from engine.scheduling.cron import Schedule
    from engine.spec.params import new_run_id
    from engine.state.catalog import Catalog
    from engine.state.schedules import IntervalRow

    project = _project(project_dir)
    name, path = _pipeline(project, pipeline)
    with _errors():
        spec = api.load(path).spec
        if not spec.schedule:
            _fail(f"pipeline {name!r} has no schedule, so it has no intervals to backfill")
        incremental = [t.id for t in spec.tasks if getattr(t.extract, "incremental", None)]
        if parallel > 1 and incremental:
            _fail(
                f"--parallel {parallel}: {name}'s incremental extracts ({', '.join(incremental)}) "
                "keep one watermark that parallel runs would race on",
                hint="backfill them with --parallel 1 (the default)",
            )
        sched = Schedule(spec.schedule, spec.timezone)
        first, last = _when(start, spec.timezone), _when(end, spec.timezone, end=True)
        # `first` itself counts; one more than the cap tells a range that is too long
        fires = sched.due(first - timedelta(microseconds=1), last, limit=MAX_BACKFILL + 1)
        if len(fires) > MAX_BACKFILL:
            _fail(
                f"--from {start} --to {end} holds more than {MAX_BACKFILL} intervals of "
                f"{name}'s schedule {spec.schedule!r}",
                hint="backfill a shorter range at a time",
            )
        with Catalog(catalog_location(project)) as store:
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
        result = api.run(
            path,
            project_dir=project,
            logical_date=logical,
            run_id=run_id,
            if_running="share" if parallel > 1 else "wait",
        )
        return row.fire_at, run_id, result.state.value

    failed = 0
    with ThreadPoolExecutor(max(1, parallel)) as pool:
        for fire_at, run_id, state in pool.map(one, plan):
            failed += state != "SUCCESS"
            out.print(f"  {fire_at}  run {run_id}  {state}")
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


@main.command()
@project_argument
@format_option
def status(project_dir: Path | None, fmt: str) -> None:
    """At a glance: what is scheduled next, what is running, what is failing."""
    from engine.scheduling.status import status_rows

    project = _project(project_dir)
    with _errors():
        rows = status_rows(project)
    if fmt == "json":
        out.print_json(json.dumps(rows))
        return
    from engine.scheduling.scheduler import scheduler_running

    with _errors():
        leader = "a scheduler leads" if scheduler_running(project) else "no scheduler running"
    table = Table(
        title=f"arrowline status: {project}",
        title_justify="left",
        caption=f"catalog {catalog_location(project).describe()}; {leader}",
        caption_justify="left",
    )
    for column in ("pipeline", "next run (UTC)", "running", "last run", "failing"):
        table.add_column(column)
    for row in rows:
        if row.get("problem"):
            # whole and wrapped, long paths folded rather than cut
            problem = Text(row["problem"], style="red", overflow="fold")
            table.add_row(row["pipeline"], "", "", "", problem)
            continue
        if row["paused"]:
            next_run = Text(f"paused: {row['pause_reason']}", style="yellow")
        elif row.get("next_run"):
            next_run = Text(row["next_run"][:19].replace("T", " "))
        else:
            next_run = Text("on trigger" if row.get("triggers") else "")
        last = row.get("last_run")
        last_text = Text(
            f"{last['state']} {last['ended_at'][:19]}" if last else "never",
            style="green" if last and last["state"] == "SUCCESS" else "red" if last else "dim",
        )
        failing = row.get("failing")
        failing_text = (
            Text(f"{failing['runs']} runs since {failing['since'][:19]}", style="red")
            if failing
            else Text("")
        )
        table.add_row(row["pipeline"], next_run, ", ".join(row["running"]), last_text, failing_text)
    out.print(table)


@main.command()
@project_argument
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file atomically (for node-exporter's textfile collector).",
)
def metrics(project_dir: Path | None, output: Path | None) -> None:
    """The catalog's metrics in Prometheus' text format."""
    from engine.scheduling.metrics import render

    project = _project(project_dir)
    text = render(catalog_location(project))
    if output is None:
        sys.stdout.buffer.write(text)
        return
    temporary = output.with_name(f".{output.name}.tmp")
    temporary.write_bytes(text)
    temporary.replace(output)
    err.print(f"wrote {output}")

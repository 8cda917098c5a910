"""The `arrowline` command.

Exit codes: 0 success; 1 the run failed (a task failed); 2 the pipeline, a parameter or the
command line is invalid; 130 the run was cancelled.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from engine.core.errors import (
    ArrowlineError,
    DefinitionError,
    ParameterError,
    PipelineInvalid,
    SelectionError,
    StateError,
)
from engine.core.problems import Problem
from engine.state.db import catalog_location

if TYPE_CHECKING:
    import polars as pl

    from engine.execution.executor import Executor
    from engine.planning.build import Plan
    from engine.planning.schemas import SchemaReport
    from engine.state.catalog import RunRow

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_CANCELLED = 0, 1, 2, 130


def _console(stderr: bool) -> Console:
    console = Console(stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped or captured output: rich would assume 80 columns and cut the tables short.
        console = Console(stderr=stderr, width=160)
    return console


out = _console(stderr=False)
err = _console(stderr=True)


def _fail(message: str, hint: str | None = None, code: int = EXIT_INVALID) -> NoReturn:
    err.print(Text.assemble(("error: ", "bold red"), message))
    if hint:
        err.print(Text.assemble(("hint: ", "yellow"), hint))
    sys.exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    """Turn arrowline errors into a message and an exit code; anything else is a bug."""
    try:
        yield
    except PipelineInvalid as exc:
        _print_problems(exc.problems)
        sys.exit(EXIT_INVALID)
    except (DefinitionError, ParameterError, SelectionError) as exc:
        where = exc.where()
        _fail(f"{where}: {exc.message}" if where else exc.message, exc.hint)
    except StateError as exc:
        _fail(exc.message, exc.hint, EXIT_FAILED)
    except ArrowlineError as exc:
        where = exc.where()
        _fail(f"{where}: {exc.message}" if where else exc.message, exc.hint, EXIT_FAILED)


@contextmanager
def _pipeline_option() -> Iterator[None]:
    """The notebook API names a pipeline with `pipeline=`; on the command line it is an option."""
    from engine.api.project import AmbiguousTask

    try:
        yield
    except AmbiguousTask as exc:
        first, *others = exc.pipelines
        exc.hint = f"add --pipeline {first} (or another of {', '.join(others)})"
        raise


def _print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        style = "bold red" if problem.severity == "error" else "yellow"
        task = f" [task {problem.task_id}]" if problem.task_id else ""
        err.print(
            Text.assemble(
                (f"{problem.location()}: ", "bold"),
                (problem.severity, style),
                f"{task}: {problem.message} ",
                (f"({problem.code})", "dim"),
            )
        )
        if problem.hint:
            err.print(Text(f"    hint: {problem.hint}", style="dim"))
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    if errors:
        err.print(
            Text(
                f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}",
                style="bold red",
            )
        )


def _cancel_on_signals(holder: list[Executor]) -> None:
    """Ctrl-C and SIGTERM (what `kill`, systemd and schedulers send) cancel the run: running
    tasks are stopped, nothing partial is published, the run ends CANCELLED. The handler only
    asks the executor to stop, so the signal cannot land half-way through a catalog write; a
    second signal, or one before the run has started, stops at once."""

    def handle(signum: int, frame: object) -> None:
        executor = holder[0] if holder else None
        if executor is None or executor.cancel_requested:
            raise KeyboardInterrupt
        err.print(
            Text(
                "cancelling: stopping running tasks (press Ctrl-C again to quit now)",
                style="yellow",
            )
        )
        executor.cancel()

    signal.signal(signal.SIGTERM, handle)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # nohup and `&` mean: ignore it
        signal.signal(signal.SIGINT, handle)


def _params(values: tuple[str, ...]) -> dict[str, str]:
    from engine.spec.params import parse_assignments

    return parse_assignments(values)


pipeline_argument = click.argument("pipeline", type=click.Path(dir_okay=False, path_type=Path))
param_option = click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a parameter for this run (repeatable).",
)
project_option = click.option(
    "--project-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder holding .arrowline/ (default: $ARROWLINE_PROJECT_DIR, else the nearest folder "
    "up from here that has one, else here).",
)


def select_option(help_text: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return click.option("--select", "-s", multiple=True, metavar="TASK[+]", help=help_text)


def log_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--log-format and --log-level, for commands that log as they work (run, scheduler)."""
    command = click.option(
        "--log-level",
        type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
        default="INFO",
        show_default=True,
    )(command)
    return click.option(
        "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True
    )(command)


format_option = click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)


def _logging(log_format: str, log_level: str, console: Console | None) -> None:
    from engine.cli.logs import configure_logging

    if console is not None and log_format == "text":
        # Through the live display's console, so log lines print above the progress table; a
        # function is no terminal to loguru, so say whether the console is one.
        configure_logging(
            "text",
            log_level,
            lambda message: console.print(Text.from_ansi(message.rstrip("\n"))),
            colorize=console.is_terminal,
            compact=console.is_terminal,
        )
    else:
        configure_logging(log_format, log_level)  # type: ignore[arg-type]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="arrowline", prog_name="arrowline")
def main() -> None:
    """arrowline: Arrow-native batch pipelines (DuckDB SQL, Polars UDFs, Pandera checks)."""


@main.command()
@click.argument(
    "pipelines", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path)
)
@format_option
def validate(pipelines: tuple[Path, ...], fmt: str) -> None:
    """Check pipeline files; report every problem with file:line. Exit 2 when any is invalid."""
    from engine.tasks.checks import check_file

    everything: list[Problem] = []
    invalid = False
    for path in pipelines:
        definition, problems = check_file(path)
        everything += problems
        if definition is None:
            invalid = True
        elif fmt == "text":
            warnings = len(problems)
            note = f", {warnings} warning{'s' * (warnings != 1)}" if warnings else ""
            out.print(
                Text.assemble(
                    (f"{path}", "bold"), ": valid, ", f"{len(definition.spec.tasks)} tasks{note}"
                )
            )
    if fmt == "json":
        out.print_json(
            json.dumps({"valid": not invalid, "problems": [p.to_dict() for p in everything]})
        )
    else:
        _print_problems(everything)
    sys.exit(EXIT_INVALID if invalid else EXIT_OK)


@main.command()
@pipeline_argument
@param_option
@select_option("Plan only these tasks (and what they need); TASK+ adds everything downstream.")
@project_option
@format_option
@click.option(
    "--no-schemas",
    is_flag=True,
    help="Skip computing output schemas over empty inputs (type errors, broken references, drift).",
)
def plan(
    pipeline: Path,
    params: tuple[str, ...],
    select: tuple[str, ...],
    project_dir: Path | None,
    fmt: str,
    no_schemas: bool,
) -> None:
    """Show what a run would do: tasks in order with inputs, outputs, levels and reuse, each
    task's output schema changes, and the type errors or broken column references a run would
    hit (exit 2 when there are any)."""
    import engine.api.pipeline as api

    with _errors():
        the_plan = api.plan(
            pipeline, params=_params(params), select=select or None, project_dir=project_dir
        )
        report = (
            None if no_schemas else api.plan_schemas(pipeline, the_plan, project_dir=project_dir)
        )
    failed = report is not None and not report.ok
    if fmt == "json":
        data = the_plan.to_dict()
        if report is not None:
            data["schemas"] = report.to_dict()
        out.print_json(json.dumps(data, default=str))
        sys.exit(EXIT_INVALID if failed else EXIT_OK)
    table = Table(
        title=f"plan for {the_plan.pipeline} (version {the_plan.pipeline_version})",
        title_justify="left",
    )
    for column in ("level", "task", "kind", "action", "inputs", "depends on", "output"):
        table.add_column(column)
    for task in the_plan.tasks:
        extra = [d for d in task.upstream if d not in task.inputs]
        action = f"reuse {task.reuse_run}" if task.action == "reuse" else "run"
        table.add_row(
            str(task.level),
            task.id,
            task.kind.value,
            action,
            ", ".join(task.inputs),
            ", ".join(extra),
            task.describe_output(),
        )
    out.print(table)
    if the_plan.params:
        shown = ", ".join(f"{k}={v!r}" for k, v in the_plan.shown_params().items())
        out.print(Text(f"params: {shown}", style="dim"))
    if report is not None:
        _print_schema_report(report, the_plan)
        sys.exit(EXIT_INVALID if failed else EXIT_OK)


def _print_schema_report(report: SchemaReport, the_plan: Plan) -> None:
    for task_id, changes in report.changes.items():
        out.print(Text(f"schema changes of {task_id} since its last run:", style="bold"))
        for change in changes:
            style = "red" if change["breaking"] else "yellow"
            out.print(
                Text(
                    f"  {change['column']}: {change['change']} "
                    f"({change['before'] or '-'} -> {change['after'] or '-'})",
                    style=style,
                )
            )
    # A root reads nothing unknown in this plan (its inputs may lie outside a selection); the
    # rest are unknown because of a root, which is printed above them.
    unknown = report.unknown
    roots = [t for t in unknown if not any(i in unknown for i in the_plan.task(t).inputs)]
    for task_id in roots:
        out.print(
            Text(f"schema of {task_id} not known before running: {unknown[task_id]}", style="dim")
        )
    downstream = [t for t in unknown if t not in roots]
    if downstream:
        out.print(
            Text(
                f"so the schemas of {', '.join(downstream)} are not known before running either",
                style="dim",
            )
        )
    _print_problems(report.problems)


@main.command()
@pipeline_argument
def check(pipeline: Path) -> None:
    """Try every connection of a pipeline and report each one. Exit 1 if any fails."""
    import engine.api.pipeline as api
    from engine.execution.connections import check_connections

    with _errors():
        definition = api.load(pipeline)
        results = check_connections(definition)
    if not results:
        out.print(f"{definition.name} declares no connections")
        return
    table = Table()
    for column in ("connection", "target", "result", "latency"):
        table.add_column(column)
    for result in results:
        verdict = (
            Text("ok ", style="green") + result.detail
            if result.ok
            else Text(result.detail, style="red")
        )
        latency = f"{result.latency_ms:.0f} ms" if result.latency_ms is not None else ""
        table.add_row(result.name, result.target, verdict, latency)
    out.print(table)
    sys.exit(EXIT_OK if all(r.ok for r in results) else EXIT_FAILED)


@main.group()
def state() -> None:
    """Watermarks of incremental extracts: show, set or reset them (every change is audited)."""


@state.command("show")
@pipeline_argument
@click.argument("task", required=False)
@project_option
@click.option("--audit", is_flag=True, help="Also list every recorded change.")
def state_show(pipeline: Path, task: str | None, project_dir: Path | None, audit: bool) -> None:
    """Show each incremental extract's watermark, in the catalog and in each sink."""
    import engine.api.pipeline as api
    from engine.api.state import show_state
    from engine.state.catalog import CatalogReader

    with _errors():
        definition = api.load(pipeline)
        project = api.find_project_dir(project_dir)
        rows = show_state(definition, project, task)
    table = Table()
    for column in ("extract", "load (sink)", "kept in", "watermark", "run", "note"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.task_id,
            row.sink_id or "(none)",
            row.where,
            row.value or "(none: full load next)",
            row.run_id or "",
            Text(row.note, style="yellow"),
        )
    out.print(table)
    if audit:
        with CatalogReader(catalog_location(project)) as catalog:
            for entry in catalog.watermark_audit(definition.name, task):
                out.print(
                    Text(
                        f"{entry.at[:19]}  {entry.action:<8} {entry.task_id} -> "
                        f"{entry.sink_id or '(none)'} by {entry.actor}: "
                        f"{entry.old_value} => {entry.new_value}",
                        style="dim",
                    )
                )


@state.command("set")
@pipeline_argument
@click.argument("task")
@click.option("--cursor", required=True, help="The new cursor value (ISO timestamp, date, number).")
@click.option("--key", "keys", multiple=True, help="Tie-break key values, in key order.")
@click.option(
    "--type",
    "kind",
    type=click.Choice(["auto", "int", "timestamp", "date", "decimal", "string"]),
    default="auto",
    show_default=True,
    help="How to read --cursor.",
)
@project_option
def state_set(
    pipeline: Path,
    task: str,
    cursor: str,
    keys: tuple[str, ...],
    kind: str,
    project_dir: Path | None,
) -> None:
    """Set an extract's watermark in every sink and the catalog."""
    import engine.api.pipeline as api
    from engine.api.state import parse_value, set_state
    from engine.core.watermark import Watermark

    with _errors():
        definition = api.load(pipeline)
        try:
            value = Watermark(parse_value(cursor, kind), tuple(parse_value(k) for k in keys))
        except ValueError as exc:
            raise ParameterError(f"--cursor {cursor!r}: {exc}") from None
        changed = set_state(definition, api.find_project_dir(project_dir), task, value)
    for line in changed:
        out.print(f"set {line}: {value.describe()}")


@state.command("reset")
@pipeline_argument
@click.argument("task", required=False)
@project_option
def state_reset(pipeline: Path, task: str | None, project_dir: Path | None) -> None:
    """Forget watermarks (one extract's, or all): the next run reads everything."""
    import engine.api.pipeline as api
    from engine.api.state import reset_state

    with _errors():
        definition = api.load(pipeline)
        changed = reset_state(definition, api.find_project_dir(project_dir), task)
    for line in changed:
        out.print(f"reset {line}")


@main.command()
@pipeline_argument
@click.argument("task")
@param_option
def render(pipeline: Path, task: str, params: tuple[str, ...]) -> None:
    """Print a task's SQL or configuration with every template rendered."""
    import yaml

    import engine.api.pipeline as api
    from engine.core.secrets import mask_secrets, mask_text

    with _errors():
        the_plan = api.plan(pipeline, params=_params(params))
        if task not in the_plan:
            from engine.core.problems import did_you_mean

            raise SelectionError(
                f"no task {task!r}.{did_you_mean(task, [t.id for t in the_plan.tasks])}"
            )
        planned = the_plan.task(task)
    if planned.sql is not None:
        sql = mask_text(planned.sql.strip())
        out.print(Syntax(sql, "sql", theme="ansi_dark", background_color="default"))
        return
    config = mask_secrets(
        planned.spec.model_dump(
            mode="json",
            by_alias=True,
            exclude_none=True,
            exclude_defaults=False,
            fallback=repr,
        )
    )
    out.print(
        Syntax(
            yaml.safe_dump(config, sort_keys=False),
            "yaml",
            theme="ansi_dark",
            background_color="default",
        )
    )


@main.command()
@pipeline_argument
@param_option
@select_option(
    "Run these tasks with the upstream they need, reusing upstream outputs of the last "
    "successful run when their definition is unchanged; TASK+ adds downstream."
)
@click.option(
    "--max-parallel",
    type=click.IntRange(min=1),
    default=None,
    help="Tasks running at once (default: the number of CPUs, at least 2).",
)
@project_option
@log_options
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Live progress table (default: on when stderr is a terminal).",
)
@click.option(
    "--full-refresh",
    is_flag=True,
    help="Incremental extracts read everything, ignoring their watermarks.",
)
@click.option(
    "--resume",
    "resume_run",
    is_flag=False,
    flag_value="last",
    default=None,
    metavar="[RUN_ID|last]",
    help="Continue a run that did not succeed: reuse what succeeded, run the rest, same run id.",
)
@click.option(
    "--force",
    is_flag=True,
    help="With --resume: resume although the pipeline changed (changed tasks run again).",
)
@click.option(
    "--if-running",
    type=click.Choice(["refuse", "wait"]),
    default="refuse",
    show_default=True,
    help="When this pipeline is already running: refuse (exit 1) or wait for it to finish.",
)
@click.option(
    "--wait-timeout",
    type=float,
    default=None,
    help="With --if-running wait: give up after this many seconds.",
)
def run(
    pipeline: Path,
    params: tuple[str, ...],
    select: tuple[str, ...],
    max_parallel: int | None,
    project_dir: Path | None,
    log_format: str,
    log_level: str,
    progress: bool | None,
    full_refresh: bool,
    resume_run: str | None,
    force: bool,
    if_running: str,
    wait_timeout: float | None,
) -> None:
    """Run a pipeline. Exit 0 on success, 1 when a task failed, 2 when the input is invalid."""
    import engine.api.pipeline as api
    from engine.cli.progress import LiveProgress, summary
    from engine.state.locks import IfRunning

    if resume_run is not None and (params or select or full_refresh):
        _fail("--resume runs with the parameters and selection of the run it continues")
    if force and resume_run is None:
        _fail("--force only applies with --resume")
    live_wanted = err.is_terminal if progress is None else progress
    _logging(log_format, log_level.upper(), err if live_wanted else None)
    executors: list[Executor] = []
    _cancel_on_signals(executors)
    mode: IfRunning = "wait" if if_running == "wait" else "refuse"
    with _errors():
        project = api.find_project_dir(project_dir)
        the_plan = None
        if resume_run is None:
            the_plan = api.plan(
                pipeline,
                params=_params(params),
                select=select or None,
                project_dir=project,
                full_refresh=full_refresh,
            )
    display: LiveProgress | None = None
    planned: list[Plan] = [the_plan] if the_plan is not None else []

    def attach(executor: Executor) -> None:
        executors.append(executor)
        if display is not None:
            display.executor = executor

    def waiting(holder: dict[str, object]) -> None:
        err.print(
            Text(
                f"waiting: pipeline is running as run {holder.get('run_id', '?')} "
                f"(pid {holder.get('pid', '?')})",
                style="yellow",
            )
        )

    try:
        if the_plan is not None:
            display = LiveProgress(the_plan, err) if live_wanted else None
            with _errors(), display or nullcontext():
                result = api.execute(
                    the_plan,
                    project_dir=project,
                    max_parallel=max_parallel,
                    listener=display,
                    on_executor=attach,
                    if_running=mode,
                    wait_timeout=wait_timeout,
                    on_wait=waiting,
                )
        else:
            assert resume_run is not None
            with _errors():
                result = api.resume(
                    pipeline,
                    resume_run,
                    force=force,
                    project_dir=project,
                    max_parallel=max_parallel,
                    on_executor=attach,
                    on_plan=planned.append,
                    if_running=mode,
                    wait_timeout=wait_timeout,
                )
    except KeyboardInterrupt:
        _fail("interrupted before the run could wind down", code=EXIT_CANCELLED)
    summary(planned[0], result, out if log_format == "text" else err)
    codes = {"SUCCESS": EXIT_OK, "FAILED": EXIT_FAILED, "CANCELLED": EXIT_CANCELLED}
    sys.exit(codes[result.state.value])


@main.command()
@click.argument("run_id", required=False)
@click.option("--pipeline", default=None, help="Only runs of this pipeline.")
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

    from engine.api.pipeline import find_project_dir
    from engine.cli.progress import STYLES
    from engine.core.durations import format_duration
    from engine.state.catalog import CatalogReader

    project = find_project_dir(project_dir)
    with _errors(), CatalogReader(catalog_location(project)) as catalog:
        if run_id is None:
            rows = catalog.runs(pipeline, limit)
            if fmt == "json":
                out.print_json(json.dumps([asdict(r) for r in rows], default=str))
                return
            table = Table()
            for column in ("run", "pipeline", "state", "started", "duration", "error"):
                table.add_column(column)
            for r in rows:
                state = Text(r.state.value, style=STYLES.get(r.state.value, ""))
                if _stale(project, r):
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
            (stale if _stale(project, the_run) else "", "red"),
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
    for task_id, source in reused.items():
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


def _stale(project: Path, run: RunRow) -> bool:
    """A run the catalog calls PENDING or RUNNING whose pipeline lock nobody holds."""
    from engine.state.locks import lock_is_held
    from engine.state.workspace import STATE_DIR

    if run.state.value not in ("PENDING", "RUNNING"):
        return False
    return not lock_is_held(project / STATE_DIR, run.pipeline)


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
            "missing": f"missing, filled with NULL ({before})",
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


@main.command()
@click.argument("task")
@click.option("--run", "run_id", default=None, help="Output of this run (id, prefix or 'last').")
@click.option("--pipeline", default=None, help="The pipeline, when several have this task.")
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

    from engine.api.pipeline import find_project_dir
    from engine.api.project import open as open_project

    with _errors(), open_project(find_project_dir(project_dir)) as project, _pipeline_option():
        frame = (
            project.quarantine(task, run_id, pipeline)
            if quarantine
            else project.table(task, run_id, pipeline)
        )
        total = frame.select(pl.len()).collect().item()
        preview = frame.head(limit).collect()
    if fmt == "csv":
        click.echo(_csv(preview), nl=False)
    elif fmt == "json":
        click.echo(preview.write_json())
    elif quarantine:
        _print_quarantine(preview)
        err.print(Text(f"{min(limit, total):,} of {total:,} rows", style="dim"))
    else:
        with pl.Config(tbl_rows=limit, tbl_cols=30, fmt_str_lengths=60, tbl_width_chars=160):
            click.echo(str(preview))
        err.print(Text(f"{min(limit, total):,} of {total:,} rows", style="dim"))


def _csv(frame: pl.DataFrame) -> str:
    """CSV has no nested values: a quarantine's reasons go as their text column alone."""
    from transforms.validate import QUARANTINE_ERRORS, QUARANTINE_REASONS

    if QUARANTINE_REASONS in frame.columns:
        frame = frame.drop(QUARANTINE_ERRORS)
    return frame.write_csv()


_CELL_WIDTH = 24
"""The widest a data column of a quarantine table gets: its values are context, the reasons
are the point."""


def _print_quarantine(preview: pl.DataFrame) -> None:
    """Quarantined rows for a terminal: the row number, its reasons whole and one per line
    ("column: check (value)"), then as many of the row's columns as fit, each on one line."""
    import polars as pl

    from transforms.validate import (
        QUARANTINE_ERRORS,
        QUARANTINE_REASONS,
        QUARANTINE_ROW,
        reason_texts,
    )

    texts = preview.select(reason_texts(pl.col(QUARANTINE_ERRORS))).to_series().to_list()
    reasons = ["\n".join(lines or []) for lines in texts]
    rows = [str(r) for r in preview[QUARANTINE_ROW].to_list()]
    row_width = max([len("row"), *map(len, rows)])
    longest = max([len("reasons"), *(len(line) for text in reasons for line in text.split("\n"))])
    reason_width = min(longest, max(40, out.width // 2))
    table = Table()
    table.add_column("row", justify="right", width=row_width, no_wrap=True)
    table.add_column("reasons", width=reason_width, overflow="fold")
    room = out.width - 1 - (row_width + 3) - (reason_width + 3)  # a column's border and padding
    columns: list[list[str]] = [rows, reasons]
    skip = {QUARANTINE_ROW, QUARANTINE_REASONS, QUARANTINE_ERRORS}
    names = [name for name in preview.columns if name not in skip]
    left_out: list[str] = []
    for name in names:
        cells = ["null" if v is None else str(v) for v in preview[name].to_list()]
        width = min(_CELL_WIDTH, max([len(name), *map(len, cells)]))
        if left_out or width + 3 > room:
            left_out.append(name)
            continue
        room -= width + 3
        table.add_column(name, width=width, no_wrap=True, overflow="ellipsis")
        columns.append(cells)
    for values in zip(*columns, strict=True):
        table.add_row(*values)
    out.print(table)
    if left_out:
        out.print(
            Text(
                f"not shown for width: {', '.join(left_out)} (--format json shows every column)",
                style="dim",
            )
        )


@main.command()
@pipeline_argument
@click.argument("column")
@click.option(
    "--upstream/--downstream",
    "upstream",
    default=True,
    help="Where COLUMN comes from (the default), or what depends on it.",
)
@click.option("--kind", type=click.Choice(["value", "filter"]), default=None)
@click.option(
    "--run",
    "run_id",
    default=None,
    help="The lineage recorded by this run: id, prefix or 'last' (default: as defined now).",
)
@project_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "mermaid", "dot"]),
    default="text",
    show_default=True,
)
def lineage(
    pipeline: Path,
    column: str,
    upstream: bool,
    kind: str | None,
    run_id: str | None,
    project_dir: Path | None,
    fmt: str,
) -> None:
    """Where COLUMN (task.column) comes from, or what depends on it, across the pipeline.

    By default, the pipeline as defined now, over the output schemas `plan` computes (or the
    last run's, for sources not known before running); with --run, what that run recorded."""
    import engine.api.pipeline as api
    from engine.planning.lineage import lineage_report
    from engine.state.catalog import CatalogReader
    from lineage.columns import Kind
    from lineage.graph import render_graph

    downstream = not upstream
    if "." not in column:
        _fail(f"give the column as TASK.COLUMN, not {column!r}")
    chosen: Kind | None = "filter" if kind == "filter" else "value" if kind == "value" else None
    with _errors():
        the_plan = api.plan(pipeline)
        project = api.find_project_dir(project_dir)
        location = catalog_location(project)
        catalog = CatalogReader(location) if location.exists() or run_id else None
        try:
            report = lineage_report(
                the_plan, catalog, column, downstream=downstream, kind=chosen, run_id=run_id
            )
        finally:
            if catalog is not None:
                catalog.close()
    if fmt == "json":
        out.print_json(json.dumps(report))
        return
    if fmt in ("mermaid", "dot"):
        click.echo(render_graph(report, fmt), nl=False)
        return
    out.print(Text(column, style="bold"))

    def show(branch: dict[str, object], depth: int) -> None:
        for name, below in branch.items():
            out.print("  " * depth + ("└─ " if depth else "") + name)
            if isinstance(below, dict):
                show(below, depth + 1)

    show(report["tree"], 1)
    if not report["tree"]:
        out.print(Text("  (no " + ("dependents" if downstream else "sources") + ")", style="dim"))
    for name, reasons in report["unresolved"].items():
        for reason in reasons:
            err.print(Text(f"unresolved in {name}: {reason}", style="yellow"))


@main.group()
def dlq() -> None:
    """Dead letters: tasks that failed for good, with every attempt, ready to requeue."""


@dlq.command("list")
@click.option("--pipeline", default=None, help="Only this pipeline's letters.")
@click.option("--all", "every", is_flag=True, help="Also resolved and requeued letters.")
@project_option
@format_option
def dlq_list(pipeline: str | None, every: bool, project_dir: Path | None, fmt: str) -> None:
    """List dead letters (open ones unless --all), newest first."""
    from dataclasses import asdict

    from engine.api.pipeline import find_project_dir
    from engine.state.catalog import CatalogReader

    project = find_project_dir(project_dir)
    with _errors(), CatalogReader(catalog_location(project)) as catalog:
        letters = catalog.dead_letters(pipeline, status=None if every else "open")
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

    from engine.api.pipeline import find_project_dir
    from engine.state.catalog import CatalogReader

    project = find_project_dir(project_dir)
    with _errors(), CatalogReader(catalog_location(project)) as catalog:
        letter = catalog.dead_letter(letter_id)
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
    import engine.api.pipeline as api
    from engine.cli.progress import summary

    _logging("text", "INFO", None)
    executors: list[Executor] = []
    _cancel_on_signals(executors)
    try:
        with _errors():
            result = api.requeue_dead_letter(
                letter_id,
                attempts=attempts,
                backoff=backoff,
                force=force,
                project_dir=project_dir,
                on_executor=executors.append,
            )
    except KeyboardInterrupt:
        _fail("interrupted before the run could wind down", code=EXIT_CANCELLED)
    summary(result.plan, result, out)
    codes = {"SUCCESS": EXIT_OK, "FAILED": EXIT_FAILED, "CANCELLED": EXIT_CANCELLED}
    sys.exit(codes[result.state.value])


@dlq.command("resolve")
@click.argument("letter_id", type=click.IntRange(min=1))
@click.option("--note", required=True, help="Why it needs no requeue; kept with who and when.")
@project_option
def dlq_resolve(letter_id: int, note: str, project_dir: Path | None) -> None:
    """Dismiss a dead letter dealt with otherwise (fixed by hand, obsolete): it is marked
    resolved with your note, user and time, and leaves `dlq list` (`--all` still shows it)."""
    from engine.api.pipeline import find_project_dir
    from engine.state.catalog import Catalog

    project = find_project_dir(project_dir)
    with _errors():
        location = catalog_location(project)
        if not location.exists():
            raise StateError(f"no arrowline catalog at {location.describe()}")
        with Catalog(location) as catalog:
            letter = catalog.resolve_dead_letter(letter_id, note)
    out.print(
        Text.assemble(
            (f"resolved dead letter {letter.id}", "bold"),
            f" (task {letter.task_id!r} of run {letter.run_id}) by {letter.resolved_by}",
        )
    )


@main.group()
def quarantine() -> None:
    """Rows validate tasks set aside: look at them, replay them after a fix."""


@quarantine.command("show")
@click.argument("task")
@click.option("--run", "run_id", default=None, help="This run's quarantine (id, prefix, 'last').")
@click.option("--pipeline", default=None, help="The pipeline, when several have this task.")
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

    from engine.api.pipeline import find_project_dir
    from engine.api.project import open as open_project

    with _errors(), open_project(find_project_dir(project_dir)) as project, _pipeline_option():
        frame = project.quarantine(task, run_id, pipeline)
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
        click.echo(_csv(preview), nl=False)
        return
    if fmt == "json":
        click.echo(
            json.dumps(
                {"rows": total, "by_reason": reasons.to_dicts(), "preview": preview.to_dicts()},
                default=str,
            )
        )
        return
    _print_quarantine(preview)
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
    pipeline: Path,
    task: str,
    run_id: str | None,
    downstream: tuple[str, ...],
    project_dir: Path | None,
) -> None:
    """Validate quarantined rows again after a fix; report how many pass now and how many fail
    again and stay quarantined. Exit 0 when every row passed (and the --then tasks succeeded),
    1 when some rows are still quarantined or a task failed."""
    import engine.api.pipeline as api
    from engine.cli.progress import summary

    _logging("text", "INFO", None)
    with _errors():
        result, replayed = api.replay_quarantine(
            pipeline, task, from_run=run_id, downstream=downstream, project_dir=project_dir
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
    codes = {"SUCCESS": EXIT_OK, "FAILED": EXIT_FAILED, "CANCELLED": EXIT_CANCELLED}
    code = codes[result.state.value]
    sys.exit(EXIT_FAILED if code == EXIT_OK and outcome.rows_rejected else code)


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """The benchmark harness (`python -m benchmarks`): run, list, report, compare.

    It lives in the source checkout, beside engine/, and is run from there."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "__main__.py").exists():
        _fail(
            "the benchmark harness is not installed with the package",
            hint="run it from a source checkout: python -m benchmarks",
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks.__main__ import main as bench_main

    sys.exit(bench_main(list(args), prog="arrowline bench"))


@main.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to a file instead of standard output.",
)
def schema(output: Path | None) -> None:
    """Print the JSON Schema of pipeline files, for editors (yaml-language-server) and linters."""
    from engine.spec.model import pipeline_json_schema

    text = json.dumps(pipeline_json_schema(), indent=2)
    if output is None:
        click.echo(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")
        err.print(f"wrote {output}")


import engine.cli.catalog as cli_catalog  # noqa: E402, F401 - they register their commands on main
import engine.cli.gc as cli_gc  # noqa: E402, F401 - they register their commands on main
import engine.cli.schedule as cli_scheduler  # noqa: E402, F401 - they register their commands on main

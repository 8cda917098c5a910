"""`arrowline validate | plan | check | render | run`: a pipeline from its definition to a run."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from engine.cli.common import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_OK,
    cancel_on_signals,
    configure_logs,
    err,
    errors,
    exit_code,
    fail,
    find_project,
    format_option,
    log_options,
    out,
    param_option,
    parse_params,
    pipeline_argument,
    print_problems,
    project_option,
    select_option,
    target_option,
)
from engine.core.problems import Problem
from engine.core.states import RunState

if TYPE_CHECKING:
    from engine.api.project import Project
    from engine.execution.executor import Executor, RunResult
    from engine.planning.build import Plan
    from engine.planning.schemas import SchemaReport
    from engine.spec.model import ExecutorSpec

__all__ = ["COMMANDS"]


@click.command()
@click.argument("pipelines", nargs=-1, required=True, metavar="PIPELINE...")
@target_option
@project_option
@format_option
def validate(pipelines: tuple[str, ...], project_dir: Path | None, fmt: str) -> None:
    """Check pipeline files (or pipelines by name); report every problem with file:line.
    Exit 2 when any is invalid."""
    from engine.api.project import looks_like_file
    from engine.tasks.checks import check_file

    everything: list[Problem] = []
    invalid = False
    with errors():
        project = find_project(project_dir) if not all(map(looks_like_file, pipelines)) else None
        paths = [
            Path(p) if looks_like_file(p) or project is None else project.pipeline_file(p)
            for p in pipelines
        ]
    for path in paths:
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
        print_problems(everything)
    sys.exit(EXIT_INVALID if invalid else EXIT_OK)


@click.command()
@pipeline_argument
@param_option
@target_option
@select_option("Plan only these tasks (and what they need).")
@project_option
@format_option
@click.option(
    "--no-schemas",
    is_flag=True,
    help="Skip computing output schemas over empty inputs (type errors, broken references, drift).",
)
@click.option("--force", is_flag=True, help="Plan every task to run, whatever the cache holds.")
def plan(
    pipeline: str,
    params: tuple[str, ...],
    select: tuple[str, ...],
    exclude: tuple[str, ...],
    project_dir: Path | None,
    fmt: str,
    no_schemas: bool,
    force: bool,
) -> None:
    """Show what a run would do: tasks in order with inputs, outputs, levels, why each runs or
    which run's output it reuses, each task's output schema changes, and the type errors or
    broken column references a run would hit (exit 2 when there are any)."""
    from engine.api.options import PlanOptions

    with errors(), find_project(project_dir) as project:
        definition = project.definition(pipeline)
        options = PlanOptions(
            params=parse_params(params),
            select=select or None,
            exclude=exclude or None,
            force=force,
        )
        the_plan = project.plan(definition, options)
        report = None if no_schemas else project.plan_schemas(definition, the_plan)
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
    for column in ("level", "task", "kind", "action", "why", "inputs", "depends on", "output"):
        table.add_column(column)
    for task in the_plan.tasks:
        extra = [d for d in task.upstream if d not in task.inputs]
        action = f"reuse {task.reuse_run}" if task.action == "reuse" else "run"
        why = Text(task.cache.reason if task.cache else "")
        if task.cache is not None and task.cache.detail and task.action == "run":
            why.append(f" ({task.cache.detail})", style="dim")
        table.add_row(
            str(task.level),
            task.id,
            task.kind.value,
            action,
            why,
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
    print_problems(report.problems)


@click.command()
@pipeline_argument
@target_option
@project_option
def check(pipeline: str, project_dir: Path | None) -> None:
    """Try every connection of a pipeline (a SQL project's as its target makes them) and
    report each one. Exit 1 if any fails."""
    from engine.execution.connections import check_connections

    with errors(), find_project(project_dir) as project:
        definition = project.definition(pipeline)
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


@click.command()
@pipeline_argument
@click.argument("task")
@param_option
@target_option
@project_option
def render(pipeline: str, task: str, params: tuple[str, ...], project_dir: Path | None) -> None:
    """Print a task's SQL or configuration with every template rendered."""
    import yaml

    from engine.api.options import PlanOptions
    from engine.core.errors import SelectionError
    from engine.core.problems import did_you_mean
    from engine.core.secrets import mask_secrets, mask_text

    with errors(), find_project(project_dir) as project:
        the_plan = project.plan(pipeline, PlanOptions(params=parse_params(params)))
        if task not in the_plan:
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


def _executor(kind: str | None, address: str | None, declared: ExecutorSpec) -> ExecutorSpec | None:
    """--executor and --address over the pipeline's `executor:` (None: as it says)."""
    from engine.spec.model import ExecutorSpec

    if kind is None:
        return None
    if kind == "local":
        return ExecutorSpec(kind="local")
    return ExecutorSpec(kind="ray", address=address or declared.address)


@click.command()
@pipeline_argument
@param_option
@target_option
@select_option(
    "Run these tasks with the upstream they need, reusing upstream outputs of the last "
    "successful run when their definition is unchanged."
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
    help="Incremental extracts read everything, ignoring their watermarks, and incremental "
    "sql tasks make their whole table again.",
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
    help="Run every task, whatever the cache holds; with --resume: resume although the "
    "pipeline changed (changed tasks run again).",
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
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default=None,
    help="Where task attempts run, over the pipeline's `executor:`: threads of this process, "
    "or Ray tasks (needs the ray extra and an s3:// workspace).",
)
@click.option(
    "--address",
    "ray_address",
    default=None,
    metavar="auto|ray://HOST:PORT",
    help="With --executor ray: the cluster (default: the pipeline's `executor.address`, else a "
    "Ray started in this process).",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=2),
    default=None,
    metavar="N",
    help="Run N times, every task each time (as --force), then print each task's median time, "
    "its spread and rows out, and the run ids; exit 1 if any repetition failed.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="With --repeat: the summary as JSON on stdout.",
)
def run(
    pipeline: str,
    params: tuple[str, ...],
    select: tuple[str, ...],
    exclude: tuple[str, ...],
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
    executor: str | None,
    ray_address: str | None,
    repeat: int | None,
    fmt: str,
) -> None:
    """Run a pipeline. Exit 0 on success, 1 when a task failed, 2 when the input is invalid.
    With --repeat N: N fresh runs, summed up per task (exit 1 when any failed)."""
    from dataclasses import replace

    from engine.api.options import PlanOptions, RunOptions
    from engine.cli.progress import LiveProgress, summary

    if resume_run is not None and (params or select or exclude or full_refresh):
        fail("--resume runs with the parameters and selection of the run it continues")
    if resume_run is not None and repeat is not None:
        fail("--repeat starts a fresh run each time; it does not go with --resume")
    if ray_address is not None and executor != "ray":
        fail("--address names a Ray cluster: it goes with --executor ray")
    if fmt == "json" and repeat is None:
        fail(
            "--format json goes with --repeat",
            hint="a single run's record as JSON: arrowline runs RUN_ID --format json",
        )
    live_wanted = err.is_terminal if progress is None else progress
    configure_logs(log_format, log_level.upper(), err if live_wanted else None)
    executors: list[Executor] = []
    cancel_on_signals(executors)
    with errors():
        project = find_project(project_dir)
        definition = project.definition(pipeline)
        the_plan = None
        if resume_run is None:
            what = PlanOptions(
                params=parse_params(params),
                select=select or None,
                exclude=exclude or None,
                full_refresh=full_refresh,
                force=force or repeat is not None,  # a repetition reuses nothing
            )
            the_plan = project.plan(definition, what)
    display: LiveProgress | None = None
    planned: list[Plan] = [the_plan] if the_plan is not None else []
    if repeat is not None and the_plan is not None and not full_refresh:
        _warn_incremental(the_plan)

    def attach(executor: Executor) -> None:
        executors[:] = [executor]  # a signal cancels the run running now
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

    how = RunOptions(
        max_parallel=max_parallel,
        on_executor=attach,
        if_running="wait" if if_running == "wait" else "refuse",
        wait_timeout=wait_timeout,
        executor=_executor(executor, ray_address, definition.spec.executor),
    )
    try:
        with project:
            if the_plan is not None and repeat is not None:
                results: list[RunResult] = []
                for number in range(1, repeat + 1):
                    with errors():
                        if number > 1:  # a new run id each time
                            the_plan = project.plan(definition, what)
                        display = LiveProgress(the_plan, err) if live_wanted else None
                        with display or nullcontext():
                            options = replace(how, listener=display, on_wait=waiting)
                            results.append(project.execute(the_plan, options))
                    _said_repetition(number, repeat, results[-1])
                    stopped = bool(executors) and executors[0].cancel_requested
                    if results[-1].state is RunState.CANCELLED or stopped:
                        break
                console = out if log_format == "text" or fmt == "json" else err
                with errors():
                    sys.exit(_report_repeats(project, results, repeat, fmt, console))
            elif the_plan is not None:
                display = LiveProgress(the_plan, err) if live_wanted else None
                with errors(), display or nullcontext():
                    options = replace(how, listener=display, on_wait=waiting)
                    result = project.execute(the_plan, options)
            else:
                assert resume_run is not None
                with errors():
                    result = project.resume(
                        definition, resume_run, force=force, options=how, on_plan=planned.append
                    )
    except KeyboardInterrupt:
        fail("interrupted before the run could wind down", code=EXIT_CANCELLED)
    summary(planned[0], result, out if log_format == "text" else err)
    sys.exit(exit_code(result))


def _warn_incremental(the_plan: Plan) -> None:
    appending = [
        task.id for task in the_plan.to_run if getattr(task.spec.load, "mode", None) == "append"
    ]
    if appending:
        err.print(
            Text(
                f"warning: loads in append mode ({', '.join(appending)}) add their rows again in "
                "every repetition",
                style="yellow",
            )
        )
    incremental = [task.id for task in the_plan.to_run if task.incremental]
    if incremental:
        err.print(
            Text(
                f"warning: incremental extracts ({', '.join(incremental)}) continue from their "
                "watermarks, so repetitions after the first read only new rows; add "
                "--full-refresh for the same rows each time",
                style="yellow",
            )
        )


def _said_repetition(number: int, repeat: int, result: RunResult) -> None:
    from engine.core.durations import format_duration

    err.print(
        Text.assemble(
            (f"repetition {number}/{repeat}: ", "bold"),
            f"run {result.run_id} ",
            (result.state.value, "green" if result.ok else "bold red"),
            f" in {format_duration(result.duration_s)}",
        )
    )


def _report_repeats(
    project: Project, results: list[RunResult], repeat: int, fmt: str, console: Console
) -> int:
    """Print the repetitions summed up; the exit code: 130 when cancelled, 1 when any failed."""
    from engine.api.compare import summarize_repeats
    from engine.cli.progress import repeat_summary

    report = summarize_repeats(project.catalog, [result.run_id for result in results])
    if fmt == "json":
        console.print_json(json.dumps(report.to_dict()))
    else:
        repeat_summary(report, console)
    if len(results) < repeat or any(r.state is RunState.CANCELLED for r in results):
        err.print(Text(f"cancelled after {len(results)} of {repeat} repetitions", style="red"))
        return EXIT_CANCELLED
    failed = [
        f"{number} (run {run.run_id}, {run.state.value})"
        for number, run in enumerate(report.runs, 1)
        if run.state is not RunState.SUCCESS
    ]
    if failed:
        err.print(Text(f"repetitions that failed: {', '.join(failed)}", style="bold red"))
        return EXIT_FAILED
    return EXIT_OK


COMMANDS = (validate, plan, check, render, run)

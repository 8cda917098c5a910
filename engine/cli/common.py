"""What every command module shares: the options that mean the same on every command, the
consoles, and how errors become a message and an exit code.

Exit codes: 0 success; 1 the run failed (a task failed); 2 the pipeline, a parameter or the
command line is invalid; 130 the run was cancelled.

A pipeline is PIPELINE on every command that takes one: its file, or its name (the `pipeline:`
of a YAML file in the project). The project is `--project-dir` on every command that reads or
writes state; commands that took the folder as an argument still do.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.console import Console
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

if TYPE_CHECKING:
    from engine.api.project import Project
    from engine.execution.executor import Executor, RunResult

__all__ = [
    "EXIT_CANCELLED",
    "EXIT_FAILED",
    "EXIT_INVALID",
    "EXIT_OK",
    "PIPELINE",
    "cancel_on_signals",
    "configure_logs",
    "err",
    "errors",
    "exit_code",
    "fail",
    "find_project",
    "format_option",
    "log_options",
    "one_project_dir",
    "open_project",
    "out",
    "param_option",
    "parse_params",
    "pipeline_argument",
    "pipeline_option",
    "print_problems",
    "project_argument",
    "project_option",
    "scheduler_target_option",
    "select_option",
    "target_option",
]

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_CANCELLED = 0, 1, 2, 130


def _console(stderr: bool) -> Console:
    console = Console(stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped or captured output: rich would assume 80 columns and cut the tables short.
        console = Console(stderr=stderr, width=160)
    return console


out = _console(stderr=False)
err = _console(stderr=True)


# -- errors -----------------------------------------------------------------------------------


def fail(message: str, hint: str | None = None, code: int = EXIT_INVALID) -> NoReturn:
    err.print(Text.assemble(("error: ", "bold red"), message))
    if hint:
        err.print(Text.assemble(("hint: ", "yellow"), hint))
    sys.exit(code)


@contextmanager
def errors() -> Iterator[None]:
    """Turn arrowline errors into a message and an exit code; anything else is a bug."""
    from engine.api.reader import AmbiguousTask

    try:
        yield
    except PipelineInvalid as exc:
        print_problems(exc.problems)
        sys.exit(EXIT_INVALID)
    except (DefinitionError, ParameterError, SelectionError) as exc:
        where = exc.where()
        fail(f"{where}: {exc.message}" if where else exc.message, exc.hint)
    except AmbiguousTask as exc:
        # The notebook names a pipeline with `pipeline=`; on the command line it is an option.
        first, *others = exc.pipelines
        fail(exc.message, f"add --pipeline {first} (or another of {', '.join(others)})", 1)
    except StateError as exc:
        fail(exc.message, exc.hint, EXIT_FAILED)
    except ArrowlineError as exc:
        where = exc.where()
        fail(f"{where}: {exc.message}" if where else exc.message, exc.hint, EXIT_FAILED)


def print_problems(problems: list[Problem]) -> None:
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


def exit_code(result: RunResult) -> int:
    """A finished run's exit code."""
    codes = {"SUCCESS": EXIT_OK, "FAILED": EXIT_FAILED, "CANCELLED": EXIT_CANCELLED}
    return codes[result.state.value]


# -- the project ------------------------------------------------------------------------------


def find_project(project_dir: Path | None) -> Project:
    """The project a command means: --project-dir, $ARROWLINE_PROJECT_DIR, the nearest folder
    up from here with `.arrowline/`, else here (call it inside `errors()`: a bad
    $ARROWLINE_CATALOG is reported, not raised)."""
    from engine.api.project import Project

    return Project.find(project_dir)


def open_project(project_dir: Path | None) -> Project:
    """A project that has run before, as `engine.open` finds it from the project folder."""
    from engine.api.project import open as open_existing

    return open_existing(find_project(project_dir).path)


def one_project_dir(positional: Path | None, option: Path | None) -> Path | None:
    """The project folder of a command that takes it as an argument and as --project-dir."""
    if positional is not None and option is not None and positional.resolve() != option.resolve():
        fail(f"two project folders: {positional} and --project-dir {option}; give one")
    return positional if positional is not None else option


# -- options ----------------------------------------------------------------------------------


class _PipelineType(click.types.StringParamType):
    """A pipeline file or a pipeline's name, kept as written: the project resolves it
    (engine.api.project.Project.definition), since a name needs the project's files."""

    name = "pipeline"


PIPELINE = _PipelineType()

pipeline_argument = click.argument("pipeline", metavar="PIPELINE", type=PIPELINE)
"""PIPELINE: a pipeline file, or the name of a pipeline in the project."""


def pipeline_option(help_text: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """--pipeline PIPELINE, a filter by pipeline (name or file) on commands about runs."""
    return click.option("--pipeline", type=PIPELINE, default=None, help=help_text)


def _vars(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """dbt's `--vars '{start_date: 2024-01-01}'`: parameters as one YAML mapping."""
    if value is None:
        return
    import yaml

    try:
        found = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise click.BadParameter(f"not YAML: {exc}", ctx, param) from None
    if not isinstance(found, dict) or not all(isinstance(k, str) for k in found):
        raise click.BadParameter("a mapping of parameter names to values", ctx, param)
    from datetime import date

    # YAML reads 2024-01-01 as a date: as text, each parameter's own type reads it
    found = {k: v.isoformat() if isinstance(v, date) else v for k, v in found.items()}
    ctx.meta["arrowline.vars"] = found


def param_option(command: Callable[..., None]) -> Callable[..., None]:
    """--param NAME=VALUE (repeatable) and dbt's --vars YAML; --param wins."""
    command = click.option(
        "--vars",
        callback=_vars,
        expose_value=False,
        metavar="YAML",
        help="Parameters as a YAML mapping, as dbt's --vars: '{start_date: 2024-01-01}'.",
    )(command)
    return click.option(
        "--param",
        "-p",
        "params",
        multiple=True,
        metavar="NAME=VALUE",
        help="Set a parameter for this run (repeatable).",
    )(command)


class _TargetName(click.types.StringParamType):
    """A target's name, as `targets:` keys are written; whether the pipeline has it is said
    once the pipeline is read (engine.spec.targets), with the names it has."""

    name = "target"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from engine.spec.targets import TARGET_NAME

        if not isinstance(value, str) or not TARGET_NAME.fullmatch(value):
            self.fail(
                f"{value!r} is not a target's name (letters, digits, _ and -, not starting "
                "with a digit or -)",
                param,
                ctx,
            )
        return value


def _target_callback(
    strict: bool,
) -> Callable[[click.Context, click.Parameter, str | None], None]:
    def choose(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
        """--target NAME: a SQL project's target for this command (engine.spec.targets), as
        $ARROWLINE_TARGET says it (`strict`: and asked of this command's pipeline, which
        must have it), put back when the command ends."""
        import os

        from engine.spec.targets import TARGET_ENV, TARGET_OPTION_ENV

        if value is None:
            return
        names = (TARGET_ENV, TARGET_OPTION_ENV) if strict else (TARGET_ENV,)
        before = {name: os.environ.get(name) for name in names}
        for name in names:
            os.environ[name] = value

        def restore() -> None:
            for name, was in before.items():
                if was is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = was

        ctx.call_on_close(restore)

    return choose


def _profiles_dir(ctx: click.Context, _: click.Parameter, value: Path | None) -> None:
    """--profiles-dir FOLDER: where a dbt project's profiles.yml is read
    (engine.spec.dbt_profiles), for this command, put back when it ends."""
    from engine.spec.dbt_profiles import PROFILES_DIR_OPTION_ENV

    if value is None:
        return
    before = os.environ.get(PROFILES_DIR_OPTION_ENV)
    os.environ[PROFILES_DIR_OPTION_ENV] = str(value.resolve())

    def restore() -> None:
        if before is None:
            os.environ.pop(PROFILES_DIR_OPTION_ENV, None)
        else:
            os.environ[PROFILES_DIR_OPTION_ENV] = before

    ctx.call_on_close(restore)


def _target_option(
    strict: bool, help_text: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--target, and dbt's --profiles-dir beside it (the profile's outputs are the targets)."""
    target = click.option(
        "--target",
        metavar="NAME",
        type=_TargetName(),
        default=None,
        expose_value=False,
        is_eager=True,
        callback=_target_callback(strict),
        help=help_text,
    )
    profiles_dir = click.option(
        "--profiles-dir",
        metavar="FOLDER",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        expose_value=False,
        is_eager=True,
        callback=_profiles_dir,
        help="The folder of a dbt project's profiles.yml (default: $DBT_PROFILES_DIR, else "
        "the project's folder, else ~/.dbt). It must hold profiles.yml.",
    )
    return lambda command: target(profiles_dir(command))


target_option = _target_option(
    True,
    "A SQL project's target (one of its `targets:`; `default` for a pipeline without): where "
    "its models are published and what `{{ target }}` reads (default: $ARROWLINE_TARGET, else "
    "$DBT_TARGET for a dbt project's profile, else the project's `target:`). A name the "
    "pipeline does not have is an error.",
)
scheduler_target_option = _target_option(
    False,
    "The target of every SQL project this scheduler runs, as $ARROWLINE_TARGET (a pipeline "
    "without it warns and runs its default).",
)
project_option = click.option(
    "--project-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder holding .arrowline/ (default: $ARROWLINE_PROJECT_DIR, else the nearest folder "
    "up from here that has one, else here).",
)
project_argument = click.argument(
    "folder",
    required=False,
    metavar="[PROJECT_DIR]",
    type=click.Path(file_okay=False, path_type=Path),
)
"""The project folder as an argument, where commands have always taken it so (beside
--project-dir: `one_project_dir` picks)."""

format_option = click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)


def select_option(help_text: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """--select and --exclude, in dbt's selector grammar (engine.planning.select)."""
    grammar = (
        " Terms separated by spaces (or --select repeated) add up; a comma joins terms every "
        "task must match. TASK, stg_*, +TASK (and upstream), TASK+ (and downstream), 2+TASK, "
        "@TASK, tag:NAME, kind:sql, config.materialized:view, path:FILE, state:modified."
    )

    def apply(command: Callable[..., None]) -> Callable[..., None]:
        command = click.option(
            "--exclude",
            multiple=True,
            metavar="SELECTOR",
            help="Leave out the tasks these selectors name (same grammar as --select).",
        )(command)
        return click.option(
            "--select", "-s", multiple=True, metavar="SELECTOR", help=help_text + grammar
        )(command)

    return apply


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


def parse_params(values: tuple[str, ...]) -> dict[str, Any]:
    """--param's assignments over --vars' mapping (each checked against its parameter's type
    when the pipeline is read)."""
    from engine.spec.params import parse_assignments

    context = click.get_current_context(silent=True)
    given = dict(context.meta.get("arrowline.vars") or {}) if context is not None else {}
    return {**given, **parse_assignments(values)}


# -- running ----------------------------------------------------------------------------------


def configure_logs(log_format: str, log_level: str, console: Console | None) -> None:
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


def cancel_on_signals(holder: list[Executor]) -> None:
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

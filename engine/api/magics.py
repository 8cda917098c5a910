"""IPython magics: `%load_ext engine`, then

    %arrowline run PIPELINE [--param k=v ...] [--select SEL ...] [--force]
    %arrowline plan PIPELINE [--param k=v ...] [--select SEL ...]
    %arrowline runs [PIPELINE] [--limit N]
    %arrowline show [RUN] [--pipeline P]     # a run drawn: graph, tasks, Gantt chart

    %%sql
    select segment, sum(amount_usd) from checked group by 1

Each call opens the project as the CLI finds it (`--project-dir DIR`, else
$ARROWLINE_PROJECT_DIR, else the nearest folder holding `.arrowline/`, else the working
directory) and returns what the Project API returns, which a notebook shows as HTML: a run's
result, a plan, the runs as a DataFrame. `%%sql` runs DuckDB SQL over the latest outputs
(tasks are views by id, and `pipeline.task`) and returns a polars DataFrame.

IPython is imported here only, so `import engine` never needs it.
"""

from __future__ import annotations

import argparse
import shlex
from typing import TYPE_CHECKING, Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

if TYPE_CHECKING:
    import polars as pl
    from IPython.core.interactiveshell import InteractiveShell

    from engine.api.project import Project

__all__ = ["ArrowlineMagics", "load_ipython_extension", "run_line", "run_sql"]


class _HelpShown(Exception):
    """`--help` printed the help: nothing more to do."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad line as IPython's usage error instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}\n{self.format_usage()}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if status:
            raise UsageError(message or self.format_usage())
        raise _HelpShown


def _parser() -> _Parser:
    parser = _Parser(prog="%arrowline", description="arrowline from a notebook")
    parser.add_argument("--project-dir", default=None, help="the project folder")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, text in (("run", "run a pipeline"), ("plan", "plan a run, without running it")):
        command = commands.add_parser(name, help=text)
        command.add_argument("pipeline", help="a pipeline's file or name")
        command.add_argument("--param", "-p", action="append", default=[], metavar="K=V")
        command.add_argument("--select", "-s", action="append", default=None, metavar="SEL")
        command.add_argument("--exclude", action="append", default=None, metavar="SEL")
        command.add_argument("--force", action="store_true", help="every task, cache or not")
    runs = commands.add_parser("runs", help="runs, newest first")
    runs.add_argument("pipeline", nargs="?", default=None)
    runs.add_argument("--limit", type=int, default=50)
    show = commands.add_parser("show", help="one run: graph, tasks, Gantt chart")
    show.add_argument("run", nargs="?", default="last")
    show.add_argument("--pipeline", default=None)
    for command in commands.choices.values():
        command.add_argument("--project-dir", default=argparse.SUPPRESS, help="the project folder")
    return parser


def _project(project_dir: str | None) -> Project:
    from engine.api.project import Project

    return Project.find(project_dir)


def run_line(line: str) -> Any:
    """What `%arrowline LINE` returns (the magic without IPython, for tests and scripts)."""
    try:
        args = _parser().parse_args(shlex.split(line))
    except _HelpShown:
        return None
    with _project(args.project_dir) as project:
        return _command(project, args)


def _command(project: Project, args: argparse.Namespace) -> Any:
    from engine.api.options import PlanOptions
    from engine.spec.params import parse_assignments

    match args.command:
        case "run" | "plan":
            options = PlanOptions(
                params=parse_assignments(tuple(args.param)),
                select=args.select,
                exclude=args.exclude,
                force=args.force,
            )
            if args.command == "plan":
                return project.plan(args.pipeline, options)
            return project.run(args.pipeline, options)
        case "runs":
            name = project.pipeline_name(args.pipeline) if args.pipeline else None
            return project.runs(name, args.limit)
        case "show":
            name = project.pipeline_name(args.pipeline) if args.pipeline else None
            return project.run_info(args.run, name)
    raise UsageError(f"unknown command {args.command!r}")  # argparse lets none through


def run_sql(cell: str, project_dir: str | None = None) -> pl.DataFrame:
    """What `%%sql` returns: the query's rows over the latest outputs."""
    with _project(project_dir) as project:
        frame: pl.DataFrame = project.sql(cell).pl()
        return frame


@magics_class
class ArrowlineMagics(Magics):
    """`%arrowline` and `%%sql` (the methods are named as the magics)."""

    @line_magic
    def arrowline(self, line: str) -> Any:
        """%arrowline run|plan|runs|show ...: see `%arrowline --help`."""
        return run_line(line)

    @cell_magic
    def sql(self, line: str, cell: str) -> pl.DataFrame | None:
        """%%sql [--project-dir DIR]: DuckDB SQL over the latest outputs, as a DataFrame."""
        parser = _Parser(prog="%%sql")
        parser.add_argument("--project-dir", default=None)
        try:
            args = parser.parse_args(shlex.split(line))
        except _HelpShown:
            return None
        return run_sql(cell, args.project_dir)


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """Register the magics (`%load_ext engine` calls this through engine's own)."""
    ipython.register_magics(ArrowlineMagics)

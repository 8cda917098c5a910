"""`arrowline ui` (the web monitor) and `arrowline graph` (the task DAG as a picture)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from engine.cli.common import (
    errors,
    fail,
    find_project,
    one_project_dir,
    out,
    pipeline_argument,
    project_argument,
    project_option,
    select_option,
    target_option,
)

__all__ = ["COMMANDS"]


class _ServeByDefault(click.Group):
    """`arrowline ui [PROJECT_DIR]` serves; `arrowline ui export ...` writes a report. (A
    project folder named like a subcommand is served with `arrowline ui serve FOLDER`.)"""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["serve", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_ServeByDefault)
def ui() -> None:
    """The web monitor: `arrowline ui [PROJECT_DIR]` serves it (see `arrowline ui serve -h`);
    `arrowline ui export` writes one run or pipeline as a self-contained HTML report."""


@ui.command("serve")
@project_argument
@project_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Where the monitor listens.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option(
    "--token",
    envvar="ARROWLINE_UI_TOKEN",
    default=None,
    help="Required when --host is not loopback: open the monitor once as /?token=... "
    "(or send `Authorization: Bearer ...`). Default: $ARROWLINE_UI_TOKEN.",
)
def serve(
    folder: Path | None, project_dir: Path | None, host: str, port: int, token: str | None
) -> None:
    """Serve the web monitor of a project: pipelines, runs with their DAG and timeline, tasks
    with their output, lineage, dead letters and schedules, live while runs run."""
    import signal
    import threading

    from engine.cli.common import configure_logs
    from engine.ui.background import serve as bind

    with errors():
        project = find_project(one_project_dir(folder, project_dir))
        try:
            server = bind(project.path, host=host, port=port, token=token)
        except ValueError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"cannot serve the monitor on {host}:{port}: {exc.strerror or exc}")
    # runs started here (Run now, Requeue) log as `arrowline run` does, and keep their lines
    configure_logs("text", "INFO", None)
    stop = threading.Event()

    def stopping(*_: object) -> None:
        stop.set()

    def install() -> None:
        # a library a run loads may take SIGINT for itself (seen after a UDF ran): take it back
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not stopping:
                signal.signal(signum, stopping)

    install()
    server.start()
    shown = f"[{server.host}]" if ":" in server.host else server.host
    out.print(f"arrowline monitor of {project.path} on http://{shown}:{server.port}/")
    while not stop.wait(0.5):
        install()
    out.print("stopping: runs started here are left to finish on their own")
    server.stop()


@click.command()
@pipeline_argument
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["svg", "html", "mermaid", "dot"]),
    default="svg",
    show_default=True,
)
@click.option(
    "--run",
    "run_id",
    default=None,
    help="Draw the graph as this run planned it, with its tasks' states: id, prefix or 'last'.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file (default: standard output).",
)
@select_option(
    "Draw only these tasks, with the edges among them. Read against the pipeline as defined "
    "now, as `plan` reads it (state: against the catalog), also with --run: then the run's "
    "tasks the selection names are drawn with the edges the run recorded."
)
@target_option
@project_option
def graph(
    pipeline: str,
    fmt: str,
    run_id: str | None,
    output: Path | None,
    select: tuple[str, ...],
    exclude: tuple[str, ...],
    project_dir: Path | None,
) -> None:
    """The task DAG of PIPELINE as SVG, a self-contained HTML page, Mermaid or Graphviz dot;
    with --run, coloured by that run's task states; with --select or --exclude, only the tasks
    they name (`arrowline graph shop -s +orders --run last`)."""
    from engine.api.pictures import draw_graph, task_boxes

    with errors(), find_project(project_dir) as project:
        boxes = task_boxes(project, pipeline, run=run_id, select=select, exclude=exclude)
        if fmt == "html":
            from markupsafe import Markup

            from engine.ui.render import render
            from engine.views.svg import dag_svg

            name = project.pipeline_name(pipeline)
            shown = project.catalog.run_of(name, run_id).run_id if run_id else None
            text = render(
                "graph.html", exported=True, name=name, run_id=shown, graph=Markup(dag_svg(boxes))
            )
        else:
            text = draw_graph(boxes, fmt)  # type: ignore[arg-type]
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text, encoding="utf-8")
    out.print(f"wrote {output} ({len(boxes)} tasks)")


html_output = click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The HTML file to write.",
)
"""-o FILE of the commands that write one offline HTML page."""


def _write_page(output: Path, text: str, what: str = "") -> None:
    output.write_text(text, encoding="utf-8")
    out.print(f"wrote {output} ({what}{len(text.encode()) / 1e6:.2f} MB)")


@ui.command("export")
@pipeline_argument
@click.option(
    "--run",
    "run_id",
    default=None,
    help="The run to report: id, prefix or 'last'. Without it, the pipeline: its DAG as "
    "defined, its schedule, recent runs and definition.",
)
@html_output
@project_option
def export(pipeline: str, run_id: str | None, output: Path, project_dir: Path | None) -> None:
    """Write one run of PIPELINE (its DAG, Gantt, tasks and errors), or the pipeline itself,
    as one HTML file that opens offline, to attach to a ticket."""
    from engine.ui.pages import Definitions, Pages
    from engine.ui.render import render

    with errors(), find_project(project_dir) as project:
        name = project.pipeline_name(pipeline)
        pages = Pages(project.path, Definitions())
        if run_id is not None:
            context = pages.run_of(name, run_id, links=False)
            text = render("run.html", exported=True, csrf="", **context)
        else:
            context = pages.pipeline(name, as_defined=True)
            text = render("pipeline.html", exported=True, csrf="", href="", **context)
    _write_page(output, text)


@click.command()
@pipeline_argument
@html_output
@target_option
@project_option
def docs(pipeline: str, output: Path, project_dir: Path | None) -> None:
    """Document PIPELINE as one HTML file that opens offline: every task with its description,
    tests and file, its columns with their types, descriptions (a SQL project's property
    files) and the columns each is computed from, and the task graph."""
    from markupsafe import Markup

    from engine.api.docs import pipeline_docs
    from engine.ui.render import render

    with errors(), find_project(project_dir) as project:
        found = pipeline_docs(project, pipeline)
        text = render("docs.html", exported=True, docs=found, svg=Markup(found.svg))
    _write_page(output, text, f"{len(found.tasks)} tasks, ")


COMMANDS = [ui, graph, docs]

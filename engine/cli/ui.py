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
)

__all__ = ["COMMANDS"]


@click.command()
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
def ui(
    folder: Path | None, project_dir: Path | None, host: str, port: int, token: str | None
) -> None:
    """Serve the web monitor of a project: pipelines, runs with their DAG and timeline, tasks
    with their output, lineage, dead letters and schedules, live while runs run."""
    import uvicorn

    from engine.ui.guard import Guard
    from engine.ui.server import build_app

    with errors():
        project = find_project(one_project_dir(folder, project_dir))
        try:
            guard = Guard(host, port, token)
        except ValueError as exc:
            fail(str(exc))
        app = build_app(project.path, guard)
    shown = f"[{host}]" if ":" in host else host
    out.print(f"arrowline monitor of {project.path} on http://{shown}:{port}/")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


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
@project_option
def graph(
    pipeline: str, fmt: str, run_id: str | None, output: Path | None, project_dir: Path | None
) -> None:
    """The task DAG of PIPELINE as SVG, a self-contained HTML page, Mermaid or Graphviz dot;
    with --run, coloured by that run's task states."""
    from engine.api.pictures import draw_graph, task_boxes

    with errors(), find_project(project_dir) as project:
        boxes = task_boxes(project, pipeline, run=run_id)
        if fmt == "html":
            from markupsafe import Markup

            from engine.ui.render import render
            from engine.views.svg import dag_svg

            name = project.pipeline_name(pipeline)
            text = render(
                "graph.html", exported=True, name=name, run_id=run_id, graph=Markup(dag_svg(boxes))
            )
        else:
            text = draw_graph(boxes, fmt)  # type: ignore[arg-type]
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text, encoding="utf-8")
    out.print(f"wrote {output} ({len(boxes)} tasks)")


COMMANDS = [ui, graph]

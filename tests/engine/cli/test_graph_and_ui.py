"""`arrowline graph` in each format, with and without a run's states, and `arrowline ui`'s
refusal to serve beyond loopback without a token."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from click.testing import Result

from tests.conftest import WritePipeline

Cli = Callable[..., Result]

PIPELINE = """
pipeline: tiny
tasks:
  - id: a
    sql: select 1 as x
  - id: b
    sql: select x + 1 as y from a
  - id: c
    sql: select * from a join b on true
"""


def test_graph_draws_the_dag_in_every_format(cli: Cli, write: WritePipeline) -> None:
    path = write("tiny.yaml", PIPELINE)
    svg = cli("graph", path)
    assert svg.exit_code == 0
    root = ET.fromstring(svg.stdout)
    assert root.tag.endswith("svg")
    assert svg.stdout.count('class="task"') == 3
    mermaid = cli("graph", path, "--format", "mermaid").stdout
    assert {"t0 --> t1", "t0 --> t2", "t1 --> t2"} <= {
        line.strip() for line in mermaid.splitlines()
    }
    dot = cli("graph", path, "--format", "dot").stdout
    assert '"a" -> "c";' in dot


def test_graph_of_a_run_shows_its_states_and_html_stands_alone(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    path = write("tiny.yaml", PIPELINE)
    assert cli("run", path, "--no-progress").exit_code == 0
    svg = cli("graph", path, "--run", "last").stdout
    assert svg.count('data-state="SUCCESS"') == 3
    written = cli("graph", "tiny", "--run", "last", "--format", "html", "-o", "g.html")
    assert written.exit_code == 0
    html = (project / "g.html").read_text()
    assert html.startswith("<!doctype html>")
    assert "<script" not in html  # nothing to fetch: it opens offline
    assert 'data-state="SUCCESS"' in html


def test_graph_of_an_unknown_run_fails_clearly(cli: Cli, write: WritePipeline) -> None:
    path = write("tiny.yaml", PIPELINE)
    cli("run", path, "--no-progress")
    missing = cli("graph", path, "--run", "nope")
    assert missing.exit_code != 0
    assert "no run 'nope'" in missing.stderr


def test_ui_beyond_loopback_needs_a_token(cli: Cli, project: Path) -> None:
    refused = cli("ui", "--host", "0.0.0.0")
    assert refused.exit_code == 2
    assert "not loopback: give it a token" in refused.stderr


def test_ui_export_writes_a_run_or_a_pipeline_as_one_offline_file(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    path = write("tiny.yaml", PIPELINE)
    assert cli("run", path, "--no-progress").exit_code == 0
    done = cli("ui", "export", "tiny", "--run", "last", "-o", "run.html")
    assert done.exit_code == 0, done.stderr
    report = (project / "run.html").read_text()
    assert 'class="gantt"' in report
    assert report.count('data-state="SUCCESS"') >= 3
    assert "<script" not in report
    assert 'href="/' not in report  # nothing points at a server that is not there
    assert cli("ui", "export", "tiny", "-o", "pipeline.html").exit_code == 0
    pipeline = (project / "pipeline.html").read_text()
    assert 'data-task="c"' in pipeline
    assert "<form" not in pipeline

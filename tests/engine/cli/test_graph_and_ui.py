"""`arrowline graph` in each format, with and without a run's states, narrowed by --select and
--exclude, and `arrowline ui`'s refusal to serve beyond loopback without a token."""

from __future__ import annotations

import re
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


TAGGED = """
pipeline: layers
tasks:
  - id: raw
    sql: select 1 as x
    tags: [raw]
  - id: stg
    sql: select x + 1 as y from raw
    tags: [staging]
  - id: mart
    sql: select * from raw join stg on true
    tags: [marts]
  - id: report
    sql: select y from mart
    tags: [marts]
"""


def drawn(cli: Cli, *args: str) -> dict[str, tuple[set[str], set[tuple[str, str]]]]:
    """Per format, the task nodes `arrowline graph ARGS --format F` draws and its edges (as
    task ids), read from the text each format writes."""
    found: dict[str, tuple[set[str], set[tuple[str, str]]]] = {}
    svg = cli("graph", *args)
    assert svg.exit_code == 0, svg.stderr
    root = ET.fromstring(svg.stdout)
    tasks = {g.get("data-task", "") for g in root.iter() if g.get("class") == "task"}
    found["svg"] = (tasks, set())  # the svg's edges are curves without ids
    mermaid = cli("graph", *args, "--format", "mermaid")
    assert mermaid.exit_code == 0, mermaid.stderr
    names = dict(re.findall(r'^  (t\d+)\["([^<]+)<br/>', mermaid.stdout, re.MULTILINE))
    edges = re.findall(r"^  (t\d+) --> (t\d+)$", mermaid.stdout, re.MULTILINE)
    found["mermaid"] = (set(names.values()), {(names[a], names[b]) for a, b in edges})
    dot = cli("graph", *args, "--format", "dot")
    assert dot.exit_code == 0, dot.stderr
    nodes = set(re.findall(r'^  "(\w+)" \[label=', dot.stdout, re.MULTILINE))
    arrows = set(re.findall(r'^  "(\w+)" -> "(\w+)";$', dot.stdout, re.MULTILINE))
    found["dot"] = (nodes, arrows)
    return found


def test_a_selection_draws_only_its_tasks_and_the_edges_among_them(
    cli: Cli, write: WritePipeline
) -> None:
    path = str(write("layers.yaml", TAGGED))
    everything = drawn(cli, path)
    assert everything["dot"] == (
        {"raw", "stg", "mart", "report"},
        {("raw", "stg"), ("raw", "mart"), ("stg", "mart"), ("mart", "report")},
    )
    expected = {
        ("-s", "+stg"): {"raw", "stg"},
        ("-s", "stg+"): {"stg", "mart", "report"},
        ("-s", "1+mart"): {"raw", "stg", "mart"},
        ("--exclude", "raw"): {"stg", "mart", "report"},
        ("-s", "tag:marts"): {"mart", "report"},
        ("-s", "tag:raw tag:staging"): {"raw", "stg"},  # a space unites
        ("-s", "+report,tag:staging"): {"stg"},  # a comma intersects
        ("-s", "tag:marts", "--exclude", "report"): {"mart"},
    }
    for args, tasks in expected.items():
        seen = drawn(cli, path, *args)
        edges = {edge for edge in everything["dot"][1] if set(edge) <= tasks}
        assert seen["svg"][0] == tasks, args
        assert seen["mermaid"] == (tasks, edges), args
        assert seen["dot"] == (tasks, edges), args


def test_graph_of_a_run_draws_the_selected_tasks_with_their_states(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    path = write("layers.yaml", TAGGED)
    assert cli("run", path, "--no-progress").exit_code == 0
    svg = cli("graph", "layers", "--run", "last", "-s", "mart+")
    assert svg.exit_code == 0, svg.stderr
    assert re.findall(r'data-task="(\w+)"[^>]*data-state="SUCCESS"', svg.stdout) == [
        "mart",
        "report",
    ]
    dot = cli("graph", "layers", "--run", "last", "--exclude", "tag:marts", "--format", "dot")
    assert set(re.findall(r'^  "(\w+)" \[label=', dot.stdout, re.MULTILINE)) == {"raw", "stg"}
    written = cli(
        "graph", "layers", "--run", "last", "-s", "report", "--format", "html", "-o", "g.html"
    )
    assert written.exit_code == 0, written.stderr
    assert "(1 tasks)" in written.stdout
    assert re.findall(r'data-task="(\w+)"', (project / "g.html").read_text()) == ["report"]


def test_state_modified_draws_what_changed_since_the_last_run(
    cli: Cli, write: WritePipeline
) -> None:
    path = str(write("layers.yaml", TAGGED))
    assert drawn(cli, path, "-s", "state:modified")["dot"][0] == {"raw", "stg", "mart", "report"}
    assert cli("run", path, "--no-progress").exit_code == 0
    assert drawn(cli, path, "-s", "state:modified")["dot"][0] == set()  # nothing changed
    write("layers.yaml", TAGGED.replace("x + 1 as y", "x + 2 as y"))
    assert drawn(cli, path, "-s", "state:modified")["dot"][0] == {"stg"}
    assert drawn(cli, path, "-s", "state:modified+")["dot"][0] == {"stg", "mart", "report"}


def test_graph_leaves_out_what_plan_would_refuse_to_exclude(cli: Cli, write: WritePipeline) -> None:
    # Before any run, `plan -s stg --exclude raw` has no output of raw to reuse and refuses;
    # a picture runs nothing, so it just leaves raw out.
    path = str(write("layers.yaml", TAGGED))
    refused = cli("plan", path, "-s", "stg", "--exclude", "raw", "--no-schemas")
    assert refused.exit_code == 2
    assert "--exclude leaves out 'raw'" in refused.stderr
    assert drawn(cli, path, "-s", "+stg", "--exclude", "raw")["dot"] == ({"stg"}, set())


def test_a_bad_selector_fails_as_it_does_in_plan(cli: Cli, write: WritePipeline) -> None:
    path = str(write("layers.yaml", TAGGED))
    bad = [
        ("-s", "rpt"),  # an unknown task, with did-you-mean
        ("-s", "tag:nightly"),  # a tag no task has
        ("-s", "colour:red"),  # an unknown method
        ("-s", "raw,,stg"),
        ("-s", "+"),
        ("-s", "state:changed"),
        ("--exclude", "stage*"),  # a pattern that matches nothing
        ("-s", "raw", "--exclude", "raw"),  # leaves no task
    ]
    for args in bad:
        planned = cli("plan", path, *args, "--no-schemas")
        assert planned.exit_code == 2, args
        assert planned.stderr.startswith("error: --"), (args, planned.stderr)
        for fmt in ("svg", "mermaid", "dot", "html"):
            result = cli("graph", path, *args, "--format", fmt)
            assert (result.exit_code, result.stderr) == (2, planned.stderr), (args, fmt)
            assert result.stdout == ""
    assert "Did you mean 'report'?" in cli("graph", path, "-s", "rpt").stderr


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

"""The application object: one Project per project, called by the CLI, notebooks and scripts,
answering as the scheduler's HTTP API answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import Result

import engine
from engine.api.options import PlanOptions, RunOptions
from engine.api.project import Project
from engine.core.errors import SelectionError
from engine.scheduling.http import ApiServer
from engine.scheduling.scheduler import Scheduler, SchedulerSettings
from engine.state.layout import ProjectLayout
from tests.conftest import WritePipeline

Cli = Callable[..., Result]

DAILY = """
    pipeline: daily
    schedule: "0 2 * * *"
    params: {n: 1}
    tasks:
      - id: t
        sql: select {{ params.n | sql_literal }} as n
"""


def test_a_pipeline_is_a_file_a_name_a_definition_or_a_builder(
    write: WritePipeline, project: Path
) -> None:
    path = write("jobs/daily.yaml", DAILY)
    built = engine.Pipeline("built")
    built.sql("t", "select 1 as n")
    with Project.find(project) as app:
        assert app.definition("daily").file == str(path)
        assert app.definition(path).name == "daily"
        assert app.definition(str(path)).name == "daily"
        assert app.definition(app.definition("daily")).name == "daily"
        assert app.definition(built).name == "built"
        assert app.locate("daily") == ("daily", path)
        assert app.pipeline_name(str(path)) == "daily"
        assert app.pipeline_name("anything") == "anything"  # a filter: the catalog's name
        with pytest.raises(SelectionError, match=r"no pipeline 'dialy'.*Did you mean 'daily'"):
            app.definition("dialy")


def test_typed_options_say_what_a_run_covers_and_how_it_runs(
    write: WritePipeline, project: Path
) -> None:
    write("daily.yaml", DAILY)
    heard: list[object] = []
    with Project.find(project) as app:
        result = app.run(
            "daily",
            PlanOptions(params={"n": 7}, run_id="manual-1"),
            RunOptions(max_parallel=1, listener=heard.append),
        )
        assert result.ok
        assert result.run_id == "manual-1"
        assert heard
        assert app.table("t").collect()["n"].to_list() == [7]
        assert app.runs()["run_id"].to_list() == ["manual-1"]


def test_the_keyword_functions_are_the_project_methods(
    write: WritePipeline, project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = write("daily.yaml", DAILY)
    elsewhere = tmp_path_factory.mktemp("other")
    result = engine.run(path, params={"n": 3}, project_dir=elsewhere)
    assert result.ok
    assert result.project_dir == elsewhere.resolve()
    assert (elsewhere / ".arrowline" / "catalog.db").exists()
    assert not (project / ".arrowline").exists()
    with engine.open(elsewhere) as opened:
        assert isinstance(opened, Project)
        assert opened.layout == ProjectLayout.at(elsewhere)
        assert opened.table("t").collect()["n"].to_list() == [3]


def test_the_cli_the_project_and_the_http_api_give_the_same_status_and_metrics(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    write("daily.yaml", DAILY)
    assert cli("run", "daily", "--no-progress").exit_code == 0
    scheduler = Scheduler(project, SchedulerSettings())
    server = ApiServer(scheduler, "127.0.0.1", 0, None)
    server.start()
    try:
        over_http = httpx.get(f"{server.address}/status").json()
        metrics_over_http = httpx.get(f"{server.address}/metrics").content
    finally:
        server.stop()
        scheduler.close()
    by_cli = json.loads(cli("status", "--format", "json").stdout)
    with Project.find(project) as app:
        assert app.status() == by_cli == over_http
        assert app.metrics() == metrics_over_http
    assert scheduler.layout == ProjectLayout.at(project)

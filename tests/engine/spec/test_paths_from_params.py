"""A parameter chooses data, never where to climb or which code runs: a value rendered into a
path may not leave the folder the template points into, and no template chooses a UDF or a
schema class. Tried the way an attacker would, through the CLI and the scheduler's HTTP API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from tests.conftest import WritePipeline

Cli = Callable[..., Result]

FILES = """
pipeline: p
params: {name: orders.csv}
tasks:
  - id: raw
    extract: {from: files, path: "data/{{ params.name }}"}
  - id: out
    load: {input: raw, to: parquet, path: "out/{{ params.name }}.parquet"}
"""


@pytest.fixture
def secret(project: Path) -> Path:
    outside = project.parent / f"{project.name}-outside"
    outside.mkdir()
    path = outside / "secret.csv"
    path.write_text("password\nhunter2\n")
    return path


@pytest.mark.parametrize(
    "value",
    [
        "../../{outside}/secret.csv",
        "{absolute}",
        "~/secret.csv",
        "sub/../../../{outside}/secret.csv",
    ],
)
def test_a_parameter_cannot_lead_a_path_out_of_its_folder(
    cli: Cli, write: WritePipeline, project: Path, secret: Path, value: str
) -> None:
    write("data/orders.csv", "id\n1\n")
    path = write("p.yaml", FILES)
    given = value.format(outside=secret.parent.name, absolute=secret)
    result = cli("run", path, "--param", f"name={given}", "--no-progress")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "parameter 'name'" in text
    assert "extract.path" in text
    assert "hunter2" not in result.output
    assert not (project / "out").exists()


def test_a_parameter_may_still_choose_a_file_or_a_subfolder_inside(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    write("data/2024/orders.csv", "id\n1\n2\n")
    path = write("p.yaml", FILES)
    result = cli("run", path, "--param", "name=2024/orders.csv", "--no-progress")
    assert result.exit_code == 0, result.output
    assert (project / "out" / "2024" / "orders.csv.parquet").exists()


def test_a_literal_parent_folder_in_the_template_stays_allowed(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    write("shared/orders.csv", "id\n1\n")
    write(
        "pipelines/p.yaml",
        """
        pipeline: p
        params: {name: orders.csv}
        tasks:
          - id: raw
            extract: {from: files, path: "../shared/{{ params.name }}"}
        """,
    )
    ok = cli("run", project / "pipelines" / "p.yaml", "--no-progress")
    assert ok.exit_code == 0, ok.output
    refused = cli(
        "run", project / "pipelines" / "p.yaml", "--param", "name=../x.csv", "--no-progress"
    )
    assert refused.exit_code == 2


@pytest.mark.parametrize(
    ("key", "config"),
    [
        ("udf.function", '{input: raw, function: "{{ params.code }}"}'),
        ("validate.schema", '{input: raw, schema: "{{ params.code }}"}'),
    ],
)
def test_no_template_chooses_the_code_a_task_runs(
    cli: Cli, write: WritePipeline, key: str, config: str
) -> None:
    kind = key.split(".", maxsplit=1)[0]
    path = write(
        "p.yaml",
        f"""
        pipeline: p
        params: {{code: "udfs.py:f"}}
        tasks:
          - id: raw
            sql: select 1 as x
          - id: t
            {kind}: {config}
        """,
    )
    result = cli("validate", path)
    assert result.exit_code == 2
    text = " ".join(result.stderr.split())
    assert f"{key} names code" in text
    assert f"{path}:7" in text


def test_the_http_api_refuses_a_parameter_that_climbs_before_queueing_it(
    write: WritePipeline, project: Path, secret: Path
) -> None:
    import httpx

    from tests.engine.scheduling.test_scheduler_api import serve

    write("data/orders.csv", "id\n1\n")
    write("p.yaml", FILES)
    for scheduler, address in serve(project, None):
        refused = httpx.post(
            f"{address}/pipelines/p/runs",
            json={"params": {"name": f"../../{secret.parent.name}/secret.csv"}},
        )
        assert refused.status_code == 400
        assert "parameter 'name'" in refused.json()["error"]
        assert scheduler.store.requests("p") == []  # nothing queued
        accepted = httpx.post(f"{address}/pipelines/p/runs", json={"params": {"name": "a.csv"}})
        assert accepted.status_code == 202

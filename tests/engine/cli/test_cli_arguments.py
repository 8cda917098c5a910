"""The command line names things one way everywhere: a pipeline by its file or its name, the
project by --project-dir (or, where it always was, an argument)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from tests.conftest import WritePipeline

Cli = Callable[..., Result]

SHOP = """
    pipeline: shop
    schedule: "0 2 * * *"
    params: {n: 5}
    tasks:
      - id: orders
        sql: select range as id, range % 3 as amount from range({{ params.n | sql_literal }})
      - id: checked
        validate:
          input: orders
          schema: {columns: {amount: {type: int64, checks: {le: 1}}}}
          on_fail: quarantine
          max_rejected_fraction: 0.9
"""

# Every command that takes a pipeline, with `{p}` where it goes and the exit code both
# spellings must give. In order: later commands read what earlier ones left.
COMMANDS: list[tuple[str, int]] = [
    ("validate {p}", 0),
    ("plan {p} --format json", 0),
    ("check {p}", 0),
    ("render {p} orders -p n=2", 0),
    ("run {p} --no-progress", 0),
    ("state show {p}", 0),
    ("state set {p} orders --cursor 1", 2),  # resolved, then: not an incremental extract
    ("state reset {p}", 0),
    ("lineage {p} checked.amount --format json", 0),
    ("quarantine replay {p} checked", 1),  # the rows fail again: they stay quarantined
    ("schedule pause {p} --reason maintenance", 0),
    ("schedule resume {p}", 0),
    ("trigger {p}", 0),
    ("backfill {p} --from 2026-01-05 --to 2026-01-05", 0),
    ("gc {p} --dry-run --format json", 0),
    ("runs --pipeline {p} --format json", 0),
    ("show checked --pipeline {p} --format csv", 0),
    ("quarantine show checked --pipeline {p} --format json", 0),
    ("dlq list --pipeline {p} --format json", 0),
]

_RUN_ID = re.compile(r"\d{8}T\d{6}[\w-]*")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00")


def _same(text: str) -> str:
    """Output with what differs between two calls (run ids, times) masked."""
    return _TIME.sub("<time>", _RUN_ID.sub("<run>", text))


@pytest.mark.slow
def test_every_pipeline_argument_takes_a_file_or_a_name(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    path = write("pipelines/shop.yaml", SHOP)
    for template, expected in COMMANDS:
        by_file = cli(*template.format(p=path).split())
        by_name = cli(*template.format(p="shop").split())
        assert by_file.exit_code == expected, (template, by_file.stdout, by_file.stderr)
        assert by_name.exit_code == expected, (template, by_name.stdout, by_name.stderr)
        if template.startswith(("plan", "render", "lineage", "state show", "check", "show")):
            assert _same(by_name.stdout) == _same(by_file.stdout), template
        assert "no pipeline" not in by_name.stderr, template


def test_a_name_is_found_from_a_folder_inside_the_project(
    cli: Cli, write: WritePipeline, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write("pipelines/shop.yaml", SHOP)
    assert cli("run", "shop", "--no-progress").exit_code == 0
    monkeypatch.chdir(project / "pipelines")  # the project is the folder up with .arrowline/
    plan = json.loads(cli("plan", "shop", "--format", "json", "--no-schemas").stdout)
    assert plan["pipeline"] == "shop"


def test_an_unknown_name_lists_the_pipelines_and_guesses(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    write("pipelines/shop.yaml", SHOP)
    for command in (["plan", "shpo"], ["run", "shpo"], ["state", "show", "shpo"]):
        result = cli(*command)
        assert result.exit_code == 2, command
        assert "no pipeline 'shpo'" in result.stderr
        assert "(pipelines: shop)" in result.stderr
        assert "Did you mean 'shop'?" in result.stderr


def test_a_missing_file_is_a_file_problem_not_an_unknown_name(cli: Cli, project: Path) -> None:
    result = cli("plan", "nowhere.yaml")
    assert result.exit_code == 2
    assert "no pipeline" not in result.stderr
    assert "nowhere.yaml" in result.stderr


def test_folder_commands_take_the_project_as_an_argument_or_an_option(
    cli: Cli, write: WritePipeline, project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    write("shop.yaml", SHOP)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    for command in (["status"], ["schedule", "list"]):
        positional = cli(*command, project, "--format", "json")
        option = cli(*command, "--project-dir", project, "--format", "json")
        assert positional.exit_code == option.exit_code == 0, command
        assert json.loads(positional.stdout) == json.loads(option.stdout)
        assert [row["pipeline"] for row in json.loads(option.stdout)] == ["shop"]
        both = cli(*command, elsewhere, "--project-dir", project)
        assert both.exit_code == 2
        assert "two project folders" in both.stderr
    assert cli("metrics", "--project-dir", project).exit_code == 0

"""The project layout: which folder is the project, and where each piece of its state lives."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.errors import StateError
from engine.state.layout import ProjectLayout


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """outer/ holds .arrowline/; outer/inner/deep/ is a folder inside it; elsewhere/ has none."""
    outer = tmp_path / "outer"
    deep = outer / "inner" / "deep"
    deep.mkdir(parents=True)
    (outer / ".arrowline").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    named = tmp_path / "named"
    named.mkdir()
    return {"outer": outer, "deep": deep, "elsewhere": elsewhere, "named": named}


def test_a_given_folder_wins_over_the_environment_and_the_nearest(tree: dict[str, Path]) -> None:
    layout = ProjectLayout.resolve(
        tree["elsewhere"], start=tree["deep"], environ={"ARROWLINE_PROJECT_DIR": str(tree["named"])}
    )
    assert layout.project_dir == tree["elsewhere"]
    assert layout.found_by == "given"


def test_the_environment_wins_over_the_nearest_folder_with_state(tree: dict[str, Path]) -> None:
    layout = ProjectLayout.resolve(
        start=tree["deep"], environ={"ARROWLINE_PROJECT_DIR": str(tree["named"])}
    )
    assert layout.project_dir == tree["named"]
    assert layout.found_by == "environment"


def test_an_empty_environment_value_counts_as_unset(tree: dict[str, Path]) -> None:
    layout = ProjectLayout.resolve(start=tree["deep"], environ={"ARROWLINE_PROJECT_DIR": ""})
    assert layout.project_dir == tree["outer"]


def test_the_nearest_folder_with_state_wins_over_the_working_directory(
    tree: dict[str, Path],
) -> None:
    layout = ProjectLayout.resolve(start=tree["deep"], environ={})
    assert layout.project_dir == tree["outer"]
    assert layout.found_by == "nearest"


def test_without_any_the_working_directory_is_the_project(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree["elsewhere"])
    layout = ProjectLayout.resolve(environ={})
    assert layout.project_dir == tree["elsewhere"]
    assert layout.found_by == "working directory"
    assert not layout.exists()


def test_every_path_hangs_off_the_state_folder(tree: dict[str, Path]) -> None:
    layout = ProjectLayout.at(tree["outer"], environ={})
    state = tree["outer"] / ".arrowline"
    assert layout.exists()
    assert layout.state_dir == state
    assert layout.workspace_root == state / "workspace"
    assert layout.workspace().root == layout.workspace_root
    assert layout.locks_dir == state / "locks"
    assert layout.temp_dir == state / "tmp"
    assert layout.scheduler_lock == state / "scheduler.lock"
    assert layout.catalog.path == state / "catalog.db"
    assert not layout.catalog.shared


def test_a_relative_folder_is_made_absolute(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree["outer"])
    assert ProjectLayout.resolve("inner", environ={}).project_dir == tree["outer"] / "inner"


def test_the_catalog_given_wins_over_the_environment(tree: dict[str, Path]) -> None:
    environ = {"ARROWLINE_CATALOG": "postgresql://u@db.example/ops?schema=env_one"}
    from_env = ProjectLayout.at(tree["outer"], environ=environ)
    assert from_env.catalog.shared
    assert from_env.catalog.schema == "env_one"
    given = ProjectLayout.at(tree["outer"], catalog=str(tree["named"] / "c.db"), environ=environ)
    assert not given.catalog.shared
    assert given.catalog.path == tree["named"] / "c.db"


def test_the_environment_is_read_once_when_the_layout_is_built(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ARROWLINE_CATALOG", raising=False)
    layout = ProjectLayout.resolve(tree["outer"])
    monkeypatch.setenv("ARROWLINE_CATALOG", "postgresql://u@db.example/ops")
    assert not layout.catalog.shared


def test_a_catalog_of_another_kind_is_refused_when_the_layout_is_built(
    tree: dict[str, Path],
) -> None:
    with pytest.raises(StateError, match="names a 'mysql' database"):
        ProjectLayout.at(tree["outer"], catalog="mysql://db/ops", environ={})


def test_catalog_at_names_another_catalog_relative_to_the_project(tree: dict[str, Path]) -> None:
    layout = ProjectLayout.at(tree["outer"], environ={})
    assert layout.catalog_at(None) == layout.catalog
    assert layout.catalog_at("postgresql://u@db.example/ops").shared

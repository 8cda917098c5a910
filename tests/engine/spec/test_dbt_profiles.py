"""A dbt project as it is: dbt_project.yml read as the project file, and the profile it names
read from profiles.yml as its targets (a DuckDB file, a real PostgreSQL)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import pytest
from click.testing import Result

from tests.conftest import PgSchema

SHOP = Path(__file__).resolve().parents[2] / "fixtures" / "sql_projects" / "shop"
PROFILE = """\
{name}:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: out/dev.duckdb
      schema: main
    prod:
      type: postgres
      host: {host}
      port: {port}
      user: "{{{{ env_var('DBTP_USER', '{user}') }}}}"
      password: "{{{{ env_var('DBTP_PASSWORD') }}}}"
      dbname: {database}
      schema: {schema}
      threads: 2
"""


def dbt_project(folder: Path, name: str, pg_uri: str, schema: str = "marts") -> Path:
    """The shop fixture as dbt keeps it: dbt_project.yml (no arrowline key: its publishing
    load left out) and profiles.yml beside it."""
    project = Path(shutil.copytree(SHOP, folder))
    text = (project / "arrowline_project.yml").read_text()
    text = text[: text.index("tasks:")].replace("shop", name)
    (project / "arrowline_project.yml").unlink()
    (project / "dbt_project.yml").write_text(text)
    uri = urlsplit(pg_uri)
    (project / "profiles.yml").write_text(
        PROFILE.format(
            name=name,
            host=uri.hostname,
            port=uri.port or 5432,
            user=uri.username,
            database=uri.path.lstrip("/"),
            schema=schema,
        )
    )
    return project


def test_a_dbt_project_runs_as_it_is_into_its_profiles_targets(
    tmp_path: Path,
    pg: PgSchema,
    pg_uri: str,
    cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = dbt_project(tmp_path / "shop", pg.schema, pg_uri, schema=pg.schema)
    done = cli("run", project, "--no-progress")  # the profile's target: dev, DuckDB
    assert done.exit_code == 0, done.output
    with duckdb.connect(str(project / "out" / "dev.duckdb"), read_only=True) as db:
        assert db.sql("select count(*) from main.orders").fetchall() == [(7,)]
        assert db.sql("select count(*) from main.customers").fetchall() == [(5,)]
    monkeypatch.setenv("DBTP_PASSWORD", "not-the-password-s3cr3t")  # trust auth: unused
    planned = cli("plan", project, "--target", "prod")
    assert planned.exit_code == 0, planned.output
    assert "not-the-password-s3cr3t" not in planned.output
    done = cli("run", project, "--no-progress", "--target", "prod")
    assert done.exit_code == 0, done.output
    assert "not-the-password-s3cr3t" not in done.output + done.stderr
    assert pg.rows(f"select count(*) from {pg.table('orders')}") == [(7,)]
    assert pg.rows(f"select count(*) from {pg.table('customers')}") == [(5,)]
    monkeypatch.delenv("DBTP_PASSWORD")
    unset = cli("run", project, "--no-progress", "--target", "prod")
    assert unset.exit_code != 0
    assert "environment variable DBTP_PASSWORD is not set" in unset.output + unset.stderr


def test_profiles_are_found_where_dbt_looks_first_dbt_profiles_dir(
    tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = dbt_project(tmp_path / "shop", "shop", "postgresql://u@h:5432/d")
    elsewhere = tmp_path / "profiles"
    elsewhere.mkdir()
    text = (project / "profiles.yml").read_text().replace("out/dev.duckdb", "out/other.duckdb")
    (elsewhere / "profiles.yml").write_text(text)
    monkeypatch.setenv("DBT_PROFILES_DIR", str(elsewhere))
    done = cli("run", project, "--no-progress")
    assert done.exit_code == 0, done.output
    assert (project / "out" / "other.duckdb").is_file()
    assert not (project / "out" / "dev.duckdb").exists()


@pytest.mark.parametrize(
    ("change", "said", "line"),
    [
        (("type: duckdb", "type: snowflake"), "is of type 'snowflake'", 5),
        (("path: out/dev.duckdb", "path: ':memory:'"), "not :memory:", 6),
        (("dbname: d", "dbname: \"{{ var('db') }}\""), "only {{ env_var('NAME') }}", 14),
        (("schema: main", "schema: main\n      warehouse: w"), "'warehouse' is not read", 8),
    ],
)
def test_a_profile_that_cannot_be_a_target_is_said_at_its_line(
    tmp_path: Path,
    cli: Callable[..., Result],
    change: tuple[str, str],
    said: str,
    line: int,
) -> None:
    project = dbt_project(tmp_path / "shop", "shop", "postgresql://u@h:5432/d")
    profiles = project / "profiles.yml"
    profiles.write_text(profiles.read_text().replace(*change))
    done = cli("validate", project)
    assert done.exit_code != 0
    text = " ".join(done.output.split())
    assert f"profiles.yml:{line}: error: " in text
    assert said in text
    assert "names no target" not in text  # the profile's fault, said once


def test_a_profile_with_no_profiles_file_is_said_at_the_profile_key(
    tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = dbt_project(tmp_path / "shop", "shop", "postgresql://u@h:5432/d")
    (project / "profiles.yml").unlink()
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.dbt either
    monkeypatch.delenv("DBT_PROFILES_DIR", raising=False)
    done = cli("validate", project)
    assert done.exit_code != 0
    text = " ".join(done.output.split())
    line = next(
        n
        for n, row in enumerate((project / "dbt_project.yml").read_text().splitlines(), 1)
        if row.startswith("profile:")
    )
    assert f"dbt_project.yml:{line}" in text
    assert "no profiles.yml" in text


def test_a_folder_with_both_files_is_arrowlines_project(tmp_path: Path) -> None:
    from engine.scheduling.discover import discover_pipelines
    from engine.spec.sqlproject import project_file

    project = dbt_project(tmp_path / "shop", "shop", "postgresql://u@h:5432/d")
    assert project_file(project) == project / "dbt_project.yml"
    assert discover_pipelines(tmp_path) == {"shop": project / "dbt_project.yml"}
    shutil.copy(SHOP / "arrowline_project.yml", project / "arrowline_project.yml")
    assert project_file(project) == project / "arrowline_project.yml"
    assert discover_pipelines(tmp_path) == {"shop": project / "arrowline_project.yml"}

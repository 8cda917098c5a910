"""dbt's `target` object in every pipeline (the embedded DuckDB's when none is declared) and
`--target` checked against the targets a pipeline has, on every command that renders one."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from click.testing import Result

from tests.conftest import WritePipeline, only, problems_of

SHOP = Path(__file__).resolve().parents[2] / "fixtures" / "sql_projects" / "shop"
TARGET_COLUMNS = """
          select {{ target.name | sql_literal }} as name, {{ target.type | sql_literal }} as type,
                 {{ target.database | sql_literal }} as database,
                 {{ target.path | sql_literal }} as path,
                 {{ target.schema | sql_literal }} as schema,
                 {{ target.threads }} as threads,
                 {{ target.profile_name | sql_literal }} as profile_name
"""


def _row(database: Path, table: str) -> tuple[object, ...]:
    with duckdb.connect(str(database), read_only=True) as db:
        found = db.sql(f"select * from {table}").fetchall()
    assert len(found) == 1
    return found[0]


def test_a_pipeline_without_targets_reads_the_embedded_duckdb_as_its_target(
    write: WritePipeline, project: Path, cli: Callable[..., Result]
) -> None:
    (project / "t.sql").write_text(TARGET_COLUMNS)
    path = write(
        "p.yaml",
        """
        pipeline: plain
        tasks:
          - {id: t, sql: {file: t.sql}}
          - id: publish
            load: {input: t, to: duckdb, path: out/p.duckdb, table: t, mode: replace}
        """,
    )
    done = cli("run", path, "--no-progress")
    assert done.exit_code == 0, done.output
    threads = max(2, os.cpu_count() or 1)
    assert _row(project / "out" / "p.duckdb", "t") == (
        *("default", "duckdb", "memory", ":memory:", "main"),
        threads,
        "plain",
    )
    assert cli("run", path, "--no-progress", "--target", "default").exit_code == 0


def _with_targets(project: Path) -> Path:
    folder = Path(shutil.copytree(SHOP, project / "targets"))
    (folder / "models" / "target_row.sql").write_text(TARGET_COLUMNS)
    settings = folder / "arrowline_project.yml"
    settings.write_text(
        settings.read_text() + "\ntarget: dev\ntargets:\n"
        "  dev: {database: out/dev.duckdb}\n"
        "  prod: {database: out/prod.duckdb, schema: analytics, threads: 3}\n"
    )
    return folder


def test_a_declared_target_reads_as_dbts_target_object(
    project: Path, cli: Callable[..., Result]
) -> None:
    folder = _with_targets(project)
    assert cli("run", folder, "--no-progress").exit_code == 0
    threads = max(2, os.cpu_count() or 1)
    assert _row(folder / "out" / "dev.duckdb", "target_row") == (
        *("dev", "duckdb", "out/dev.duckdb", "out/dev.duckdb", "main"),
        threads,
        "shop",
    )
    done = cli("run", folder, "--no-progress", "--target", "prod")
    assert done.exit_code == 0, done.output
    assert _row(folder / "out" / "prod.duckdb", "analytics.target_row") == (
        *("prod", "duckdb", "out/prod.duckdb", "out/prod.duckdb", "analytics"),
        3,
        "shop",
    )


@pytest.mark.parametrize(
    "command",
    [
        ("run", "--no-progress"),
        ("plan",),
        ("validate",),
        ("check",),
        ("render", "customers"),
        ("trigger", "--direct"),
        ("backfill", "--from", "2024-01-01", "--to", "2024-01-01"),
        ("lineage", "customers.customer_id"),
        ("graph",),
    ],
)
def test_an_unknown_target_is_an_error_naming_the_targets_there_are(
    project: Path, cli: Callable[..., Result], command: tuple[str, ...]
) -> None:
    folder = _with_targets(project)
    name, *rest = command
    done = cli(name, folder, *rest, "--target", "prdo")
    assert done.exit_code != 0, done.output
    said = " ".join((done.output + done.stderr).split())  # as wrapped to the terminal
    assert "--target names no target: 'prdo' (the targets: 'dev', 'prod')" in said, said
    assert "Did you mean 'prod'?" in said
    assert not (folder / "out" / "dev.duckdb").exists()


def test_a_target_asked_of_a_pipeline_without_targets_is_an_error_naming_default(
    write: WritePipeline, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write("p.yaml", "pipeline: plain\ntasks:\n  - {id: t, sql: select 1 as x}\n")
    done = cli("run", path, "--no-progress", "--target", "prod")
    assert done.exit_code == 2
    said = " ".join(done.stderr.split())
    assert "--target 'prod': this pipeline declares no `targets:`" in said
    assert "its only target is 'default'" in said
    # the environment's target is a whole process's (a scheduler's): not this pipeline's error
    monkeypatch.setenv("ARROWLINE_TARGET", "prod")
    assert [p for p in problems_of(path) if p.severity == "error"] == []


def test_a_target_name_that_cannot_be_one_is_refused_before_reading_anything(
    project: Path, cli: Callable[..., Result]
) -> None:
    done = cli("plan", _with_targets(project), "--target", "pr od")
    assert done.exit_code == 2
    assert "'pr od' is not a target's name" in done.stderr


def test_a_targets_threads_must_be_a_positive_whole_number(project: Path) -> None:
    folder = _with_targets(project)
    settings = folder / "arrowline_project.yml"
    settings.write_text(settings.read_text().replace("threads: 3", "threads: many"))
    problem = only(problems_of(folder), "invalid-value")
    assert "threads must be a whole number of 1 or more, not 'many'" in problem.message
    assert problem.line is not None


def test_no_value_from_outside_sets_the_target_only_its_name_chooses_it(
    project: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A target's values reach SQL (`{{ target.schema }}`) as the project wrote them: a
    --param, an environment variable or a trigger cannot put others in their place."""
    from engine.core.errors import ParameterError
    from engine.spec.params import resolve_params
    from engine.spec.targets import TARGET_PARAM
    from engine.tasks.checks import load_definition

    folder = _with_targets(project)
    injected = '{"name": "dev", "schema": "s union all select 42 --"}'
    for given in (("-p", f"target={injected}"), ("-p", f"{TARGET_PARAM}={injected}")):
        done = cli("render", folder, "target_row", *given)
        assert done.exit_code != 0
        assert "union all select 42" not in done.stdout
    monkeypatch.setenv(f"ARROWLINE_PARAM_{TARGET_PARAM.upper()}", injected)
    done = cli("render", folder, "target_row")
    assert done.exit_code != 0
    assert "choose the target by name with --target" in done.output + done.stderr
    monkeypatch.delenv(f"ARROWLINE_PARAM_{TARGET_PARAM.upper()}")
    parameters = load_definition(folder).spec.parameters
    with pytest.raises(ParameterError, match="holds the target"):  # as a trigger's are checked
        resolve_params(parameters, {TARGET_PARAM: {"name": "x"}}, source="the request")


def test_a_pipelines_own_parameter_named_target_is_a_parameter_like_any_other(
    write: WritePipeline, project: Path, cli: Callable[..., Result]
) -> None:
    path = write(
        "p.yaml",
        """
        pipeline: own
        params: {target: prod}
        tasks:
          - id: t
            sql: select {{ params.target | sql_literal }} as env, {{ target.name | sql_literal }} as t
          - id: publish
            load: {input: t, to: duckdb, path: out/p.duckdb, table: t, mode: replace}
        """,
    )
    assert problems_of(path) == []
    done = cli("run", path, "--no-progress", "-p", "target=staging")
    assert done.exit_code == 0, done.output
    assert _row(project / "out" / "p.duckdb", "t") == ("staging", "default")

"""SQL hooks: a load's `hooks:` and a SQL project's pre_hook / post_hook (folders, property
files, `config()`) run in the publishing DuckDB file inside the load's transaction; a hook that
fails rolls the load back and fails it, naming the file and line the hook is written at."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from click.testing import Result

from engine.api.pipeline import run
from tests.conftest import PgSchema, WritePipeline, only, problems_of

SHOP = Path(__file__).resolve().parents[2] / "fixtures" / "sql_projects" / "shop"
AUDIT = (
    "create table if not exists main.audit(model varchar, stage varchar, n bigint, note varchar)"
)
PIPELINE = f"""
    pipeline: hooked
    params: {{rows: 3, note: "it's"}}
    tasks:
      - id: t
        sql: select range as id from range({{{{ params.rows }}}})
      - id: publish
        load: {{input: t, to: duckdb, path: out/w.duckdb, table: marts.t, mode: replace}}
        hooks:
          pre:
            - {AUDIT}
            - insert into main.audit select 't', 'pre', count(*), null from main.audit
          post:
            - >-
              insert into main.audit select 't', 'post', count(*),
              {{{{ params.note | sql_literal }}}} from {{{{ this }}}}
"""


def _rows(database: Path, sql: str) -> list[tuple[object, ...]]:
    with duckdb.connect(str(database), read_only=True) as db:
        return db.sql(sql).fetchall()


def _said(done: Result) -> str:
    return " ".join((done.output + done.stderr).split())  # as wrapped to the terminal


def test_a_loads_hooks_run_in_its_target_before_and_after_it_writes(
    write: WritePipeline, project: Path, cli: Callable[..., Result]
) -> None:
    path = write("p.yaml", PIPELINE)
    assert problems_of(path) == []
    assert cli("run", path, "--no-progress").exit_code == 0
    done = cli("run", path, "--no-progress", "-p", "rows=5")
    assert done.exit_code == 0, done.output
    assert _rows(project / "out" / "w.duckdb", "select * from main.audit order by n, stage") == [
        ("t", "pre", 0, None),
        ("t", "pre", 2, None),
        ("t", "post", 3, "it's"),  # {{ this }}: the table as the load wrote it
        ("t", "post", 5, "it's"),
    ]


def test_a_failing_hook_rolls_the_load_back_and_names_its_line(
    write: WritePipeline, project: Path, cli: Callable[..., Result]
) -> None:
    path = write("p.yaml", PIPELINE)
    assert cli("run", path, "--no-progress").exit_code == 0
    path.write_text(path.read_text().replace("{{ params.note | sql_literal }}", "nope"))
    done = cli("run", path, "--no-progress", "-p", "rows=5")
    assert done.exit_code == 1
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "- >-" in text)
    assert f"✗ publish (TaskError): post-hook 1 at {path}:{line}:" in _said(done)
    assert 'Referenced column "nope"' in _said(done)
    warehouse = project / "out" / "w.duckdb"
    assert _rows(warehouse, "select count(*) from marts.t") == [(3,)]  # the rows: rolled back
    assert _rows(warehouse, "select count(*) from main.audit") == [(2,)]  # the pre-hook's too


def test_a_parameter_printed_raw_in_a_hook_is_refused_at_its_line(
    write: WritePipeline,
) -> None:
    path = write("p.yaml", PIPELINE.replace("{{ params.note | sql_literal }}", "{{ params.note }}"))
    problem = only(problems_of(path), "unquoted-parameter")
    assert problem.line == 13


def test_hooks_belong_to_loads_into_a_target_that_runs_them(write: WritePipeline) -> None:
    on_sql = write("a.yaml", "pipeline: a\ntasks:\n  - {id: t, sql: select 1, hooks: {pre: [x]}}\n")
    assert "a load takes them" in " ".join(p.message for p in problems_of(on_sql))
    parquet = write(
        "b.yaml",
        """
        pipeline: b
        tasks:
          - {id: t, sql: select 1 as x}
          - id: out
            load: {input: t, to: parquet, path: out/t}
            hooks: {post: [select 1]}
        """,
    )
    problem = only(problems_of(parquet), "not-supported")
    assert "a files target does not run SQL hooks (duckdb, postgres do)" in problem.message
    assert problem.line == 6  # hooks:


@pytest.fixture
def shop(project: Path) -> Path:
    """The shop with its marts published to a DuckDB file, and hooks written as dbt writes
    them: the marts folder's in the project file, one in the orders' property file and one in
    the orders model's config()."""
    folder = Path(shutil.copytree(SHOP, project / "shop"))
    settings = folder / "arrowline_project.yml"
    settings.write_text(
        settings.read_text().replace(
            "    marts:\n      +tags: [marts]\n",
            "    marts:\n      +tags: [marts]\n      +database: out/w.duckdb\n"
            f'      +schema: marts\n      +pre-hook: "{AUDIT}"\n'
            "      +post-hook:\n"
            "        - \"insert into main.audit select '{{ this }}', 'folder', count(*), "
            '{{ target.name | sql_literal }} from {{ this }}"\n',
        )
    )
    properties = folder / "models" / "marts" / "schema.yml"
    properties.write_text(
        properties.read_text().replace(
            "  - name: orders\n",
            '  - name: orders\n    config:\n      post-hook: "insert into main.audit select '
            "'orders', 'property', 0, null\"\n",
        )
    )
    model = folder / "models" / "marts" / "orders.sql"
    model.write_text(
        "{{ config(post_hook=\"insert into main.audit select 'orders', 'own', count(*), "
        'null from {{ this }}") }}\n' + model.read_text()
    )
    return folder


def test_a_models_hooks_add_up_from_its_folders_property_file_and_config(
    shop: Path, cli: Callable[..., Result]
) -> None:
    done = cli("run", shop, "--no-progress")
    assert done.exit_code == 0, done.output
    audit = _rows(shop / "out" / "w.duckdb", "select * from main.audit order by all")
    assert audit == [
        ('"w"."marts"."customers"', "folder", 5, "default"),  # dbt-duckdb's {{ this }}
        ('"w"."marts"."orders"', "folder", 7, "default"),
        ("orders", "own", 7, None),
        ("orders", "property", 0, None),
    ]
    done = cli("render", shop, "orders__publish")
    said = _said(done)
    assert said.index("'folder'") < said.index("'property'") < said.index("'own'")  # in order


def test_a_failing_model_hook_names_the_file_and_line_it_is_written_at(
    shop: Path, cli: Callable[..., Result]
) -> None:
    properties = shop / "models" / "marts" / "schema.yml"
    properties.write_text(properties.read_text().replace("'property', 0,", "'property', nope,"))
    settings = shop / "arrowline_project.yml"
    settings.write_text(settings.read_text().replace('+pre-hook: "create table', '+pre-hook: "'))
    done = cli("run", shop, "--no-progress")
    assert done.exit_code == 1
    said = _said(done)
    project_line = next(
        n for n, text in enumerate(settings.read_text().splitlines(), 1) if "+pre-hook" in text
    )
    for model in ("customers", "orders"):  # the folder's hook, where the folder sets it
        found = re.search(rf"✗ {model}__publish \(TaskError\): pre-hook 1 at (\S+):(\d+):", said)
        assert found is not None, said
        assert found[1].endswith("arrowline_project.yml")
        assert int(found[2]) == project_line
    settings.write_text(settings.read_text().replace('+pre-hook: "', '+pre-hook: "create table'))
    done = cli("run", shop, "--no-progress")
    assert done.exit_code == 1
    found = re.search(r"✗ orders__publish \(TaskError\): post-hook 2 at (\S+):(\d+):", _said(done))
    assert found is not None
    assert found[1].endswith("models/marts/schema.yml")
    assert found[2] == "14"  # the property file's `post-hook:` line
    assert not _rows(shop / "out" / "w.duckdb", "select * from main.audit where model = 'orders'")


def test_a_hook_whose_template_fails_to_render_is_said_at_the_hooks_own_line(
    shop: Path, write: WritePipeline
) -> None:
    """A render error (not found by parsing) names the hook's file and line, not its load's;
    a folder's hook shared by two models is said once."""
    properties = shop / "models" / "marts" / "schema.yml"
    properties.write_text(
        properties.read_text().replace("'property', 0,", "'property', {{ 'a' + 1 }},")
    )
    (problem,) = [p for p in problems_of(shop) if p.severity == "error"]
    assert (Path(problem.file or "").resolve(), problem.line) == (properties, 14), problem.format()
    assert problem.message.startswith("post-hook 2: template failed: TypeError")
    properties.write_text(properties.read_text().replace("{{ 'a' + 1 }}", "0"))
    settings = shop / "arrowline_project.yml"
    settings.write_text(settings.read_text().replace("'folder', count(*)", "'folder', {{ 1 / 0 }}"))
    line = next(n for n, t in enumerate(settings.read_text().splitlines(), 1) if "1 / 0" in t)
    (problem,) = [p for p in problems_of(shop) if p.severity == "error"]  # once: two loads
    assert (Path(problem.file or "").resolve(), problem.line) == (settings, line), problem.format()
    assert "ZeroDivisionError" in problem.message
    path = write("p.yaml", PIPELINE.replace("'pre', count(*)", "'pre', {{ 'a' + 1 }}"))
    (problem,) = [p for p in problems_of(path) if p.severity == "error"]
    assert (problem.file, problem.line) == ("p.yaml", 11), problem.format()  # its line
    assert problem.message.startswith("pre-hook 2: template failed")


def test_a_hook_on_a_model_that_is_not_published_is_refused_at_the_hook(project: Path) -> None:
    folder = Path(shutil.copytree(SHOP, project / "unpublished"))
    model = folder / "models" / "marts" / "orders.sql"
    model.write_text("\n{{ config(pre_hook='select 1') }}\n" + model.read_text())
    problem = only(problems_of(folder), "invalid-value")
    assert "model 'orders' has hooks, which run in the database it is published to" in (
        problem.message
    )
    assert (problem.file, problem.line) == ("unpublished/models/marts/orders.sql", 2)


def test_a_hook_reads_the_target_it_runs_for(shop: Path, cli: Callable[..., Result]) -> None:
    settings = shop / "arrowline_project.yml"
    settings.write_text(
        settings.read_text().replace("      +database: out/w.duckdb\n", "")
        + "\ntarget: dev\ntargets:\n  dev: {database: out/dev.duckdb}\n"
        "  prod: {database: out/w.duckdb}\n"
    )
    done = cli("run", shop, "--no-progress", "--target", "prod")
    assert done.exit_code == 0, done.output
    found = _rows(shop / "out" / "w.duckdb", "select distinct note from main.audit where note > ''")
    assert found == [("prod",)]


def test_run_hooks_are_refused_rather_than_silently_skipped(project: Path) -> None:
    folder = Path(shutil.copytree(SHOP, project / "run_hooks"))
    settings = folder / "arrowline_project.yml"
    settings.write_text(settings.read_text() + '\non-run-start: ["select 1"]\non-run-end: x\n')
    problems = [p for p in problems_of(folder) if p.code == "not-supported"]
    assert sorted(p.message.split(" ")[0] for p in problems) == ["on-run-end", "on-run-start"]
    assert all(p.severity == "error" and p.line is not None for p in problems)


def test_this_is_not_ambiguous_in_a_file_named_as_the_schema(
    write: WritePipeline, project: Path
) -> None:
    """In marts.duckdb, "marts"."t" could be catalog marts's table t: DuckDB refuses to guess,
    so `{{ this }}` names the catalog too, as the load does."""
    path = write("p.yaml", PIPELINE.replace("out/w.duckdb", "out/marts.duckdb"))
    assert run(path).ok
    assert _rows(
        project / "out" / "marts.duckdb", "select n from main.audit where stage = 'post'"
    ) == [(3,)]


def test_a_python_pipelines_load_takes_hooks_too(project: Path) -> None:
    from engine import Pipeline

    p = Pipeline("built", base_dir=project)
    p.sql("t", "select range as id from range(4)")
    p.load(
        "publish",
        input="t",
        to="duckdb",
        path="out/b.duckdb",
        table="t",
        mode="replace",
        hooks={"post": ["create or replace table main.seen as select count(*) n from {{ this }}"]},
    )
    assert p.run().ok
    assert _rows(project / "out" / "b.duckdb", "select n from main.seen") == [(4,)]


def test_hooks_run_in_a_postgresql_target_inside_its_transaction(
    write: WritePipeline, pg: PgSchema, cli: Callable[..., Result]
) -> None:
    audit = pg.table("audit")
    path = write(
        "p.yaml",
        f"""
        pipeline: {pg.schema}
        params: {{rows: 3}}
        connections:
          wh: {{kind: postgres, uri: "${{env:TEST_PG_URI}}"}}
        tasks:
          - id: t
            sql: select range as id from range({{{{ params.rows }}}})
          - id: publish
            load: {{input: t, to: postgres, connection: wh, table: {pg.table("t")},
                    mode: replace}}
            hooks:
              pre: ["create table if not exists {audit} (stage text, n bigint)"]
              post: ["insert into {audit} select 'post', count(*) from {{{{ this }}}}"]
        """,
    )
    assert problems_of(path) == []
    done = cli("run", path, "--no-progress")
    assert done.exit_code == 0, done.output
    assert pg.rows(f"select stage, n from {audit}") == [("post", 3)]
    path.write_text(path.read_text().replace("count(*) from", "count(nope) from"))
    failed = cli("run", path, "--no-progress", "-p", "rows=5")
    assert failed.exit_code == 1
    assert "post-hook 1 at" in _said(failed)
    assert pg.rows(f"select count(*) from {pg.table('t')}") == [(3,)]  # rolled back
    assert pg.rows(f"select stage, n from {audit}") == [("post", 3)]


@pytest.mark.parametrize("file", ["main.duckdb", "w.v2.duckdb", "temp.db"])
def test_this_names_the_catalog_as_duckdb_names_its_file(
    write: WritePipeline, project: Path, cli: Callable[..., Result], file: str
) -> None:
    path = write(
        "p.yaml",
        f"""
        pipeline: cat
        tasks:
          - id: t
            sql: select 1 as id
          - id: publish
            load: {{input: t, to: duckdb, path: out/{file}, table: marts.t, mode: replace}}
            hooks:
              post: ["create or replace table marts.n as select count(*) as n from {{{{ this }}}}"]
        """,
    )
    done = cli("run", path, "--no-progress")
    assert done.exit_code == 0, done.output
    assert _rows(project / "out" / file, "select n from marts.n") == [(1,)]


def test_a_hook_that_would_end_the_loads_transaction_is_refused_before_anything_is_written(
    write: WritePipeline, project: Path, cli: Callable[..., Result]
) -> None:
    path = write("p.yaml", PIPELINE)
    assert cli("run", path, "--no-progress").exit_code == 0
    path.write_text(
        path.read_text().replace("null from main.audit", "null from main.audit; commit")
    )
    done = cli("run", path, "--no-progress", "-p", "rows=5")
    assert done.exit_code == 1
    assert "pre-hook 2 at" in _said(done)
    assert "'commit' would end the load's transaction" in _said(done)
    warehouse = project / "out" / "w.duckdb"
    assert _rows(warehouse, "select count(*) from marts.t") == [(3,)]
    assert _rows(warehouse, "select count(*) from main.audit") == [(2,)]

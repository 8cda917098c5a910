"""A YAML pipeline that includes a SQL project (`project: FOLDER`): the project's models run
as its tasks beside the file's own, from another folder, and every problem is said where it
is written."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine.api.pipeline import run
from tests.conftest import WritePipeline, only, problems_of

SHOP = Path(__file__).resolve().parents[2] / "fixtures" / "sql_projects" / "shop"

PIPELINE = """
pipeline: shop_plus
project: ../shop
tasks:
  - id: big_customers
    udf: {input: customers, function: udfs.py:flag}
  - id: publish_big
    load: {input: big_customers, to: parquet, path: out/big.parquet}
"""

UDFS = """
import polars as pl


def flag() -> dict[str, pl.Expr]:
    return {"big": pl.col("customer_lifetime_value") > 30}
"""


@pytest.fixture
def layout(project: Path) -> tuple[Path, Path]:
    """(the project's copy, the folder of a pipeline beside it that includes it)."""
    shop = Path(shutil.copytree(SHOP, project / "shop"))
    pipes = project / "pipes"
    pipes.mkdir()
    (pipes / "pipeline.yaml").write_text(textwrap.dedent(PIPELINE))
    (pipes / "udfs.py").write_text(textwrap.dedent(UDFS))
    return shop, pipes


def test_a_yaml_pipeline_reads_a_projects_models_beside_its_own_tasks(
    layout: tuple[Path, Path],
) -> None:
    """The file's UDF reads the project's `customers` model; the project's seeds, models and
    publishing load find their files although the pipeline's folder is another; the rows are
    those the project makes on its own."""
    shop, pipes = layout
    alone = run(shop)
    assert alone.ok
    expected = alone.tasks["customers"].output
    assert expected is not None
    result = run(pipes / "pipeline.yaml")
    assert result.ok, {k: t.error for k, t in result.tasks.items() if t.error}
    assert {"customers", "orders", "raw_customers", "publish_customers", "big_customers"} <= set(
        result.tasks
    )
    customers = pl.read_parquet([str(f) for f in expected.files]).sort("customer_id")
    big = pl.read_parquet(pipes / "out" / "big.parquet").sort("customer_id")
    assert_frame_equal(big.drop("big"), customers)
    assert big["big"].to_list() == (customers["customer_lifetime_value"] > 30).to_list()
    with duckdb.connect(str(shop / "out" / "shop.duckdb"), read_only=True) as db:
        ((published,),) = db.sql("select count(*) from customers").fetchall()
    assert published == customers.height  # the project's own load, at the project's path
    assert not (pipes / "shop").exists()


def test_the_projects_own_tasks_keep_their_files_from_another_folder(project: Path) -> None:
    """A project's `tasks:` with a UDF file, a schema file and a seed: each path is the
    project's, whichever folder the including pipeline is in."""
    inner = project / "inner"
    (inner / "seeds").mkdir(parents=True)
    (inner / "seeds" / "points.csv").write_text("id,score\n1,5\n2,7\n3,9\n")
    (inner / "models").mkdir()
    (inner / "models" / "kept.sql").write_text("select * from {{ ref('points') }}\n")
    (inner / "code.py").write_text(
        textwrap.dedent(UDFS).replace("customer_lifetime_value", "score").replace("30", "6")
    )
    (inner / "rules.yaml").write_text("columns:\n  score: {type: int64, checks: {gt: 0}}\n")
    (inner / "arrowline_project.yml").write_text(
        textwrap.dedent(
            """
            name: inner
            tasks:
              - id: scored
                udf: {input: kept, function: code.py:flag}
              - id: checked
                validate: {input: scored, schema: rules.yaml}
            """
        )
    )
    outer = project / "a" / "b"
    outer.mkdir(parents=True)
    (outer / "p.yaml").write_text("pipeline: outer\nproject: ../../inner\n")
    result = run(outer / "p.yaml")
    assert result.ok, {k: t.error for k, t in result.tasks.items() if t.error}
    output = result.tasks["checked"].output
    assert output is not None
    rows = pl.read_parquet([str(f) for f in output.files]).sort("id")
    assert rows["big"].to_list() == [False, True, True]


def test_problems_of_an_included_project_are_said_where_they_are_written(
    layout: tuple[Path, Path],
) -> None:
    shop, pipes = layout
    (shop / "models" / "marts" / "broken.sql").write_text(
        "select 1 as x,\n  * from {{ ref('custmers') }}\n"
    )
    problem = only(problems_of(pipes / "pipeline.yaml"), "unknown-ref")
    assert problem.file is not None
    assert Path(problem.file).resolve() == (shop / "models" / "marts" / "broken.sql").resolve()
    assert "did you mean 'customers'" in problem.message.lower()
    (shop / "models" / "marts" / "broken.sql").unlink()

    (pipes / "clash.yaml").write_text(
        'pipeline: clash\nparams: {start_date: "2020-01-01"}\nproject: ../shop\n'
    )
    clash = only(problems_of(pipes / "clash.yaml"), "duplicate-key")
    assert (clash.line, "start_date") == (2, clash.message.split("'")[1])

    (pipes / "missing.yaml").write_text("pipeline: m\nproject: ../nowhere\n")
    missing = only(problems_of(pipes / "missing.yaml"), "file-missing")
    assert missing.line == 2
    assert "holds no arrowline_project.yml" in missing.message

    (pipes / "wrong.yaml").write_text("pipeline: w\nproject: [../shop]\n")
    assert only(problems_of(pipes / "wrong.yaml"), "invalid-value").line == 2

    (pipes / "twice.yaml").write_text(
        "pipeline: t\nproject: ../shop\ntasks:\n  - id: orders\n    sql: select 1 as x\n"
    )
    only(problems_of(pipes / "twice.yaml"), "duplicate-id")


def test_an_included_projects_imports_sources_schemas_and_secrets_keep_their_files(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a project names by a path of its own keeps naming the project's file when a
    pipeline in another folder includes it: a macro file imported by its path, a DuckDB
    database read by an extract, files given as a list, a schema class in a .py file, and a
    connection's `${file:}` secret and SQLite catalog."""
    from engine.core.yaml_source import read_yaml_file
    from engine.spec.include import include_project

    inner = project / "inner"
    for folder in ("macros", "models", "data"):
        (inner / folder).mkdir(parents=True)
    (inner / "macros" / "money.sql").write_text(
        "{% macro dollars(c) %}round({{ c }} / 100, 2){% endmacro %}\n"
    )
    (inner / "models" / "priced.sql").write_text(
        "{% import 'macros/money.sql' as money %}\n"
        "select id, {{ money.dollars('cents') }} as dollars from {{ ref('raw') }}\n"
    )
    with duckdb.connect(str(inner / "data" / "src.duckdb")) as db:
        db.execute("create table raw as select range as id, range * 150 as cents from range(3)")
    (inner / "data" / "a.csv").write_text("id\n1\n")
    (inner / "data" / "b.csv").write_text("id\n2\n")
    (inner / "rules.py").write_text(
        "import pandera.polars as pa\n\n\nclass Rules(pa.DataFrameModel):\n    id: int\n"
    )
    (inner / "arrowline_project.yml").write_text(
        textwrap.dedent(
            """
            name: inner
            connections:
              cat: {kind: iceberg, uri: "sqlite:///state/cat.db", warehouse: wh}
              pg: {kind: postgres, uri: "${file:secrets/uri}"}
            tasks:
              - id: raw
                extract: {from: duckdb, path: data/src.duckdb, table: raw}
              - id: both
                extract: {from: files, path: [data/a.csv, data/b.csv]}
              - id: checked
                validate: {input: both, schema: "rules.py:Rules"}
            """
        )
    )
    outer = project / "outer"
    outer.mkdir()
    (outer / "p.yaml").write_text("pipeline: outer\nproject: ../inner\n")
    data, source, _ = read_yaml_file(outer / "p.yaml")
    joined, problems = include_project(data, source, outer / "p.yaml")
    assert not [p for p in problems if p.severity == "error"], problems
    assert joined["connections"]["cat"]["uri"] == "sqlite:///../inner/state/cat.db"
    assert joined["connections"]["cat"]["warehouse"] == "../inner/wh"
    assert joined["connections"]["pg"]["uri"] == "${file:../inner/secrets/uri}"
    text = (inner / "arrowline_project.yml").read_text()  # runs without those connections
    cut = text[: text.index("connections:")] + text[text.index("tasks:") :]
    (inner / "arrowline_project.yml").write_text(cut)
    result = run(outer / "p.yaml")
    assert result.ok, {k: t.error for k, t in result.tasks.items() if t.error}
    priced = result.tasks["priced"].output
    assert priced is not None
    rows = pl.read_parquet([str(f) for f in priced.files]).sort("id")
    assert rows["dollars"].to_list() == [0.0, 1.5, 3.0]
    both = result.tasks["checked"].output
    assert both is not None
    assert sorted(pl.read_parquet([str(f) for f in both.files])["id"].to_list()) == [1, 2]


def test_an_include_written_wrong_is_said_and_a_project_cannot_include_another(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = Path(shutil.copytree(SHOP, project / "shop"))
    (project / "mapping.yaml").write_text(
        "pipeline: m\nproject: shop\ntasks:\n  id: mine\n  sql: select 1 as x\n"
    )
    assert only(problems_of(project / "mapping.yaml"), "invalid-value").line == 4
    (project / "string.yaml").write_text("pipeline: s\nproject: shop\nmacros: mine.sql\n")
    assert (
        "macros must be a list"
        in only(problems_of(project / "string.yaml"), "invalid-value").message
    )
    monkeypatch.setenv("HOME", str(project))
    (project / "home.yaml").write_text("pipeline: h\nproject: ~/shop\n")
    assert not [p for p in problems_of(project / "home.yaml") if p.severity == "error"]
    (project / "none.yaml").write_text(
        "pipeline: n\nproject: null\ntasks:\n  - id: a\n    sql: select 1 as x\n"
    )
    assert not [p for p in problems_of(project / "none.yaml") if p.severity == "error"]
    settings = shop / "arrowline_project.yml"
    settings.write_text(settings.read_text() + "project: ../elsewhere\n")
    nested = only(problems_of(shop), "invalid-value")
    assert "cannot include another" in nested.message
    assert nested.file is not None
    assert nested.file.endswith("arrowline_project.yml")


def test_two_macros_of_one_name_are_refused_at_the_second(write: WritePipeline) -> None:
    """dbt refuses them too: which one a template calls would depend on the files' order."""
    write("one.sql", "{% macro cents(x) %}{{ x }} * 100{% endmacro %}\n")
    write("two.sql", "{# thousands #}\n{% macro cents(x) %}{{ x }} * 1000{% endmacro %}\n")
    path = write(
        "p.yaml",
        "pipeline: m\nmacros: [one.sql, two.sql]\ntasks:\n  - id: a\n"
        "    sql: select {{ cents(1) }} as x\n",
    )
    problem = only(problems_of(path), "duplicate-macro")
    assert problem.file is not None
    assert problem.file.endswith("two.sql")
    assert problem.line == 2

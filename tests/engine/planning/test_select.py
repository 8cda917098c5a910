"""--select and --exclude in dbt's grammar: a table of selectors and the tasks each names, the
errors a typo gets, and the whole path through a pipeline file, `plan` and `run` (tags,
state:modified after an edit, path: of a UDF's module)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest
from click.testing import Result

from engine.api.pipeline import plan, run
from engine.core.errors import SelectionError
from engine.core.graph import Graph
from engine.planning.select import SelectableTask, select_tasks
from tests.conftest import WritePipeline

#   raw_orders -> stg_orders ----> orders_mart -> publish
#   raw_customers -> stg_customers -^     stg_orders -> audit
UPSTREAM = {
    "raw_orders": (),
    "raw_customers": (),
    "stg_orders": ("raw_orders",),
    "stg_customers": ("raw_customers",),
    "orders_mart": ("stg_orders", "stg_customers"),
    "audit": ("stg_orders",),
    "publish": ("orders_mart",),
}
SHAPE = {  # kind, tags, materialized, files, state
    "raw_orders": ("extract", ("raw",), "table", (), None),
    "raw_customers": ("extract", ("raw",), "table", (), None),
    "stg_orders": ("sql", ("staging", "nightly"), "table", ("models/stg_orders.sql",), None),
    "stg_customers": ("sql", ("staging", "nightly"), "view", ("models/stg_c.sql",), "new"),
    "orders_mart": ("sql", ("mart", "nightly"), "table", ("marts/m.sql",), "modified"),
    "audit": ("validate", (), "table", ("schemas/audit.yaml",), None),
    "publish": ("load", (), "table", (), None),
}
ALL = set(UPSTREAM)


def _tasks() -> dict[str, SelectableTask]:
    return {
        task_id: SelectableTask(
            task_id,
            kind,
            tags,
            materialized,
            tuple(PurePosixPath(f) for f in files),
            lambda state=state: state,  # type: ignore[misc]
        )
        for task_id, (kind, tags, materialized, files, state) in SHAPE.items()
    }


def _select(select: list[str] | None, exclude: list[str] | None = None) -> set[str] | None:
    return select_tasks(select, exclude, Graph(UPSTREAM), _tasks())


@pytest.mark.parametrize(
    ("select", "expected"),
    [
        (["orders_mart"], {"orders_mart"}),
        (
            ["+orders_mart"],
            {"orders_mart", "stg_orders", "stg_customers", "raw_orders", "raw_customers"},
        ),
        (["1+orders_mart"], {"orders_mart", "stg_orders", "stg_customers"}),
        (["stg_orders+"], {"stg_orders", "orders_mart", "publish", "audit"}),
        (["stg_orders+1"], {"stg_orders", "orders_mart", "audit"}),
        (["+stg_orders+"], {"raw_orders", "stg_orders", "orders_mart", "audit", "publish"}),
        (["@stg_customers"], ALL - {"audit"}),
        (["stg_*"], {"stg_orders", "stg_customers"}),
        (["tag:nightly"], {"stg_orders", "stg_customers", "orders_mart"}),
        (["tag:night*"], {"stg_orders", "stg_customers", "orders_mart"}),
        (["tag:nightly,tag:mart"], {"orders_mart"}),
        (["tag:nightly,kind:sql"], {"stg_orders", "stg_customers", "orders_mart"}),
        (["tag:raw orders_mart"], {"raw_orders", "raw_customers", "orders_mart"}),
        (["tag:raw", "publish"], {"raw_orders", "raw_customers", "publish"}),
        (["kind:load"], {"publish"}),
        (["kind:validate+"], {"audit"}),
        (["config.materialized:view"], {"stg_customers"}),
        (["config.materialized:view+"], {"stg_customers", "orders_mart", "publish"}),
        (["path:models"], {"stg_orders", "stg_customers"}),
        (["path:models/stg_orders.sql"], {"stg_orders"}),
        (["path:./schemas/"], {"audit"}),
        (["path:*.yaml"], {"audit"}),
        (["state:modified"], {"stg_customers", "orders_mart"}),
        (["state:new"], {"stg_customers"}),
        (["state:modified+"], {"stg_customers", "orders_mart", "publish"}),
        (["tag:staging,stg_orders+"], {"stg_orders"}),
    ],
)
def test_a_selector_names_exactly_these_tasks(select: list[str], expected: set[str]) -> None:
    assert _select(select) == expected


@pytest.mark.parametrize(
    ("select", "exclude", "expected"),
    [
        (["+orders_mart"], ["tag:raw"], {"stg_orders", "stg_customers", "orders_mart"}),
        (None, ["kind:load"], ALL - {"publish"}),
        (None, ["stg_orders+"], {"raw_orders", "raw_customers", "stg_customers"}),
        (["tag:nightly"], ["state:modified"], {"stg_orders"}),
    ],
)
def test_exclude_removes_what_it_names(
    select: list[str] | None, exclude: list[str], expected: set[str]
) -> None:
    assert _select(select, exclude) == expected


def test_no_selection_is_every_task() -> None:
    assert _select(None) is None


@pytest.mark.parametrize(
    ("select", "exclude", "said"),
    [
        (["orders_mrat"], None, "unknown task 'orders_mrat'. Did you mean 'orders_mart'"),
        (["tga:nightly"], None, "unknown selector method 'tga'. Did you mean 'tag'"),
        (["stg_x*"], None, "'stg_x*' matches no task id"),
        (["state:changed"], None, "the states are modified, new"),
        (["tag:nightly,,kind:sql"], None, "empty part between commas"),
        (["orders_mart, publish"], None, "to name either, separate them with a space"),
        (["@+orders_mart"], None, "is not a selector"),
        (["orders_mart++"], None, "is not a selector"),
        (["tag:"], None, "gives tag: no value"),
        ([" "], None, "empty value"),
        (["tag:nope"], None, "--select 'tag:nope' names no task tags in this pipeline: mart,"),
        (["orders_mart tag:nope"], None, "'tag:nope' names no task"),
        (["tag:mart"], ["tag:typo"], "--exclude 'tag:typo' names no task"),
        (
            ["kind:sqll"],
            None,
            "kind:sqll: one of extract, sql, udf, validate, load. Did you mean 'sql'",
        ),
        (["config.materialized:views"], None, "Did you mean 'view'"),
        (["2+"], None, "is not a selector"),
        (["path:nowhere.sql"], None, "'path:nowhere.sql' names no task"),
        (["raw_orders,publish"], None, "a comma intersects"),
        (["kind:load"], ["publish"], "--exclude 'publish' leaves no task"),
    ],
)
def test_a_selector_that_cannot_be_meant_fails_saying_why(
    select: list[str], exclude: list[str] | None, said: str
) -> None:
    with pytest.raises(SelectionError) as raised:
        _select(select, exclude)
    error = raised.value
    assert said in f"{error.message} {error.hint or ''}"


PIPELINE = """
    pipeline: shop
    tasks:
      - id: orders
        tags: [raw]
        sql: select range as id, range % 3 as customer from range(10)
      - id: stg_orders
        tags: [staging, nightly]
        sql: select id, customer from orders
      - id: scored
        tags: [nightly]
        udf: {input: stg_orders, function: "udfs.py:score"}
      - id: per_customer
        sql: select customer, count(*) as n from scored group by all
      - id: publish
        load: {input: per_customer, to: parquet, path: out/per_customer.parquet}
"""
UDF = "import polars as pl\n\ndef score():\n    return {'big': pl.col('id') > 4}\n"


def _actions(result: Result) -> dict[str, str]:
    assert result.exit_code == 0, result.output
    return {task["id"]: task["action"] for task in json.loads(result.stdout)["tasks"]}


def test_select_and_exclude_through_plan_and_run_of_a_pipeline_file(
    write: WritePipeline, cli: Callable[..., Result], project: Path
) -> None:
    path = write("p.yaml", PIPELINE)
    write("udfs.py", UDF)
    as_json = ("--format", "json", "--no-schemas")
    picked = _actions(
        cli("plan", path, "--select", "tag:nightly", "--exclude", "kind:udf", *as_json)
    )
    assert picked == {"orders": "run", "stg_orders": "run"}  # and the upstream it needs
    assert _actions(cli("plan", path, "--select", "path:udfs.py+", *as_json)) == {
        "orders": "run",
        "stg_orders": "run",
        "scored": "run",
        "per_customer": "run",
        "publish": "run",
    }
    assert run(path).ok
    assert plan(path, select=["state:modified"]).to_run == ()  # nothing changed since

    write("p.yaml", PIPELINE.replace("count(*) as n", "count(*) as n, max(id) as last"))
    write("udfs.py", UDF.replace("> 4", "> 5"))
    changed = plan(path, select=["state:modified"])
    assert {t.id for t in changed.to_run} == {"scored", "per_customer"}
    result = cli("run", path, "--select", "state:modified+", "--no-progress")
    assert result.exit_code == 0, result.output
    with pytest.raises(SelectionError, match="leaves no task"):
        plan(path, select=["tag:raw,tag:nightly"])


def test_a_tag_that_is_no_label_is_refused_at_its_line(
    write: WritePipeline, cli: Callable[..., Result]
) -> None:
    path = write("p.yaml", PIPELINE.replace("tags: [raw]", "tags: [raw, 'two words']"))
    write("udfs.py", UDF)
    result = cli("validate", path)
    assert result.exit_code == 2
    assert path.read_text().splitlines()[3].strip().startswith("tags:")  # line 4
    assert "p.yaml:4: error [task orders]: tags: tag 'two words' must be letters" in result.output


def test_a_run_recorded_before_commas_meant_and_resumes_the_same_tasks() -> None:
    from engine.planning.resume import _recorded_selection

    assert _recorded_selection(["b,c", "d+, e"]) == ["b", "c", "d+", "e"]
    assert _recorded_selection(["a", "b"]) == ["a", "b"]  # task ids, as runs record them now
    assert _recorded_selection(None) is None


def test_an_excluded_task_never_runs_for_the_selection(write: WritePipeline) -> None:
    """dbt never runs an excluded node. Here the selection needs the excluded task's output:
    with none to reuse, the plan is refused naming who reads it; once one exists, it is reused."""
    path = write("p.yaml", PIPELINE)
    write("udfs.py", UDF)
    with pytest.raises(SelectionError) as raised:
        plan(path, select=["per_customer"], exclude=["orders"])
    assert "--exclude leaves out 'orders', which stg_orders reads" in raised.value.message
    assert run(path).ok
    actions = {
        t.id: t.action for t in plan(path, select=["per_customer"], exclude=["orders"]).tasks
    }
    assert actions == {"scored": "reuse", "per_customer": "run"}  # a reused output ends a branch


def test_path_is_read_from_the_pipeline_folder_or_the_working_directory(
    write: WritePipeline, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = project / "shared"
    shared.mkdir()
    (shared / "b.sql").write_text("select 2 as y")
    path = write(
        "pipes/p.yaml",
        """
        pipeline: paths
        tasks:
          - id: a
            sql: {file: sql/a.sql}
          - id: b
            sql: {file: ../shared/b.sql}
        """,
    )
    (path.parent / "sql").mkdir()
    (path.parent / "sql" / "a.sql").write_text("select 1 as x")
    monkeypatch.chdir(project)

    def picked(value: str) -> set[str]:
        return {t.id for t in plan(path, select=[f"path:{value}"]).tasks}

    assert picked("../shared/b.sql") == {"b"}
    assert picked("../shared") == {"b"}
    assert picked("./sql/../sql/a.sql") == {"a"}
    assert picked(str(path.parent / "sql" / "a.sql")) == {"a"}  # absolute
    assert picked("pipes/sql/a.sql") == {"a"}  # from the working directory
    assert picked("p.yaml") == {"a", "b"}  # the pipeline file defines both

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
        (["@+orders_mart"], None, "is not a selector"),
        (["orders_mart++"], None, "is not a selector"),
        (["tag:"], None, "gives tag: no value"),
        ([" "], None, "empty value"),
        (["tag:nope"], None, "--select 'tag:nope' leaves no task"),
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

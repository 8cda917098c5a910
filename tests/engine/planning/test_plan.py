import shutil
from pathlib import Path

import duckdb
import pytest

from engine.api.pipeline import plan, run
from engine.core.errors import ParameterError, SelectionError
from engine.tasks.checks import load_definition
from tests.conftest import WritePipeline

DIAMOND = """
    pipeline: diamond
    params: {n: 3}
    tasks:
      - id: report
        sql: select * from left_side join right_side using (x)
      - id: source
        sql: select range as x from range({{ params.n }})
      - id: left_side
        sql: select x, x * 2 as l from source
      - id: right_side
        sql: select x, x * 3 as r from source
      - id: keep
        depends_on: [report]
        load: {input: left_side, to: parquet, path: out/left.parquet}
"""


def test_plan_orders_tasks_by_dependency_with_levels_and_inputs(write: WritePipeline) -> None:
    the_plan = plan(write("p.yaml", DIAMOND))
    assert [t.id for t in the_plan.tasks] == ["source", "left_side", "right_side", "report", "keep"]
    levels = {t.id: t.level for t in the_plan.tasks}
    assert levels == {"source": 0, "left_side": 1, "right_side": 1, "report": 2, "keep": 3}
    assert the_plan.task("report").inputs == ("left_side", "right_side")
    assert the_plan.task("keep").inputs == ("left_side",)
    assert the_plan.task("keep").upstream == ("left_side", "report")
    assert the_plan.task("source").sql == "select range as x from range(3)"
    assert the_plan.task("keep").describe_output() == "parquet:out/left.parquet"


def test_plan_renders_with_the_run_parameters(write: WritePipeline) -> None:
    the_plan = plan(write("p.yaml", DIAMOND), params={"n": "7"})
    assert the_plan.params["n"] == 7
    assert the_plan.task("source").sql == "select range as x from range(7)"
    with pytest.raises(ParameterError):
        plan(write("q.yaml", DIAMOND), params={"m": "1"})


def test_plan_is_a_pure_function_of_its_inputs(write: WritePipeline) -> None:
    definition = load_definition(write("p.yaml", DIAMOND))
    first = plan(definition, run_id="20240101T000000Z-000000")
    second = plan(definition, run_id="20240101T000000Z-000000")
    assert first.to_dict() | {"logical_date": None} == second.to_dict() | {"logical_date": None}


def test_unknown_selection_is_an_error(write: WritePipeline) -> None:
    with pytest.raises(SelectionError, match="Did you mean 'report'"):
        plan(write("p.yaml", DIAMOND), select=["reprot"])


def test_selection_runs_upstream_when_nothing_can_be_reused(write: WritePipeline) -> None:
    the_plan = plan(write("p.yaml", DIAMOND), select=["left_side"])
    assert [(t.id, t.action) for t in the_plan.tasks] == [("source", "run"), ("left_side", "run")]


def test_selection_reuses_unchanged_upstream_and_plus_adds_downstream(
    write: WritePipeline, project: Path
) -> None:
    path = write("p.yaml", DIAMOND)
    first = run(path)
    assert first.ok
    the_plan = plan(path, select=["left_side+"])
    actions = {t.id: (t.action, t.reuse_run) for t in the_plan.tasks}
    assert actions == {
        "source": ("reuse", first.run_id),
        "right_side": ("reuse", first.run_id),
        "left_side": ("run", None),
        "report": ("run", None),
        "keep": ("run", None),
    }
    # A changed parameter changes the fingerprint of `source`: it is run, not reused.
    changed = plan(path, select=["left_side"], params={"n": "4"})
    assert {t.id: t.action for t in changed.tasks} == {"source": "run", "left_side": "run"}
    # An output that is not on this disk (deleted, or written by another host sharing the
    # catalog) cannot be reused: the task runs again.
    shutil.rmtree(project / ".arrowline" / "workspace" / "diamond" / "source" / first.run_id)
    gone = plan(path, select=["left_side"])
    assert {t.id: t.action for t in gone.tasks} == {"source": "run", "left_side": "run"}


def test_executor_runs_exactly_the_plan(write: WritePipeline, project: Path) -> None:
    path = write("p.yaml", DIAMOND)
    run(path)
    the_plan = plan(path, select=["report"])
    from engine.api.pipeline import execute

    result = execute(the_plan)
    ran = {task_id for task_id, t in result.tasks.items() if not t.reused_from}
    assert ran == {t.id for t in the_plan.to_run} == {"report"}
    assert result.tasks["left_side"].reused_from is not None


def test_a_negative_number_cannot_start_a_comment_in_sql(write: WritePipeline) -> None:
    """`where total > 10-{{ n }} and tenant = 1` with n = -5 read `10--5 and ...`: the rest
    of the line, the tenant filter with it, became a comment."""
    path = write(
        "p.yaml",
        """
        pipeline: signs
        params: {n: 1, x: 1.5}
        tasks:
          - id: t
            sql: select 10-{{ params.n }} as raw, 10-{{ params.n | sql_literal }} as quoted, 1-{{ params.x }} as f, 0 as tenant
          - id: s
            extract: {from: duckdb, path: w.duckdb, query: "select 10-{{ params.n }} as y, 2 as z"}
        """,
    )
    the_plan = plan(path, params={"n": -5, "x": -0.0})
    sql = the_plan.task("t").sql
    assert sql is not None
    assert duckdb.sql(sql).fetchall() == [(15, 15, 1.0, 0)]
    query = the_plan.task("s").spec.extract.query  # type: ignore[union-attr]
    assert duckdb.sql(query).fetchall() == [(15, 2)]

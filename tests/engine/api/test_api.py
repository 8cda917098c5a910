from __future__ import annotations

from pathlib import Path

import duckdb
import pandera.polars as pa
import polars as pl
import pytest

import engine
from engine import Pipeline
from engine.core.errors import ArrowlineError, ParameterError, PipelineInvalid, RunFailed
from engine.planning.fingerprint import pipeline_fingerprint
from engine.tasks.checks import load_definition
from tests.conftest import WritePipeline


class Positive(pa.DataFrameModel):
    x: int = pa.Field(ge=0)


def build(base: Path) -> Pipeline:
    p = Pipeline("py", params={"n": 5}, base_dir=base)
    p.sql("numbers", "select range as x from range({{ params.n }})")

    @p.udf("squared", input="numbers")
    def square() -> dict[str, pl.Expr]:
        return {"x2": pl.col("x") * pl.col("x")}

    p.validate("checked", input="squared", schema=Positive)
    p.load("out", input="checked", to="duckdb", path="w.duckdb", table="squares", mode="replace")
    return p


def test_python_pipeline_runs_end_to_end(project: Path) -> None:
    result = build(project).run()
    assert result.ok, [t.error for t in result.tasks.values()]
    connection = duckdb.connect(str(project / "w.duckdb"), read_only=True)
    assert connection.execute("select sum(x2) from squares").fetchone() == (30,)
    connection.close()


def test_a_failed_run_is_visible_in_its_repr_and_raise_for_status(project: Path) -> None:
    p = Pipeline("visible", base_dir=project)
    p.sql("numbers", "select range as x from range(3)")
    p.validate("checked", input="numbers", schema={"columns": {"missing": {"type": "int64"}}})
    p.load("out", input="checked", to="parquet", path="out/numbers")
    result = p.run()
    assert not result.ok
    shown = repr(result)
    assert shown.startswith(f"<RunResult visible {result.run_id} FAILED: ")
    assert "task 'checked' failed (DataError): the input does not match the schema" in shown
    assert "skipped: out" in shown
    with pytest.raises(RunFailed) as failed:
        result.raise_for_status()
    error = failed.value
    assert isinstance(error, ArrowlineError)
    assert (error.pipeline, error.run_id, error.failed) == ("visible", result.run_id, ("checked",))
    assert error.message == (
        f"run {result.run_id} of pipeline 'visible' FAILED: task 'checked' failed (DataError): "
        "the input does not match the schema: column 'missing' is missing; skipped: out"
    )
    assert error.hint == f"`arrowline runs {result.run_id}` shows every task and attempt"


def test_a_failed_task_of_a_pipeline_file_is_named_with_its_file_and_line(
    write: WritePipeline,
) -> None:
    path = write(
        "p.yaml",
        """
        pipeline: located
        tasks:
          - id: numbers
            sql: select range as x from range(3)
          - id: broken
            sql: select cast('x' as integer) as n from numbers
        """,
    )
    result = engine.run(path)
    with pytest.raises(RunFailed) as failed:
        result.raise_for_status()
    assert f"task 'broken' at {path}:5 failed (DataError)" in failed.value.message


def test_raise_for_status_returns_a_successful_result(project: Path) -> None:
    result = build(project).run()
    assert result.raise_for_status() is result
    assert repr(result).startswith(f"<RunResult py {result.run_id} SUCCESS in ")


def test_python_and_yaml_build_the_same_model(write: WritePipeline, project: Path) -> None:
    p = Pipeline("same", params={"n": 2}, base_dir=project)
    p.extract("raw", path="data/*.csv", format="csv")
    p.sql("agg", "select count(*) as n from raw")
    p.load("out", input="agg", to="parquet", path="out/agg.parquet")
    yaml_definition = load_definition(
        write(
            "same.yaml",
            """
        pipeline: same
        params: {n: 2}
        tasks:
          - id: raw
            extract: {from: files, path: "data/*.csv", format: csv}
          - id: agg
            sql: select count(*) as n from raw
          - id: out
            load: {input: agg, to: parquet, path: out/agg.parquet}
    """,
        )
    )
    assert p.spec == yaml_definition.spec
    assert pipeline_fingerprint(p.spec) == pipeline_fingerprint(yaml_definition.spec)


def test_python_pipeline_problems_are_reported_like_yaml_ones(project: Path) -> None:
    p = Pipeline("bad", base_dir=project)
    p.sql("a", "select * from missing")
    p.load("b", input="a", to="duckdb", path="w.duckdb", table="t", mode="merge")
    with pytest.raises(PipelineInvalid) as info:
        p.spec  # noqa: B018 - building the spec validates it
    codes = {problem.code for problem in info.value.problems}
    assert codes == {"invalid-value"}  # shape first; semantic checks need a valid shape
    q = Pipeline("bad2", base_dir=project)
    q.sql("a", "select * from missing")
    with pytest.raises(PipelineInvalid, match="reads table 'missing'"):
        q.spec  # noqa: B018


def test_validate_and_plan_from_python(project: Path) -> None:
    p = build(project)
    assert engine.validate(p) == []
    assert [t.id for t in engine.plan(p).tasks] == ["numbers", "squared", "checked", "out"]


def test_public_surface_is_explicit() -> None:
    import connectors
    import lineage
    import transforms

    assert set(engine.__all__) == {
        "ArrowlineError",
        "Definition",
        "Pipeline",
        "PipelineSpec",
        "Plan",
        "Project",
        "RunResult",
        "TaskSpec",
        "load",
        "open",
        "plan",
        "run",
        "udf",
        "validate",
    }
    for name in engine.__all__:
        assert getattr(engine, name) is not None
    assert lineage.__all__
    assert isinstance(connectors.__all__, list)
    assert isinstance(transforms.__all__, list)


def test_importing_the_packages_has_no_side_effects(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = "import engine, connectors, transforms, lineage; import os; print(os.listdir('.'))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
    assert done.stderr == ""


def test_a_run_parameter_not_of_its_type_is_refused_before_anything_runs(project: Path) -> None:
    pipeline = build(project)
    with pytest.raises(
        ParameterError, match=r"parameter 'n' from --param: expected int, got a list"
    ):
        pipeline.run(params={"n": ["1]) union all select 42 --"]})
    assert not (project / "w.duckdb").exists()
    typed = Pipeline("typed", params={"n": {"type": "int", "default": {"a": 1}}})
    typed.sql("t", "select 1 as x")
    with pytest.raises(PipelineInvalid, match=r"params\.n\.default: expected int, got an object"):
        typed.plan()

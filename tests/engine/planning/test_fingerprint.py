"""Reuse never hands back a stale output: a task's fingerprint changes with everything that
decides its output, upstream included, and `--select` re-runs what changed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandera.polars as pa
import polars as pl
from click.testing import Result

import engine
from engine.api.pipeline import Pipeline, plan, run
from engine.planning.fingerprint import describe_object, pipeline_fingerprint
from tests.conftest import WritePipeline

Cli = Callable[..., Result]

CHAIN = """
    pipeline: chain
    params: {min_id: 0}
    tasks:
      - id: x
        sql: select range as id from range(5)
      - id: y
        sql: select * from x where id >= {{ params.min_id | sql_literal }}
      - id: z
        sql: select * from y
      - id: w
        sql: select count(*) as n from z
"""


def actions(path: Path | Pipeline, **kwargs: Any) -> dict[str, str]:
    return {task.id: task.action for task in plan(path, **kwargs).tasks}


def latest(project: Path, task_id: str) -> list[dict[str, Any]]:
    with engine.open(project) as opened:
        return opened.table(task_id).collect().to_dicts()


def write_module(path: Path, text: str) -> None:
    """Write Python source and move its mtime on, as an editor saving the file would."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


def test_a_parameter_read_upstream_reruns_every_task_below_it(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    path = write("p.yaml", CHAIN)
    assert cli("run", path, "--no-progress").exit_code == 0
    assert latest(project, "w") == [{"n": 5}]

    # z and w do not read min_id, but their input y does: they are not reused.
    assert actions(path, select=["w"], params={"min_id": "3"}) == {
        "x": "reuse",
        "y": "run",
        "z": "run",
        "w": "run",
    }
    result = cli("run", path, "--select", "w", "--param", "min_id=3", "--no-progress")
    assert result.exit_code == 0, result.stderr
    assert latest(project, "w") == [{"n": 2}]
    # The same parameters again: nothing upstream changed, so z is reused (and ends the walk).
    assert actions(path, select=["w"], params={"min_id": "3"}) == {"z": "reuse", "w": "run"}


UDF_PIPELINE = """
    pipeline: scored
    tasks:
      - id: x
        sql: select range as id from range(4)
      - id: scored
        udf: {input: x, function: "udfs.py:score", output: select}
      - id: total
        sql: select sum(score) as total from scored
"""


def test_an_edited_udf_body_is_run_again_not_reused(write: WritePipeline, project: Path) -> None:
    udfs = project / "udfs.py"
    write_module(
        udfs,
        """
        import polars as pl

        def score():
            return {"score": pl.col("id") * 2}
        """,
    )
    path = write("p.yaml", UDF_PIPELINE)
    assert run(path).ok
    assert latest(project, "total") == [{"total": 12}]

    write_module(
        udfs,
        """
        import polars as pl

        def score():
            return {"score": pl.col("id") * 3}
        """,
    )
    assert actions(path, select=["total"]) == {"x": "reuse", "scored": "run", "total": "run"}
    assert run(path, select=["total"]).ok
    assert latest(project, "total") == [{"total": 18}]


def test_an_edited_helper_the_udf_calls_is_run_again_but_unrelated_code_is_not(
    write: WritePipeline, project: Path
) -> None:
    udfs = project / "udfs.py"
    source = """
        import polars as pl

        FACTOR = {factor}

        def unrelated():
            return {unrelated}

        def weight(column):
            return pl.col(column) * FACTOR

        def score():
            # comments and layout do not decide the output
            return {{"score": weight("id")}}
        """
    write_module(udfs, source.format(factor=2, unrelated=1))
    path = write("p.yaml", UDF_PIPELINE)
    assert run(path).ok

    # Another function of the same file that score does not reach changes nothing.
    write_module(udfs, source.format(factor=2, unrelated=99).replace("# comments", "# notes"))
    assert actions(path, select=["total"]) == {"scored": "reuse", "total": "run"}

    # A module-level value a helper of the UDF reads decides its output.
    write_module(udfs, source.format(factor=5, unrelated=99))
    assert actions(path, select=["total"]) == {"x": "reuse", "scored": "run", "total": "run"}
    assert run(path, select=["total"]).ok
    assert latest(project, "total") == [{"total": 30}]


VALIDATED = """
    pipeline: checked
    tasks:
      - id: x
        sql: select range as id from range(5)
      - id: checked
        validate: {{input: x, schema: "{schema}", on_fail: quarantine, max_rejected_fraction: 1}}
      - id: n
        sql: select count(*) as n from checked
"""


def test_an_edited_pandera_class_is_run_again(write: WritePipeline, project: Path) -> None:
    schemas = project / "schemas.py"
    model = """
        import pandera.polars as pa

        class Ids(pa.DataFrameModel):
            id: int = pa.Field(ge={low})
        """
    write_module(schemas, model.format(low=0))
    path = write("p.yaml", VALIDATED.format(schema="schemas.py:Ids"))
    # Recorded by another process: fingerprints must not depend on the process computing them.
    command = [sys.executable, "-m", "engine", "run", str(path), "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=project, check=False)
    assert done.returncode == 0, done.stderr
    assert latest(project, "n") == [{"n": 5}]
    assert actions(path, select=["n"]) == {"checked": "reuse", "n": "run"}

    write_module(schemas, model.format(low=3))
    assert actions(path, select=["n"]) == {"x": "reuse", "checked": "run", "n": "run"}
    assert run(path, select=["n"]).ok
    assert latest(project, "n") == [{"n": 2}]


def test_an_edited_schema_yaml_file_is_run_again(write: WritePipeline, project: Path) -> None:
    schema = "columns:\n  id: {{type: int64, checks: {{ge: {low}}}}}\n"
    write("schemas/ids.yaml", schema.format(low=0))
    path = write("p.yaml", VALIDATED.format(schema="schemas/ids.yaml"))
    assert run(path).ok
    assert latest(project, "n") == [{"n": 5}]

    write_module(project / "schemas" / "ids.yaml", schema.format(low=4))
    assert actions(path, select=["n"]) == {"x": "reuse", "checked": "run", "n": "run"}
    assert run(path, select=["n"]).ok
    assert latest(project, "n") == [{"n": 1}]


FILES = """
    pipeline: files
    tasks:
      - id: raw
        extract: {from: files, path: "data/*.csv"}
      - id: n
        sql: select count(*) as n from raw
"""


def test_a_changed_or_added_input_file_is_read_again(write: WritePipeline, project: Path) -> None:
    data = project / "data"
    write("data/a.csv", "id\n1\n2\n")
    path = write("p.yaml", FILES)
    assert run(path).ok
    assert actions(path, select=["n"]) == {"raw": "reuse", "n": "run"}

    # Same size, new content and modification time: the file is not the one read before.
    write_module(data / "a.csv", "id\n7\n8\n")
    assert actions(path, select=["n"]) == {"raw": "run", "n": "run"}
    assert run(path, select=["n"]).ok
    with engine.open(project) as opened:
        assert opened.table("raw").collect()["id"].to_list() == [7, 8]

    # A new file that the glob matches is new input too.
    write("data/b.csv", "id\n9\n")
    assert actions(path, select=["n"]) == {"raw": "run", "n": "run"}
    assert run(path, select=["n"]).ok
    assert latest(project, "n") == [{"n": 3}]


def _scaled(factor: int) -> Callable[[], pl.Expr]:
    def score() -> pl.Expr:
        return (pl.col("id") * factor).alias("score")

    return score


def test_python_udfs_are_told_apart_by_what_they_compute_not_their_name(project: Path) -> None:
    def pipeline(factor: int) -> Pipeline:
        p = Pipeline("closures", base_dir=project)
        p.sql("x", "select range as id from range(3)")
        p.udf("scored", input="x", function=_scaled(factor))
        p.sql("total", "select sum(score) as total from scored")
        return p

    assert run(pipeline(2)).ok
    assert actions(pipeline(2), select=["total"]) == {"scored": "reuse", "total": "run"}
    # Same qualified name, another captured value.
    assert actions(pipeline(10), select=["total"]) == {
        "x": "reuse",
        "scored": "run",
        "total": "run",
    }


def test_the_pipeline_version_changes_with_the_definition_and_python_code(
    project: Path,
) -> None:
    def pipeline(factor: int, n: int = 3) -> Pipeline:
        p = Pipeline("versions", base_dir=project, params={"n": n})
        p.sql("x", "select range as id from range({{ params.n }})")
        p.udf("scored", input="x", function=_scaled(factor))
        return p

    assert pipeline_fingerprint(pipeline(2).spec) == pipeline_fingerprint(pipeline(2).spec)
    assert pipeline_fingerprint(pipeline(2).spec) != pipeline_fingerprint(pipeline(2, n=4).spec)
    assert pipeline_fingerprint(pipeline(2).spec) != pipeline_fingerprint(pipeline(3).spec)


def _ids_schema(low: int, high: int) -> pa.DataFrameSchema:
    in_range = pa.Check(lambda data: data.lazyframe.select(pl.col("id") < high), name="below")
    return pa.DataFrameSchema({"id": pa.Column(int, checks=[pa.Check.ge(low), in_range])})


def test_pandera_schema_objects_are_described_by_their_checks_and_what_those_capture() -> None:
    assert describe_object(_ids_schema(0, 9)) == describe_object(_ids_schema(0, 9))
    assert describe_object(_ids_schema(0, 9)) != describe_object(_ids_schema(1, 9))
    assert describe_object(_ids_schema(0, 9)) != describe_object(_ids_schema(0, 8))

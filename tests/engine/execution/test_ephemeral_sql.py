"""`materialize: ephemeral` on a sql task: it keeps nothing and hands its readers its statement,
which they run inside theirs; the results equal a run that kept every output."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from engine.api.pipeline import plan, resume, run
from engine.core.errors import PipelineInvalid, TaskError
from engine.core.states import RunState, TaskState
from engine.execution.results import RunResult
from engine.state.catalog import CatalogReader
from engine.state.db import catalog_location
from engine.tasks import TaskContext, TaskOutcome, run_task
from engine.tasks.checks import check_file
from tests.conftest import WritePipeline
from tests.engine.execution.test_pipelined import write_input

INLINE = ("stg", "by_region", "late")


def pipeline(ephemeral: bool, cache: bool = False) -> str:
    flag = "materialize: ephemeral" if ephemeral else "materialize: table"
    return f"""
        pipeline: inline
        cache: {str(cache).lower()}
        tasks:
          - id: orders
            extract: {{from: files, path: data/orders.parquet}}
          - id: stg
            {flag}
            sql: select id, amount * 2 as doubled, region from orders where id % 3 <> 0;
          - id: by_region
            {flag}
            sql: |
              select region, sum(doubled) as total, count(*) as n
              from stg group by region -- a comment after the statement
          - id: late
            {flag}
            sql: select s.id, r.n from stg s join by_region r using (region) where s.id > 10
          - id: top
            sql: |
              select s.id, s.doubled, r.total, l.n
              from stg s join by_region r using (region) left join late l using (id)
          - id: summary
            sql: select count(*) as regions, sum(total) as total from by_region
    """


def rows(result: RunResult, task: str) -> list[tuple[object, ...]]:
    output = result.tasks[task].output
    assert output is not None, task
    with duckdb.connect() as connection:
        return connection.execute(f"select * from {output.duckdb_source()} order by all").fetchall()


@pytest.mark.parametrize("max_parallel", [1, 2])
def test_ephemeral_sql_is_inlined_into_its_readers_and_equals_a_kept_run(
    project: Path, write: WritePipeline, max_parallel: int
) -> None:
    write_input(project)
    kept = run(write("kept.yaml", pipeline(ephemeral=False)), max_parallel=max_parallel)
    assert kept.ok
    inline = run(write("inline.yaml", pipeline(ephemeral=True)), max_parallel=max_parallel)
    assert inline.ok, {t: r.error for t, r in inline.tasks.items() if r.error}
    for task in ("top", "summary"):
        assert rows(inline, task) == rows(kept, task)
        assert rows(inline, task)  # not two empty results
    with CatalogReader(catalog_location(project)) as reader:
        for task in INLINE:
            assert inline.tasks[task].state is TaskState.SUCCESS
            assert inline.tasks[task].output is None
            row = reader.task_run(inline.run_id, task)
            assert row is not None
            assert row.output_path is None
    written = {p.relative_to(project) for p in project.rglob("part-*.parquet")}
    kept_by_inline = {p for p in written if inline.run_id in str(p)}
    assert kept_by_inline  # orders, top and summary kept theirs
    for task in INLINE:
        assert not [p for p in kept_by_inline if task in p.parts], task
        assert [p for p in written if kept.run_id in str(p) and task in p.parts], task


def test_plan_says_an_ephemeral_task_is_inlined(project: Path, write: WritePipeline) -> None:
    write_input(project)
    the_plan = plan(write("p.yaml", pipeline(ephemeral=True)))
    reasons = {t.id: t.cache.reason for t in the_plan.tasks if t.cache is not None}
    assert {reasons[t] for t in INLINE} == {"ephemeral"}
    assert {t.id: t.describe_output() for t in the_plan.tasks}["stg"] == (
        "inlined into its readers"
    )


def test_readers_of_an_ephemeral_sql_task_are_cached_by_its_definition(
    project: Path, write: WritePipeline
) -> None:
    write_input(project)
    path = write("p.yaml", pipeline(ephemeral=True, cache=True))
    first = run(path)
    assert first.ok
    second = run(path)
    assert second.ok
    assert second.tasks["top"].reused_from == first.run_id
    assert second.tasks["summary"].reused_from == first.run_id
    assert rows(second, "summary") == rows(first, "summary")
    # its statement changes: what it hands over changes, so its readers run again
    path.write_text(path.read_text().replace("id % 3 <> 0", "id % 5 <> 0"))
    third = run(path)
    assert third.ok
    assert third.tasks["summary"].reused_from is None
    assert rows(third, "summary") != rows(first, "summary")


def test_only_sql_tasks_may_read_an_ephemeral_sql_task(project: Path, write: WritePipeline) -> None:
    path = write(
        "p.yaml",
        """
        pipeline: p
        tasks:
          - id: stg
            materialize: ephemeral
            sql: select 1 as x
          - id: out
            load: {input: stg, to: parquet, path: out/x.parquet}
        """,
    )
    _, found = check_file(path)
    problems = {p.code: p for p in found}
    read = problems["ephemeral-input"]
    assert (read.task_id, read.line) == ("out", 7)
    assert "only sql tasks can, which run its statement inside theirs" in read.message
    with pytest.raises(PipelineInvalid, match="ephemeral"):
        run(path)


def test_an_ephemeral_statement_that_does_not_bind_fails_its_own_task(
    project: Path, write: WritePipeline
) -> None:
    write_input(project)
    text = pipeline(ephemeral=True).replace("amount * 2 as doubled", "amount * 2 as doubled, nope")
    result = run(write("p.yaml", text))
    assert result.state is RunState.FAILED
    assert result.tasks["stg"].state is TaskState.FAILED
    assert "nope" in (result.tasks["stg"].error or "")
    assert result.tasks["top"].state is TaskState.SKIPPED


@pytest.mark.parametrize(
    ("failing", "inlined_again", "kept"),
    [
        # top reads stg, by_region and late: all three hand it their statements again
        ("top", INLINE, "summary"),
        # summary reads by_region alone, which reads stg: both run again, late need not
        ("summary", ("stg", "by_region"), "top"),
    ],
)
def test_resume_runs_an_ephemeral_task_again_for_the_readers_that_run_again(
    project: Path,
    write: WritePipeline,
    failing: str,
    inlined_again: tuple[str, ...],
    kept: str,
) -> None:
    write_input(project)
    path = write("p.yaml", pipeline(ephemeral=True))

    def broken(context: TaskContext) -> TaskOutcome:
        if context.task.id == failing:
            raise TaskError("the disk went away")
        return run_task(context)

    first = run(path, runner=broken)
    assert first.state is RunState.FAILED
    again = resume(path, first.run_id)
    assert again.ok, {t: r.error for t, r in again.tasks.items() if r.error}
    for task in INLINE:
        ran = again.tasks[task].reused_from is None
        assert ran is (task in inlined_again), task
    assert again.tasks[kept].reused_from == first.run_id
    assert again.tasks["orders"].reused_from == first.run_id
    clean = run(write("clean.yaml", pipeline(ephemeral=False)))
    assert rows(again, failing) == rows(clean, failing)


def test_the_python_builder_says_ephemeral_on_a_sql_task(project: Path) -> None:
    from engine.api.pipeline import Pipeline

    p = Pipeline("built", base_dir=project)
    p.sql("numbers", "select range as n from range(10)", materialize="ephemeral")
    p.sql("evens", "select n from numbers where n % 2 = 0")
    result = p.run()
    assert result.ok
    assert result.tasks["numbers"].output is None
    assert rows(result, "evens") == [(0,), (2,), (4,), (6,), (8,)]

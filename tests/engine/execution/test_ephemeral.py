"""`materialize: ephemeral` on an extract: its batches go only to the loads streaming from it,
no copy is written, and whatever would need the copy runs the extract again instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.api.pipeline import resume, run
from engine.core.errors import PipelineInvalid, TransientTaskError
from engine.core.states import RunState, TaskState
from engine.state.catalog import CatalogReader
from engine.state.db import catalog_location
from engine.tasks import TaskContext, TaskOutcome, run_task
from engine.tasks.checks import check_file
from tests.conftest import PgSchema, WritePipeline
from tests.engine.execution.test_pipelined import ROWS, failing_extract, sorted_ids, write_input

TARGET = "{input: orders, to: parquet, path: out/orders.parquet}"


def pipeline(load: str = TARGET, extract_extra: str = "", connections: str = "") -> str:
    return f"""
        pipeline: eph
        {connections}
        tasks:
          - id: orders
            materialize: ephemeral
            extract: {{from: files, path: data/orders.parquet, batch_size: 1000}}
            {extract_extra}
          - id: publish
            load: {load}
    """


def workspace_outputs(project: Path, task: str) -> list[Path]:
    return [p for p in project.rglob(f"*/{task}/*") if "part-" in p.name]


@pytest.mark.parametrize("max_parallel", [1, 2])
def test_an_ephemeral_extract_streams_to_its_load_and_keeps_no_copy(
    project: Path, write: WritePipeline, max_parallel: int
) -> None:
    write_input(project)
    path = write("p.yaml", pipeline())
    result = run(path, max_parallel=max_parallel)
    assert result.state is RunState.SUCCESS, result.tasks["publish"].error
    assert sorted_ids(project / "out" / "orders.parquet") == list(range(ROWS))
    assert result.tasks["orders"].output is None
    assert result.tasks["orders"].rows_out == ROWS
    assert workspace_outputs(project, "orders") == []
    with CatalogReader(catalog_location(project)) as reader:
        row = reader.task_run(result.run_id, "orders")
        assert row is not None
        assert row.output_path is None
        graph = reader.lineage(result.run_id)
    # lineage still knows the columns it streamed, which no output holds
    assert graph is not None
    assert "publish.id" in str(graph), graph


def test_an_ephemeral_output_read_by_sql_is_refused_with_its_line(
    project: Path, write: WritePipeline
) -> None:
    write_input(project)
    path = write(
        "p.yaml",
        """
        pipeline: eph
        tasks:
          - id: orders
            materialize: ephemeral
            extract: {from: files, path: data/orders.parquet}
          - id: totals
            sql: select count(*) as n from orders
          - id: summary
            materialize: ephemeral
            load: {input: totals, to: parquet, path: out/totals.parquet}
          - id: unread
            materialize: ephemeral
            sql: select * from totals
        """,
    )
    _, found = check_file(path)
    problems = {p.code: p for p in found}
    read = problems["ephemeral-input"]
    assert read.task_id == "totals"
    assert read.line == 7
    assert "'orders' is materialize: ephemeral" in read.message
    assert "only loads whose sink takes a stream" in read.message
    kind = problems["ephemeral-kind"]
    assert kind.task_id == "summary"
    assert kind.line == 9
    assert "extracts (streamed to their loads) and sql tasks" in kind.message
    unread = problems["ephemeral-unread"]
    assert (unread.task_id, unread.line, unread.severity) == ("unread", 12, "warning")
    with pytest.raises(PipelineInvalid, match="ephemeral"):
        run(path)


def test_a_load_that_fails_breaks_its_ephemeral_extract_which_says_why(
    project: Path, write: WritePipeline, pg: PgSchema
) -> None:
    write_input(project)
    table = pg.table("target")
    pg.execute(f"create table {table} (id bigint primary key, amount float8, region int)")
    load = f"{{input: orders, to: postgres, connection: wh, table: {table}, mode: append}}"
    connections = 'connections:\n          wh: {kind: postgres, uri: "${env:TEST_PG_URI}"}'
    path = write("p.yaml", pipeline(load, connections=connections))
    result = run(path)
    assert result.state is RunState.FAILED
    assert result.tasks["orders"].state is TaskState.FAILED
    assert "task 'publish' failed" in (result.tasks["orders"].error or "")
    assert result.tasks["publish"].state is TaskState.SKIPPED
    assert pg.rows(f"select count(*) from {table}") == [(0,)]


def test_a_transient_break_runs_the_extract_and_its_load_again_together(
    project: Path, write: WritePipeline
) -> None:
    write_input(project)
    path = write("p.yaml", pipeline(extract_extra="retry: {attempts: 2, backoff: 0s}"))
    failing = failing_extract(10, {1}, lambda: TransientTaskError("the source went away"))
    result = run(path, runner=failing)
    assert result.state is RunState.SUCCESS, result.tasks["orders"].error
    assert result.tasks["orders"].attempts == 2
    assert sorted_ids(project / "out" / "orders.parquet") == list(range(ROWS))


def test_a_load_failing_after_its_ephemeral_extract_ended_is_not_retried_and_resume_extracts_again(
    project: Path, write: WritePipeline
) -> None:
    write_input(project)
    path = write("p.yaml", pipeline(TARGET + "\n            retry: {attempts: 3, backoff: 0s}"))

    def runner(context: TaskContext) -> TaskOutcome:
        outcome = run_task(context)
        if context.task.id == "publish":
            raise TransientTaskError("lost the connection after the write")
        return outcome

    first = run(path, runner=runner)
    assert first.state is RunState.FAILED
    assert first.tasks["orders"].state is TaskState.SUCCESS
    assert first.tasks["publish"].state is TaskState.FAILED
    assert first.tasks["publish"].attempts == 1  # nothing kept to retry from
    with CatalogReader(catalog_location(project)) as reader:
        last = reader.transitions(first.run_id, "publish")[-1]
    assert "ephemeral" in last.event
    assert "--resume" in last.event

    again = resume(path, first.run_id)
    assert again.state is RunState.SUCCESS
    assert again.tasks["orders"].reused_from is None  # extracted again
    assert again.tasks["orders"].rows_out == ROWS
    assert sorted_ids(project / "out" / "orders.parquet") == list(range(ROWS))

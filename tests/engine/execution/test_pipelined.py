"""Pipelined hand-off: a load starts on its extract's first batch, and commits only what an
extract that succeeded produced.

Real runs throughout (Parquet files and a real PostgreSQL, Parquet and PostgreSQL sinks). Where a
failure in the middle of a stream is needed, the test's runner makes the extract fail after a
given number of batches, through the same tee the extract writes to.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.api.pipeline import run
from engine.core.errors import DataError, TransientTaskError
from engine.core.states import RunState, TaskState
from engine.execution.results import ExecutionSettings, RunEvent
from engine.state.catalog import CatalogReader
from engine.state.db import catalog_location
from engine.tasks import TaskContext, TaskOutcome, run_task
from tests.conftest import PgSchema, WritePipeline

ROWS = 40_000
BATCH = 1_000


def write_input(project: Path, rows: int = ROWS) -> None:
    """A Parquet file the extract reads in batches of BATCH rows."""
    data = project / "data"
    data.mkdir(exist_ok=True)
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "amount": [i % 997 / 10 for i in range(rows)],
            "region": ["nesw"[i % 4] for i in range(rows)],
        }
    )
    pq.write_table(table, data / "orders.parquet")


def files_pipeline(load: str, retry: str = "") -> str:
    return f"""
        pipeline: piped
        tasks:
          - id: orders
            extract: {{from: files, path: data/orders.parquet, batch_size: {BATCH}}}
            {retry}
          - id: publish
            load: {load}
    """


class Events:
    """The order in which tasks changed state."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()

    def __call__(self, event: RunEvent) -> None:
        with self.lock:
            self.seen.append((event.task_id or "", event.state, event.attempt))

    def index(self, task: str, state: str, attempt: int | None = None) -> int:
        for i, (t, s, a) in enumerate(self.seen):
            if t == task and s == state and (attempt is None or a == attempt):
                return i
        raise AssertionError(f"{task} never went {state}: {self.seen}")

    def states(self, task: str) -> list[str]:
        return [s for t, s, _ in self.seen if t == task]


def failing_extract(
    after_batches: int, attempts: set[int], error: Callable[[], BaseException]
) -> Callable[[TaskContext], TaskOutcome]:
    """A runner whose extract fails once it offered `after_batches` batches, on `attempts`."""

    def runner(context: TaskContext) -> TaskOutcome:
        tee = context.tee
        if context.task.id == "orders" and context.attempt in attempts and tee is not None:
            offered = [0]
            put = tee.put

            def failing_put(batch: pa.RecordBatch, cancel: object) -> None:
                put(batch, cancel)  # type: ignore[arg-type]
                offered[0] += 1
                if offered[0] == after_batches:
                    raise error()

            tee.put = failing_put  # type: ignore[method-assign]
        return run_task(context)

    return runner


def sorted_ids(path: Path) -> list[int]:
    return sorted(pq.read_table(path).column("id").to_pylist())


def test_a_load_starts_before_its_extract_ends_and_equals_the_input(
    project: Path, write: WritePipeline
) -> None:
    write_input(project)
    path = write("p.yaml", files_pipeline("{input: orders, to: parquet, path: out/orders.parquet}"))
    events = Events()
    result = run(path, listener=events)
    assert result.state is RunState.SUCCESS
    assert events.index("publish", "RUNNING") < events.index("orders", "SUCCESS")
    assert sorted_ids(project / "out" / "orders.parquet") == list(range(ROWS))
    assert result.tasks["publish"].rows_in == ROWS
    # the workspace copy is kept beside the stream: notebooks and resume read it
    assert result.tasks["orders"].output is not None
    assert result.tasks["orders"].output.num_rows == ROWS
    with CatalogReader(catalog_location(project)) as reader:
        events_of = [t.event for t in reader.transitions(result.run_id, "publish")]
    assert "streams from orders" in events_of


def test_without_pipelining_the_load_waits_for_the_published_output(
    project: Path, write: WritePipeline
) -> None:
    write_input(project)
    path = write("p.yaml", files_pipeline("{input: orders, to: parquet, path: out/orders.parquet}"))
    events = Events()
    result = run(path, listener=events, settings=ExecutionSettings(pipelined=False))
    assert result.state is RunState.SUCCESS
    assert events.index("publish", "RUNNING") > events.index("orders", "SUCCESS")
    assert sorted_ids(project / "out" / "orders.parquet") == list(range(ROWS))


def test_an_extract_that_fails_mid_stream_leaves_no_target_and_skips_the_load(
    project: Path, write: WritePipeline
) -> None:
    write_input(project)
    path = write("p.yaml", files_pipeline("{input: orders, to: parquet, path: out/orders.parquet}"))
    events = Events()
    runner = failing_extract(10, {1}, lambda: DataError("row 10000 is bad"))
    result = run(path, listener=events, runner=runner)
    assert result.state is RunState.FAILED
    assert result.tasks["orders"].state is TaskState.FAILED
    assert result.tasks["publish"].state is TaskState.SKIPPED
    # it had started streaming, and went back to wait when its stream broke
    assert events.states("publish") == ["QUEUED", "RUNNING", "PENDING", "SKIPPED"]
    out = project / "out"
    assert not out.exists() or [p.name for p in out.iterdir()] == []


def test_a_retried_extract_streams_again_and_the_voided_attempt_is_not_counted(
    project: Path, write: WritePipeline
) -> None:
    write_input(project)
    retry = "retry: {attempts: 2, backoff: 0s}"
    load = "{input: orders, to: parquet, path: out/orders.parquet}\n            " + retry
    path = write("p.yaml", files_pipeline(load, retry))
    events = Events()
    failing = failing_extract(10, {1}, lambda: TransientTaskError("the source went away"))

    def runner(context: TaskContext) -> TaskOutcome:
        if context.task.id == "publish" and context.attempt == 2:
            raise TransientTaskError("the target's disk was busy")
        return failing(context)

    result = run(path, listener=events, runner=runner)
    assert result.state is RunState.SUCCESS, result.tasks["publish"].error
    assert result.tasks["orders"].attempts == 2
    # attempt 1 was voided by the extract's failure, attempt 2 failed on its own, and its
    # second real attempt (3) succeeded: two attempts allowed, two spent
    assert events.states("publish").count("RUNNING") == 3
    assert result.tasks["publish"].attempts == 3
    assert sorted_ids(project / "out" / "orders.parquet") == list(range(ROWS))


def test_a_load_that_fails_on_its_own_does_not_stall_the_extract(
    project: Path, write: WritePipeline, pg: PgSchema
) -> None:
    write_input(project)
    table = pg.table("target")
    pg.execute(f"create table {table} (id bigint primary key, amount float8, region int)")
    load = f"{{input: orders, to: postgres, connection: wh, table: {table}, mode: append}}"
    text = files_pipeline(load).replace(
        "tasks:",
        'connections:\n          wh: {kind: postgres, uri: "${env:TEST_PG_URI}"}\n        tasks:',
    )
    path = write("p.yaml", text)
    result = run(path)
    assert result.state is RunState.FAILED
    assert result.tasks["orders"].state is TaskState.SUCCESS  # published in full
    assert result.tasks["orders"].output is not None
    assert result.tasks["orders"].output.num_rows == ROWS
    assert result.tasks["publish"].state is TaskState.FAILED
    assert "region" in (result.tasks["publish"].error or "")
    assert pg.rows(f"select count(*) from {table}") == [(0,)]


def test_postgres_to_postgres_streams_and_commits_the_watermark_with_the_rows(
    project: Path, write: WritePipeline, pg: PgSchema
) -> None:
    source, target = pg.table("source"), pg.table("target")
    pg.execute(
        f"create table {source} (id bigint primary key, updated_at timestamptz, note text)",
        f"insert into {source} select i, timestamptz '2024-01-01' + i * interval '1 second', "
        f"'n' || i from generate_series(1, 50000) i",
    )
    path = write(
        "p.yaml",
        f"""
        pipeline: {pg.schema}
        connections:
          wh: {{kind: postgres, uri: "${{env:TEST_PG_URI}}"}}
        tasks:
          - id: orders
            extract:
              from: postgres
              connection: wh
              table: {source}
              incremental: {{cursor: updated_at, key: [id]}}
          - id: publish
            load: {{input: orders, to: postgres, connection: wh, table: {target}, mode: merge, keys: [id]}}
        """,
    )
    events = Events()
    first = run(path, listener=events)
    assert first.state is RunState.SUCCESS, first.tasks["publish"].error
    assert events.index("publish", "RUNNING") < events.index("orders", "SUCCESS")
    assert pg.rows(f"select count(*), sum(id)::bigint from {target}") == [
        (50000, 50000 * 50001 // 2)
    ]
    committed = pg.rows(
        "select value from arrowline_state.watermarks "
        f"where pipeline = '{pg.schema}' and task = 'orders'"
    )
    # the last row's cursor: 50,000 seconds after midnight is 13:53:20 on Jan 1st
    assert committed
    assert "2024-01-01" in str(committed[0][0])
    assert "13:53:20" in str(committed[0][0])
    pg.execute(
        f"insert into {source} values (50001, timestamptz '2025-01-01', 'late')",
    )
    second = run(path)
    assert second.state is RunState.SUCCESS
    assert second.tasks["orders"].rows_out == 1  # read past the watermark the stream committed
    assert pg.rows(f"select count(*) from {target}") == [(50001,)]


def test_a_cancel_mid_stream_cancels_both_and_leaves_nothing_pending(
    project: Path, write: WritePipeline
) -> None:
    write_input(project)
    path = write("p.yaml", files_pipeline("{input: orders, to: parquet, path: out/orders.parquet}"))
    holder: list[object] = []

    def runner(context: TaskContext) -> TaskOutcome:
        tee = context.tee
        if tee is not None:
            put = tee.put
            count = [0]

            def slow_put(batch: pa.RecordBatch, cancel: object) -> None:
                put(batch, cancel)  # type: ignore[arg-type]
                count[0] += 1
                if count[0] == 5:
                    holder[0].cancel()  # type: ignore[attr-defined]

            tee.put = slow_put  # type: ignore[method-assign]
        return run_task(context)

    result = run(path, runner=runner, on_executor=holder.append)
    assert result.state is RunState.CANCELLED
    assert {r.state for r in result.tasks.values()} == {TaskState.CANCELLED}
    assert not (project / "out" / "orders.parquet").exists()


@pytest.mark.parametrize("max_parallel", [1, 2])
def test_with_no_free_slot_the_load_waits_instead(
    project: Path, write: WritePipeline, max_parallel: int
) -> None:
    write_input(project, 5_000)
    path = write("p.yaml", files_pipeline("{input: orders, to: parquet, path: out/orders.parquet}"))
    events = Events()
    result = run(path, listener=events, max_parallel=max_parallel)
    assert result.state is RunState.SUCCESS
    streamed = events.index("publish", "RUNNING") < events.index("orders", "SUCCESS")
    assert streamed is (max_parallel > 1)
    assert sorted_ids(project / "out" / "orders.parquet") == list(range(5_000))

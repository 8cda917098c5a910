"""Review of pipelined hand-off and `materialize: ephemeral`: each test shows one defect against
the real engine (real Parquet files, a real PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds
import pytest

from engine.api.pipeline import resume, run
from engine.core.errors import TransientTaskError
from engine.core.states import RunState, TaskState
from engine.execution.results import ExecutionSettings, RunEvent
from engine.tasks import TaskContext, TaskOutcome, run_task
from tests.conftest import PgSchema, WritePipeline
from tests.engine.execution.test_pipelined import ROWS, write_input

CONNECTIONS = 'connections:\n          wh: {kind: postgres, uri: "${env:TEST_PG_URI}"}'


def _rows_in(directory: Path) -> int:
    return ds.dataset(directory, format="parquet").count_rows() if directory.exists() else 0


def test_resume_does_not_wipe_what_a_file_load_of_an_ephemeral_incremental_extract_wrote(
    project: Path, write: WritePipeline, pg: PgSchema
) -> None:
    """An ephemeral extract is always extracted again by --resume, and with it every load that
    reads it, even loads that had succeeded. An incremental extract then starts from the
    watermark those loads committed and reads nothing (or only newer rows); a Parquet append
    rewrites this run's own part files with that, deleting the rows the first attempt wrote,
    while the watermark says they were loaded: rows are lost for good."""
    source = pg.table("source")
    pg.execute(
        f"create table {source} (id bigint primary key, updated_at timestamptz)",
        f"insert into {source} select i, timestamptz '2024-01-01' + i * interval '1 second' "
        "from generate_series(1, 2000) i",
    )
    write_input(project, 100)
    path = write(
        "p.yaml",
        f"""
        pipeline: {pg.schema}
        {CONNECTIONS}
        tasks:
          - id: orders
            materialize: ephemeral
            extract:
              from: postgres
              connection: wh
              table: {source}
              incremental: {{cursor: updated_at, key: [id]}}
          - id: publish
            load: {{input: orders, to: parquet, path: out/orders/, mode: append}}
          - id: other
            extract: {{from: files, path: data/orders.parquet}}
        """,
    )

    def flaky(context: TaskContext) -> TaskOutcome:
        if context.task.id == "other":
            raise TransientTaskError("an unrelated branch failed")
        return run_task(context)

    first = run(path, runner=flaky)
    assert first.state is RunState.FAILED
    assert first.tasks["publish"].state is TaskState.SUCCESS
    assert _rows_in(project / "out" / "orders") == 2000

    again = resume(path, first.run_id)
    assert again.state is RunState.SUCCESS, {t: r.error for t, r in again.tasks.items()}
    # the 2,000 rows the first attempt loaded (and whose watermark it committed) are still there
    assert _rows_in(project / "out" / "orders") == 2000


def test_a_load_of_an_ephemeral_extract_that_also_depends_on_another_task(
    project: Path, write: WritePipeline
) -> None:
    """A load that reads an ephemeral extract and also `depends_on` another task is still
    waiting for that task when the extract starts, so it is not a rider: the extract streams to
    nobody and succeeds, then the load starts on an output that was never kept and the
    dispatcher dies with KeyError (the run is aborted, nothing is loaded). Validation accepts
    the pipeline."""
    write_input(project, 5_000)
    path = write(
        "p.yaml",
        """
        pipeline: eph
        tasks:
          - id: orders
            materialize: ephemeral
            extract: {from: files, path: data/orders.parquet, batch_size: 1000}
          - id: gate
            extract: {from: files, path: data/orders.parquet}
          - id: publish
            depends_on: [gate]
            load: {input: orders, to: parquet, path: out/orders.parquet}
        """,
    )
    result = run(path, max_parallel=2)
    assert result.state is RunState.SUCCESS, {t: r.error for t, r in result.tasks.items()}
    assert _rows_in(project / "out" / "orders.parquet") == 5_000


def test_an_ephemeral_extract_streams_even_when_pipelining_is_off(
    project: Path, write: WritePipeline
) -> None:
    """`ExecutionSettings(pipelined=False)` turned off the riders of an ephemeral extract too:
    it read everything into nothing, and its load died on the output it never kept."""
    write_input(project, 5_000)
    path = write(
        "p.yaml",
        """
        pipeline: eph
        tasks:
          - id: orders
            materialize: ephemeral
            extract: {from: files, path: data/orders.parquet, batch_size: 1000}
          - id: publish
            load: {input: orders, to: parquet, path: out/orders.parquet}
        """,
    )
    result = run(path, settings=ExecutionSettings(pipelined=False))
    assert result.state is RunState.SUCCESS, {t: r.error for t, r in result.tasks.items()}
    assert _rows_in(project / "out" / "orders.parquet") == 5_000


class TableLock:
    """Another session holding a table's ACCESS EXCLUSIVE lock (a migration, a VACUUM FULL)
    until `release`."""

    def __init__(self, pg: PgSchema, table: str) -> None:
        import adbc_driver_postgresql.dbapi as pgdb

        self.connection = pgdb.connect(pg.uri)
        self.cursor = self.connection.cursor()
        self.cursor.execute(f"lock table {table} in access exclusive mode")

    def release(self) -> None:
        if self.connection is not None:
            self.connection.rollback()
            self.cursor.close()
            self.connection.close()
            self.connection = None  # type: ignore[assignment]


def _blocked_load_pipeline(pg: PgSchema, write: WritePipeline, retry: str) -> Path:
    table = pg.table("target")
    pg.execute(f"create table {table} (id bigint, amount float8, region text)")
    return write(
        "p.yaml",
        f"""
        pipeline: {pg.schema}
        {CONNECTIONS}
        tasks:
          - id: orders
            extract: {{from: files, path: data/orders.parquet, batch_size: 1000}}
          - id: publish
            timeout: 1s
            {retry}
            load: {{input: orders, to: postgres, connection: wh, table: {table}, mode: append}}
        """,
    )


def test_a_rider_abandoned_after_its_timeout_retries_from_the_published_output(
    project: Path, write: WritePipeline, pg: PgSchema
) -> None:
    """A riding PostgreSQL load that does not stop within cancel_grace (here: waiting on a lock
    another session holds) is abandoned by `_enforce_deadlines` and goes to RETRYING at once,
    unlike a rider that stopped (held until its extract ends). Its retry is then started while
    the extract still runs, on `self.outputs[extract]`, which does not exist yet: the
    dispatcher dies with KeyError and the run is aborted."""
    write_input(project)
    path = _blocked_load_pipeline(pg, write, "retry: {attempts: 2, backoff: 0s}")
    table = pg.table("target")
    lock = TableLock(pg, table)

    def listener(event: RunEvent) -> None:
        if event.task_id == "orders" and event.state == "SUCCESS":
            lock.release()

    try:
        result = run(path, listener=listener, settings=ExecutionSettings(cancel_grace=0.3))
    finally:
        lock.release()
    assert result.state is RunState.SUCCESS, {t: r.error for t, r in result.tasks.items()}
    assert result.tasks["publish"].attempts == 2
    assert pg.rows(f"select count(*), count(distinct id) from {table}") == [(ROWS, ROWS)]


def test_schema_change_freeze_on_an_ephemeral_extract_is_not_silently_ignored(
    project: Path, write: WritePipeline
) -> None:
    """The drift check reads the staged output and compares it with the last published one;
    an ephemeral extract has neither, so `schema_change: freeze` (or fail_on_breaking) on it
    is accepted by validation and then never enforced: a dropped column streams to the load."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from engine.core.errors import PipelineInvalid

    write_input(project, 1_000)
    path = write(
        "p.yaml",
        """
        pipeline: eph
        tasks:
          - id: orders
            materialize: ephemeral
            schema_change: freeze
            extract: {from: files, path: data/orders.parquet}
          - id: publish
            load: {input: orders, to: parquet, path: out/orders.parquet}
        """,
    )
    try:
        first = run(path)
        assert first.state is RunState.SUCCESS
        # the source drops a column
        pq.write_table(pa.table({"id": list(range(10))}), project / "data" / "orders.parquet")
        second = run(path)
    except PipelineInvalid as refused:  # refused up front: honest too
        assert "schema_change" in str(refused)  # noqa: PT017 - either outcome is honest
        return
    assert second.tasks["orders"].state is TaskState.FAILED, "freeze was not enforced"
    assert pq.read_schema(project / "out" / "orders.parquet").names == ["id", "amount", "region"]


@pytest.mark.parametrize("materialize", ["table", "ephemeral"])
def test_a_riding_load_is_not_timed_out_for_the_time_its_extract_takes(
    project: Path, write: WritePipeline, materialize: str
) -> None:
    """A load's `timeout` bounds its own work. Riding, its attempt starts on the extract's
    first batch, so the whole extract counts against it: a load that writes in well under a
    second, behind an extract of two seconds, times out. Kept output: it fails (or spends a
    retry); ephemeral: it breaks the extract every time, and the run can never succeed."""
    import time

    import pyarrow as pa

    write_input(project, 20_000)
    path = write(
        "p.yaml",
        f"""
        pipeline: slow
        tasks:
          - id: orders
            materialize: {materialize}
            extract: {{from: files, path: data/orders.parquet, batch_size: 1000}}
          - id: publish
            timeout: 1s
            retry: {{attempts: 1}}
            load: {{input: orders, to: parquet, path: out/orders.parquet}}
        """,
    )

    def slow_source(context: TaskContext) -> TaskOutcome:
        tee = context.tee
        if context.task.id == "orders" and tee is not None:
            put = tee.put

            def slow_put(batch: pa.RecordBatch, cancel: object) -> None:
                time.sleep(0.1)  # a source that takes 2 s in all
                put(batch, cancel)  # type: ignore[arg-type]

            tee.put = slow_put  # type: ignore[method-assign]
        return run_task(context)

    result = run(path, runner=slow_source)
    assert result.state is RunState.SUCCESS, {t: r.error for t, r in result.tasks.items()}
    assert _rows_in(project / "out" / "orders.parquet") == 20_000


def test_an_ephemeral_extract_waits_out_its_loads_open_breaker_instead_of_failing(
    project: Path, write: WritePipeline, pg: PgSchema
) -> None:
    """An open circuit breaker makes a task wait, its attempts untouched. A load riding on an
    ephemeral extract is refused by its open breaker when the stream opens; that breaks the
    extract, which spends its retries (backoff 0s) in a row against the breaker and fails, and
    the load is SKIPPED, while the other task on the same connection waits out the cooldown and
    succeeds."""
    import time

    write_input(project, 2_000)
    table, other = pg.table("target"), pg.table("other")
    path = write(
        "p.yaml",
        f"""
        pipeline: {pg.schema}
        circuit_breaker: {{failures: 1, cooldown: 2s}}
        {CONNECTIONS}
        tasks:
          - id: x
            extract: {{from: files, path: data/orders.parquet}}
          - id: probe
            retry: {{attempts: 2, backoff: 0s}}
            load: {{input: x, to: postgres, connection: wh, table: {other}, mode: append}}
          - id: orders
            materialize: ephemeral
            depends_on: [x]
            retry: {{attempts: 3, backoff: 0s}}
            extract: {{from: files, path: data/orders.parquet, batch_size: 500}}
          - id: publish
            load: {{input: orders, to: postgres, connection: wh, table: {table}, mode: append}}
        """,
    )

    def runner(context: TaskContext) -> TaskOutcome:
        if context.task.id == "probe" and context.attempt == 1:
            raise TransientTaskError("the warehouse is restarting")  # opens wh's breaker
        if context.task.id == "orders":
            time.sleep(0.2)  # the probe fails first
        return run_task(context)

    result = run(path, runner=runner, max_parallel=1)
    assert result.state is RunState.SUCCESS, {t: r.error for t, r in result.tasks.items()}
    assert pg.rows(f"select count(*) from {table}") == [(2_000,)]


def test_a_reader_of_an_ephemeral_extract_that_waits_for_another_reader_is_refused(
    project: Path, write: WritePipeline
) -> None:
    """`b` reads the ephemeral `orders` and depends_on `a`, another of its readers: `b` can
    start only after `orders` ended, when nothing is left to read. The run must not start (it
    would die on KeyError, or wait forever); validation says why."""
    from engine.core.errors import PipelineInvalid

    write_input(project, 1_000)
    path = write(
        "p.yaml",
        """
        pipeline: eph
        tasks:
          - id: orders
            materialize: ephemeral
            extract: {from: files, path: data/orders.parquet}
          - id: a
            load: {input: orders, to: parquet, path: out/a.parquet}
          - id: b
            depends_on: [a]
            load: {input: orders, to: parquet, path: out/b.parquet}
        """,
    )
    with pytest.raises(PipelineInvalid, match="ephemeral"):
        run(path)

"""The dispatcher: parallelism, no level barrier, failure handling, retries, timeouts, cancel."""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from engine.api.pipeline import execute, plan, run
from engine.core.errors import DataError, DiskFull, TransientTaskError
from engine.core.states import RunState, TaskState
from engine.execution.executor import ExecutionSettings, Executor
from engine.state.catalog import Catalog, CatalogReader
from engine.tasks import TaskContext, TaskOutcome, run_task
from tests.conftest import WritePipeline

SLEEPY_UDFS = """
import time

def slow(frame, seconds: float = 0.5):
    time.sleep(seconds)
    return frame
"""


def catalog_for(project: Path) -> CatalogReader:
    return CatalogReader(project / ".arrowline" / "catalog.db")


def interval(catalog: CatalogReader, run_id: str, task_id: str) -> tuple[datetime, datetime]:
    row = catalog.task_run(run_id, task_id)
    assert row is not None
    assert row.started_at
    assert row.ended_at
    return datetime.fromisoformat(row.started_at), datetime.fromisoformat(row.ended_at)


def test_independent_tasks_run_at_the_same_time(write: WritePipeline, project: Path) -> None:
    write("udfs.py", SLEEPY_UDFS)
    path = write(
        "p.yaml",
        """
        pipeline: par
        tasks:
          - id: src
            sql: select 1 as x
          - id: a
            udf: {input: src, function: "udfs.py:slow", args: {seconds: 0.6}}
          - id: b
            udf: {input: src, function: "udfs.py:slow", args: {seconds: 0.6}}
    """,
    )
    result = run(path, max_parallel=2)
    assert result.ok
    with catalog_for(project) as catalog:
        a_start, a_end = interval(catalog, result.run_id, "a")
        b_start, b_end = interval(catalog, result.run_id, "b")
    # Each takes 0.6 s; in sequence one would start after the other ended.
    assert a_start < b_end
    assert b_start < a_end
    assert (max(a_end, b_end) - min(a_start, b_start)).total_seconds() < 1.2


def test_max_parallel_one_runs_them_in_sequence(write: WritePipeline, project: Path) -> None:
    write("udfs.py", SLEEPY_UDFS)
    path = write(
        "p.yaml",
        """
        pipeline: seq
        tasks:
          - id: src
            sql: select 1 as x
          - id: a
            udf: {input: src, function: "udfs.py:slow", args: {seconds: 0.2}}
          - id: b
            udf: {input: src, function: "udfs.py:slow", args: {seconds: 0.2}}
    """,
    )
    result = run(path, max_parallel=1)
    with catalog_for(project) as catalog:
        first, second = sorted(
            [interval(catalog, result.run_id, "a"), interval(catalog, result.run_id, "b")]
        )
    assert first[1] <= second[0]


def test_a_task_starts_when_its_own_upstream_is_done_not_its_level(
    write: WritePipeline, project: Path
) -> None:
    write("udfs.py", SLEEPY_UDFS)
    path = write(
        "p.yaml",
        """
        pipeline: nobarrier
        tasks:
          - id: src
            sql: select 1 as x
          - id: slow_branch
            udf: {input: src, function: "udfs.py:slow", args: {seconds: 1.0}}
          - id: fast_branch
            sql: select x + 1 as y from src
          - id: after_fast
            sql: select y * 2 as z from fast_branch
    """,
    )
    result = run(path, max_parallel=4)
    assert result.ok
    with catalog_for(project) as catalog:
        _, slow_end = interval(catalog, result.run_id, "slow_branch")
        after_start, _ = interval(catalog, result.run_id, "after_fast")
    assert after_start < slow_end  # level 2 started while level 1 was still running


def test_failure_skips_downstream_and_independent_branches_go_on(
    write: WritePipeline, project: Path
) -> None:
    path = write(
        "p.yaml",
        """
        pipeline: branches
        tasks:
          - id: src
            sql: select 1 as x
          - id: bad
            sql: select cast('oops' as integer) as n from src
          - id: after_bad
            sql: select * from bad
          - id: after_after
            sql: select * from after_bad
          - id: good
            sql: select x from src
          - id: out
            load: {input: good, to: parquet, path: out/good.parquet}
    """,
    )
    result = run(path)
    states = {task_id: t.state for task_id, t in result.tasks.items()}
    assert states == {
        "src": TaskState.SUCCESS,
        "bad": TaskState.FAILED,
        "after_bad": TaskState.SKIPPED,
        "after_after": TaskState.SKIPPED,
        "good": TaskState.SUCCESS,
        "out": TaskState.SUCCESS,
    }
    assert result.state is RunState.FAILED
    assert result.tasks["bad"].error_kind == "DataError"
    assert (project / "out" / "good.parquet").exists()
    # a failed task publishes nothing and leaves no staging folder behind
    bad_dir = project / ".arrowline" / "workspace" / "branches" / "bad"
    assert not bad_dir.exists() or list(bad_dir.iterdir()) == []
    with catalog_for(project) as catalog:
        transitions = [
            (t.from_state, t.to_state) for t in catalog.transitions(result.run_id, "src")
        ]
        assert transitions == [("PENDING", "QUEUED"), ("QUEUED", "RUNNING"), ("RUNNING", "SUCCESS")]
        assert catalog.run(result.run_id).state is RunState.FAILED


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def flaky_runner(failures: dict[str, list[BaseException]]):  # type: ignore[no-untyped-def]
    """A task body that raises the given errors in order, then succeeds."""
    calls: dict[str, int] = {}

    def runner(context: TaskContext) -> TaskOutcome:
        task_id = context.task.id
        calls[task_id] = calls.get(task_id, 0) + 1
        errors = failures.get(task_id, [])
        if calls[task_id] <= len(errors):
            raise errors[calls[task_id] - 1]
        (context.staging / "part-00000.parquet").write_bytes(b"")
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"x": [1]}), context.staging / "part-00000.parquet")
        return TaskOutcome(rows_in=1, rows_out=1)

    return runner, calls


RETRY_PIPELINE = """
    pipeline: retries
    defaults:
      retry: {attempts: 3, backoff: 1s, max_backoff: 60s}
    tasks:
      - id: a
        sql: select 1 as x
"""


def _execute(path: Path, runner, clock: FakeClock, seed: int = 7):  # type: ignore[no-untyped-def]
    the_plan = plan(path)
    from engine.state.catalog import Catalog

    catalog = Catalog(path.parent / ".arrowline" / "catalog.db")
    try:
        executor = Executor(
            the_plan,
            path.parent,
            catalog=catalog,
            runner=runner,
            clock=clock,
            sleep=clock.sleep,
            rng=random.Random(seed),
        )
        return executor.run()
    finally:
        catalog.close()


def test_transient_errors_are_retried_with_exact_jittered_backoff(
    write: WritePipeline, project: Path
) -> None:
    path = write("p.yaml", RETRY_PIPELINE)
    clock = FakeClock()
    runner, calls = flaky_runner(
        {"a": [TransientTaskError("connection reset"), TransientTaskError("again")]}
    )
    result = _execute(path, runner, clock)
    assert result.ok
    assert calls["a"] == 3
    assert result.tasks["a"].attempts == 3
    expected = random.Random(7)
    delays = [expected.uniform(0, 1.0), expected.uniform(0, 2.0)]  # full jitter, base 1s doubling
    assert clock.now - 1000.0 == pytest.approx(sum(delays))
    with catalog_for(project) as catalog:
        events = [
            t.event for t in catalog.transitions(result.run_id, "a") if t.to_state == "RETRYING"
        ]
        states = [t.to_state for t in catalog.transitions(result.run_id, "a")]
    assert events == [f"retry in {d:.2f}s" for d in delays]
    assert states == [
        "QUEUED",
        "RUNNING",
        "RETRYING",
        "QUEUED",
        "RUNNING",
        "RETRYING",
        "QUEUED",
        "RUNNING",
        "SUCCESS",
    ]


def test_retry_after_is_honoured(write: WritePipeline, project: Path) -> None:
    path = write("p.yaml", RETRY_PIPELINE)
    clock = FakeClock()
    runner, _ = flaky_runner({"a": [TransientTaskError("429 too many requests", retry_after=30.0)]})
    assert _execute(path, runner, clock).ok
    assert clock.now - 1000.0 == pytest.approx(30.0)


def test_attempts_run_out(write: WritePipeline, project: Path) -> None:
    path = write("p.yaml", RETRY_PIPELINE)
    runner, calls = flaky_runner({"a": [TransientTaskError("down")] * 5})
    result = _execute(path, runner, FakeClock())
    assert calls["a"] == 3
    assert result.tasks["a"].state is TaskState.FAILED
    with catalog_for(project) as catalog:
        row = catalog.task_run(result.run_id, "a")
        assert row is not None
        assert row.error_transient is True
        assert row.attempts == 3
        assert [t.event for t in catalog.transitions(result.run_id, "a")][
            -1
        ] == "attempts exhausted"


def test_terminal_errors_are_never_retried(write: WritePipeline, project: Path) -> None:
    path = write("p.yaml", RETRY_PIPELINE)
    runner, calls = flaky_runner({"a": [DataError("bad rows")]})
    result = _execute(path, runner, FakeClock())
    assert calls["a"] == 1
    assert result.tasks["a"].state is TaskState.FAILED
    with catalog_for(project) as catalog:
        row = catalog.task_run(result.run_id, "a")
        assert row is not None
        assert row.error_transient is False
        assert row.error_kind == "DataError"


def test_timeout_interrupts_a_long_query_and_retries_it(
    write: WritePipeline, project: Path
) -> None:
    path = write(
        "p.yaml",
        """
        pipeline: slow
        tasks:
          - id: forever
            timeout: 500ms
            retry: {attempts: 2, backoff: 10ms}
            sql: select count(*) as n from range(100000000000) a where a % 7 = 3
    """,
    )
    started = time.monotonic()
    result = run(path)
    assert time.monotonic() - started < 10
    task = result.tasks["forever"]
    assert task.state is TaskState.FAILED
    assert task.attempts == 2
    assert task.error_kind == "TaskTimeout"
    assert "ran longer than its timeout of 0.5s" in (task.error or "")


def test_a_task_that_ignores_cancellation_is_abandoned(write: WritePipeline, project: Path) -> None:
    path = write(
        "p.yaml",
        """
        pipeline: stuck
        tasks:
          - id: stuck
            timeout: 200ms
            retry: {attempts: 1}
            sql: select 1 as x
    """,
    )
    release = threading.Event()

    def stubborn(context: TaskContext) -> TaskOutcome:
        release.wait(10)  # does not look at the cancel token
        return TaskOutcome(rows_in=0, rows_out=0, produces_output=False)

    started = time.monotonic()
    result = execute(plan(path), runner=stubborn, settings=ExecutionSettings(cancel_grace=0.3))
    release.set()
    assert time.monotonic() - started < 5
    assert result.tasks["stuck"].state is TaskState.FAILED
    assert result.tasks["stuck"].error_kind == "TaskTimeout"


def test_cancel_stops_running_tasks_and_marks_the_rest(write: WritePipeline, project: Path) -> None:
    path = write(
        "p.yaml",
        """
        pipeline: cancel
        tasks:
          - id: long
            sql: select count(*) as n from range(100000000000) a where a % 7 = 3
          - id: after
            sql: select * from long
    """,
    )
    holder: list[Executor] = []
    threading.Timer(0.5, lambda: holder[0].cancel()).start()  # noqa: PLW0108 - holder fills later
    result = execute(plan(path), on_executor=holder.append)
    assert result.state is RunState.CANCELLED
    assert result.tasks["long"].state is TaskState.CANCELLED
    assert result.tasks["after"].state is TaskState.CANCELLED
    published = project / ".arrowline" / "workspace" / "cancel" / "long"
    assert not list(published.glob("2*"))  # nothing published for the cancelled task
    with catalog_for(project) as catalog:
        assert catalog.run(result.run_id).state is RunState.CANCELLED


def test_default_runner_is_used_for_real_work(write: WritePipeline, project: Path) -> None:
    assert run_task.__name__ == "run_task"
    path = write("p.yaml", "pipeline: one\ntasks:\n  - {id: a, sql: select 42 as answer}\n")
    result = run(path)
    assert result.tasks["a"].output is not None
    assert result.tasks["a"].output.reader().read_all().column("answer").to_pylist() == [42]


class _CatalogOnAFillingDisk(Catalog):
    """The real catalog on a disk that task `b`'s output fills: from task `a`'s success on, its
    writes fail while `b`'s staged output takes the space."""

    staged: Path | None = None

    def transition_task(self, run_id: str, task_id: str, target: TaskState, *args, **kwargs):  # type: ignore[no-untyped-def]
        full = self.staged is not None and self.staged.exists()
        if full and (task_id, target) != ("b", TaskState.RUNNING):
            raise DiskFull(self.path, what="the catalog could not write")
        return super().transition_task(run_id, task_id, target, *args, **kwargs)


def test_a_catalog_failure_mid_run_stops_the_other_tasks_before_it_records_the_end(
    write: WritePipeline, project: Path
) -> None:
    """The dispatcher cannot record a state change: the run stops. It waits for the task still
    running to stop (a worker left inside DuckDB or Arrow at interpreter exit aborts the
    process), discards what that task staged (a full disk needs the space), then records the
    run as FAILED, which the catalog can do again by then."""
    path = write(
        "p.yaml",
        """
        pipeline: filling
        tasks:
          - id: a
            sql: select 1 as x
          - id: b
            sql: select 2 as x
        """,
    )
    stopped = threading.Event()
    catalog = _CatalogOnAFillingDisk(project / ".arrowline" / "catalog.db")

    def runner(context: TaskContext) -> TaskOutcome:
        if context.task.id == "a":
            time.sleep(0.2)  # b is running by then
            return TaskOutcome(rows_in=0, rows_out=0, produces_output=False)
        context.staging.mkdir(parents=True, exist_ok=True)
        (context.staging / "part-00000.parquet").write_bytes(b"partial")
        catalog.staged = context.staging
        try:
            while True:
                context.cancel.raise_if_cancelled()
                time.sleep(0.05)
        finally:
            stopped.set()

    executor = Executor(plan(path), project, catalog=catalog, runner=runner)
    try:
        with pytest.raises(DiskFull):
            executor.run()
        assert stopped.is_set()  # b stopped before run() returned
        assert catalog.staged is not None
        assert not catalog.staged.exists()
        (run_row,) = catalog.runs()
        assert run_row.state is RunState.FAILED
        states = {t.task_id: t.state for t in catalog.task_runs(run_row.run_id)}
        assert states == {"a": TaskState.CANCELLED, "b": TaskState.CANCELLED}
    finally:
        catalog.close()

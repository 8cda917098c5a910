"""Resource pools: named slots a task takes while it runs, shared by every run of the project."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from engine.api.pipeline import run
from engine.core.errors import PipelineInvalid
from engine.state.catalog import CatalogReader
from engine.state.db import catalog_location
from engine.state.rows import RunRow
from engine.state.slots import PoolSlot
from engine.tasks.checks import check_file
from tests.conftest import PgSchema, WritePipeline

SLEEPY_UDFS = """
import time

def slow(frame, seconds: float = 0.5):
    time.sleep(seconds)
    return frame
"""


@pytest.fixture
def lines() -> Iterator[list[str]]:
    """What the run logged (loguru), line by line."""
    said: list[str] = []
    logger.enable("engine")
    handler = logger.add(lambda message: said.append(str(message)), level="INFO")
    yield said
    logger.remove(handler)
    logger.disable("engine")


def intervals(project: Path, run_id: str, *tasks: str) -> dict[str, tuple[datetime, datetime]]:
    found = {}
    with CatalogReader(catalog_location(project)) as catalog:
        for task in tasks:
            row = catalog.task_run(run_id, task)
            assert row is not None, task
            assert row.started_at, task
            assert row.ended_at, task
            found[task] = (
                datetime.fromisoformat(row.started_at),
                datetime.fromisoformat(row.ended_at),
            )
    return found


def most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    level = peak = 0
    for _, step in events:  # an end sorts before a start at the same instant
        level += step
        peak = max(peak, level)
    return peak


def running_events(project: Path, run_id: str) -> dict[str, str]:
    with CatalogReader(catalog_location(project)) as catalog:
        return {
            t.task_id: t.event
            for t in catalog.transitions(run_id)
            if t.task_id and t.to_state == "RUNNING"
        }


def test_a_pool_caps_its_tasks_and_the_others_go_on(
    write: WritePipeline, project: Path, lines: list[str]
) -> None:
    write("udfs.py", SLEEPY_UDFS)
    slow = 'udf: {input: src, function: "udfs.py:slow", args: {seconds: 0.4}}'
    path = write(
        "p.yaml",
        f"""
        pipeline: pooled
        pools: {{warehouse: 2}}
        tasks:
          - id: src
            sql: select 1 as x
          - {{id: a, pool: warehouse, {slow}}}
          - {{id: b, pool: warehouse, {slow}}}
          - {{id: c, pool: warehouse, {slow}}}
          - {{id: d, pool: warehouse, {slow}}}
          - {{id: free, {slow}}}
        """,
    )
    result = run(path, max_parallel=5)
    assert result.ok
    spans = intervals(project, result.run_id, "a", "b", "c", "d", "free")
    assert most_at_once([spans[t] for t in "abcd"]) == 2
    assert most_at_once(list(spans.values())) == 3  # the task outside the pool did not wait
    events = running_events(project, result.run_id)
    waited = [t for t in "abcd" if "for pool 'warehouse'" in events[t]]
    assert len(waited) == 2, events
    queued = [line for line in lines if "queued: all 2 slots of pool 'warehouse'" in line]
    assert len(queued) == 2, lines  # said once per waiting task
    assert "of this run" in queued[0]


def test_pool_slots_take_several_slots(write: WritePipeline, project: Path) -> None:
    write("udfs.py", SLEEPY_UDFS)
    slow = 'udf: {input: src, function: "udfs.py:slow", args: {seconds: 0.3}}'
    path = write(
        "p.yaml",
        f"""
        pipeline: heavy
        pools: {{warehouse: 2}}
        tasks:
          - id: src
            sql: select 1 as x
          - {{id: big, pool: warehouse, pool_slots: 2, {slow}}}
          - {{id: small1, pool: warehouse, {slow}}}
          - {{id: small2, pool: warehouse, {slow}}}
        """,
    )
    result = run(path, max_parallel=4)
    assert result.ok
    spans = intervals(project, result.run_id, "big", "small1", "small2")
    for small in ("small1", "small2"):  # the big one holds the whole pool
        assert most_at_once([spans["big"], spans[small]]) == 1
    assert most_at_once([spans["small1"], spans["small2"]]) == 2


def test_a_pool_named_like_a_connection_caps_the_tasks_using_it(
    write: WritePipeline, project: Path, pg: PgSchema
) -> None:
    query = "select pg_sleep(0.5) is null as slept, {n} as n"
    path = write(
        "p.yaml",
        f"""
        pipeline: capped
        pools: {{wh: 1}}
        connections:
          wh: {{kind: postgres, uri: "${{env:TEST_PG_URI}}"}}
        tasks:
          - id: one
            extract: {{from: postgres, connection: wh, query: "{query.format(n=1)}"}}
          - id: two
            extract: {{from: postgres, connection: wh, query: "{query.format(n=2)}"}}
          - id: three
            extract: {{from: postgres, connection: wh, query: "{query.format(n=3)}"}}
        """,
    )
    result = run(path, max_parallel=3)
    assert result.ok, result
    spans = intervals(project, result.run_id, "one", "two", "three")
    assert most_at_once(list(spans.values())) == 1


def test_an_ephemeral_extract_takes_its_loads_slots_with_its_own(
    write: WritePipeline, project: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": list(range(1000))}), project / "in.parquet")
    path = write(
        "p.yaml",
        """
        pipeline: unit
        pools: {files: 1}
        tasks:
          - id: src
            materialize: ephemeral
            extract: {from: files, path: in.parquet}
          - id: out
            pool: files
            load: {input: src, to: parquet, path: out/x.parquet}
        """,
    )
    result = run(path, max_parallel=2)
    assert result.ok
    assert pq.read_table(project / "out" / "x.parquet").num_rows == 1000
    assert PoolSlot(project / ".arrowline" / "locks", None, "files", 0).holder() == ""  # given back


def test_pools_are_checked_at_their_line(write: WritePipeline, project: Path) -> None:
    path = write(
        "p.yaml",
        """
        pipeline: wrong
        pools: {warehouse: 2}
        tasks:
          - id: a
            sql: select 1 as x
            pool: warehouse_
          - id: b
            sql: select 1 as x
            pool: warehouse
            pool_slots: 3
        """,
    )
    problems = {p.code: p for p in check_file(path)[1]}
    unknown = problems["unknown-pool"]
    assert "pool 'warehouse_' is not declared" in unknown.message
    assert "Did you mean 'warehouse'?" in unknown.message
    assert unknown.line == 6
    assert unknown.task_id == "a"
    too_small = problems["pool-too-small"]
    assert "3 slots of pool 'warehouse', which has 2" in too_small.message
    assert too_small.line == 10


@pytest.mark.parametrize(
    "bad", ["{warehouse: 0}", "{warehouse: 2000}", "{'../x': 1}", '{"wh\\n": 1}', '{"wh\\n.x": 1}']
)
def test_bad_pool_declarations_are_refused(write: WritePipeline, project: Path, bad: str) -> None:
    path = write("p.yaml", f"pipeline: bad\npools: {bad}\ntasks:\n  - {{id: a, sql: select 1}}\n")
    problems = check_file(path)[1]
    assert problems
    assert all(p.severity == "error" for p in problems)
    assert any(p.line == 2 for p in problems), problems


def _pipeline(write: WritePipeline, name: str, seconds: float) -> Path:
    return write(
        f"{name}.yaml",
        f"""
        pipeline: {name}
        pools: {{shared: 1}}
        tasks:
          - id: src
            sql: select 1 as x
          - id: work
            pool: shared
            udf: {{input: src, function: "udfs.py:slow", args: {{seconds: {seconds}}}}}
        """,
    )


def _arrowline(project: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine", *args, "--no-progress"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ | {"ARROWLINE_PROJECT_DIR": str(project)},
    )


def _work_started(project: Path, pipeline: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        if catalog_location(project).exists():
            with CatalogReader(catalog_location(project)) as catalog:
                runs = list(catalog.runs(pipeline=pipeline))
                for found in runs:
                    row = catalog.task_run(found.run_id, "work")
                    if row is not None and row.state == "RUNNING":
                        return
        time.sleep(0.05)
    raise AssertionError(f"{pipeline}'s task never started")


def _queued(
    project: Path, pipeline: str, process: subprocess.Popen[str], deadline: float
) -> RunRow:
    """Waits for `pipeline`'s task `work` to queue for its pool; the run must still be going."""
    state = None
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        with CatalogReader(catalog_location(project)) as catalog:
            for found in catalog.runs(pipeline=pipeline):
                row = catalog.task_run(found.run_id, "work")
                state = row.state if row is not None else None
                if state == "QUEUED":
                    return found
        time.sleep(0.05)
    raise AssertionError(f"{pipeline}'s task never queued (last state {state})")


@pytest.mark.slow
def test_runs_of_two_pipelines_share_a_pool_and_a_killed_one_frees_it(
    write: WritePipeline, project: Path, each_catalog: str
) -> None:
    write("udfs.py", SLEEPY_UDFS)
    _pipeline(write, "first", 60.0)
    _pipeline(write, "second", 0.2)
    holder = _arrowline(project, "run", "first.yaml")
    waiter: subprocess.Popen[str] | None = None
    try:
        _work_started(project, "first", time.monotonic() + 60)
        waiter = _arrowline(project, "run", "second.yaml")
        second = _queued(project, "second", waiter, time.monotonic() + 60)
        os.kill(holder.pid, signal.SIGKILL)  # dies holding the slot: the kernel frees it
        output, _ = waiter.communicate(timeout=60)
        assert waiter.returncode == 0, output
        assert "queued: all 1 slots of pool 'shared' are taken" in output
        if each_catalog == "embedded":
            assert "task work of first run" in output  # who held it, from its slot file
        assert "for pool 'shared'" in running_events(project, second.run_id)["work"]
    finally:
        for process in (holder, waiter):
            if process is not None and process.poll() is None:
                process.kill()
            if process is not None:
                process.communicate()  # reaps it and closes its pipe


def test_a_slot_excludes_another_holder_until_released(project: Path, each_catalog: str) -> None:
    location = catalog_location(project)
    locks = project / ".arrowline" / "locks"
    mine = PoolSlot(locks, location, "warehouse", 0)
    theirs = PoolSlot(locks, location, "warehouse", 0)
    holder = {"pipeline": "p", "run_id": "r1", "task_id": "t1"}
    assert mine.try_take(holder)
    try:
        assert not theirs.try_take({"pipeline": "q", "run_id": "r2", "task_id": "t2"})
        assert "task t1" in theirs.holder()
        assert "r1" in theirs.holder()
    finally:
        mine.release()
    assert theirs.try_take({"pipeline": "q", "run_id": "r2", "task_id": "t2"})
    theirs.release()
    assert theirs.holder() == ""


def test_a_free_slot_whose_file_still_names_a_dead_holder_names_nobody(project: Path) -> None:
    slot = PoolSlot(project / ".arrowline" / "locks", None, "warehouse", 0)
    slot.path.parent.mkdir(parents=True)
    # what a run killed with -9 leaves: its name in the file, its lock gone with it
    slot.path.write_text('{"pipeline": "p", "run_id": "r0", "task_id": "gone", "pid": 1}')
    assert slot.holder() == ""
    assert slot.try_take({"pipeline": "q", "run_id": "r1", "task_id": "t1"})
    slot.release()


def test_a_pipeline_built_in_python_declares_and_takes_pools(project: Path) -> None:
    from engine.api.pipeline import Pipeline

    (project / "udfs.py").write_text(SLEEPY_UDFS, encoding="utf-8")
    p = Pipeline("py_pools", pools={"gpu": 1}, base_dir=project)
    p.sql("src", "select 1 as x")
    for name in ("a", "b"):
        p.udf(name, input="src", function="udfs.py:slow", args={"seconds": 0.3}, pool="gpu")
    result = run(p, max_parallel=3)
    assert result.ok
    spans = intervals(project, result.run_id, "a", "b")
    assert most_at_once(list(spans.values())) == 1


# -- review: defects ------------------------------------------------------------------------------


def _slot_is_free(project: Path, pool: str, index: int = 0) -> bool:
    """Whether another holder (as another run would) can take the slot now."""
    probe = PoolSlot(project / ".arrowline" / "locks", None, pool, index)
    if not probe.try_take({"pipeline": "probe", "run_id": "probe", "task_id": "probe"}):
        return False
    probe.release()
    return True


def _cancel_after(seconds: float, found: list[object]) -> Callable[[Any], None]:
    """on_executor: cancel the run after `seconds` (a run that hangs ends, CANCELLED)."""
    import threading

    def hook(executor: Any) -> None:
        found.append(executor)
        timer = threading.Timer(seconds, executor.cancel)
        timer.daemon = True
        timer.start()

    return hook


def test_an_ephemeral_unit_needing_more_slots_than_its_pool_has_is_said_not_waited_forever(
    write: WritePipeline, project: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": list(range(10))}), project / "in.parquet")
    path = write(
        "p.yaml",
        """
        pipeline: unit
        pools: {files: 1}
        tasks:
          - id: src
            materialize: ephemeral
            pool: files
            extract: {from: files, path: in.parquet}
          - id: out
            pool: files
            load: {input: src, to: parquet, path: out/x.parquet}
        """,
    )
    # the extract and its load start together and take 2 slots of a 1-slot pool: never
    problems = [p for p in check_file(path)[1] if p.severity == "error"]
    assert [(p.code, p.line, p.task_id) for p in problems] == [("pool-too-small", 5, "src")]
    assert "take 2 slots of pool 'files' (src 1, out 1), which has 1" in problems[0].message
    found: list[object] = []
    with pytest.raises(PipelineInvalid, match="could never start"):  # refused, not queued
        run(path, max_parallel=2, on_executor=_cancel_after(8.0, found))


def test_a_rider_sent_back_to_pending_gives_its_slots_back(
    write: WritePipeline, project: Path
) -> None:
    from engine.core.errors import TransientTaskError
    from engine.core.states import RunState
    from engine.execution.results import RunEvent
    from tests.engine.execution.test_pipelined import failing_extract, write_input

    write_input(project)
    path = write(
        "p.yaml",
        """
        pipeline: eph
        pools: {files: 1}
        tasks:
          - id: orders
            materialize: ephemeral
            extract: {from: files, path: data/orders.parquet, batch_size: 1000}
            retry: {attempts: 2, backoff: 0s}
          - id: publish
            pool: files
            load: {input: orders, to: parquet, path: out/orders.parquet}
        """,
    )
    free_while_retrying: list[bool] = []

    def listener(event: RunEvent) -> None:
        if event.task_id == "orders" and event.state == "RETRYING":
            # publish is PENDING again, waiting for orders' next attempt: it runs nothing
            free_while_retrying.append(_slot_is_free(project, "files"))

    failing = failing_extract(10, {1}, lambda: TransientTaskError("the source went away"))
    result = run(path, runner=failing, listener=listener)
    assert result.state is RunState.SUCCESS, result.tasks["orders"].error
    assert free_while_retrying == [True], "a PENDING task kept its pool slot"


def test_a_failure_while_taking_slots_gives_back_those_already_taken(
    write: WritePipeline, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write("udfs.py", SLEEPY_UDFS)
    path = write(
        "p.yaml",
        """
        pipeline: partial
        pools: {warehouse: 2}
        tasks:
          - id: src
            sql: select 1 as x
          - id: big
            pool: warehouse
            pool_slots: 2
            udf: {input: src, function: "udfs.py:slow", args: {seconds: 0.1}}
        """,
    )
    original = PoolSlot.try_take

    def flaky(self: PoolSlot, holder: dict[str, Any]) -> bool:
        if self.index == 1:  # e.g. EMFILE, a read-only disk, a catalog refusing connections
            raise OSError(24, "Too many open files")
        return original(self, holder)

    monkeypatch.setattr(PoolSlot, "try_take", flaky)
    with pytest.raises(OSError, match="Too many open files"):
        run(path)
    monkeypatch.setattr(PoolSlot, "try_take", original)
    assert _slot_is_free(project, "warehouse", 0), "slot 0 stays locked by this process"


def test_a_task_wanting_more_than_is_free_is_not_said_to_find_every_slot_taken(
    write: WritePipeline, project: Path, lines: list[str]
) -> None:
    write("udfs.py", SLEEPY_UDFS)
    path = write(
        "p.yaml",
        """
        pipeline: heavy
        pools: {warehouse: 2}
        tasks:
          - id: src
            sql: select 1 as x
          - id: small
            pool: warehouse
            udf: {input: src, function: "udfs.py:slow", args: {seconds: 0.6}}
          - id: big
            pool: warehouse
            pool_slots: 2
            udf: {input: src, function: "udfs.py:slow", args: {seconds: 0.1}}
        """,
    )
    result = run(path, max_parallel=3)
    assert result.ok
    queued = [line for line in lines if "queued" in line and "warehouse" in line]
    assert len(queued) == 1, lines
    assert "all 2 slots" not in queued[0], queued[0]  # one of them was free
    assert "it needs 2 of the 2 slots of pool 'warehouse'" in queued[0], queued[0]


ABANDONING_UDFS = """
import time
from pathlib import Path
from typing import Any

def stuck(frame, name: str, seconds: float):
    Path(f"{name}.start").write_text(repr(time.time()))
    time.sleep(seconds)  # does not look at its cancel token
    Path(f"{name}.end").write_text(repr(time.time()))
    return frame
"""


def test_an_abandoned_attempt_keeps_its_slot_while_its_thread_still_runs(
    write: WritePipeline, project: Path
) -> None:
    from engine.execution.results import ExecutionSettings

    write("udfs.py", ABANDONING_UDFS)
    path = write(
        "p.yaml",
        """
        pipeline: stuck
        pools: {warehouse: 1}
        tasks:
          - id: src
            sql: select 1 as x
          - id: hung
            pool: warehouse
            timeout: 0.2s
            retry: {attempts: 1}
            udf: {input: src, function: "udfs.py:stuck", args: {name: hung, seconds: 2.0}}
          - id: next
            pool: warehouse
            udf: {input: src, function: "udfs.py:stuck", args: {name: next, seconds: 0.0}}
        """,
    )
    settings = ExecutionSettings(max_parallel=3, cancel_grace=0.2)
    result = run(path, settings=settings)
    assert not result.ok  # hung timed out
    time.sleep(2.2)  # let the abandoned thread end
    hung = [float((project / f"hung.{end}").read_text()) for end in ("start", "end")]
    upcoming = [float((project / f"next.{end}").read_text()) for end in ("start", "end")]
    # whichever started first, the two must not overlap: hung's thread worked for 2 s
    assert upcoming[0] >= hung[1] or upcoming[1] <= hung[0], "a 1-slot pool ran two at once"

"""Resume after failure, the run lock, recovery of runs whose process died, dead letters."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from engine.api.pipeline import replay_quarantine, resume, run
from engine.core.errors import StateError, TransientTaskError
from engine.core.states import RunState, TaskState
from engine.execution.executor import RunEvent
from engine.planning.resume import ResumeRefused
from engine.state.catalog import Catalog, CatalogReader
from engine.state.db import catalog_location
from engine.state.locks import ConcurrentRun, RunLock
from engine.tasks import TaskContext, TaskOutcome, run_task
from tests.conftest import PgSchema, WritePipeline

# every test here runs on the embedded catalog and again on a shared PostgreSQL one
pytestmark = pytest.mark.usefixtures("each_catalog")

UDFS = """
from pathlib import Path
import polars as pl

def double(frame):
    return frame.with_columns(v2=pl.col("v") * 2)

def guarded(frame, marker: str):
    if Path(marker).exists():
        raise ValueError(f"marker {marker} is present")
    return frame.with_columns(v3=pl.col("v") * 3)
"""

DIAMOND = """
pipeline: diamond
params: {marker: broken.flag}
tasks:
  - id: src
    sql: select range as id, range % 7 as v from range(1000)
  - id: lhs
    udf: {input: src, function: "udfs.py:double"}
  - id: rhs
    udf: {input: src, function: "udfs.py:guarded", args: {marker: "{{ params.marker }}"}}
  - id: joined
    sql: select l.id, l.v2, r.v3 from lhs l join rhs r using (id)
  - id: publish
    load: {input: joined, to: duckdb, path: out/wh.duckdb, table: facts, mode: append}
"""


def catalog_for(project: Path) -> CatalogReader:
    return CatalogReader(catalog_location(project))


def facts(project: Path) -> list[tuple[int, int, int]]:
    with duckdb.connect(str(project / "out" / "wh.duckdb"), read_only=True) as connection:
        rows = connection.execute("select id, v2, v3 from facts order by id").fetchall()
    return [(int(a), int(b), int(c)) for a, b, c in rows]


@pytest.fixture
def diamond(write: WritePipeline, project: Path) -> Path:
    write("udfs.py", UDFS)
    (project / "broken.flag").write_text("x")
    return write("p.yaml", DIAMOND)


def test_resume_reruns_only_what_did_not_succeed(diamond: Path, project: Path) -> None:
    first = run(diamond)
    assert first.state is RunState.FAILED
    assert first.tasks["rhs"].state is TaskState.FAILED
    assert {first.tasks[t].state for t in ("joined", "publish")} == {TaskState.SKIPPED}
    assert first.tasks["lhs"].state is TaskState.SUCCESS

    (project / "broken.flag").unlink()  # the cause is fixed
    second = resume(diamond, "last")
    assert second.state is RunState.SUCCESS
    assert second.run_id == first.run_id
    assert second.tasks["src"].reused_from == first.run_id
    assert second.tasks["lhs"].reused_from == first.run_id
    assert {t for t, r in second.tasks.items() if r.reused_from is None} == {
        "rhs",
        "joined",
        "publish",
    }
    assert facts(project) == [(i, (i % 7) * 2, (i % 7) * 3) for i in range(1000)]
    with catalog_for(project) as catalog:
        row = catalog.run(first.run_id)
        assert row.state is RunState.SUCCESS
        assert row.resumes == 1
        events = [(t.task_id, t.to_state, t.event) for t in catalog.transitions(first.run_id)]
        assert ("rhs", "PENDING", "resumed") in events
        assert (None, "PENDING", "resumed") in events
        assert not any(t == "lhs" and e == "resumed" for t, _, e in events)
        # The dead letter the failure left is settled by the successful resume.
        (letter,) = catalog.dead_letters("diamond", status=None)
        assert (letter.task_id, letter.status, letter.requeue_result) == (
            "rhs",
            "resolved",
            "SUCCESS",
        )
        assert letter.error_kind == "UserCodeError"
        assert not letter.transient
        assert "marker broken.flag is present" in letter.attempts[0]["error"]


def test_resume_refuses_a_changed_pipeline_with_a_diff(diamond: Path, project: Path) -> None:
    first = run(diamond)
    assert first.state is RunState.FAILED
    (project / "broken.flag").unlink()
    diamond.write_text(diamond.read_text().replace("r.v3 from", "r.v3 + 0 as v3 from"))
    with pytest.raises(ResumeRefused) as refused:
        resume(diamond)
    message = str(refused.value)
    assert "tasks changed: joined" in message
    assert "-    query: select l.id, l.v2, r.v3 from lhs l join rhs r using (id)" in message
    assert (
        "+    query: select l.id, l.v2, r.v3 + 0 as v3 from lhs l join rhs r using (id)" in message
    )
    with catalog_for(project) as catalog:
        assert catalog.run(first.run_id).state is RunState.FAILED  # untouched by the refusal

    forced = resume(diamond, first.run_id[:12], force=True)
    assert forced.state is RunState.SUCCESS
    assert forced.tasks["lhs"].reused_from == first.run_id
    assert forced.tasks["joined"].reused_from is None
    assert len(facts(project)) == 1000


def test_a_successful_run_has_nothing_to_resume(write: WritePipeline, project: Path) -> None:
    path = write("p.yaml", "pipeline: fine\ntasks:\n  - id: a\n    sql: select 1 as x\n")
    assert run(path).ok
    with pytest.raises(StateError, match="succeeded; there is nothing to resume"):
        resume(path)


def test_resume_after_a_load_failed_keeps_the_extract_watermark_and_rows(
    write: WritePipeline, project: Path, pg: PgSchema
) -> None:
    """Resuming reuses an incremental extract; the load that runs again commits its watermark."""
    source = pg.table("source")
    pg.execute(
        f"create table {source} (id int primary key, at date)",
        f"insert into {source} values (1, '2024-01-01'), (2, '2024-01-02')",
    )
    path = write(
        "p.yaml",
        f"""
        pipeline: {pg.schema}
        connections:
          wh: {{kind: postgres, uri: "${{env:TEST_PG_URI}}"}}
        tasks:
          - id: src
            extract:
              from: postgres
              connection: wh
              table: {source}
              incremental: {{cursor: at, key: [id]}}
          - id: out
            load: {{input: src, to: parquet, path: out/rows.parquet}}
        """,
    )
    calls = {"n": 0}

    def flaky_load(context: TaskContext) -> TaskOutcome:
        if context.task.id == "out":
            calls["n"] += 1
            if calls["n"] == 1:
                raise PermissionError("target directory is read-only")
        return run_task(context)

    first = run(path, runner=flaky_load)
    assert first.state is RunState.FAILED
    with catalog_for(project) as catalog:
        assert catalog.watermarks(pg.schema, "src") == []  # nothing committed yet
    second = resume(path)
    assert second.ok
    assert second.tasks["src"].reused_from == first.run_id
    with catalog_for(project) as catalog:
        (mark,) = catalog.watermarks(pg.schema, "src")
    assert mark.sink_id == "out"
    assert "2024-01-02" in mark.value
    assert pq.read_table(project / "out" / "rows.parquet").num_rows == 2


def test_a_second_run_refuses_or_waits_while_the_first_holds_the_lock(
    write: WritePipeline, project: Path
) -> None:
    path = write("p.yaml", "pipeline: busy\ntasks:\n  - id: a\n    sql: select 1 as x\n")
    state_dir = project / ".arrowline"
    holder = RunLock(
        state_dir, "busy", "20240101T000000Z-abcdef", catalog=catalog_location(project)
    )
    holder.acquire()
    try:
        with pytest.raises(ConcurrentRun, match="already running: run 20240101T000000Z-abcdef"):
            run(path)
        with pytest.raises(ConcurrentRun, match="still running after waiting"):
            run(path, if_running="wait", wait_timeout=0.3)
        timer = threading.Timer(0.4, holder.release)
        timer.start()
        started = time.monotonic()
        result = run(path, if_running="wait", wait_timeout=30)
        assert result.ok
        assert time.monotonic() - started >= 0.35  # it did wait for the first
        timer.join()
    finally:
        holder.release()
    with catalog_for(project) as catalog:
        assert [r.state for r in catalog.runs("busy")] == [RunState.SUCCESS]


def test_runs_left_running_by_a_dead_process_are_marked_interrupted(
    write: WritePipeline, project: Path
) -> None:
    path = write("p.yaml", "pipeline: crashy\ntasks:\n  - id: a\n    sql: select 1 as x\n")
    dead = "20240101T000000Z-dead00"
    catalog = Catalog(catalog_location(project))
    catalog.create_run(
        dead, "crashy", "v", str(path), {}, "2024-01-01", None, [("a", "sql", 0, "f")], {}
    )
    catalog.transition_run(dead, RunState.RUNNING, "started")
    catalog.transition_task(dead, "a", TaskState.QUEUED, "ready")
    catalog.transition_task(dead, "a", TaskState.RUNNING, "attempt 1", attempt=1)
    catalog.close()
    staging = project / ".arrowline" / "workspace" / "crashy" / "a" / f".staging-{dead}-1"
    staging.mkdir(parents=True)
    (staging / "part-00000.parquet").write_bytes(b"half a file")

    assert run(path).ok
    with catalog_for(project) as reader:
        old = reader.run(dead)
        assert old.state is RunState.INTERRUPTED
        assert "ended without finishing" in (old.error or "")
        task = reader.task_run(dead, "a")
        assert task is not None
        assert task.state is TaskState.CANCELLED
        assert reader.transitions(dead, "a")[-1].event == "interrupted"
    assert not staging.exists()


def test_a_task_that_exhausts_its_retries_leaves_a_dead_letter(
    write: WritePipeline, project: Path
) -> None:
    path = write(
        "p.yaml",
        """
        pipeline: dlq
        params: {day: "2024-05-01"}
        tasks:
          - id: a
            sql: select {{ params.day | sql_literal }} as day
            retry: {attempts: 3, backoff: 0s, jitter: none}
        """,
    )

    def always_down(context: TaskContext) -> TaskOutcome:
        raise TransientTaskError(f"connection reset (attempt {context.attempt})")

    result = run(path, runner=always_down)
    assert result.state is RunState.FAILED
    with catalog_for(project) as catalog:
        (letter,) = catalog.dead_letters("dlq")
    assert letter.task_id == "a"
    assert letter.run_id == result.run_id
    assert letter.reason == "attempts exhausted"
    assert letter.transient
    assert letter.params == {"day": "2024-05-01"}
    assert letter.pipeline_file == str(path)
    assert [a["attempt"] for a in letter.attempts] == [1, 2, 3]
    assert [a["error"] for a in letter.attempts] == [
        f"connection reset (attempt {n})" for n in (1, 2, 3)
    ]
    assert all(a["transient"] and a["duration_s"] >= 0 for a in letter.attempts)


def test_sharers_hold_the_lock_together_and_keep_a_lone_run_out(tmp_path: Path) -> None:
    from engine.state.locks import lock_is_held

    where = catalog_location(tmp_path)  # file locks, or advisory locks with a shared catalog
    first = RunLock(tmp_path, "p", "r1", if_running="share", catalog=where)
    second = RunLock(tmp_path, "p", "r2", if_running="share", catalog=where)
    with first, second:
        assert lock_is_held(tmp_path, "p", where)
        with pytest.raises(ConcurrentRun):
            RunLock(tmp_path, "p", "r3", catalog=where).acquire()
    assert not lock_is_held(tmp_path, "p", where)
    with RunLock(tmp_path, "p", "r4", catalog=where):
        late = RunLock(
            tmp_path, "p", "r5", if_running="share", wait_timeout=0.3, poll=0.05, catalog=where
        )
        with pytest.raises(ConcurrentRun, match="still running after waiting"):
            late.acquire()


def _start_a_second_run(path: Path) -> tuple[list[str], Callable[[RunEvent], None]]:
    """A listener that, once the run it listens to holds the lock, starts another run of the
    same pipeline and keeps the message of its refusal."""
    refusals: list[str] = []

    def second_run(event: RunEvent) -> None:
        if not refusals:
            with pytest.raises(ConcurrentRun) as refused:
                run(path)
            refusals.append(refused.value.message)

    return refusals, second_run


def test_a_run_refused_while_a_resume_holds_the_lock_names_the_run_being_resumed(
    write: WritePipeline, project: Path
) -> None:
    path = write("p.yaml", "pipeline: again\ntasks:\n  - id: a\n    sql: select 1 as x\n")

    def broken(context: TaskContext) -> TaskOutcome:
        raise StateError("not today")

    failed = run(path, runner=broken)
    assert not failed.ok
    refusals, second_run = _start_a_second_run(path)
    assert resume(path, "last", listener=second_run).ok
    (message,) = refusals
    assert f"already running: run {failed.run_id} (pid" in message


def test_a_run_refused_while_a_replay_holds_the_lock_names_the_replay_run(
    write: WritePipeline, project: Path
) -> None:
    path = write(
        "p.yaml",
        """
        pipeline: replayed
        tasks:
          - id: n
            sql: select range as x from range(4)
          - id: checked
            validate:
              input: n
              schema: {columns: {x: {type: int64, checks: {lt: 2}}}}
              on_fail: quarantine
              max_rejected_fraction: 1
        """,
    )
    assert run(path).ok
    refusals, second_run = _start_a_second_run(path)
    replay, rows = replay_quarantine(path, "checked", listener=second_run)
    assert rows == 2
    (message,) = refusals
    assert f"already running: run {replay.run_id} (pid" in message

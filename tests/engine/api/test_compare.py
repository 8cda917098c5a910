"""Runs measured against each other from what the catalog recorded: two runs task by task, the
slowdowns past a threshold, repetitions summed up, and what a run cost its process."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from pathlib import Path

import pytest

from engine.api.compare import FLOOR_S, Delta, compare_runs, summarize_repeats
from engine.api.pipeline import run
from engine.core.errors import StateError
from engine.state.catalog import CatalogReader
from tests.conftest import WritePipeline

UDFS = """
import time

def nap(frame, seconds="0.1"):
    time.sleep(float(seconds))
    return frame

def burn(frame, seconds="0.3"):
    end = time.process_time() + float(seconds)
    while time.process_time() < end:
        pass
    return frame
"""

PIPELINE = """
pipeline: bench
params: {nap: "0.1", n: 10}
tasks:
  - id: src
    sql: select range as id from range({{ params.n }})
  - id: napped
    udf: {input: src, function: "udfs.py:nap", args: {seconds: "{{ params.nap }}"}}
  - id: total
    sql: select count(*) as n from napped
"""


@pytest.fixture
def pipeline(write: WritePipeline) -> Path:
    write("udfs.py", UDFS)
    return write("p.yaml", PIPELINE)


def catalog_of(project: Path) -> CatalogReader:
    return CatalogReader(project / ".arrowline" / "catalog.db")


def test_a_delta_says_the_change_and_the_relative_change_when_both_sides_are_known() -> None:
    assert (Delta(2.0, 3.0).change, Delta(2.0, 3.0).relative) == (1.0, 0.5)
    assert Delta(4.0, 3.0).relative == -0.25
    assert Delta(None, 3.0).change is None
    assert Delta(0.0, 3.0).relative is None  # nothing to be relative to
    assert Delta(5.0, 5.0).changed is False
    assert Delta(5.0, None).changed is True


def test_two_runs_side_by_side_task_by_task_in_plan_order(pipeline: Path, project: Path) -> None:
    first = run(pipeline, params={"nap": "0.01", "n": 10})
    second = run(pipeline, params={"nap": "0.01", "n": 25})
    with catalog_of(project) as catalog:
        comparison = compare_runs(catalog, first.run_id[:-3], "last")  # a prefix
        napped_b = catalog.task_run(second.run_id, "napped")
    assert comparison.same_pipeline
    assert (comparison.a.run_id, comparison.b.run_id) == (first.run_id, second.run_id)
    assert [t.task_id for t in comparison.tasks] == ["src", "napped", "total"]
    by_id = {t.task_id: t for t in comparison.tasks}
    assert (by_id["src"].rows_out.a, by_id["src"].rows_out.b) == (10, 25)
    assert (by_id["napped"].rows_in.a, by_id["napped"].rows_in.b) == (10, 25)
    assert by_id["total"].rows_out.changed is False  # one row either way
    assert napped_b is not None
    assert by_id["napped"].duration_s.b == napped_b.duration_s
    assert by_id["napped"].attempts.a == 1
    assert (by_id["src"].bytes_out.change or 0) > 0  # more rows, more bytes
    assert (by_id["src"].state_a, by_id["src"].state_b) == ("SUCCESS", "SUCCESS")
    assert comparison.wall_s.a == comparison.a.duration_s
    assert comparison.to_dict()["tasks"][0]["rows_out"] == {
        "a": 10,
        "b": 25,
        "change": 15,
        "relative": 1.5,
    }


def test_a_real_slowdown_past_the_threshold_is_a_regression_and_a_speedup_is_not(
    pipeline: Path, project: Path
) -> None:
    fast = run(pipeline, params={"nap": "0.1"})
    slow = run(pipeline, params={"nap": "0.6"})
    with catalog_of(project) as catalog:
        slower = compare_runs(catalog, fast.run_id, slow.run_id)
        faster = compare_runs(catalog, slow.run_id, fast.run_id)
    found = {r.task_id: r for r in slower.regressions(threshold_pct=20)}
    assert "napped" in found
    assert found["napped"].relative > 2  # 0.1 s -> 0.6 s
    assert None in found  # the whole run too
    assert slower.regressions(threshold_pct=1000) == []
    assert faster.regressions(threshold_pct=20) == []


def test_tasks_under_the_floor_in_a_never_count_as_slower(pipeline: Path, project: Path) -> None:
    tiny = run(pipeline, params={"nap": "0"})
    slow = run(pipeline, params={"nap": "0.3"})
    with catalog_of(project) as catalog:
        comparison = compare_runs(catalog, tiny.run_id, slow.run_id)
    napped = {t.task_id: t for t in comparison.tasks}["napped"]
    assert napped.duration_s.a is not None
    assert napped.duration_s.a < FLOOR_S
    assert napped.duration_s.relative is not None
    assert napped.duration_s.relative > 1
    assert napped.slower_by() is None
    assert napped.slower_by(floor_s=0.0) == napped.duration_s.relative
    # napped alone is said never slower (src, doing the same work in both runs, may be slower
    # past the floor on a busy machine: not this test's question)
    assert "napped" not in [r.task_id for r in comparison.regressions(20)]


def test_a_task_an_earlier_output_stood_for_is_reused_and_never_slower(
    write: WritePipeline, project: Path
) -> None:
    path = write(
        "cached.yaml",
        """
        pipeline: cached
        cache: true
        tasks:
          - id: src
            sql: select range as id from range(5)
          - id: total
            sql: select count(*) as n from src
        """,
    )
    first = run(path)
    second = run(path)
    with catalog_of(project) as catalog:
        comparison = compare_runs(catalog, first.run_id, second.run_id)
    states = {t.task_id: (t.state_a, t.state_b) for t in comparison.tasks}
    assert states == {"src": ("SUCCESS", "REUSED"), "total": ("SUCCESS", "REUSED")}
    assert all(t.slower_by(floor_s=0.0) is None for t in comparison.tasks)


def test_runs_of_different_pipelines_compare_by_task_id(
    pipeline: Path, write: WritePipeline, project: Path
) -> None:
    other = write("other.yaml", "pipeline: other\ntasks:\n  - id: src\n    sql: select 1 as id\n")
    a = run(pipeline, params={"nap": "0"})
    b = run(other)
    with catalog_of(project) as catalog:
        comparison = compare_runs(catalog, a.run_id, b.run_id)
    assert not comparison.same_pipeline
    states = {t.task_id: (t.state_a, t.state_b) for t in comparison.tasks}
    assert states == {
        "src": ("SUCCESS", "SUCCESS"),
        "napped": ("SUCCESS", None),
        "total": ("SUCCESS", None),
    }


def test_an_unknown_run_is_named_with_its_side(pipeline: Path, project: Path) -> None:
    done = run(pipeline, params={"nap": "0"})
    with catalog_of(project) as catalog, pytest.raises(StateError, match="run B: no run 'zzz'"):
        compare_runs(catalog, done.run_id, "zzz")


def test_repetitions_are_summed_up_from_the_catalog(pipeline: Path, project: Path) -> None:
    ids = [run(pipeline, params={"nap": "0.05"}, force=True).run_id for _ in range(3)]
    with catalog_of(project) as catalog:
        report = summarize_repeats(catalog, ids)
        napped = [catalog.task_run(i, "napped") for i in ids]
        walls = [catalog.run(i).duration_s for i in ids]
    durations = [row.duration_s for row in napped if row is not None]
    tasks = {t.task_id: t for t in report.tasks}
    assert [r.run_id for r in report.runs] == ids
    assert report.failed == []
    assert tasks["napped"].ran == 3
    assert tasks["napped"].duration_s is not None
    assert tasks["napped"].duration_s.median == statistics.median(durations)
    assert tasks["napped"].duration_s.low == min(durations)
    assert tasks["src"].rows_out == (10, 10, 10)
    assert report.wall_s is not None
    assert report.wall_s.median == statistics.median(walls)
    assert report.to_dict()["tasks"][1]["duration_s"]["max"] == max(durations)


@pytest.mark.skipif(sys.platform == "win32", reason="getrusage is POSIX")
def test_a_run_records_its_cpu_time_and_the_peak_memory_of_its_process(
    write: WritePipeline, project: Path
) -> None:
    write("udfs.py", UDFS)
    path = write(
        "burn.yaml",
        """
        pipeline: burn
        tasks:
          - id: src
            sql: select 1 as id
          - id: burnt
            udf: {input: src, function: "udfs.py:burn", args: {seconds: "0.3"}}
        """,
    )
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cpu_before = time.process_time()
    result = run(path)
    cpu_spent = time.process_time() - cpu_before
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with catalog_of(project) as catalog:
        recorded = catalog.run(result.run_id)
    assert recorded.cpu_s is not None
    assert recorded.peak_rss_bytes is not None
    assert 0.3 <= recorded.cpu_s <= cpu_spent + 0.01  # the burn, within what the test measured
    assert peak_before <= recorded.peak_rss_bytes <= peak_after  # bytes, not kilobytes


def test_a_task_that_failed_in_b_is_a_regression_whatever_the_threshold(
    pipeline: Path, project: Path
) -> None:
    a = run(pipeline, params={"nap": "0.0"})
    b = run(pipeline, params={"nap": "not a number"})  # the UDF raises: napped fails
    assert a.ok
    assert not b.ok
    with catalog_of(project) as catalog:
        comparison = compare_runs(catalog, a.run_id, b.run_id)
    found = comparison.regressions(threshold_pct=1_000_000)
    assert [(r.task_id, r.failed) for r in found] == [(None, True), ("napped", True)]

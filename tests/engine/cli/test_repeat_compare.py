"""`arrowline run --repeat N` and `arrowline runs compare A B`: what a person benchmarking a
pipeline reads, and the exit codes a harness reads."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from engine.api.compare import FLOOR_S
from engine.core.states import RunState, TaskState
from engine.state.catalog import CatalogReader
from tests.conftest import WritePipeline

Cli = Callable[..., Result]

UDFS = """
import time
from pathlib import Path

def nap(frame, seconds="0.1"):
    time.sleep(float(seconds))
    return frame

def fails_on_second_call(frame):
    calls = Path("calls.txt")
    count = int(calls.read_text()) + 1 if calls.exists() else 1
    calls.write_text(str(count))
    if count == 2:
        raise ValueError("the second call fails")
    return frame
"""

PIPELINE = """
pipeline: bench
cache: true
params: {nap: "0.1", n: 100}
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


def run_ids(project: Path) -> list[str]:
    """Every run in the catalog, oldest first."""
    with catalog_of(project) as catalog:
        return [r.run_id for r in reversed(catalog.runs(limit=100))]


# -- run --repeat -------------------------------------------------------------------------------


def test_repeat_runs_every_task_each_time_though_the_cache_holds_them(
    cli: Cli, pipeline: Path, project: Path
) -> None:
    assert cli("run", pipeline, "-p", "nap=0.01").exit_code == 0  # what the cache could reuse
    before = run_ids(project)

    result = cli("run", pipeline, "-p", "nap=0.01", "--repeat", "3", "--no-progress")

    assert result.exit_code == 0, result.stderr
    repeated = [r for r in run_ids(project) if r not in before]
    assert len(repeated) == 3
    with catalog_of(project) as catalog:
        for run_id in repeated:
            assert catalog.run(run_id).state is RunState.SUCCESS
            assert catalog.reused(run_id) == {}
            rows = catalog.task_runs(run_id)
            assert [(r.task_id, r.state, r.output_run) for r in rows] == [
                (task, TaskState.SUCCESS, run_id) for task in ("src", "napped", "total")
            ]
    assert "bench · 3 repetitions" in result.stdout
    assert "│ napped " in result.stdout
    assert result.stdout.count("3/3") == 3  # every task ran in every repetition
    assert f"runs: {', '.join(repeated)}" in result.stdout
    for number, run_id in enumerate(repeated, 1):
        assert f"repetition {number}/3: run {run_id} SUCCESS" in result.stderr


def test_repeat_as_json_reports_each_tasks_median_from_the_catalog(
    cli: Cli, pipeline: Path, project: Path
) -> None:
    result = cli("run", pipeline, "-p", "nap=0.06", "--repeat", "3", "--format", "json")

    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    ids = [r["run_id"] for r in report["runs"]]
    assert ids == run_ids(project)
    assert (report["repetitions"], report["failed"]) == (3, [])
    tasks = {t["task_id"]: t for t in report["tasks"]}
    with catalog_of(project) as catalog:
        naps = [catalog.task_run(i, "napped") for i in ids]
    durations = [row.duration_s for row in naps if row is not None]
    assert tasks["napped"]["ran"] == 3
    assert tasks["napped"]["duration_s"]["median"] == statistics.median(durations)
    assert tasks["napped"]["duration_s"]["min"] >= 0.06
    assert tasks["src"]["rows_out"] == [100, 100, 100]
    assert report["cpu_s"]["median"] > 0
    assert report["peak_rss_bytes"]["min"] > 1_000_000


def test_repeat_exits_1_and_names_the_repetition_that_failed(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    write("udfs.py", UDFS)
    path = write(
        "flaky.yaml",
        """
        pipeline: flaky
        tasks:
          - id: src
            sql: select 1 as id
          - id: checked
            udf: {input: src, function: "udfs.py:fails_on_second_call"}
        """,
    )

    result = cli("run", path, "--repeat", "3", "--no-progress")

    assert result.exit_code == 1
    first, second, third = run_ids(project)
    assert f"repetitions that failed: 2 (run {second}, FAILED)" in result.stderr
    assert f"✗ repetition 2 (run {second}) FAILED: failed: checked" in result.stdout
    assert f"runs: {first}, {second}, {third}" in result.stdout
    assert "│ checked " in result.stdout
    assert "2/3" in result.stdout  # its time is over the two repetitions it succeeded in


def test_repeat_refuses_what_it_cannot_mean(cli: Cli, pipeline: Path, project: Path) -> None:
    once = cli("run", pipeline, "--repeat", "1")
    assert once.exit_code == 2
    assert "1 is not in the range x>=2" in once.stderr
    resumed = cli("run", pipeline, "--repeat", "2", "--resume")
    assert resumed.exit_code == 2
    assert "--repeat starts a fresh run each time" in resumed.stderr
    single = cli("run", pipeline, "--format", "json")
    assert single.exit_code == 2
    assert "--format json goes with --repeat" in single.stderr
    catalog = project / ".arrowline" / "catalog.db"
    assert not catalog.exists() or run_ids(project) == []  # nothing ran


# -- runs compare -------------------------------------------------------------------------------


def test_compare_puts_two_runs_side_by_side_with_the_changes(
    cli: Cli, pipeline: Path, project: Path
) -> None:
    assert cli("run", pipeline, "-p", "nap=0", "-p", "n=1000").exit_code == 0
    assert cli("run", pipeline, "-p", "nap=0", "-p", "n=2000").exit_code == 0
    a, b = run_ids(project)

    shown = cli("runs", "compare", a[:-3], "last")

    assert shown.exit_code == 0, shown.stderr
    assert f"A  run {a}  bench  SUCCESS" in shown.stdout
    assert f"B  run {b}  bench  SUCCESS" in shown.stdout
    assert "different pipelines" not in shown.stdout
    for measure in ("wall time", "CPU time", "peak memory"):
        assert measure in shown.stdout
    src = next(line for line in shown.stdout.splitlines() if line.startswith("│ src "))
    assert "1,000 → 2,000" in src  # rows out
    napped = next(line for line in shown.stdout.splitlines() if line.startswith("│ napped "))
    assert "1,000 → 2,000" in napped  # rows in and out

    data = json.loads(cli("runs", "compare", a, b, "--format", "json").stdout)
    tasks = {t["task_id"]: t for t in data["tasks"]}
    assert tasks["src"]["rows_out"] == {"a": 1000, "b": 2000, "change": 1000, "relative": 1.0}
    assert tasks["total"]["rows_out"]["change"] == 0
    assert data["same_pipeline"] is True
    assert data["a"]["cpu_s"] > 0
    assert data["slower"] is None  # no threshold asked


def test_the_threshold_exits_1_on_a_real_slowdown_and_0_without_one(
    cli: Cli, pipeline: Path, project: Path
) -> None:
    assert cli("run", pipeline, "-p", "nap=0.1").exit_code == 0
    assert cli("run", pipeline, "-p", "nap=0.6").exit_code == 0
    fast, slow = run_ids(project)

    slower = cli("runs", "compare", fast, slow, "--threshold", "20")
    faster = cli("runs", "compare", slow, fast, "--threshold", "20")
    lenient = cli("runs", "compare", fast, slow, "--threshold", "2000")

    assert slower.exit_code == 1
    assert "failed, or more than 20% longer, in B:" in slower.stdout
    assert "task napped: " in slower.stdout
    assert faster.exit_code == 0, faster.stdout
    assert "nothing took more than 20% longer in B" in faster.stdout
    assert lenient.exit_code == 0
    data = json.loads(
        cli("runs", "compare", fast, slow, "--threshold", "20", "--format", "json").stdout
    )
    assert "napped" in [r["task_id"] for r in data["slower"]]
    assert data["floor_s"] == FLOOR_S


def test_compare_says_so_when_the_runs_are_of_different_pipelines(
    cli: Cli, pipeline: Path, write: WritePipeline, project: Path
) -> None:
    other = write("o.yaml", "pipeline: other\ntasks:\n  - id: src\n    sql: select 1 as id\n")
    assert cli("run", pipeline, "-p", "nap=0").exit_code == 0
    assert cli("run", other).exit_code == 0
    a, b = run_ids(project)

    shown = cli("runs", "compare", a, b)

    assert shown.exit_code == 0
    assert "different pipelines: A ran 'bench', B ran 'other'; tasks are matched by id" in (
        shown.stdout
    )
    napped = next(line for line in shown.stdout.splitlines() if line.startswith("│ napped "))
    assert "SUCCESS → -" in napped


def test_compare_exits_2_for_a_run_it_does_not_know(
    cli: Cli, pipeline: Path, project: Path
) -> None:
    nothing_yet = cli("runs", "compare", "last", "last")
    assert nothing_yet.exit_code == 2
    assert "no arrowline catalog" in nothing_yet.stderr
    assert cli("run", pipeline, "-p", "nap=0").exit_code == 0

    unknown = cli("runs", "compare", "last", "20991231T000000Z-ffffff", "--threshold", "10")

    assert unknown.exit_code == 2
    assert "error: run B: no run '20991231T000000Z-ffffff' in the catalog" in unknown.stderr


def test_compare_help_says_the_floor_under_which_tasks_do_not_count(cli: Cli) -> None:
    shown = cli("runs", "compare", "--help")
    assert shown.exit_code == 0
    assert f"at least {FLOOR_S * 1000:.0f} ms in A" in " ".join(shown.stdout.split())


def test_runs_without_a_subcommand_lists_and_shows_runs_as_before(
    cli: Cli, pipeline: Path, project: Path
) -> None:
    assert cli("run", pipeline, "-p", "nap=0").exit_code == 0
    (run_id,) = run_ids(project)
    for args in ((), ("list",), ("--limit", "5")):
        listing = cli("runs", *args)
        assert listing.exit_code == 0
        assert run_id in listing.stdout
    shown = cli("runs", run_id[:10])
    assert shown.exit_code == 0
    assert f"run {run_id}" in shown.stdout
    assert "│ napped " in shown.stdout
    assert "runs list [OPTIONS] [RUN_ID]" in cli("runs", "--help").stdout  # the listing's help

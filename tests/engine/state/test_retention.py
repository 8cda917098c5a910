"""Retention of task outputs, with real runs: what a run removes when it ends, what
`arrowline gc` removes and reports, and what is never removed (the latest output of each task,
the outputs a running or resumable run needs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

import engine
from engine.core.errors import StateError
from engine.state.catalog import CatalogReader, catalog_location
from tests.conftest import WritePipeline

# every test here runs on the embedded catalog and again on a shared PostgreSQL one
pytestmark = pytest.mark.usefixtures("each_catalog")

Cli = Callable[..., Result]

UDFS = """
import time
from pathlib import Path

def guarded(frame):
    if Path("broken.flag").exists():
        raise ValueError("broken.flag is present")
    return frame

def held(frame):
    deadline = time.monotonic() + 120
    while not Path("go.flag").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return frame
"""

TWO = """
pipeline: two
{retention}
tasks:
  - id: a
    sql: select range as id, repeat('x', 200) as pad from range(2000)
  - id: b
    udf: {{input: a, function: "udfs.py:guarded"}}
    retry: {{attempts: 1}}
"""


def outputs(project: Path, pipeline: str) -> set[tuple[str, str]]:
    """(task, run) of every published output folder on disk."""
    root = project / ".arrowline" / "workspace" / pipeline
    return {
        (task.name, run.name)
        for task in root.iterdir()
        if task.is_dir() and not task.name.startswith(".")
        for run in task.iterdir()
        if run.is_dir() and not run.name.startswith(".")
    }


def run_ids(project: Path, pipeline: str) -> list[str]:
    """Oldest first."""
    with CatalogReader(catalog_location(project)) as catalog:
        return [r.run_id for r in reversed(catalog.runs(pipeline, 1000))]


def size_of(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def test_a_run_keeps_the_last_runs_and_the_latest_output_of_every_task(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    write("udfs.py", UDFS)
    path = write("p.yaml", TWO.format(retention=""))  # the default: the last 3 runs
    for _ in range(5):
        assert cli("run", path, "--no-progress").exit_code == 0
    runs = run_ids(project, "two")
    assert outputs(project, "two") == {(t, r) for t in "ab" for r in runs[-3:]}

    # b alone, three times: a's latest output (run 5) is reused, whatever its age
    path.write_text(TWO.format(retention="retention: {keep_runs: 1}"))
    for _ in range(3):
        ran = cli("run", path, "--no-progress", "--select", "b")
        assert ran.exit_code == 0, ran.stdout
    runs = run_ids(project, "two")
    assert outputs(project, "two") == {("a", runs[4]), ("b", runs[-1])}
    assert "retention: removed" in ran.stderr  # what a run removed is logged
    with CatalogReader(catalog_location(project)) as catalog:
        removed = catalog.removed_output(runs[0], "a")
        assert removed is not None
        assert (removed.pipeline, removed.reason) == ("two", "gc: keep_runs 3")
        assert removed.bytes > 0
        assert catalog.removed_output(runs[4], "a") is None

    # a removed output says so, from the command line and in a notebook
    shown = cli("show", "a", "--run", runs[0])
    assert shown.exit_code == 1
    assert f"the output of task 'a' from run {runs[0]} was removed by gc at " in (
        shown.stderr.replace("\n", " ")
    )
    assert "Traceback" not in shown.stderr
    with engine.open(project) as notebook:
        with pytest.raises(StateError, match="was removed by gc"):
            notebook.table("b", run=runs[1])
        assert notebook.table("a").collect().height == 2000  # the latest is always there


def test_a_resumable_run_keeps_its_outputs_until_it_is_resumed_or_its_letter_resolved(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    write("udfs.py", UDFS)
    path = write("p.yaml", TWO.format(retention="retention: {keep_runs: 0}"))
    assert cli("run", path, "--no-progress").exit_code == 0
    (project / "broken.flag").write_text("")
    assert cli("run", path, "--no-progress").exit_code == 1
    first, failed = run_ids(project, "two")
    # the failed run can be resumed: its a stays; the first run's b is b's latest output
    assert outputs(project, "two") == {("a", failed), ("b", first)}

    (project / "broken.flag").unlink()
    resumed = cli("run", path, "--no-progress", "--resume")
    assert resumed.exit_code == 0, resumed.stdout
    assert outputs(project, "two") == {("a", failed), ("b", failed)}

    # a failed run superseded by a success stays only while a dead letter points at it
    (project / "broken.flag").write_text("")
    assert cli("run", path, "--no-progress").exit_code == 1
    (project / "broken.flag").unlink()
    assert cli("run", path, "--no-progress").exit_code == 0
    *_, lettered, latest = run_ids(project, "two")
    assert outputs(project, "two") == {("a", lettered), ("a", latest), ("b", latest)}
    (letter,) = json.loads(cli("dlq", "list", "--format", "json").stdout)
    assert letter["run_id"] == lettered
    assert cli("dlq", "resolve", str(letter["id"]), "--note", "superseded").exit_code == 0
    collected = cli("gc", "two")
    assert collected.exit_code == 0, collected.stderr
    assert "two: removed 1 output," in collected.stdout
    assert outputs(project, "two") == {("a", latest), ("b", latest)}


def test_gc_says_what_it_removes_and_the_bytes_freed_and_a_dry_run_removes_nothing(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    write("udfs.py", UDFS)
    path = write("p.yaml", TWO.format(retention="retention: {keep_runs: 10}"))
    for _ in range(4):
        assert cli("run", path, "--no-progress").exit_code == 0
    runs = run_ids(project, "two")
    before = outputs(project, "two")
    assert len(before) == 8
    workspace = project / ".arrowline" / "workspace" / "two"
    expected = sum(size_of(workspace / t / r) for t in "ab" for r in runs[:2])

    dry = cli("gc", "two", "--keep-runs", "2", "--dry-run", "--format", "json")
    assert dry.exit_code == 0, dry.stderr
    (report,) = json.loads(dry.stdout)
    assert report["dry_run"] is True
    assert {(r["task"], r["run_id"]) for r in report["removed"]} == {
        (t, r) for t in "ab" for r in runs[:2]
    }
    assert report["bytes"] == expected
    assert outputs(project, "two") == before  # nothing removed

    text = cli("gc", "--keep-runs", "2", "--dry-run")  # every pipeline
    assert "two: would remove 4 outputs" in text.stdout
    assert outputs(project, "two") == before

    done = cli("gc", str(path), "--keep-runs", "2")  # the pipeline given by its file
    assert done.exit_code == 0, done.stderr
    assert runs[0] in done.stdout
    freed = expected / 1000
    assert f"two: removed 4 outputs, {freed:.1f} kB freed" in done.stdout
    assert outputs(project, "two") == {(t, r) for t in "ab" for r in runs[2:]}
    again = cli("gc", "two", "--keep-runs", "2")
    assert "two: removed 0 outputs, 0 B freed" in again.stdout

    # the file's own retention applies when --keep-runs is not given
    path.write_text(TWO.format(retention="retention: {keep_runs: 1}"))
    assert cli("gc", str(path)).exit_code == 0
    assert outputs(project, "two") == {(t, runs[-1]) for t in "ab"}


@pytest.mark.parametrize(
    ("argument", "code", "message"),
    [
        ("../../etc", 2, "pipeline file '../../etc' does not exist"),
        ("tw o;rm", 2, "is neither a pipeline file"),
        ("twoo", 1, "the catalog has no runs of pipeline 'twoo'. Did you mean 'two'?"),
    ],
)
def test_gc_refuses_what_names_no_pipeline_of_the_catalog(
    cli: Cli, write: WritePipeline, project: Path, argument: str, code: int, message: str
) -> None:
    write("udfs.py", UDFS)
    path = write("p.yaml", TWO.format(retention=""))
    assert cli("run", path, "--no-progress").exit_code == 0
    before = outputs(project, "two")
    refused = cli("gc", argument, "--keep-runs", "0")
    assert refused.exit_code == code
    assert message in refused.stderr
    assert cli("gc", "two", "--keep-runs", "-1").exit_code == 2
    assert outputs(project, "two") == before


HELD = """
pipeline: held
retention: {keep_runs: 0}
tasks:
  - id: a
    sql: select range as id from range(100)
  - id: wait
    udf: {input: a, function: "udfs.py:held"}
"""


def test_gc_never_removes_what_a_running_run_needs(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    write("udfs.py", UDFS)
    path = write("p.yaml", HELD)
    (project / "go.flag").write_text("")
    assert cli("run", path, "--no-progress").exit_code == 0
    (project / "go.flag").unlink()
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "run", str(path), "--no-progress"],
        cwd=project,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while len(run_ids(project, "held")) < 2 or len(outputs(project, "held")) < 3:
            assert time.monotonic() < deadline, "the second run never published a"
            time.sleep(0.05)
        first, running = run_ids(project, "held")
        # the running run's own output stays; the first run's a is no one's latest any more
        dry = json.loads(cli("gc", "held", "--dry-run", "--format", "json").stdout)
        assert [(r["task"], r["run_id"]) for r in dry[0]["removed"]] == [("a", first)]
        busy = cli("gc", "held")
        assert busy.exit_code == 0
        assert "held: skipped, pipeline 'held' is already running" in busy.stdout
        assert outputs(project, "held") == {("a", first), ("wait", first), ("a", running)}
    finally:
        (project / "go.flag").write_text("")
        assert process.wait(timeout=120) == 0
    # the run applied retention itself when it ended
    assert outputs(project, "held") == {("a", running), ("wait", running)}


def test_a_run_resumed_after_gc_removed_what_it_reused_runs_that_task_again(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    write("udfs.py", UDFS)
    path = write("p.yaml", TWO.format(retention="retention: {keep_runs: 0}"))
    assert cli("run", path, "--no-progress").exit_code == 0
    (project / "broken.flag").write_text("")
    assert cli("run", path, "--no-progress", "--select", "b").exit_code == 1  # reuses run 1's a
    (project / "broken.flag").unlink()
    assert cli("run", path, "--no-progress").exit_code == 0
    first, selected, _ = run_ids(project, "two")
    (letter,) = json.loads(cli("dlq", "list", "--format", "json").stdout)
    assert cli("dlq", "resolve", str(letter["id"]), "--note", "obsolete").exit_code == 0
    assert cli("gc", "two").exit_code == 0
    assert ("a", first) not in outputs(project, "two")

    resumed = cli("run", path, "--no-progress", "--resume", selected)
    assert resumed.exit_code == 0, resumed.stdout + resumed.stderr
    with CatalogReader(catalog_location(project)) as catalog:
        ran = {t.task_id: t.state.value for t in catalog.task_runs(selected)}
    assert ran == {"a": "SUCCESS", "b": "SUCCESS"}  # a ran again instead of a missing reuse


class _Recorded:
    """A catalog whose pipeline's latest run stored `definition`."""

    def __init__(self, definition: str | None) -> None:
        self.definition = definition

    def latest_definition(self, pipeline: str) -> str | None:
        return self.definition


@pytest.mark.parametrize(
    ("definition", "expected"),
    [
        ("pipeline: two\nretention: {keep_runs: 7}\n", 7),
        ("pipeline: two\nretention: {keep_runs: 0}\n", 0),
        (None, 3),  # no run stored a definition
        ("pipeline: two\n", 3),  # a pipeline that never set one
        ("pipeline: two\nretention: {keep_runs: -1}\n", 3),  # not written by arrowline
        ("pipeline: two\nretention: {keep_runs: true}\n", 3),
        ("pipeline: two\nretention: 5\n", 3),
        ("- not\n- a mapping\n", 3),
        ("pipeline: [unclosed\n", 3),
    ],
)
def test_gc_by_name_keeps_what_the_latest_run_recorded_else_the_default(
    definition: str | None, expected: int
) -> None:
    from engine.state.retention import recorded_keep_runs

    assert recorded_keep_runs(_Recorded(definition), "two", 3) == expected  # type: ignore[arg-type]

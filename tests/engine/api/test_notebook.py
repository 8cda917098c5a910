from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

import engine
from engine.api.pipeline import run
from engine.core.errors import StateError
from tests.conftest import WritePipeline

PIPELINE = """
    pipeline: nb
    params: {n: 10}
    tasks:
      - id: numbers
        sql: select range as x from range({{ params.n }})
      - id: doubled
        sql: select x, x * 2 as y from numbers
      - id: checked
        validate:
          input: doubled
          schema: {columns: {y: {type: int64, checks: {lt: 10}}}}
          on_fail: quarantine
          max_rejected_fraction: 1
"""


def test_open_gives_runs_tables_sql_and_quarantine(write: WritePipeline, project: Path) -> None:
    path = write("p.yaml", PIPELINE)
    first = run(path)
    second = run(path, params={"n": 3})
    with engine.open(project) as notebook:
        runs = notebook.runs()
        assert runs["run_id"].to_list() == [second.run_id, first.run_id]
        assert notebook.table("doubled").collect()["x"].to_list() == [0, 1, 2]  # latest
        old = notebook.table("doubled", run=first.run_id[:22]).select(pl.len()).collect().item()
        assert old == 10
        assert notebook.sql("select sum(y) as s from doubled").fetchall() == [(6,)]
        assert notebook.sql('select count(*) from "nb"."numbers"').fetchall() == [(3,)]
        assert notebook.quarantine("checked", run=first.run_id).collect()["y"].to_list() == [
            10,
            12,
            14,
            16,
            18,
        ]
        assert set(notebook.tasks()["task_id"].to_list()) == {"numbers", "doubled", "checked"}


def test_helpful_errors(write: WritePipeline, project: Path) -> None:
    with pytest.raises(StateError, match="hold no arrowline state"):
        engine.open(project)
    run(write("p.yaml", PIPELINE))
    with engine.open(project) as notebook:
        with pytest.raises(StateError, match="Did you mean 'doubled'"):
            notebook.table("doubeld")
        with pytest.raises(StateError, match="quarantined no rows"):
            notebook.quarantine("numbers")


def test_an_unknown_task_is_no_such_task_with_did_you_mean(
    write: WritePipeline, project: Path
) -> None:
    first = run(write("p.yaml", PIPELINE))
    with engine.open(project) as notebook:
        with pytest.raises(StateError) as unknown:
            notebook.table("nope")
        assert "no task 'nope'" in unknown.value.message
        assert "successful output" not in unknown.value.message
        with pytest.raises(
            StateError, match=r"no task 'doubeld' in pipeline 'nb'\. Did you mean 'doubled'\?"
        ):
            notebook.table("doubeld")
        with pytest.raises(
            StateError,
            match=rf"run {first.run_id} has no task 'doubeld'\. Did you mean 'doubled'\?",
        ):
            notebook.table("doubeld", run=first.run_id)


def test_a_task_that_never_succeeded_has_no_output_yet(write: WritePipeline, project: Path) -> None:
    path = write(
        "p.yaml",
        """
        pipeline: broken
        tasks:
          - id: boom
            sql: select error('no') as x
        """,
    )
    failed = run(path)
    assert not failed.ok
    with engine.open(project) as notebook:
        with pytest.raises(StateError, match="no successful output of task 'boom' yet"):
            notebook.table("boom")
        with pytest.raises(
            StateError, match=f"run {failed.run_id} has no output of task 'boom': it is FAILED"
        ):
            notebook.table("boom", run=failed.run_id)


def test_a_load_task_says_where_it_loaded(write: WritePipeline, project: Path) -> None:
    path = write(
        "p.yaml",
        PIPELINE
        + """
      - id: publish
        load: {input: checked, to: parquet, path: out/doubled}
""",
    )
    done = run(path)
    with engine.open(project) as notebook:
        for which in (None, done.run_id):
            with pytest.raises(StateError) as load:
                notebook.table("publish", run=which)
            message = load.value.message
            assert f"parquet:{project / 'out' / 'doubled'}" in message
            assert done.run_id in message
            assert "Did you mean" not in message
            assert "checked" in (load.value.hint or "")


def test_open_walks_up_to_the_folder_holding_its_state_as_the_cli_does(
    write: WritePipeline, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(write("p.yaml", PIPELINE))
    deeper = project / "notebooks" / "2024"
    deeper.mkdir(parents=True)
    with engine.open(deeper) as notebook:
        assert notebook.path == project
        assert notebook.table("doubled").select(pl.len()).collect().item() == 10
    monkeypatch.chdir(deeper)
    with engine.open(".") as here, engine.open() as default:
        assert here.path == default.path == project
    elsewhere = project.parent / (project.name + "-empty")
    elsewhere.mkdir()
    with pytest.raises(StateError, match="and the folders above it hold no arrowline state"):
        engine.open(elsewhere)


def test_runs_times_are_datetimes(write: WritePipeline, project: Path) -> None:
    before = datetime.now(UTC)
    run(write("p.yaml", PIPELINE))
    with engine.open(project) as notebook:
        runs = notebook.runs()
    for column in ("started_at", "ended_at", "logical_date"):
        assert runs.schema[column] == pl.Datetime("us", "UTC")
    (row,) = runs.to_dicts()
    assert before <= row["started_at"] <= row["ended_at"] <= datetime.now(UTC)
    assert row["duration_s"] == pytest.approx(
        (row["ended_at"] - row["started_at"]).total_seconds(), abs=1e-3
    )


@pytest.mark.slow
def test_readable_while_another_process_is_running(write: WritePipeline, project: Path) -> None:
    path = write("p.yaml", PIPELINE)
    first = run(path)
    write("udfs.py", "import time\ndef slow(frame):\n    time.sleep(3)\n    return frame\n")
    slow = write(
        "slow.yaml",
        """
        pipeline: slow
        tasks:
          - id: src
            sql: select 1 as x
          - id: wait
            udf: {input: src, function: "udfs.py:slow"}
    """,
    )
    writer = subprocess.Popen(
        [sys.executable, "-m", "engine", "run", str(slow), "--no-progress"],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        seen_running = False
        while time.monotonic() < deadline and not seen_running:
            with engine.open(project) as notebook:
                runs = notebook.runs()  # once: the other process may add its run in between
                states = dict(zip(runs["pipeline"], runs["state"], strict=True))
                seen_running = states.get("slow") == "RUNNING"
                # published outputs stay readable while the other run writes its catalog rows
                assert (
                    notebook.table("doubled", run=first.run_id).select(pl.len()).collect().item()
                    == 10
                )
            time.sleep(0.1)
        assert seen_running
    finally:
        _, stderr = writer.communicate(timeout=60)
    assert writer.returncode == 0, stderr


def test_quarantine_frames_say_their_reasons_in_words_and_keep_the_struct_fields(
    write: WritePipeline, project: Path
) -> None:
    run(write("p.yaml", PIPELINE.replace("{n: 10}", "{n: 6}")))
    with engine.open(project) as notebook:
        frame = notebook.quarantine("checked").collect()
    assert frame.columns[:2] == ["_arrowline_row", "_arrowline_reasons"]
    assert frame["_arrowline_reasons"].to_list() == ["y: less_than(10) (10)"]
    errors = frame.schema["_arrowline_errors"]
    assert isinstance(errors, pl.List)
    assert isinstance(errors.inner, pl.Struct)
    assert [f.name for f in errors.inner.fields] == ["column", "check", "value"]
    assert frame["_arrowline_errors"].to_list() == [
        [{"column": "y", "check": "less_than(10)", "value": "10"}]
    ]
    assert "y: less_than(10) (10)" in frame._repr_html_()  # what a notebook shows

"""Whole runs with the workspace on an S3-compatible object store (a real moto server on
loopback): the same rows as a local run, the notebook API, quarantine, resume and `--select`
reuse reading outputs back from the store, retention removing them there, and bad settings
refused before anything runs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from click.testing import Result

import engine
from engine.api.pipeline import run
from engine.core.errors import StateError
from tests.conftest import WritePipeline
from tests.s3_server import S3Bucket

Cli = Callable[..., Result]

PIPELINE = """
    pipeline: lake
    params: {n: 10}
    workspace: WORKSPACE
    retention: {keep_runs: 1}
    tasks:
      - id: numbers
        sql: select range as x, 'n' || range as label from range({{ params.n }})
      - id: doubled
        sql: select x, x * 2 as y, label from numbers
      - id: checked
        validate:
          input: doubled
          schema: {columns: {y: {type: int64, checks: {lt: 10}}}}
          on_fail: quarantine
          max_rejected_fraction: 1
      - id: flaky
        udf: {input: checked, function: "udfs.py:needs_flag"}
      - id: out
        load: {input: flaky, to: parquet, path: out/result}
"""

UDFS = """
from pathlib import Path

def needs_flag(frame):
    if not Path("ready.flag").exists():
        raise ValueError("the flag file is missing")
    return frame
"""


def _pipeline(write: WritePipeline, workspace: str) -> Path:
    write("udfs.py", UDFS)
    return write("p.yaml", PIPELINE.replace("WORKSPACE", workspace))


def _forget_cached_copies() -> None:
    """As on a host that has never read the outputs (the s3 fixture's own cache folder)."""
    shutil.rmtree(os.environ["ARROWLINE_CACHE_DIR"], ignore_errors=True)


def _objects(s3: S3Bucket, task: str) -> set[str]:
    """The run ids with an output of `task` in the store."""
    return {k.split("/")[4] for k in s3.keys(f"ws/lake/{task}") if k.endswith("MANIFEST.json")}


def test_a_run_on_the_object_store_equals_a_local_run_and_keeps_nothing_local(
    s3: S3Bucket, write: WritePipeline, project: Path, tmp_path: Path
) -> None:
    (project / "ready.flag").write_text("ok")
    result = run(_pipeline(write, s3.uri("ws")))
    assert result.ok, {k: t.error for k, t in result.tasks.items() if t.error}
    assert _objects(s3, "doubled") == {result.run_id}
    assert _objects(s3, "checked") == {result.run_id}
    local = project / ".arrowline" / "workspace"
    assert not list(local.rglob("*.parquet"))  # staged, uploaded, then moved to the cache
    on_s3 = pl.read_parquet(project / "out" / "result").sort("x")

    elsewhere = tmp_path / "local-project"
    elsewhere.mkdir()
    shutil.copy(project / "udfs.py", elsewhere)
    (elsewhere / "ready.flag").write_text("ok")
    plain = elsewhere / "p.yaml"
    plain.write_text((project / "p.yaml").read_text().replace(s3.uri("ws"), "null"))
    assert run(plain, project_dir=elsewhere).ok
    assert on_s3.equals(pl.read_parquet(elsewhere / "out" / "result").sort("x"))
    assert on_s3["x"].to_list() == [0, 1, 2, 3, 4]


def test_the_notebook_reads_tables_sql_and_quarantine_from_the_store_on_another_host(
    s3: S3Bucket,
    write: WritePipeline,
    project: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (project / "ready.flag").write_text("ok")
    result = run(_pipeline(write, s3.uri("ws")))
    assert result.ok
    # a notebook on another host: an empty cache, the catalog's locators only
    monkeypatch.setenv("ARROWLINE_CACHE_DIR", str(tmp_path / "other-host-cache"))
    with engine.open(project) as notebook:
        assert notebook.sql("select 42").fetchall() == [(42,)]
        assert not (tmp_path / "other-host-cache").exists()  # nothing read, nothing copied
        assert notebook.table("doubled").collect()["y"].to_list() == [2 * n for n in range(10)]
        assert notebook.sql("select count(*) from checked").fetchall() == [(5,)]
        rejected = notebook.quarantine("checked").collect()
        assert rejected["y"].to_list() == [10, 12, 14, 16, 18]
    assert any((tmp_path / "other-host-cache").rglob("part-00000.parquet"))


def test_an_output_gone_from_the_bucket_is_said_to_be_gone_from_the_store(
    s3: S3Bucket, write: WritePipeline, project: Path
) -> None:
    (project / "ready.flag").write_text("ok")
    result = run(_pipeline(write, s3.uri("ws")))
    assert result.ok
    s3.filesystem.delete_dir(f"{s3.bucket}/ws/lake/doubled")  # a lifecycle rule, say
    with engine.open(project) as notebook, pytest.raises(StateError) as gone:
        notebook.table("doubled").collect()
    assert "is not in its object store" in str(gone.value)
    assert "lifecycle rule" in str(gone.value)


def test_a_failed_run_resumes_from_the_outputs_in_the_store(
    s3: S3Bucket, write: WritePipeline, project: Path, cli: Cli
) -> None:
    path = _pipeline(write, s3.uri("ws"))
    failed = run(path)
    assert not failed.ok
    assert failed.tasks["flaky"].error is not None
    (project / "ready.flag").write_text("ok")
    _forget_cached_copies()  # what the resume reuses comes from the store
    resumed = cli("run", path, "--resume", "last", "--no-progress")
    assert resumed.exit_code == 0, resumed.output
    with engine.open(project) as notebook:
        tasks = notebook.tasks(run=failed.run_id)
        states = dict(zip(tasks["task_id"].to_list(), tasks["state"].to_list(), strict=True))
    assert states["flaky"] == "SUCCESS"
    assert states["out"] == "SUCCESS"
    assert pl.read_parquet(project / "out" / "result")["x"].sort().to_list() == [0, 1, 2, 3, 4]


def test_select_reuses_upstream_outputs_from_the_store_and_retention_removes_old_ones(
    s3: S3Bucket, write: WritePipeline, project: Path, cli: Cli
) -> None:
    (project / "ready.flag").write_text("ok")
    path = _pipeline(write, s3.uri("ws"))
    first = run(path)
    second = run(path, params={"n": 4})
    assert first.ok
    assert second.ok
    _forget_cached_copies()
    again = cli("run", path, "--select", "flaky+", "--param", "n=4", "--no-progress")
    assert again.exit_code == 0, again.output
    assert pl.read_parquet(project / "out" / "result")["x"].sort().to_list() == [0, 1, 2, 3]
    with engine.open(project) as notebook:  # numbers, doubled, checked: read from the store
        tasks = notebook.tasks()
        ran = tasks.filter(pl.col("state") == "SUCCESS")["task_id"].to_list()
    assert sorted(ran) == ["flaky", "out"], tasks
    # keep_runs: 1 -> only the newest outputs of each task stay in the store
    assert _objects(s3, "numbers") == {second.run_id}
    assert len(_objects(s3, "flaky")) == 1
    assert first.run_id not in _objects(s3, "flaky")


def test_the_environment_names_the_workspace_when_the_pipeline_does_not(
    s3: S3Bucket, write: WritePipeline, project: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "ready.flag").write_text("ok")
    path = _pipeline(write, "null")
    monkeypatch.setenv("ARROWLINE_WORKSPACE", s3.uri("ws"))
    result = cli("run", path, "--no-progress")
    assert result.exit_code == 0, result.output
    assert len(_objects(s3, "numbers")) == 1


def test_a_workspace_uri_with_credentials_is_refused_at_its_line(
    write: WritePipeline, project: Path, cli: Cli
) -> None:
    path = _pipeline(write, "s3://AKIAEXAMPLE:topsecret@bucket/ws")
    result = cli("validate", path)
    assert result.exit_code != 0
    assert "p.yaml:3" in result.output
    assert "carries credentials" in result.output
    assert "topsecret" not in result.output


def test_a_workspace_that_does_not_answer_fails_the_run_before_any_task(
    s3: S3Bucket, write: WritePipeline, project: Path, cli: Cli
) -> None:
    path = _pipeline(write, f"s3://missing-bucket/ws?endpoint={s3.endpoint}")
    result = cli("run", path, "--no-progress")
    assert result.exit_code != 0
    assert "bucket 'missing-bucket' does not exist" in result.output
    assert not (project / "out").exists()


VIEW = """
    pipeline: viewed
    WORKSPACE
    tasks:
      - id: numbers
        sql: select range as x from range(3)
      - id: published
        load: {input: numbers, to: duckdb, path: warehouse.duckdb, table: numbers, mode: replace}
        materialize: view
"""


def test_a_duckdb_view_over_an_object_store_workspace_is_refused_before_it_runs(
    s3: S3Bucket, write: WritePipeline, project: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write("v.yaml", VIEW.replace("WORKSPACE", f"workspace: {s3.uri('ws')}"))
    result = cli("validate", path)
    assert result.exit_code != 0
    assert "v.yaml:8" in result.output
    assert "the workspace is an object store" in result.output
    # named by the environment instead: refused when the run starts, nothing loaded
    path = write("v.yaml", VIEW.replace("WORKSPACE", ""))
    monkeypatch.setenv("ARROWLINE_WORKSPACE", s3.uri("ws"))
    result = cli("run", path, "--no-progress")
    assert result.exit_code != 0
    assert "task 'published' at" in result.output
    assert "v.yaml:6" in result.output
    assert not (project / "warehouse.duckdb").exists()
    assert s3.keys("ws") == []


def test_openlineage_names_outputs_in_the_store_as_s3_datasets(
    s3: S3Bucket, write: WritePipeline, project: Path
) -> None:
    import json

    text = PIPELINE.replace("WORKSPACE", s3.uri("ws")).replace(
        "retention:", "openlineage: {file: events.jsonl}\n    retention:"
    )
    write("udfs.py", UDFS)
    (project / "ready.flag").write_text("ok")
    assert run(write("p.yaml", text)).ok
    events = [json.loads(line) for line in (project / "events.jsonl").read_text().splitlines()]
    outputs = {(d["namespace"], d["name"]) for e in events for d in e.get("outputs", [])}
    assert (f"s3://{s3.bucket}", "ws/lake/doubled") in outputs


def test_task_ids_with_underscores_publish_and_read_back_run_after_run(
    s3: S3Bucket, write: WritePipeline, project: Path
) -> None:
    text = f"""
        pipeline: _under
        workspace: {s3.uri("ws")}
        tasks:
          - id: _base
            sql: select 1 as x
          - id: top
            sql: select x + 1 as y from _base
    """
    path = write("u.yaml", text)
    for _ in range(2):  # the second run reads the first's outputs (drift, plan schemas)
        result = run(path)
        assert result.ok, {k: t.error for k, t in result.tasks.items() if t.error}


@pytest.mark.parametrize("run_id", ["manual run 1", "../../../../escaped", ".hidden", "a/b"])
def test_a_run_id_of_the_callers_own_that_would_name_a_path_is_refused(
    write: WritePipeline, project: Path, run_id: str
) -> None:
    from engine.core.errors import ParameterError

    path = write("p.yaml", "pipeline: ids\ntasks:\n  - id: a\n    sql: select 1 as x\n")
    with pytest.raises(ParameterError, match="is not allowed"):
        run(path, run_id=run_id)
    assert not list(project.rglob("escaped"))
    assert run(path, run_id="nightly-2026.12.07").ok


def test_gc_by_name_never_takes_the_workspace_from_the_catalog(
    s3: S3Bucket, write: WritePipeline, project: Path, cli: Cli
) -> None:
    (project / "ready.flag").write_text("ok")
    write("udfs.py", UDFS)
    text = PIPELINE.replace("WORKSPACE", s3.uri("ws")).replace("keep_runs: 1", "keep_runs: 5")
    path = write("p.yaml", text)
    for n in (3, 4):
        assert run(path, params={"n": n}).ok
    before = s3.keys("ws")
    # by name, its file gone and no $ARROWLINE_WORKSPACE: the project's own folder only (the
    # catalog's recorded definition names the store, and is not believed)
    away = path.rename(path.with_suffix(".away"))
    result = cli("gc", "lake", "--keep-runs", "0")
    assert result.exit_code == 0, result.output
    assert s3.keys("ws") == before
    # by name with its file in the project, or by the file: the file's store
    away.rename(path)
    result = cli("gc", "lake", "--keep-runs", "0")
    assert result.exit_code == 0, result.output
    assert len(s3.keys("ws")) < len(before)
    assert "would" not in result.output
    assert "removed 4 outputs" in result.output, result.output


def test_resuming_in_another_workspace_is_refused_before_anything_runs(
    s3: S3Bucket, write: WritePipeline, project: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _pipeline(write, "null")
    failed = run(path)  # local workspace; flaky fails
    assert not failed.ok
    (project / "ready.flag").write_text("ok")
    monkeypatch.setenv("ARROWLINE_WORKSPACE", s3.uri("ws"))
    result = cli("run", path, "--resume", "last", "--no-progress")
    assert result.exit_code != 0
    assert "in another workspace" in result.output
    assert s3.keys("ws") == []
    with engine.open(project) as notebook:
        states = notebook.runs()["state"].to_list()
    assert "PENDING" not in states
    assert "RUNNING" not in states


def test_gc_removes_this_hosts_copies_of_outputs_another_host_removed(
    s3: S3Bucket,
    write: WritePipeline,
    project: Path,
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (project / "ready.flag").write_text("ok")
    path = _pipeline(write, s3.uri("ws"))
    first = run(path)  # host A: its cache holds run 1's outputs
    host_a = Path(os.environ["ARROWLINE_CACHE_DIR"])
    monkeypatch.setenv("ARROWLINE_CACHE_DIR", str(tmp_path / "host-b"))
    assert run(path, params={"n": 4}).ok  # host B; keep_runs 1 removes run 1 from the store
    stale = [p for p in host_a.rglob("*") if first.run_id in p.name]
    assert stale
    monkeypatch.setenv("ARROWLINE_CACHE_DIR", str(host_a))
    result = cli("gc", str(path))
    assert result.exit_code == 0, result.output
    assert not any(
        p.name == "part-00000.parquet" for p in host_a.rglob("*") if first.run_id in str(p)
    )

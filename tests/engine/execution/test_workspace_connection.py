"""An object-store workspace read with a named `kind: s3` connection
(`workspace: s3://bucket/prefix?connection=NAME`), against a moto server that checks every
request's signature: the connection's credentials are the ones used (the environment's are
refused there), they reach no catalog row or log line, and a setting naming a connection that
is not an s3 one is refused at its line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from click.testing import Result

import engine
from engine.api.pipeline import run
from engine.core.errors import PipelineInvalid, StateError
from engine.tasks.checks import check_file
from tests.conftest import WritePipeline
from tests.s3_server import GuardedStore

Cli = Callable[..., Result]

PIPELINE = """
pipeline: guarded
workspace: WORKSPACE
connections:
  lake:
    kind: s3
    endpoint: ENDPOINT
    access_key_id: "${env:LAKE_KEY_ID}"
    secret_access_key: "${env:LAKE_SECRET}"
tasks:
  - id: numbers
    sql: select range as id from range(100)
  - id: total
    sql: select sum(id) as s from numbers
"""


@pytest.fixture
def lake(
    guarded_s3: GuardedStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[GuardedStore, str]:
    """A bucket of the guarded store, its key in LAKE_* and wrong ones in AWS_*."""
    monkeypatch.setenv("LAKE_KEY_ID", guarded_s3.access_key)
    monkeypatch.setenv("LAKE_SECRET", guarded_s3.secret_key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "not-the-lakes")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-lakes-either")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("ARROWLINE_WORKSPACE", raising=False)
    monkeypatch.setenv("ARROWLINE_CACHE_DIR", str(tmp_path / "object-cache"))
    return guarded_s3, guarded_s3.bucket()


def _pipeline(write: WritePipeline, store: GuardedStore, workspace: str) -> Path:
    text = PIPELINE.replace("WORKSPACE", workspace).replace("ENDPOINT", store.endpoint)
    return write("p.yaml", text)


def test_the_workspace_is_read_and_written_with_its_connections_credentials(
    lake: tuple[GuardedStore, str], write: WritePipeline, project: Path
) -> None:
    store, bucket = lake
    path = _pipeline(write, store, f"s3://{bucket}/ws?connection=lake")
    result = run(path)
    assert result.ok, {k: t.error for k, t in result.tasks.items() if t.error}
    with engine.open(project) as notebook:
        assert notebook.table("total").collect().item() == sum(range(100))
    # the secret is in no file the run wrote: catalog, run log, outputs' cache
    for file in project.rglob("*"):
        if file.is_file():
            assert store.secret_key.encode() not in file.read_bytes(), file
    # resume and a second run read the first run's outputs at the same store
    second = run(path, select=["total"])
    assert second.ok, {k: t.error for k, t in second.tasks.items() if t.error}
    assert second.tasks["numbers"].reused_from == result.run_id


def test_without_the_connection_the_environments_credentials_are_refused(
    lake: tuple[GuardedStore, str], write: WritePipeline
) -> None:
    """The control: the store does check credentials, so the run above used the connection's."""
    store, bucket = lake
    path = _pipeline(write, store, f"s3://{bucket}/ws?endpoint={store.endpoint}")
    with pytest.raises(StateError, match="ACCESS_DENIED") as refused:
        run(path)
    assert "AWS_ACCESS_KEY_ID" in (refused.value.hint or "")


def test_check_lists_the_stores_buckets_with_the_connection(
    lake: tuple[GuardedStore, str], write: WritePipeline, cli: Cli
) -> None:
    store, bucket = lake
    path = _pipeline(write, store, f"s3://{bucket}/ws?connection=lake")
    result = cli("check", str(path))
    assert result.exit_code == 0, result.output
    assert "bucket(s) visible" in result.output
    assert store.secret_key not in result.output


def test_a_connection_without_its_secret_key_is_refused_when_the_run_starts(
    lake: tuple[GuardedStore, str], write: WritePipeline
) -> None:
    store, bucket = lake
    text = PIPELINE.replace("WORKSPACE", f"s3://{bucket}/ws?connection=lake")
    text = text.replace("ENDPOINT", store.endpoint).replace(
        '    secret_access_key: "${env:LAKE_SECRET}"\n', ""
    )
    with pytest.raises(Exception, match="access_key_id and secret_access_key go together"):
        run(write("p.yaml", text))


@pytest.mark.parametrize(
    ("setting", "connections", "code", "said"),
    [
        ("?connection=laek", "lake: {kind: s3}", "unknown-connection", "Did you mean 'lake'"),
        (
            "?connection=lake",
            "lake: {kind: postgres, uri: 'postgresql://x/y'}",
            "connection-kind",
            "which is postgres: a workspace needs a `kind: s3` connection",
        ),
        ("?connection=la%20ke", "lake: {kind: s3}", "invalid", "is not a connection's name"),
    ],
)
def test_a_workspace_naming_a_wrong_connection_is_refused_at_its_line(
    write: WritePipeline, setting: str, connections: str, code: str, said: str
) -> None:
    path = write(
        "p.yaml",
        f"pipeline: w\nconnections:\n  {connections}\nworkspace: s3://bucket/ws{setting}\n"
        "tasks:\n  - id: a\n    sql: select 1 as x\n",
    )
    _, problems = check_file(path)
    found = [p for p in problems if said in p.message]
    assert found, [(p.code, p.message) for p in problems]
    assert found[0].line == 4
    if code != "invalid":
        assert found[0].code == code
    with pytest.raises(PipelineInvalid):
        run(path)


def test_a_new_process_reads_the_outputs_with_the_pipeline_files_connection(
    lake: tuple[GuardedStore, str],
    write: WritePipeline,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A notebook in a new process learns the store and its connection from the project's
    pipeline file (resolved in its own environment), never from the catalog; without the
    file's variables set it is refused by the store, and handed no secret."""
    import engine.core.s3

    store, bucket = lake
    path = _pipeline(write, store, f"s3://{bucket}/ws?connection=lake")
    assert run(path).ok
    engine.core.s3._TRUSTED.clear()  # as in a new process
    engine.core.s3._CONNECTIONS.clear()
    with engine.open(project) as notebook:
        assert notebook.table("total").collect().item() == sum(range(100))
    engine.core.s3._TRUSTED.clear()
    engine.core.s3._CONNECTIONS.clear()
    monkeypatch.delenv("LAKE_SECRET")  # the file's variable is not set in this process
    with engine.open(project) as notebook, pytest.raises(StateError) as refused:
        notebook.table("total").select(pl.len()).collect()
    assert "connection 'lake'" in str(refused.value)  # not the environment's key, silently
    assert "LAKE_SECRET is not set" in str(refused.value)  # and why
    engine.core.s3._TRUSTED.clear()
    engine.core.s3._CONNECTIONS.clear()
    path.unlink()  # the file is gone: the environment says where (the store), not with what
    monkeypatch.setenv("AWS_ENDPOINT_URL", store.endpoint)
    with engine.open(project) as notebook, pytest.raises(StateError, match="ACCESS_DENIED"):
        notebook.table("total").select(pl.len()).collect()


def test_two_pipelines_naming_the_same_connection_each_use_their_own(
    lake: tuple[GuardedStore, str], write: WritePipeline, project: Path
) -> None:
    """One process (the scheduler's, a notebook) may hold two pipelines whose `lake` differ:
    each workspace is read with its own pipeline's, never the one resolved last."""
    store, bucket = lake
    good = _pipeline(write, store, f"s3://{bucket}/team-a?connection=lake")
    # the other pipeline's workspace is in the same bucket, under another prefix; the notebook
    # below resolves both files (p.yaml first, q.yaml last)
    wrong = PIPELINE.replace("WORKSPACE", f"s3://{bucket}/team-b?connection=lake")
    wrong = wrong.replace("ENDPOINT", store.endpoint).replace("guarded", "other")
    wrong = wrong.replace("${env:LAKE_SECRET}", "not-the-secret")
    bad = write("q.yaml", wrong)
    assert run(good).ok
    with pytest.raises(StateError, match="ACCESS_DENIED"):
        run(bad)  # its own (wrong) key, not the one the first pipeline resolved
    assert run(good, select=["total"]).ok  # and the first still reads with its own
    import engine.core.s3

    engine.core.s3._TRUSTED.clear()  # a new process: its notebook resolves both files' `lake`
    engine.core.s3._CONNECTIONS.clear()
    with engine.open(project) as notebook:
        assert notebook.table("total", pipeline="guarded").collect().item() == sum(range(100))


def test_an_environment_workspace_may_name_the_pipelines_connection(
    lake: tuple[GuardedStore, str],
    write: WritePipeline,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """$ARROWLINE_WORKSPACE=s3://...?connection=lake with the pipeline declaring `lake`: the
    run and a new process's notebook read and write with it."""
    import engine.core.s3

    store, bucket = lake
    monkeypatch.setenv("ARROWLINE_WORKSPACE", f"s3://{bucket}/env?connection=lake")
    text = PIPELINE.replace("workspace: WORKSPACE\n", "").replace("ENDPOINT", store.endpoint)
    result = run(write("p.yaml", text))
    assert result.ok, {k: t.error for k, t in result.tasks.items() if t.error}
    engine.core.s3._TRUSTED.clear()  # as in a new process
    engine.core.s3._CONNECTIONS.clear()
    with engine.open(project) as notebook:
        assert notebook.table("total").collect().item() == sum(range(100))

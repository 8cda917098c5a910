"""The workspace interface, held to one contract by three implementations: the project's local
folder (LocalWorkspace), outputs in another pyarrow.fs filesystem (FileSystemWorkspace over a
SubTreeFileSystem, staging on the local disk), and an S3-compatible object store (a real moto
server on loopback, ObjectStoreWorkspace), so the executor, planner and retention can rely on
what the interface says rather than on a folder layout."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.errors import StateError
from engine.state.objectstore import ObjectStoreWorkspace
from engine.state.workspace import (
    FileSystemWorkspace,
    LocalWorkspace,
    PublishedOutput,
    Workspace,
)


def _local(tmp_path: Path) -> Workspace:
    return LocalWorkspace(tmp_path / "project" / ".arrowline" / "workspace")


def _elsewhere(tmp_path: Path) -> Workspace:
    store = tmp_path / "store"
    store.mkdir()
    subtree = pafs.SubTreeFileSystem(str(store), pafs.LocalFileSystem())
    return FileSystemWorkspace(subtree, Path("outputs"), scratch=tmp_path / "scratch")


def _object_store(tmp_path: Path, request: pytest.FixtureRequest) -> Workspace:
    bucket = request.getfixturevalue("s3")
    return ObjectStoreWorkspace.open(bucket.uri("outputs"), scratch=tmp_path / "scratch")


@pytest.fixture(params=["local", "filesystem", "s3"])
def workspace(request: pytest.FixtureRequest, tmp_path: Path) -> Workspace:
    if request.param == "s3":
        return _object_store(tmp_path, request)
    return _local(tmp_path) if request.param == "local" else _elsewhere(tmp_path)


def _filesystem(workspace: Workspace) -> pafs.FileSystem:
    """Where a table's files are: an object store's are copied to the local disk first."""
    if isinstance(workspace, ObjectStoreWorkspace):
        return pafs.LocalFileSystem()
    return workspace.filesystem


def _stage(workspace: Workspace, run_id: str, *tables: pa.Table, attempt: int = 1) -> Path:
    """An attempt's output of task t of pipeline p, one part per table, as a task writes it."""
    staging = Workspace.prepare_staging(workspace.staging("p", "t", run_id, attempt))
    for number, table in enumerate(tables):
        pq.write_table(table, staging / f"part-{number:05d}.parquet")
    return staging


def _read(workspace: Workspace, files: tuple[Path, ...]) -> pa.Table:
    """What a reader gets back, through the workspace's filesystem."""
    parts = [pq.read_table(str(f), filesystem=_filesystem(workspace)) for f in files]
    return pa.concat_tables(parts)


def test_a_published_output_is_read_back_whole_and_becomes_latest(workspace: Workspace) -> None:
    staging = _stage(workspace, "r1", pa.table({"x": [1, 2]}), pa.table({"x": [3]}))
    published = workspace.publish(staging, "p", "t", "r1")
    assert published == workspace.output_dir("p", "t", "r1")
    assert not staging.exists()
    table = workspace.table("t", "r1", published)
    assert (table.task_id, table.run_id, table.num_rows) == ("t", "r1", 3)
    assert table.schema.names == ["x"]
    assert len(table.files) == 2
    assert table.bytes > 0
    assert _read(workspace, table.files).column("x").to_pylist() == [1, 2, 3]
    assert workspace.latest_run("p", "t") == "r1"
    assert workspace.latest_run("p", "other") is None


def test_publishing_a_run_again_replaces_its_output_and_leaves_nothing_beside_it(
    workspace: Workspace,
) -> None:
    workspace.publish(_stage(workspace, "r1", pa.table({"x": [1, 2]})), "p", "t", "r1")
    again = _stage(workspace, "r1", pa.table({"x": [9]}), attempt=2)  # a resumed task
    published = workspace.publish(again, "p", "t", "r1")
    table = workspace.table("t", "r1", published)
    assert _read(workspace, table.files).column("x").to_pylist() == [9]
    assert list(workspace.outputs("p")) == [PublishedOutput("t", "r1", published)]


def test_a_newer_run_moves_latest_and_both_outputs_stay_listed(workspace: Workspace) -> None:
    first = workspace.publish(_stage(workspace, "r1", pa.table({"x": [1]})), "p", "t", "r1")
    second = workspace.publish(_stage(workspace, "r2", pa.table({"x": [2]})), "p", "t", "r2")
    assert workspace.latest_run("p", "t") == "r2"
    assert list(workspace.outputs("p")) == [
        PublishedOutput("t", "r1", first),
        PublishedOutput("t", "r2", second),
    ]
    assert list(workspace.outputs("another")) == []


def test_quarantined_rows_are_found_beside_the_output(workspace: Workspace) -> None:
    staging = _stage(workspace, "r1", pa.table({"x": [1]}))
    (staging / "quarantine").mkdir()
    pq.write_table(pa.table({"x": [7]}), staging / "quarantine" / "part-00000.parquet")
    published = workspace.publish(staging, "p", "t", "r1")
    (found,) = workspace.quarantine_files(published)
    assert pq.read_table(str(found), filesystem=_filesystem(workspace)).num_rows == 1
    assert workspace.table("t", "r1", published).num_rows == 1  # the good rows only
    assert workspace.quarantine_files(workspace.output_dir("p", "t", "nothing")) == ()


def test_a_missing_output_is_a_state_error_naming_task_and_run(workspace: Workspace) -> None:
    with pytest.raises(StateError, match="output of task 't' from run gone is missing"):
        workspace.table("t", "gone", workspace.output_dir("p", "t", "gone"))


def test_an_output_is_sized_then_removed_and_removing_it_twice_is_harmless(
    workspace: Workspace,
) -> None:
    staging = _stage(workspace, "r1", pa.table({"x": list(range(100))}))
    sizes = sum(path.stat().st_size for path in staging.iterdir())
    published = workspace.publish(staging, "p", "t", "r1")
    assert workspace.output_bytes(published) == sizes
    workspace.remove_output(published)
    assert list(workspace.outputs("p")) == []
    workspace.remove_output(published)
    assert workspace.output_bytes(published) == 0


def test_unpublished_attempts_are_not_outputs_and_sweeping_removes_only_that_runs(
    workspace: Workspace,
) -> None:
    dead = _stage(workspace, "dead", pa.table({"x": [1]}))
    alive = _stage(workspace, "alive", pa.table({"x": [1]}))
    assert list(workspace.outputs("p")) == []
    workspace.sweep_staging("p", "dead")
    assert not dead.exists()
    assert alive.exists()
    workspace.discard(alive)
    assert not alive.exists()
    workspace.discard(alive)  # an attempt discarded twice (abandoned, then finished late)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    parts=st.lists(
        st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), max_size=50),
        min_size=1,
        max_size=4,
    )
)
def test_what_is_staged_is_what_is_read_back(
    workspace: Workspace, parts: list[list[int | None]]
) -> None:
    tables = [pa.table({"x": pa.array(values, pa.int64())}) for values in parts]
    published = workspace.publish(_stage(workspace, "r", *tables), "p", "t", "r")
    table = workspace.table("t", "r", published)
    assert table.num_rows == sum(len(values) for values in parts)
    assert _read(workspace, table.files).equals(pa.concat_tables(tables))


def test_the_project_workspace_keeps_its_folder_layout_on_the_local_disk(tmp_path: Path) -> None:
    workspace = Workspace.for_project(tmp_path)
    assert isinstance(workspace, LocalWorkspace)
    assert workspace.root == tmp_path / ".arrowline" / "workspace"
    staging = _stage(workspace, "r1", pa.table({"x": [1]}))
    assert staging == workspace.root / "p" / "t" / ".staging-r1-1"
    workspace.publish(staging, "p", "t", "r1")
    task = tmp_path / ".arrowline" / "workspace" / "p" / "t"
    assert sorted(path.name for path in task.iterdir()) == ["LATEST", "r1"]
    assert (task / "LATEST").read_text(encoding="utf-8") == "r1\n"
    assert [path.name for path in (task / "r1").iterdir()] == ["part-00000.parquet"]
    table = workspace.table("t", "r1", task / "r1")
    assert table.reader().read_all().column("x").to_pylist() == [1]  # local: InputTable reads it


def test_a_link_in_the_local_workspace_is_never_an_output_so_never_removed(
    tmp_path: Path,
) -> None:
    workspace = LocalWorkspace(tmp_path / "workspace")
    precious = tmp_path / "precious"
    (precious / "r9").mkdir(parents=True)
    (precious / "r9" / "part-00000.parquet").write_bytes(b"keep me")
    (workspace.root / "p").mkdir(parents=True)
    (workspace.root / "p" / "linked").symlink_to(precious)
    workspace.publish(_stage(workspace, "r1", pa.table({"x": [1]})), "p", "t", "r1")
    assert [output.task_id for output in workspace.outputs("p")] == ["t"]

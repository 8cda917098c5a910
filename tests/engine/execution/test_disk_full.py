"""A full disk, for real: a small tmpfs under the project (mounted as root, as on the test
machines), and `arrowline run` as a subprocess. The user gets one line that names the full
filesystem and the path, exit 1, no traceback and never an aborted interpreter (exit 134);
the run is marked FAILED whenever the catalog can still be written."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from engine.core.errors import DiskFull, disk_full
from engine.core.parquet import ParquetBatchWriter
from engine.core.states import RunState, TaskState
from engine.state.catalog import CatalogReader
from engine.state.db import SqliteDatabase
from tests.engine.execution.test_crash import arrowline, finish

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.fail("these tests mount a 2 MB tmpfs and need root (the test machines run as root)")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


def fill(disk: Path) -> None:
    """Take every free byte of the disk."""
    descriptor = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(descriptor, b"\0" * 65536):
            pass
    except OSError:
        pass
    finally:
        os.close(descriptor)


def orders_csv(tmp_path: Path, rows: int) -> Path:
    path = tmp_path / f"orders-{rows}.csv"  # outside the small disk: only outputs go there
    lines = ["id,amount,region"] + [f"{i},{i * 1.5},{'nesw'[i % 4]}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


PIPELINES = {
    # an extract whose Parquet output does not fit (Arrow's writer fails)
    "extract": ("orders", "tasks:\n  - id: orders\n    extract: {from: files, path: CSV}\n"),
    # a DuckDB query whose output does not fit, while the run's heartbeat cannot be written
    "sql": (
        "grown",
        "tasks:\n  - id: orders\n    extract: {from: files, path: CSV}\n"
        "  - id: grown\n    sql: select o.*, n.range as copy from orders o, range(0, 200) n\n",
    ),
}


@pytest.mark.parametrize("kind", ["extract", "sql"])
def test_a_task_that_fills_the_disk_fails_the_run_with_one_line_naming_it(
    small_disk: Path, tmp_path: Path, kind: str
) -> None:
    failing, tasks = PIPELINES[kind]
    # 400k rows: their Parquet (~3.3 MB) must not fit the 2 MB disk, numbers without dictionaries
    csv = orders_csv(tmp_path, 400_000 if kind == "extract" else 20_000)
    (small_disk / "p.yaml").write_text(f"pipeline: full\n{tasks.replace('CSV', str(csv))}")
    for _ in range(2):  # the interpreter used to abort some of the time, not every time
        code, stdout, stderr = finish(arrowline(small_disk, "run", "p.yaml", "--no-progress"))
        assert code == 1, stderr
        assert "Traceback" not in stderr + stdout
        assert "Fatal Python error" not in stderr
        said = " ".join(stderr.split())
        assert f"no space left on {small_disk} (writing {small_disk}/.arrowline/workspace" in said
    with CatalogReader(small_disk / ".arrowline" / "catalog.db") as catalog:
        runs = catalog.runs()
        assert [run.state for run in runs] == [RunState.FAILED, RunState.FAILED]
        row = catalog.task_run(runs[0].run_id, failing)
        assert row is not None
        assert (row.state, row.error_kind) == (TaskState.FAILED, "DiskFull")
    assert not list(small_disk.rglob(".staging-*"))  # the partial output gave its space back


def test_a_catalog_that_cannot_be_written_is_one_line_and_exit_1(
    small_disk: Path, tmp_path: Path
) -> None:
    csv = orders_csv(tmp_path, 10)
    (small_disk / "p.yaml").write_text(
        f"pipeline: full\n{PIPELINES['extract'][1].replace('CSV', str(csv))}"
    )
    fill(small_disk)
    code, stdout, stderr = finish(arrowline(small_disk, "run", "p.yaml", "--no-progress"))
    assert code == 1
    assert "Traceback" not in stderr + stdout
    said = " ".join(stderr.split())  # as one line, whatever width the console wrapped it at
    assert said.startswith(f"error: no space left on {small_disk} (")
    assert f"{small_disk}/.arrowline/" in said  # the lock or the catalog, named
    (small_disk / "filler").unlink()
    code, _, stderr = finish(arrowline(small_disk, "run", "p.yaml", "--no-progress"))
    assert code == 0, stderr  # with space again, it runs


def test_the_catalog_says_its_disk_is_full_and_stays_usable(small_disk: Path) -> None:
    db = SqliteDatabase(small_disk / "catalog.db", writable=True)
    db.execute("create table t (x text)")
    fill(small_disk)
    with pytest.raises(DiskFull) as info, db.transaction():
        db.execute("insert into t values (?)", ("x" * 1_000_000,))
    assert info.value.mount == small_disk
    assert f"no space left on {small_disk}" in info.value.message
    (small_disk / "filler").unlink()
    with db.transaction():  # no transaction left open by the failure
        db.execute("insert into t values ('y')")
    assert [tuple(row) for row in db.execute("select x from t")] == [("y",)]
    db.close()


def test_a_new_catalog_on_a_full_disk_says_so(small_disk: Path) -> None:
    fill(small_disk)
    with pytest.raises(DiskFull, match=f"no space left on {small_disk} "):
        SqliteDatabase(small_disk / ".arrowline" / "catalog.db", writable=True)


def test_a_parquet_writer_on_a_full_disk_gives_its_space_back(small_disk: Path) -> None:
    free = os.statvfs(small_disk).f_bavail
    table = pa.table({"x": [os.urandom(1000) for _ in range(4000)]})  # 4 MB, incompressible
    with (
        pytest.raises(DiskFull) as info,
        ParquetBatchWriter(
            small_disk / "out.parquet", table.schema, row_group_rows=100_000
        ) as writer,
    ):
        writer.write(table)
    assert info.value.path == small_disk / "out.parquet"
    assert not (small_disk / "out.parquet").exists()
    assert os.statvfs(small_disk).f_bavail == free  # no descriptor holds the removed file


def test_disk_full_knows_the_forms_a_full_disk_takes(tmp_path: Path) -> None:
    target = tmp_path / "out" / "part.parquet"
    arrow = OSError(28, "Error writing bytes to file. Detail: [errno 28] No space left on device")
    assert disk_full(arrow, target) is not None
    named = OSError(28, "No space left on device", str(tmp_path / "other"))
    assert (found := disk_full(named, target)) is not None
    assert found.path == tmp_path / "other"
    duck = RuntimeError('IO Error: Could not write file "/data/x.parquet": No space left on device')
    assert (found := disk_full(duck, target)) is not None
    assert found.path == Path("/data/x.parquet")
    assert disk_full(OSError(13, "Permission denied"), target) is None
    assert disk_full(ValueError("no space left in the schedule"), target) is None

"""Kill -9 a real `arrowline run` at its most dangerous moments, then resume it.

Each scenario starts the pipeline in a subprocess with ARROWLINE_FAULT naming a fault point
(engine.core.faults); the process announces the point on stderr and waits there; the test sends
SIGKILL. After the kill: nothing partial is visible in the workspace or the sink, the catalog's
RUNNING run is reported stale and, once the next process takes the lock, INTERRUPTED;
`arrowline run --resume` finishes it; and the sink holds exactly the rows of a clean run, no
fewer and no duplicates. Sinks load in append mode, the mode where a repeated load would show.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from engine.core.states import RunState, TaskState
from engine.state.catalog import CatalogReader
from tests.conftest import PgSchema

pytestmark = pytest.mark.slow

ROWS_PER_FILE = 30_000
FILES = 3


def write_data(project: Path) -> None:
    data = project / "data"
    data.mkdir()
    for f in range(FILES):
        lines = ["id,amount,region"]
        for i in range(f * ROWS_PER_FILE, (f + 1) * ROWS_PER_FILE):
            lines.append(f"{i},{(i * 37) % 1000 / 10},{'nesw'[i % 4]}")
        (data / f"orders-{f}.csv").write_text("\n".join(lines) + "\n")


def pipeline_text(name: str, load: str) -> str:
    return textwrap.dedent(
        f"""
        pipeline: {name}
        connections:
          wh: {{kind: postgres, uri: "${{env:TEST_PG_URI}}"}}
        tasks:
          - id: orders
            extract: {{from: files, path: data/orders-*.csv, batch_size: 8192}}
          - id: priced
            sql: select id, amount, region, amount * 1.2 as gross from orders
          - id: publish
            load: {load}
        """
    )


SINKS = {
    "parquet": "{input: priced, to: parquet, path: out/orders, mode: append}",
    "duckdb": "{input: priced, to: duckdb, path: out/wh.duckdb, table: orders, mode: append}",
    "delta": "{input: priced, to: delta, path: out/orders_delta, mode: append}",
    "iceberg": "{input: priced, to: iceberg, table: out.orders, mode: append}",
    "postgres": "{input: priced, to: postgres, connection: wh, table: TABLE, mode: append}",
}


def sink_rows(project: Path, sink: str, table: str) -> list[tuple[object, ...]]:
    """The sink's contents, sorted: what a reader of the target sees."""
    if sink == "parquet":
        target = project / "out" / "orders"
        visible = [p for p in target.rglob("*.parquet") if not p.name.startswith(".")]
        if not visible:
            return []
        table_ = pq.read_table(visible)
        columns = [table_.column(n).to_pylist() for n in ("id", "amount", "region", "gross")]
        return sorted(zip(*columns, strict=True))
    if sink == "duckdb":
        path = project / "out" / "wh.duckdb"
        if not path.exists():
            return []
        with duckdb.connect(str(path), read_only=True) as connection:
            exists = connection.execute(
                "select count(*) from information_schema.tables where table_name = 'orders'"
            ).fetchone()
            if not exists or not exists[0]:
                return []
            return sorted(
                connection.execute("select id, amount, region, gross from orders").fetchall()
            )
    if sink == "delta":
        from deltalake import DeltaTable

        path = project / "out" / "orders_delta"
        if not DeltaTable.is_deltatable(str(path)):
            return []
        table_ = DeltaTable(str(path)).to_pyarrow_table()
        columns = [table_.column(n).to_pylist() for n in ("id", "amount", "region", "gross")]
        return sorted(zip(*columns, strict=True))
    if sink == "iceberg":
        from pyiceberg.catalog.sql import SqlCatalog

        folder = project / ".arrowline" / "iceberg"
        if not (folder / "catalog.db").exists():
            return []
        catalog = SqlCatalog(
            "arrowline",
            uri=f"sqlite:///{folder / 'catalog.db'}",
            warehouse=(folder / "warehouse").as_uri(),
        )
        try:
            if not catalog.table_exists("out.orders"):
                return []
            table_ = catalog.load_table("out.orders").scan().to_arrow()
        finally:
            catalog.engine.dispose()
        columns = [table_.column(n).to_pylist() for n in ("id", "amount", "region", "gross")]
        return sorted(zip(*columns, strict=True))
    import adbc_driver_postgresql.dbapi as pgdb

    with pgdb.connect(os.environ["TEST_PG_URI"]) as connection, connection.cursor() as cursor:
        cursor.execute(f"select to_regclass('{table}') is not null")
        row = cursor.fetchone()
        if not row or not row[0]:
            return []
        cursor.execute(f"select id, amount, region, gross from {table}")
        return sorted(cursor.fetchall())


def arrowline(
    project: Path, *args: str, fault: str | None = None, hold: float | None = None
) -> subprocess.Popen[str]:
    """`arrowline ARGS` in `project`; with `fault`, it stops there (for `hold` seconds, or until
    killed)."""
    env = dict(os.environ)
    env.pop("ARROWLINE_FAULT", None)
    env.pop("ARROWLINE_FAULT_HOLD", None)
    if fault:
        env["ARROWLINE_FAULT"] = fault
    if hold is not None:
        env["ARROWLINE_FAULT_HOLD"] = str(hold)
    return subprocess.Popen(
        [sys.executable, "-m", "engine", *args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def signal_at(
    process: subprocess.Popen[str], fault: str, signum: int, timeout: float = 60
) -> tuple[int, str, str]:
    """Wait until the process reports the fault point, send it `signum`, and wait for it to
    end; returns its exit code, stdout and stderr."""
    assert process.stderr is not None
    seen: list[str] = []
    reached = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            seen.append(line)
            if f"ARROWLINE_FAULT reached {fault}" in line:
                reached.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not reached.wait(timeout):
        process.kill()
        process.wait(timeout=30)
        pytest.fail(f"the run never reached {fault}; stderr:\n{''.join(seen)}")
    os.kill(process.pid, signum)
    assert process.stdout is not None
    stdout = process.stdout.read()
    process.wait(timeout=120)
    reader.join(timeout=30)
    for stream in (process.stdout, process.stderr):
        stream.close()
    return process.returncode, stdout, "".join(seen)


def kill_at(process: subprocess.Popen[str], fault: str, timeout: float = 60) -> str:
    """Wait until the process reports the fault point, then SIGKILL it; returns its stderr."""
    code, _, stderr = signal_at(process, fault, signal.SIGKILL, timeout)
    assert code == -signal.SIGKILL
    return stderr


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout, stderr


def visible_workspace_files(project: Path) -> list[Path]:
    root = project / ".arrowline" / "workspace"
    return [
        p
        for p in root.rglob("*.parquet")
        if not any(part.startswith(".staging") for part in p.relative_to(root).parts)
    ]


SCENARIOS = [
    # (sink, fault point, what had happened when the process died)
    ("parquet", "extract.batch", "half-way through extracting"),
    ("parquet", "parquet.before_publish", "Parquet written, not yet renamed into place"),
    ("parquet", "workspace.after_publish", "an output published, the catalog not yet told"),
    ("duckdb", "duckdb.before_commit", "rows inserted, transaction open"),
    ("duckdb", "duckdb.after_commit", "committed, the catalog not yet told"),
    ("delta", "delta.input_read", "data files being written, nothing committed"),
    ("delta", "delta.after_commit", "committed, the catalog not yet told"),
    ("iceberg", "iceberg.files_written", "data files written, nothing committed"),
    ("iceberg", "iceberg.after_commit", "committed, the catalog not yet told"),
    ("postgres", "postgres.before_commit", "rows copied, transaction open"),
    ("postgres", "postgres.after_commit", "committed, the catalog not yet told"),
]


@pytest.fixture
def make_project(tmp_path: Path, pg: PgSchema) -> Callable[[str, str], tuple[Path, str]]:
    def make(sink: str, label: str) -> tuple[Path, str]:
        project = tmp_path / label
        project.mkdir()
        write_data(project)
        table = pg.table(f"orders_{label}")
        load = SINKS[sink].replace("TABLE", table)
        (project / "p.yaml").write_text(pipeline_text(pg.schema, load))
        return project, table

    return make


_CLEAN: dict[str, list[tuple[object, ...]]] = {}
"""A clean run's rows per sink, shared by that sink's scenarios."""


@pytest.mark.parametrize(("sink", "fault", "moment"), SCENARIOS, ids=[s[1] for s in SCENARIOS])
def test_kill_9_then_resume_loses_and_duplicates_nothing(
    make_project: Callable[[str, str], tuple[Path, str]], sink: str, fault: str, moment: str
) -> None:
    expected = _CLEAN.get(sink)
    if expected is None:  # a clean run's rows, once per sink (the data and pipeline are fixed)
        clean_project, clean_table = make_project(sink, "clean")
        code, _, stderr = finish(arrowline(clean_project, "run", "p.yaml", "--no-progress"))
        assert code == 0, stderr
        expected = sink_rows(clean_project, sink, clean_table)
        assert len(expected) == ROWS_PER_FILE * FILES
        if sink != "postgres":  # its table lives in the test's own schema
            _CLEAN[sink] = expected

    project, table = make_project(sink, "crashed")
    kill_at(arrowline(project, "run", "p.yaml", "--no-progress", fault=fault), fault)

    # Nothing partial is visible, whatever the moment of death.
    after_kill = sink_rows(project, sink, table)
    if fault.endswith("after_commit"):
        assert after_kill == expected, moment  # the commit happened: all of it
    else:
        assert after_kill == [], moment
    for path in visible_workspace_files(project):
        assert pq.ParquetFile(path).metadata.num_rows > 0  # complete files only
    catalog_path = project / ".arrowline" / "catalog.db"
    with CatalogReader(catalog_path) as catalog:
        (crashed,) = catalog.runs()
        assert crashed.state is RunState.RUNNING  # what the dead process left
    code, stdout, _ = finish(arrowline(project, "runs"))
    assert code == 0
    assert "stale" in stdout

    code, stdout, stderr = finish(arrowline(project, "run", "p.yaml", "--resume", "--no-progress"))
    assert code == 0, stderr
    with CatalogReader(catalog_path) as catalog:
        (resumed,) = catalog.runs()
        assert resumed.run_id == crashed.run_id
        assert resumed.state is RunState.SUCCESS
        assert resumed.resumes == 1
        states = [t.to_state for t in catalog.transitions(crashed.run_id) if t.task_id is None]
        assert states == ["PENDING", "RUNNING", "INTERRUPTED", "PENDING", "RUNNING", "SUCCESS"]
    assert sink_rows(project, sink, table) == expected
    assert not list((project / ".arrowline" / "workspace").rglob(".staging-*"))


def test_concurrent_runs_share_the_catalog_without_lost_updates(tmp_path: Path) -> None:
    """Three pipelines at once, and the same pipeline twice (the second waits for the first):
    every transition of every run is recorded, and the two runs of one pipeline never overlap."""
    tasks = "\n".join(
        f"  - id: t{i}\n    sql: select {i} as x" + (f" from t{i - 1}" if i else "")
        for i in range(15)
    )
    for name in ("alpha", "beta", "gamma"):
        (tmp_path / f"{name}.yaml").write_text(f"pipeline: {name}\ntasks:\n{tasks}\n")
    commands = [
        ("run", "alpha.yaml", "--no-progress"),
        ("run", "beta.yaml", "--no-progress"),
        ("run", "gamma.yaml", "--no-progress", "--if-running", "wait"),
        ("run", "gamma.yaml", "--no-progress", "--if-running", "wait"),
    ]
    processes = [arrowline(tmp_path, *command) for command in commands]
    outcomes = [finish(process) for process in processes]
    failed = {commands[i]: e for i, (code, _, e) in enumerate(outcomes) if code != 0}
    assert not failed, failed  # each failed command with its whole stderr
    with CatalogReader(tmp_path / ".arrowline" / "catalog.db") as catalog:
        runs = catalog.runs()
        assert sorted(r.pipeline for r in runs) == ["alpha", "beta", "gamma", "gamma"]
        for run in runs:
            assert run.state is RunState.SUCCESS
            moves = [(t.task_id, t.to_state) for t in catalog.transitions(run.run_id)]
            for i in range(15):
                task_moves = [state for task, state in moves if task == f"t{i}"]
                assert task_moves == ["QUEUED", "RUNNING", "SUCCESS"], (run.pipeline, i)
        first, second = sorted(
            (r for r in runs if r.pipeline == "gamma"), key=lambda r: r.started_at or ""
        )
        assert first.ended_at is not None
        assert second.started_at is not None
        assert second.started_at >= first.ended_at  # the second waited; no interleaving


def test_ctrl_c_after_every_task_succeeded_and_the_load_committed_is_a_success(
    make_project: Callable[[str, str], tuple[Path, str]],
) -> None:
    """SIGINT while the last load's commit is done but the executor has not heard of it: the
    cancel finds nothing left to stop, so the run is SUCCESS (exit 0), with no resume hint."""
    project, table = make_project("duckdb", "interrupted")
    process = arrowline(
        project, "run", "p.yaml", "--no-progress", fault="duckdb.after_commit", hold=2
    )
    code, stdout, stderr = signal_at(process, "duckdb.after_commit", signal.SIGINT)
    assert code == 0, stderr
    assert "cancelling" in stderr  # the signal did arrive while the run was going
    assert "resume it with" not in stdout + stderr
    with CatalogReader(project / ".arrowline" / "catalog.db") as catalog:
        (run,) = catalog.runs()
        assert run.state is RunState.SUCCESS
        assert {t.task_id: t.state for t in catalog.task_runs(run.run_id)} == dict.fromkeys(
            ("orders", "priced", "publish"), TaskState.SUCCESS
        )
    assert len(sink_rows(project, "duckdb", table)) == ROWS_PER_FILE * FILES


def test_ctrl_c_cancels_only_what_had_not_finished(
    make_project: Callable[[str, str], tuple[Path, str]],
) -> None:
    """SIGINT while the load commits, with a task after it still to run: the load stays
    SUCCESS, the task after it is CANCELLED, the run is CANCELLED (exit 130), and --resume runs
    only that task."""
    project, table = make_project("duckdb", "half")
    with (project / "p.yaml").open("a") as pipeline:
        pipeline.write(
            "  - id: archive\n"
            "    depends_on: [publish]\n"
            "    load: {input: priced, to: parquet, path: out/archive, mode: append}\n"
        )
    process = arrowline(
        project, "run", "p.yaml", "--no-progress", fault="duckdb.after_commit", hold=2
    )
    code, stdout, stderr = signal_at(process, "duckdb.after_commit", signal.SIGINT)
    assert code == 130, stderr
    assert "resume it with" in stdout
    catalog_path = project / ".arrowline" / "catalog.db"
    with CatalogReader(catalog_path) as catalog:
        (run,) = catalog.runs()
        assert run.state is RunState.CANCELLED
        states = {t.task_id: t.state for t in catalog.task_runs(run.run_id)}
    assert states == {
        "orders": TaskState.SUCCESS,
        "priced": TaskState.SUCCESS,
        "publish": TaskState.SUCCESS,
        "archive": TaskState.CANCELLED,
    }
    code, _, stderr = finish(arrowline(project, "run", "p.yaml", "--resume", "--no-progress"))
    assert code == 0, stderr
    with CatalogReader(catalog_path) as catalog:
        moves = catalog.transitions(run.run_id)
    ran = [t.task_id for t in moves if t.task_id and t.to_state == "RUNNING"]
    assert ran == ["orders", "priced", "publish", "archive"]  # each once: only archive again
    assert len(sink_rows(project, "duckdb", table)) == ROWS_PER_FILE * FILES

"""Where the catalog lives (embedded file or shared PostgreSQL), its SQL on both databases,
schema migration, concurrent creation, and the advisory locks of a shared catalog."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from engine.core.errors import StateError
from engine.core.states import RunState, TaskState
from engine.core.usage import RunUsage
from engine.state.catalog import Catalog, CatalogReader
from engine.state.db import CatalogLocation, _pyformat, catalog_location
from engine.state.locks import lock_is_held
from engine.state.migrations import SCHEMA_VERSION, forget_prepared
from engine.state.schema import TABLES
from tests.catalog_sql import sql, transaction
from tests.conftest import SharedCatalog, WritePipeline

RUN_USAGE = ("cpu_s", "peak_rss_bytes")
"""The columns version 10 added to runs."""


def test_the_default_catalog_is_the_embedded_file(tmp_path: Path) -> None:
    location = catalog_location(tmp_path)
    assert not location.shared
    assert location.path == tmp_path / ".arrowline" / "catalog.db"
    assert not location.exists()
    elsewhere = catalog_location(tmp_path, f"sqlite:{tmp_path / 'other.db'}")
    assert (elsewhere.shared, elsewhere.path) == (False, tmp_path / "other.db")


def test_a_postgres_uri_names_a_shared_catalog_and_its_password_stays_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "ARROWLINE_CATALOG",
        "postgresql://ops:catalog-pw@db.internal:5432/meta?schema=etl&sslmode=require",
    )
    location = catalog_location(tmp_path)
    assert location.shared
    assert location.exists()  # created on first use
    assert location.schema == "etl"
    assert location.uri == "postgresql://ops:catalog-pw@db.internal:5432/meta?sslmode=require"
    assert (
        location.describe()
        == "postgresql://ops:***@db.internal:5432/meta?sslmode=require (schema etl)"
    )
    assert catalog_location(tmp_path, "postgresql://h/db").schema == "arrowline"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (
            "mysql://root:pw@127.0.0.1/test",
            r"catalog mysql://root:\*\*\*@127.0.0.1/test names a 'mysql'",
        ),
        ("postgresql://h/db?schema=Robert'); drop", "is not a plain lower-case identifier"),
    ],
)
def test_other_databases_and_unsafe_schema_names_are_refused(
    tmp_path: Path, uri: str, message: str
) -> None:
    with pytest.raises(StateError, match=message):
        catalog_location(tmp_path, uri)


def test_an_unreachable_shared_catalog_fails_the_command_without_its_password(
    write: WritePipeline, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write("p.yaml", "pipeline: p\ntasks:\n  - id: a\n    sql: select 1 as x\n")
    monkeypatch.setenv("ARROWLINE_CATALOG", "postgresql://postgres:hunter2@127.0.0.1:1/test")
    result = cli("run", path)
    assert result.exit_code != 0
    assert "cannot reach the arrowline catalog at postgresql://postgres:***@127.0.0.1:1/test" in (
        result.stderr
    )
    assert "hunter2" not in result.stdout + result.stderr


def test_placeholders_are_rewritten_outside_quoted_text_and_percent_signs_kept() -> None:
    assert _pyformat("select ? where a = '?' and b = \"x?\" and c like '5%' || ?") == (
        "select %s where a = '?' and b = \"x?\" and c like '5%%' || %s"
    )


def test_an_embedded_catalog_of_the_previous_version_is_migrated_keeping_task_order(
    tmp_path: Path,
) -> None:
    path = tmp_path / "catalog.db"
    catalog = Catalog(path)
    tasks = [(f"t{i}", "sql", 0, "f") for i in (3, 1, 2)]  # insertion order, not name order
    catalog.create_run("r", "p", "v", None, {}, "2024-01-01", None, tasks, {})
    catalog.close()
    # what version 5 wrote: no ordinal column (task order was SQLite's rowid), and none of
    # version 7 (dead letters' resolution, removed outputs) nor of version 10 (runs' usage)
    connection = sqlite3.connect(path)
    for column in RUN_USAGE:
        connection.execute(f"alter table runs drop column {column}")
    connection.execute("alter table task_runs drop column ordinal")
    for column in ("cache_key", "fingerprint_parts", "output_hash"):
        connection.execute(f"alter table task_runs drop column {column}")
    for column in ("resolved_at", "resolved_by", "resolution_note"):
        connection.execute(f"alter table dead_letters drop column {column}")
    connection.execute("drop table removed_outputs")
    connection.execute("update meta set value = '5' where key = 'schema_version'")
    connection.commit()
    connection.close()

    catalog = Catalog(path)
    assert [t.task_id for t in catalog.task_runs("r")] == ["t3", "t1", "t2"]
    version = sql(catalog, "select value from meta where key = 'schema_version'")
    assert int(version[0][0]) == SCHEMA_VERSION == 10
    catalog.close()


@pytest.mark.usefixtures("each_catalog")
def test_a_version_6_catalog_gains_dead_letters_resolution_and_removed_outputs(
    tmp_path: Path,
) -> None:
    location = catalog_location(tmp_path)
    with Catalog(location) as catalog:
        catalog.create_run("r", "p", "v", None, {}, "2024-01-01", None, [("t", "sql", 0, "f")], {})
        letter = catalog.add_dead_letter(
            run_id="r",
            pipeline="p",
            task_id="t",
            pipeline_version="v",
            pipeline_file=None,
            params={},
            logical_date="2024-01-01",
            error_kind="data",
            transient=False,
            reason="bad row",
            attempts=[],
        )
        # what version 6 wrote: dead letters without their resolution, no removed outputs
        for column in ("resolved_at", "resolved_by", "resolution_note"):
            sql(catalog, f"alter table dead_letters drop column {column}")
        sql(catalog, "drop table removed_outputs")
        _as_version_7(catalog)
        sql(catalog, "update meta set value = '6' where key = 'schema_version'")
    forget_prepared()  # as a new process would, it looks at the version again

    with Catalog(location) as catalog:
        version = sql(catalog, "select value from meta where key = 'schema_version'")
        assert int(version[0][0]) == SCHEMA_VERSION
        assert catalog.dead_letter(letter).status == "open"
        resolved = catalog.resolve_dead_letter(letter, "obsolete run", by="ann@ops")
        catalog.record_removed_outputs("p", [("r", "t", 123)], "gc: keep_runs 0")
        removed = catalog.removed_output("r", "t")
    assert removed is not None
    assert (removed.pipeline, removed.bytes, removed.reason) == ("p", 123, "gc: keep_runs 0")
    assert (resolved.status, resolved.resolved_by, resolved.resolution_note) == (
        "resolved",
        "ann@ops",
        "obsolete run",
    )


def _as_version_7(catalog: Catalog) -> None:
    """What version 7 wrote: task runs without the cache's columns, runs without their usage."""
    for column in ("cache_key", "fingerprint_parts", "output_hash"):
        sql(catalog, f"alter table task_runs drop column {column}")
    for column in RUN_USAGE:
        sql(catalog, f"alter table runs drop column {column}")
    sql(catalog, "update meta set value = '7' where key = 'schema_version'")


@pytest.mark.usefixtures("each_catalog")
def test_a_version_7_catalog_gains_the_cache_columns_and_finds_outputs_by_key(
    tmp_path: Path,
) -> None:
    location = catalog_location(tmp_path)
    with Catalog(location) as catalog:
        catalog.create_run("r", "p", "v", None, {}, "2024-01-01", None, [("t", "sql", 0, "f")], {})
        _as_version_7(catalog)
    forget_prepared()

    with Catalog(location) as catalog:
        version = sql(catalog, "select value from meta where key = 'schema_version'")
        assert int(version[0][0]) == SCHEMA_VERSION
        for state in (TaskState.QUEUED, TaskState.RUNNING):
            catalog.transition_task("r", "t", state, "test")
        catalog.transition_task(
            "r",
            "t",
            TaskState.SUCCESS,
            "done",
            fields={
                "output_path": str(tmp_path),
                "cache_key": "k1",
                "fingerprint_parts": '{"definition": "d"}',
                "output_hash": "h",
            },
        )
        found = catalog.outputs_with_key("p", "t", "k1")
        assert catalog.outputs_with_key("p", "t", "k2") == []
    assert [(row.run_id, row.output_hash) for row in found] == [("r", "h")]
    assert found[0].fingerprint_parts == {"definition": "d"}


@pytest.mark.usefixtures("each_catalog")
def test_a_version_9_catalog_gains_what_runs_cost_and_keeps_its_older_runs(
    tmp_path: Path,
) -> None:
    location = catalog_location(tmp_path)
    with Catalog(location) as catalog:
        for run_id in ("old", "new"):
            catalog.create_run(run_id, "p", "v", None, {}, "2024-01-01", None, [], {})
        for column in RUN_USAGE:
            sql(catalog, f"alter table runs drop column {column}")
        sql(catalog, "update meta set value = '9' where key = 'schema_version'")
    forget_prepared()

    with Catalog(location) as catalog:
        version = sql(catalog, "select value from meta where key = 'schema_version'")
        assert int(version[0][0]) == SCHEMA_VERSION
        catalog.transition_run("new", RunState.RUNNING, "started")
        catalog.transition_run("new", RunState.SUCCESS, "finished", None, RunUsage(1.5, 2048))
        old, new = catalog.run("old"), catalog.run("new")
    assert (old.cpu_s, old.peak_rss_bytes) == (None, None)
    assert (new.cpu_s, new.peak_rss_bytes) == (1.5, 2048)


def test_processes_creating_a_fresh_shared_catalog_at_once_all_succeed(
    shared_catalog: SharedCatalog,
) -> None:
    code = (
        "import sys; from pathlib import Path; from engine.state.catalog import Catalog, "
        "catalog_location; c = Catalog(catalog_location(Path('.'))); "
        "c.create_run(sys.argv[1], 'p', 'v', None, {}, '2024-01-01', None, [], {}); c.close()"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", code, f"r{i}"], stderr=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, errors
    assert shared_catalog.rows("select count(*) from runs") == [(4,)]
    assert shared_catalog.rows("select value from meta") == [(str(SCHEMA_VERSION),)]


def _open_at_once(path: Path, start: Any, failures: Any) -> None:
    """In a forked process: wait for the others, then open (and so create) the catalog."""
    start.wait(timeout=60)
    try:
        Catalog(catalog_location(path.parent, f"sqlite:{path}")).close()
    except Exception as exc:
        failures.put(repr(exc))


@pytest.mark.slow
def test_processes_creating_a_fresh_embedded_catalog_at_once_all_succeed(tmp_path: Path) -> None:
    """Six processes opening a new catalog.db together race to switch it to WAL; SQLite tells
    a loser 'database is locked' without waiting (a few rounds in a hundred before the retry),
    which failed one of four runs started at once in an empty project."""
    context = multiprocessing.get_context("fork")
    failures = context.Queue()
    for round_ in range(60):
        path = tmp_path / f"r{round_}" / "catalog.db"
        path.parent.mkdir()
        start = context.Barrier(6)
        processes = [
            context.Process(target=_open_at_once, args=(path, start, failures)) for _ in range(6)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=60)
        assert [process.exitcode for process in processes] == [0] * 6
        assert failures.empty(), f"round {round_}: {failures.get()}"
        with CatalogReader(catalog_location(path.parent, f"sqlite:{path}")) as reader:
            assert reader.runs() == []
        assert sqlite3.connect(path).execute("pragma journal_mode").fetchone() == ("wal",)


def test_the_run_lock_of_a_killed_process_is_free_at_once_on_a_shared_catalog(
    tmp_path: Path, shared_catalog: SharedCatalog
) -> None:
    code = (
        "import sys, time; from pathlib import Path; from engine.state.locks import RunLock; "
        "from engine.state.db import catalog_location; "
        "lock = RunLock(Path('s'), 'p', 'r1', catalog=catalog_location(Path('.'))); lock.acquire(); "
        "print('held', flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    where = catalog_location(tmp_path)
    assert lock_is_held(tmp_path, "p", where)
    assert not lock_is_held(tmp_path / "another-host", "q", where)
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate(timeout=30)
    deadline = time.monotonic() + 5
    while lock_is_held(tmp_path, "p", where):
        assert time.monotonic() < deadline, "the server kept a dead session's lock"
        time.sleep(0.05)
    # a lock of another folder (host) on the same catalog is the same lock
    assert not lock_is_held(tmp_path / "another-host", "p", where)


def test_a_leader_whose_session_the_server_ended_stands_down_and_a_standby_leads(
    write: WritePipeline, project: Path, shared_catalog: SharedCatalog
) -> None:
    from engine.scheduling.leader import scheduler_running
    from engine.scheduling.scheduler import Scheduler

    write("p.yaml", 'pipeline: p\nschedule: "0 3 * * *"\ntasks:\n  - id: t\n    sql: select 1\n')
    first, second = Scheduler(project), Scheduler(project / ".." / project.name)
    try:
        assert not scheduler_running(project)
        assert first.try_lead()
        assert not second.try_lead()
        assert scheduler_running(project)
        # a partition as the server sees it: it ends the leader's session
        shared_catalog.rows(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            f"where application_name = 'arrowline scheduler {os.getpid()}@{os.uname().nodename}'"
            " and pid in (select pid from pg_locks where locktype = 'advisory')"
        )
        deadline = time.monotonic() + 5
        while not second.try_lead():
            assert time.monotonic() < deadline, "the standby never took the free lease"
            time.sleep(0.05)
        assert not first.try_lead()  # it learns it lost the lease, and cannot take it back
        assert not first.leading
    finally:
        first.release()
        second.release()
        first.store.close()
        second.store.close()
    assert not scheduler_running(project)


def _tables(location: CatalogLocation) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every copied table, columns by name, in a stable order."""
    with CatalogReader(location) as reader:
        return {
            table: sorted(
                (
                    tuple(row[c] for c in sorted(row.keys()))
                    for row in sql(reader, f"select * from {table}")
                ),
                key=repr,
            )
            for table in TABLES
        }


def test_a_catalog_is_copied_whole_into_postgres_and_back_into_a_file(
    write: WritePipeline,
    project: Path,
    cli: Callable[..., Result],
    shared_catalog: SharedCatalog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from engine.api.pipeline import run

    monkeypatch.delenv("ARROWLINE_CATALOG")  # the project starts on the embedded catalog
    path = write(
        "p.yaml",
        "pipeline: p\ntasks:\n  - id: a\n    sql: select 1 as x\n"
        "  - id: b\n    sql: select x + 1 as y from a\n",
    )
    assert run(path).ok
    embedded = catalog_location(project)
    with Catalog(embedded) as store:
        store.set_watermark("p", "a", "", '{"cursor": 5}', action="run", run_id=None)
        store.add_dead_letter(
            run_id=store.runs()[0].run_id,
            pipeline="p",
            task_id="b",
            pipeline_version="v",
            pipeline_file=str(path),
            params={},
            logical_date="2024-01-01",
            error_kind="data",
            transient=False,
            reason="bad row",
            attempts=[{"attempt": 1}],
        )
        store.request_run("p", str(path), {"n": 1}, "manual")
    before = _tables(embedded)
    assert all(
        before[t]
        for t in (
            "runs",
            "task_runs",
            "transitions",
            "watermarks",
            "watermark_audit",
            "dead_letters",
            "run_requests",
        )
    )

    copied = cli("catalog", "copy", shared_catalog.location, "--format", "json")
    assert copied.exit_code == 0, copied.stderr
    assert '"transitions":' in copied.stdout
    shared = catalog_location(project, shared_catalog.location)
    assert _tables(shared) == before
    with Catalog(shared) as catalog:  # the ids the database assigns continue after the copied
        highest = max(letter.id for letter in catalog.dead_letters(status=None))
        letter = catalog.add_dead_letter(
            run_id=catalog.runs()[0].run_id,
            pipeline="p",
            task_id="a",
            pipeline_version="v",
            pipeline_file=None,
            params={},
            logical_date="2024-01-01",
            error_kind="data",
            transient=False,
            reason="again",
            attempts=[],
        )
        assert letter == highest + 1

    kept = _tables(shared)
    again = cli("catalog", "copy", shared_catalog.location)
    assert again.exit_code == 1
    assert "is not empty" in again.stderr
    assert "secret" not in again.stderr
    assert _tables(shared) == kept  # refused before writing anything

    backup = project / "backup.db"
    restored = cli("catalog", "copy", str(backup), "--from", shared_catalog.location)
    assert restored.exit_code == 0, restored.stderr
    after = _tables(catalog_location(project, str(backup)))
    assert after == _tables(shared)
    assert len(after["dead_letters"]) == len(before["dead_letters"]) + 1


def test_a_lost_catalog_session_is_replaced_but_a_transaction_on_it_fails_whole(
    tmp_path: Path, shared_catalog: SharedCatalog
) -> None:
    import psycopg

    def backend(catalog: Catalog) -> int:
        return int(sql(catalog, "select pg_backend_pid()")[0][0])

    with Catalog(catalog_location(tmp_path)) as catalog:
        lost = backend(catalog)
        shared_catalog.rows(f"select pg_terminate_backend({lost})")  # a restart, as it sees it
        assert catalog.runs() == []  # answered on a new session
        assert backend(catalog) != lost
        lost = backend(catalog)

        def half_way() -> None:
            with transaction(catalog) as connection:
                connection.execute("insert into meta (key, value) values ('k', 'v')")
                shared_catalog.rows(f"select pg_terminate_backend({lost})")
                connection.execute("select 1")  # not replayed on a new session half-way

        with pytest.raises(psycopg.OperationalError):
            half_way()
        assert sql(catalog, "select value from meta where key = 'k'") == []
        catalog.create_run("r", "p", "v", None, {}, "2024-01-01", None, [], {})
        assert [run.run_id for run in catalog.runs()] == ["r"]


def test_a_copy_reads_and_writes_a_table_in_batches(write: WritePipeline, project: Path) -> None:
    from engine.api.pipeline import run
    from engine.state.copy import copy_catalog

    path = write("p.yaml", "pipeline: p\ntasks:\n  - id: a\n    sql: select 1 as x\n")
    for _ in range(3):
        assert run(path).ok
    source = catalog_location(project)
    target = catalog_location(project, str(project / "copy.db"))
    report = copy_catalog(source, target, batch_size=4)  # more transitions than one batch
    assert report.rows["transitions"] > 4
    assert _tables(target) == _tables(source)


def test_a_run_planned_while_another_process_creates_the_catalog_sees_it_empty(
    tmp_path: Path,
) -> None:
    """The file of a new catalog exists before its tables do: a run that plans in that moment
    (its reader opens the file read-only) found no `task_runs` and failed, one of four runs
    started together in an empty project. It must plan as before the first run, then wait for
    the writer and run."""
    (tmp_path / "p.yaml").write_text("pipeline: p\ntasks:\n  - id: t\n    sql: select 1 as x\n")
    path = tmp_path / ".arrowline" / "catalog.db"
    path.parent.mkdir()
    creator = sqlite3.connect(path, isolation_level=None)
    creator.execute("pragma journal_mode = wal")
    creator.execute("begin immediate")
    creator.execute("create table placeholder (x integer)")  # the creator's tables, uncommitted
    assert not CatalogLocation(path).exists()
    with pytest.raises(StateError, match=r"no arrowline catalog at .*: the file has no tables yet"):
        CatalogReader(path)
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "run", "p.yaml", "--no-progress"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)  # the run has planned and waits for the creator's transaction
    creator.execute("rollback")
    creator.close()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    with CatalogReader(path) as reader:
        assert [run.state.value for run in reader.runs()] == ["SUCCESS"]

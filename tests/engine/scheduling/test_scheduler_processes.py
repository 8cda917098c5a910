"""The scheduler as real processes: a restart that kills a run, two replicas with one dying,
and SIGTERM with a run in flight."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from engine.core.locking import advisory_key
from engine.scheduling.leader import leader_lock_path
from tests.conftest import SharedCatalog, WritePipeline
from tests.engine.execution.test_crash import arrowline, kill_at

pytestmark = pytest.mark.slow


def wait_for(condition: object, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def query(project: Path, sql: str) -> list[tuple[object, ...]]:
    path = project / ".arrowline" / "catalog.db"
    if not path.exists():
        return []
    connection = sqlite3.connect(path, timeout=30)
    try:
        return connection.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []  # not created yet
    finally:
        connection.close()


def count(project: Path, sql: str) -> int:
    rows = query(project, sql)
    return int(rows[0][0]) if rows else 0


def stop(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr


def test_a_run_killed_with_its_scheduler_is_resumed_by_the_next(
    write: WritePipeline, project: Path
) -> None:
    write("data/a.csv", "id,v\n" + "".join(f"{i},{i * 2}\n" for i in range(1000)))
    write(
        "p.yaml",
        """
        pipeline: p
        tasks:
          - id: a
            extract: {from: files, path: data/a.csv}
          - id: total
            sql: select sum(v) as s from a
        """,
    )
    first = arrowline(project, "scheduler", "--tick", "0.2", fault="extract.batch")
    wait_for(lambda: query(project, "select 1 from schedules"), what="the first scheduler")
    trigger = arrowline(project, "trigger", "p")
    assert trigger.communicate(timeout=60)[0].strip().endswith("queued with the scheduler")
    kill_at(first, "extract.batch")
    ((run_id, state),) = query(project, "select run_id, state from runs")
    assert state == "RUNNING"  # the dead process left it so

    second = arrowline(project, "scheduler", "--tick", "0.2")
    wait_for(
        lambda: (
            query(project, f"select state from runs where run_id = '{run_id}'") == [("SUCCESS",)]
        ),
        what="the interrupted run to be resumed",
    )
    code, stderr = stop(second)
    assert code == 0
    assert f"run {run_id} of p was interrupted by a restart; resuming it" in stderr
    events = [
        e
        for (e,) in query(
            project, f"select event from transitions where run_id = '{run_id}' and task_id is null"
        )
    ]
    assert any("interrupted" in e for e in events)
    assert query(project, "select count(*) from runs") == [(1,)]  # resumed, not run again


def test_a_standby_replica_takes_over_and_no_interval_runs_twice(
    write: WritePipeline, project: Path
) -> None:
    write(
        "p.yaml",
        """
        pipeline: p
        schedule: "* * * * * *"
        tasks:
          - id: t
            sql: select 1 as x
        """,
    )
    leader = arrowline(project, "scheduler", "--tick", "0.25")
    wait_for(
        lambda: count(project, "select count(*) from runs where state = 'SUCCESS'") >= 2,
        what="runs under the first scheduler",
    )
    standby = arrowline(project, "scheduler", "--tick", "0.25")
    time.sleep(1.0)
    holder = leader_lock_path(project).read_text().strip()
    assert holder == str(leader.pid)
    before = count(project, "select count(*) from runs")
    os.kill(leader.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    leader.communicate(timeout=30)
    wait_for(
        lambda: leader_lock_path(project).read_text().strip() == str(standby.pid),
        timeout=10,
        what="the standby to take the lock",
    )
    takeover = time.monotonic() - killed_at
    wait_for(
        lambda: count(project, "select count(*) from runs") >= before + 2,
        what="runs under the standby",
    )
    code, _ = stop(standby)
    assert code == 0
    assert takeover < 2.0  # within a tick or two of the leader's death
    started = query(project, "select fire_at, run_id from intervals where state = 'started'")
    run_ids = [r for _, r in started]
    assert len(run_ids) == len(set(run_ids))
    dates = query(project, "select logical_date, count(*) from runs group by 1 having count(*) > 1")
    assert dates == []  # no interval ran twice
    assert query(project, "select count(*) from runs where state = 'RUNNING'") == [(0,)]


@pytest.mark.parametrize(
    ("rows", "deadline", "state", "said"),
    [
        (600_000_000, "120", "SUCCESS", "scheduler stopping: no new runs"),
        (100_000_000_000, "0.5", "CANCELLED", "did not finish before the deadline; cancelling it"),
    ],
    ids=["finishes-in-time", "cancelled-at-the-deadline"],
)
def test_sigterm_lets_running_runs_finish_up_to_a_deadline(
    write: WritePipeline, project: Path, rows: int, deadline: str, state: str, said: str
) -> None:
    write(
        "p.yaml",
        f"""
        pipeline: p
        tasks:
          - id: slow
            sql: select count(*) as n from range({rows}) t(x) where x % 7 = 3
        """,
    )
    scheduler = arrowline(project, "scheduler", "--tick", "0.2", "--shutdown-timeout", deadline)
    wait_for(lambda: query(project, "select 1 from schedules"), what="the scheduler")
    arrowline(project, "trigger", "p").communicate(timeout=60)
    wait_for(lambda: query(project, "select state from runs") == [("RUNNING",)], what="the run")
    code, stderr = stop(scheduler, timeout=180)
    assert code == 0
    assert said in stderr
    assert query(project, "select state from runs") == [(state,)]


def test_replicas_on_two_hosts_share_a_postgres_catalog(
    write: WritePipeline, project: Path, shared_catalog: SharedCatalog
) -> None:
    """Two folders stand for two hosts: each has the project, both point ARROWLINE_CATALOG at
    one PostgreSQL schema. The leader is killed while a run is half-way through its extract;
    the standby in the other folder takes the lease, finds the run interrupted, resumes it on
    its own disk, and keeps the every-second schedule going without running an interval twice."""
    for host in ("a", "b"):
        write(f"{host}/data/a.csv", "id,v\n" + "".join(f"{i},{i * 2}\n" for i in range(1000)))
        write(
            f"{host}/p.yaml",
            """
            pipeline: p
            tasks:
              - id: a
                extract: {from: files, path: data/a.csv}
              - id: total
                sql: select sum(v) as s from a
            """,
        )
        write(
            f"{host}/tick.yaml",
            """
            pipeline: tick
            schedule: "* * * * * *"
            tasks:
              - id: t
                sql: select 1 as x
            """,
        )
    rows = shared_catalog.rows
    leader_key = advisory_key(f"arrowline:scheduler:{shared_catalog.schema}", "leader")

    def leader() -> str:
        found = rows(
            "select a.application_name from pg_locks l join pg_stat_activity a using (pid) "
            f"where l.locktype = 'advisory' and l.granted and l.classid::bigint = "
            f"{leader_key[0] % 2**32} and l.objid::bigint = {leader_key[1] % 2**32}"
        )
        return str(found[0][0]) if found else ""

    def ticks() -> int:
        found = rows("select count(*) from runs where pipeline = 'tick' and state = 'SUCCESS'")
        return int(found[0][0]) if found else 0  # type: ignore[call-overload]

    first = arrowline(project / "a", "scheduler", "--tick", "0.25", fault="extract.batch")
    wait_for(lambda: ticks() >= 2, what="scheduled runs under the first replica")
    second = arrowline(project / "b", "scheduler", "--tick", "0.25")
    time.sleep(1.0)
    assert leader().startswith(f"arrowline scheduler {first.pid}@")
    trigger = arrowline(project / "a", "trigger", "p")
    assert trigger.communicate(timeout=60)[0].strip().endswith("queued with the scheduler")
    kill_at(first, "extract.batch")
    killed_at = time.monotonic()
    ((run_id,),) = rows("select run_id from runs where pipeline = 'p'")
    wait_for(
        lambda: leader().startswith(f"arrowline scheduler {second.pid}@"),
        timeout=10,
        what="the standby to take the lease",
    )
    takeover = time.monotonic() - killed_at
    wait_for(
        lambda: rows(f"select state from runs where run_id = '{run_id}'") == [("SUCCESS",)],
        what="the interrupted run to be resumed by the other replica",
    )
    before = ticks()
    wait_for(lambda: ticks() >= before + 2, what="scheduled runs under the second replica")
    code, stderr = stop(second)
    assert code == 0, stderr
    assert takeover < 2.0  # the server freed the dead leader's lease with its session
    assert f"run {run_id} of p was interrupted by a restart; resuming it" in stderr
    # resumed on the second host's disk: its extract ran again there, its output is there
    assert list((project / "b" / ".arrowline" / "workspace" / "p" / "total" / run_id).iterdir())
    assert rows("select count(*) from runs where pipeline = 'p'") == [(1,)]
    history = rows(
        f"select from_state, to_state from transitions where run_id = '{run_id}' "
        "and task_id is null order by id"
    )
    assert ("RUNNING", "INTERRUPTED") in history  # the dead replica left it RUNNING
    assert history[-1] == ("RUNNING", "SUCCESS")
    started = rows("select run_id from intervals where state = 'started'")
    assert len(started) == len(set(started)) >= 4
    assert rows("select logical_date from runs group by 1 having count(*) > 1") == []
    assert rows("select count(*) from runs where state in ('PENDING', 'RUNNING')") == [(0,)]


def test_a_scheduler_on_a_busy_port_says_so_in_one_line(
    write: WritePipeline, project: Path
) -> None:
    write("p.yaml", "pipeline: p\ntasks:\n  - id: a\n    sql: select 1 as x\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = arrowline(project, "scheduler", ".", "--port", str(port))
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert stderr.strip().splitlines() == [
        f"error: cannot serve the scheduler API on 127.0.0.1:{port}: Address already in use"
    ]


def test_a_port_out_of_range_is_a_usage_error(project: Path) -> None:
    process = arrowline(project, "scheduler", ".", "--port", "70000")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "70000 is not in the range 0<=x<=65535" in stderr
    assert "Traceback" not in stderr


def test_a_paused_resumed_and_backfilled_schedule_fires_and_the_process_obeys_sigterm(
    write: WritePipeline, project: Path
) -> None:
    write(
        "p.yaml",
        """
        pipeline: p
        schedule: "* * * * * *"
        tasks:
          - id: t
            sql: select 1 as x
        """,
    )
    for args in (
        ("schedule", "pause", "p", "--reason", "warehouse migration"),
        ("schedule", "resume", "p"),
        ("backfill", "p", "--from", "2026-01-01T00:00:00", "--to", "2026-01-01T00:00:02"),
    ):
        done = arrowline(project, *args)
        _, stderr = done.communicate(timeout=120)
        assert done.returncode == 0, stderr
    (last_fire,) = query(project, "select last_fire from schedules")[0]
    assert not str(last_fire).startswith("0001")
    scheduled = "select count(*) from intervals where state = 'started' and reason is null"

    def serve_then_stop() -> None:
        before = count(project, scheduled)
        scheduler = arrowline(project, "scheduler", "--tick", "0.2")
        try:
            wait_for(lambda: count(project, scheduled) >= before + 2, what="scheduled runs")
            stopped_at = time.monotonic()
            code, stderr = stop(scheduler, timeout=30)
        finally:
            if scheduler.poll() is None:  # it ignored SIGTERM: do not leave it spinning
                scheduler.kill()
                scheduler.communicate()
        assert code == 0, stderr
        assert time.monotonic() - stopped_at < 10  # SIGTERM is honoured at once
        assert "scheduler stopping: no new runs" in stderr

    serve_then_stop()
    # a catalog an older version left with last_fire in year 1: no walk from there, no hang
    connection = sqlite3.connect(project / ".arrowline" / "catalog.db", timeout=30)
    with connection:
        connection.execute("update schedules set last_fire = '0001-01-01T00:00:00+00:00'")
    connection.close()
    serve_then_stop()
    assert count(project, "select count(*) from runs where state = 'SUCCESS'") >= 3 + 4

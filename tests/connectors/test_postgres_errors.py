"""Every failure class, from a real server, classified and without secrets in the message."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from connectors.postgres.config import PostgresConnection
from connectors.postgres.connection import Session, resolve
from connectors.postgres.errors import (
    PostgresAuthFailed,
    PostgresConflict,
    PostgresDatabaseMissing,
    PostgresDataError,
    PostgresPermissionDenied,
    PostgresSqlError,
    PostgresUnavailable,
    translate,
)
from engine.api.pipeline import run
from engine.core.errors import DefinitionError, TaskError, classify
from engine.core.secrets import redact
from engine.execution.executor import RunEvent
from engine.state.catalog import CatalogReader
from tests.conftest import PgSchema, WritePipeline
from tests.pg import throwaway_cluster, throwaway_server


def server(uri: str, tmp_path: Path, name: str = "wh"):  # type: ignore[no-untyped-def]
    return resolve(name, PostgresConnection(kind="postgres", uri=uri), tmp_path)


def test_unreachable_server_is_transient_and_names_host_and_port(tmp_path: Path) -> None:
    with pytest.raises(PostgresUnavailable) as info:
        Session(server("postgresql://postgres:hunter2secret@127.0.0.1:1/test", tmp_path))
    error = info.value
    assert classify(error).transient
    assert "connection 'wh' to 127.0.0.1:1/test" in error.message
    assert "Connection refused" in error.message
    assert "hunter2secret" not in str(error)
    # shown also when the attempts are used up: it must not promise a retry
    assert error.hint == (
        "is the server running and reachable from here? more `retry` attempts or backoff let "
        "a task ride out a restart"
    )


def test_missing_database_is_terminal(pg: PgSchema, tmp_path: Path) -> None:
    uri = pg.uri.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(
        PostgresDatabaseMissing, match='database "no_such_database" does not exist'
    ) as info:
        Session(server(uri, tmp_path))
    assert not classify(info.value).transient


def test_permission_denied_is_terminal(pg: PgSchema, tmp_path: Path) -> None:
    role = f"{pg.schema}_ro"
    pg.execute(
        f"drop role if exists {role}",
        f"create role {role} login",
        f"create table {pg.table('secret')} (x int)",
    )
    uri = pg.uri.replace("postgres@", f"{role}@", 1)
    try:
        with (
            Session(server(uri, tmp_path)) as session,
            pytest.raises(PostgresPermissionDenied) as info,
        ):
            session.rows(f"select * from {pg.table('secret')}")
        assert info.value.sqlstate == "42501"  # type: ignore[attr-defined]
        assert "[SQLSTATE 42501]" in info.value.message
    finally:
        pg.execute(f"drop owned by {role}", f"drop role {role}")


def test_sql_error_carries_its_sqlstate(pg: PgSchema, tmp_path: Path) -> None:
    with Session(server(pg.uri, tmp_path)) as session, pytest.raises(PostgresSqlError) as info:
        session.rows("selec 1")
    assert info.value.sqlstate == "42601"  # type: ignore[attr-defined]
    assert 'syntax error at or near "selec" [SQLSTATE 42601]' in info.value.message


@pytest.mark.slow
def test_authentication_failure_is_terminal_and_hides_the_password(tmp_path: Path) -> None:
    with throwaway_cluster(password="right-password") as uri:
        wrong = uri.replace("postgres@", "postgres:wrong-password-123@", 1)
        with pytest.raises(PostgresAuthFailed, match="password authentication failed") as info:
            Session(server(wrong, tmp_path))
        assert not classify(info.value).transient
        assert "wrong-password-123" not in str(info.value)
        right = uri.replace("postgres@", "postgres:right-password@", 1)
        with Session(server(right, tmp_path)) as session:
            assert session.rows("select 1") == [(1,)]


def test_secrets_come_from_env_or_file_and_are_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WH_PASSWORD", "s3cr3t-from-env")
    (tmp_path / "pw").write_text("s3cr3t-from-file\n")
    spec = PostgresConnection(
        kind="postgres",
        host="127.0.0.1",
        port=1,
        user="postgres",
        password="${env:WH_PASSWORD}",
        database="test",
    )
    resolved = resolve("wh", spec, tmp_path)
    assert "s3cr3t-from-env" in resolved.uri
    assert "s3cr3t-from-env" not in repr(resolved)
    assert (
        redact(f"connect to {resolved.uri} failed")
        == "connect to postgresql://postgres:***@127.0.0.1:1/test?connect_timeout=10 failed"
    )
    from_file = PostgresConnection(
        kind="postgres", uri="postgresql://postgres:${file:pw}@127.0.0.1:1/test"
    )
    assert "s3cr3t-from-file" in resolve("wh", from_file, tmp_path).uri
    assert redact("the password was s3cr3t-from-file") == "the password was ***"
    missing = PostgresConnection(kind="postgres", uri="${env:NOT_SET_ANYWHERE}")
    with pytest.raises(DefinitionError, match="environment variable NOT_SET_ANYWHERE is not set"):
        resolve("wh", missing, tmp_path)


@pytest.mark.parametrize(
    ("sqlstate", "kind"),
    [
        ("08006", PostgresUnavailable),  # connection_failure
        ("08001", PostgresUnavailable),  # sqlclient_unable_to_establish_sqlconnection
        ("57P01", PostgresUnavailable),  # admin_shutdown
        ("57P02", PostgresUnavailable),  # crash_shutdown
        ("57P03", PostgresUnavailable),  # cannot_connect_now: starting up, shutting down
        ("57P05", PostgresUnavailable),  # idle_session_timeout
        ("53300", PostgresUnavailable),  # too_many_connections
        ("40001", PostgresConflict),  # serialization_failure
        ("40P01", PostgresConflict),  # deadlock_detected
        ("55P03", PostgresConflict),  # lock_not_available
        ("28P01", PostgresAuthFailed),
        ("3D000", PostgresDatabaseMissing),
        ("42501", PostgresPermissionDenied),
        ("22003", PostgresDataError),
        ("23505", PostgresDataError),
        ("42601", PostgresSqlError),
        ("57P04", PostgresSqlError),  # database_dropped: it will not come back
        ("57014", PostgresSqlError),  # query_canceled (statement_timeout): the same query again
        ("53100", PostgresSqlError),  # disk_full
        ("53200", PostgresSqlError),  # out_of_memory
    ],
)
def test_each_sqlstate_has_its_class_and_only_not_now_states_are_transient(
    sqlstate: str, kind: type[TaskError]
) -> None:
    error = translate(_Raised("ERROR:  something", sqlstate), "query failed")
    assert type(error) is kind
    assert classify(error).transient is (kind in (PostgresUnavailable, PostgresConflict))


@pytest.mark.parametrize(
    "words",
    [
        "FATAL:  the database system is starting up",
        "FATAL:  the database system is shutting down",
        "FATAL:  the database system is in recovery mode",
        "FATAL:  the database system is not yet accepting connections\nDETAIL:  Consistent "
        "recovery state has not been yet reached.",
        "FATAL:  the database system is not accepting connections\nDETAIL:  Hot standby mode "
        "is disabled.",
        "FATAL:  sorry, too many clients already",
        'FATAL:  too many connections for role "etl"',
        'FATAL:  too many connections for database "wh"',
        "FATAL:  remaining connection slots are reserved for non-replication superuser connections",
        'connection to server on socket "/run/postgresql/.s.PGSQL.5432" failed: No such file or '
        "directory\n\tIs the server running locally and accepting connections on that socket?",
    ],
)
def test_a_server_that_cannot_take_a_session_now_is_transient_at_connect(words: str) -> None:
    # libpq reports a failed connection without a SQLSTATE: the server's words decide
    raw = "IO: [libpq] Failed to connect: connection to server at 127.0.0.1 failed: " + words
    error = translate(_Raised(raw, None), "cannot connect")
    assert isinstance(error, PostgresUnavailable)
    assert classify(error).transient


class _Raised(Exception):
    """What ADBC raises: the server's text, and the SQLSTATE when libpq had one."""

    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def test_a_role_at_its_connection_limit_is_retried_not_failed(pg: PgSchema, tmp_path: Path) -> None:
    role = f"{pg.schema}_one"
    pg.execute(f"drop role if exists {role}", f"create role {role} login connection limit 1")
    uri = pg.uri.replace("postgres@", f"{role}@", 1)
    try:
        with Session(server(uri, tmp_path)), pytest.raises(PostgresUnavailable) as info:
            Session(server(uri, tmp_path))
        assert f'too many connections for role "{role}"' in info.value.message
        assert classify(info.value).transient
        assert "no connection slot free" in (info.value.hint or "")
        # The slot is free again once the first session's backend has exited, which the
        # server does a moment after the client closed it (longer on a busy machine).
        deadline = time.monotonic() + 10
        while True:
            try:
                with Session(server(uri, tmp_path)) as session:
                    assert session.rows("select 1") == [(1,)]
                break
            except PostgresUnavailable:
                assert time.monotonic() < deadline, "the connection slot never came free"
                time.sleep(0.05)
    finally:
        pg.execute(f"drop role {role}")


@pytest.mark.slow
def test_a_server_shutting_down_then_down_is_transient_and_a_restart_serves_again(
    tmp_path: Path,
) -> None:
    with throwaway_server() as cluster:
        wh = server(cluster.uri, tmp_path)
        held = Session(wh)
        cluster.stop("smart", wait=False)  # waits for `held` to end; refuses new sessions
        deadline = time.monotonic() + 20
        error: PostgresUnavailable | None = None
        while error is None or "shutting down" not in error.message:
            assert time.monotonic() < deadline, error
            with pytest.raises(PostgresUnavailable) as info:
                Session(wh)
            error = info.value
        assert classify(error).transient
        held.close()
        while True:  # the server exits once the last session ended: refused while it is down
            assert time.monotonic() < deadline, error
            with pytest.raises(PostgresUnavailable) as info:
                Session(wh)
            error = info.value
            if "Connection refused" in error.message:
                break
            time.sleep(0.1)
        assert classify(error).transient
        cluster.start()
        with Session(wh) as session:
            assert session.rows("select 1") == [(1,)]


@pytest.mark.slow
def test_an_extract_outlives_a_server_restart_on_its_retries(
    write: WritePipeline, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with throwaway_server() as cluster:
        monkeypatch.setenv("RESTARTING_URI", cluster.uri)
        path = write(
            "p.yaml",
            """
            pipeline: restart
            connections:
              wh: {kind: postgres, uri: "${env:RESTARTING_URI}"}
            tasks:
              - id: numbers
                extract: {from: postgres, connection: wh, query: "select 1 as n"}
                retry: {attempts: 6, backoff: 1s, max_backoff: 1s, jitter: none}
            """,
        )
        held = Session(server(cluster.uri, project))
        cluster.stop("smart", wait=False)  # refuses new sessions: "shutting down" (57P03)

        def restart() -> None:  # after the first failed attempt: down, then up again
            held.close()
            deadline = time.monotonic() + 20
            while cluster.data.joinpath("postmaster.pid").exists():
                assert time.monotonic() < deadline
                time.sleep(0.05)
            cluster.start()

        def listen(event: RunEvent) -> None:
            if event.state == "RETRYING" and event.attempt == 1:
                threading.Thread(target=restart, daemon=True).start()

        result = run(path, project_dir=project, listener=listen)
        task = result.tasks["numbers"]
        assert result.ok, task.error
        assert task.attempts > 1
        with CatalogReader(project / ".arrowline" / "catalog.db") as catalog:
            moves = catalog.transitions(result.run_id, "numbers")
        errors = [t.error or "" for t in moves if t.to_state == "RETRYING"]
        assert "the database system is shutting down" in errors[0]


def test_two_sessions_creating_one_schema_at_once_is_a_conflict_not_a_data_error(
    pg: PgSchema, tmp_path: Path
) -> None:
    name = f"{pg.schema}_new"
    wh = server(pg.uri, tmp_path)
    try:
        with Session(wh) as first, Session(wh) as second:
            first.execute(f"create schema if not exists {name}")  # not committed yet
            outcome: list[BaseException] = []

            def create() -> None:  # waits on the first session's row in pg_namespace
                try:
                    second.execute(f"create schema if not exists {name}")
                except BaseException as exc:
                    outcome.append(exc)

            waiter = threading.Thread(target=create)
            waiter.start()
            time.sleep(0.5)
            first.commit()
            waiter.join()
        (error,) = outcome
        assert isinstance(error, PostgresConflict)
        assert 'unique constraint "pg_namespace_nspname_index"' in error.message
        assert classify(error).transient
    finally:
        pg.execute(f"drop schema if exists {name}")


def test_a_unique_violation_on_a_users_table_stays_a_data_error() -> None:
    words = 'ERROR:  duplicate key value violates unique constraint "orders_pkey"'
    error = translate(_Raised(words, "23505"), "insert failed")
    assert isinstance(error, PostgresDataError)
    assert not classify(error).transient

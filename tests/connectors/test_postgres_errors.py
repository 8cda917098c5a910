"""Every failure class, from a real server, classified and without secrets in the message."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.postgres import PostgresConnection, Session, resolve
from connectors.postgres.errors import (
    PostgresAuthFailed,
    PostgresDatabaseMissing,
    PostgresPermissionDenied,
    PostgresSqlError,
    PostgresUnavailable,
)
from engine.errors import DefinitionError, classify
from engine.secrets import redact
from tests.conftest import PgSchema
from tests.pg import throwaway_cluster


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

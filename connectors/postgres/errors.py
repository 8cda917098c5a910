"""PostgreSQL failures, classified so retries ask the type instead of reading messages.

    PostgresUnavailable      transient  cannot reach the server (refused, DNS, timeout), it dropped
                                        the connection (SQLSTATE class 08, 57P01, 57P02, 57P05),
                                        it is starting, stopping or in recovery (57P03), or it
                                        has no connection slot free (53300)
    PostgresConflict         transient  serialization failure, deadlock or a lock not granted in
                                        time (40001, 40P01, 55P03), or two sessions creating the
                                        same object at once (23505 on a system catalog's index)
    PostgresAuthFailed       terminal   password or pg_hba refused the role (class 28)
    PostgresDatabaseMissing  terminal   the database does not exist (3D000)
    PostgresPermissionDenied terminal   the role lacks a privilege (42501)
    PostgresDataError        terminal   the data is invalid for the target (classes 22, 23)
    PostgresSqlError         terminal   any other SQL error, with its SQLSTATE

libpq reports a failed connection without its SQLSTATE, so those are classified by the server's
words (`_UNREACHABLE`, `_BUSY`): a server that is restarting says "the database system is
starting up" for a few seconds, and a task that gave up on it would fail with its retries unused.

Messages name the connection, host and port, never the password: every message passes through
`engine.core.secrets.redact`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from engine.core.errors import DataError, TaskError, TransientTaskError
from engine.core.secrets import redact

if TYPE_CHECKING:
    from connectors.postgres.connection import ResolvedPostgres

__all__ = [
    "PostgresAuthFailed",
    "PostgresConflict",
    "PostgresDataError",
    "PostgresDatabaseMissing",
    "PostgresPermissionDenied",
    "PostgresSqlError",
    "PostgresUnavailable",
    "translate",
]


class _WithState:
    sqlstate: str | None = None


class PostgresUnavailable(TransientTaskError, _WithState):
    """The server cannot be reached or dropped the connection."""


class PostgresConflict(TransientTaskError, _WithState):
    """A serialization failure or deadlock; the transaction may succeed when retried."""


class PostgresAuthFailed(TaskError, _WithState):
    """Authentication was refused."""


class PostgresDatabaseMissing(TaskError, _WithState):
    """The database named by the connection does not exist."""


class PostgresPermissionDenied(TaskError, _WithState):
    """The role lacks a privilege the task needs."""


class PostgresDataError(DataError, _WithState):
    """The data does not fit the target (a value out of range, a constraint violated)."""


class PostgresSqlError(TaskError, _WithState):
    """Any other error reported by the server."""


_UNREACHABLE = (
    "connection refused",
    "could not translate host name",
    "timeout expired",
    "connection timed out",
    "no route to host",
    "server closed the connection",
    "network is unreachable",
    "could not connect to server",
    "connection reset",
    "terminating connection",
    "is the server running",
    "could not receive data from server",
    "no connection to the server",
    # 57P03 at connect time: a restart, a shutdown, a standby that does not take connections
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
)
_BUSY = (  # 53300 at connect time: max_connections, or a role's or database's CONNECTION LIMIT
    "too many clients already",
    "too many connections for",
    "remaining connection slots are reserved",
)
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "57P05", "53300"})
"""admin_shutdown, crash_shutdown, cannot_connect_now, idle_session_timeout, too_many_connections:
the server is up (or about to be) and the same work succeeds once it takes connections again."""
_CONFLICT_STATES = frozenset({"40001", "40P01", "55P03"})
_CATALOG_RACE = re.compile(r'unique constraint "pg_[a-z_]+_index"')
"""`create ... if not exists` run by two sessions at once: both find the object missing and the
later one's insert into pg_namespace or pg_type violates that system catalog's unique index
(23505). It is no data error: once the other session committed, the same work succeeds."""
_AUTH = ("password authentication failed", "no pg_hba.conf entry", "authentication failed")


def _detail(message: str) -> str:
    """The server's words without ADBC's prefixes and the repeated query text."""
    text = message.split("Query was:", maxsplit=1)[0]
    for prefix in (
        "IO: ",
        "INVALID_ARGUMENT: ",
        "UNAUTHORIZED: ",
        "INTERNAL: ",
        "INVALID_DATA: ",
        "[libpq] ",
        "Failed to connect: ",
        "Failed to prepare query: ",
        "Failed to execute query: ",
    ):
        text = text.replace(prefix, "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return message.strip()[:600]
    # The server's primary message, then its DETAIL and HINT; not the LINE/caret context,
    # which only reads well in a terminal at its original width.
    kept = [lines[0].removeprefix("ERROR:").removeprefix("FATAL:").strip()]
    kept += [line for line in lines[1:] if line.startswith(("DETAIL:", "HINT:"))]
    if len(kept) == 1 and len(lines) > 1 and not lines[1].startswith("LINE"):
        kept += [line for line in lines[1:] if not line.startswith("LINE") and line != "^"]
    return " ".join(kept)[:600]


def classify_message(message: str, sqlstate: str | None) -> type[TaskError]:
    lowered = message.lower()
    if sqlstate:
        if sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_STATES:
            return PostgresUnavailable
        if sqlstate in _CONFLICT_STATES or (sqlstate == "23505" and _CATALOG_RACE.search(message)):
            return PostgresConflict
        if sqlstate.startswith("28"):
            return PostgresAuthFailed
        if sqlstate == "3D000":
            return PostgresDatabaseMissing
        if sqlstate == "42501":
            return PostgresPermissionDenied
        if sqlstate.startswith(("22", "23")):
            return PostgresDataError
        return PostgresSqlError
    if any(marker in lowered for marker in _AUTH):
        return PostgresAuthFailed
    if "database" in lowered and "does not exist" in lowered:
        return PostgresDatabaseMissing
    if "role" in lowered and "does not exist" in lowered:
        return PostgresAuthFailed
    if any(marker in lowered for marker in _UNREACHABLE + _BUSY):
        return PostgresUnavailable
    return PostgresSqlError


def translate(exc: BaseException, what: str, server: ResolvedPostgres | None = None) -> TaskError:
    """An ADBC (or libpq) exception as the arrowline error of its class."""
    sqlstate = getattr(exc, "sqlstate", None) or None
    message = _detail(redact(str(exc)))
    kind = classify_message(message, sqlstate)
    where = f" ({server.describe()})" if server is not None else ""
    state = f" [SQLSTATE {sqlstate}]" if sqlstate else ""
    busy = sqlstate == "53300" or any(marker in message.lower() for marker in _BUSY)
    hints = {
        PostgresUnavailable: "the server has no connection slot free (max_connections or a "
        "CONNECTION LIMIT); more `retry` attempts or backoff let a task wait for one"
        if busy
        else "is the server running and reachable from here? more `retry` attempts or backoff "
        "let a task ride out a restart",
        PostgresAuthFailed: "check the user and password of the connection",
        PostgresDatabaseMissing: "check the database name in the connection",
        PostgresPermissionDenied: "grant the role the privilege, or connect as another role",
    }
    error = kind(f"{what}{where}: {message}{state}", hint=hints.get(kind))
    error.sqlstate = sqlstate  # type: ignore[attr-defined]
    return error

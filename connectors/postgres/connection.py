"""Connections to PostgreSQL: secrets resolved, errors classified, cleanup in the right order.

ADBC refuses to close a connection while a statement is open, and complains at garbage
collection if that order is not kept; `Session` closes statements first, always.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pyarrow as pa

from connectors.base import CheckResult
from connectors.postgres.config import PostgresConnection
from connectors.postgres.errors import translate
from engine.core.errors import ArrowlineError
from engine.core.secrets import redact, resolve_secrets

__all__ = ["BATCH_SIZE_HINT", "ResolvedPostgres", "Session", "check", "resolve"]

INGEST_APPEND = "adbc.ingest.mode.append"
BATCH_SIZE_HINT = "adbc.postgresql.batch_size_hint_bytes"
"""adbc_driver_postgresql.StatementOptions.BATCH_SIZE_HINT_BYTES, without importing the driver."""


@dataclass(frozen=True)
class ResolvedPostgres:
    """A connection with its secrets filled in. `uri` holds the password: never print it."""

    name: str
    uri: str
    host: str
    port: int
    database: str

    def describe(self) -> str:
        return f"connection {self.name!r} to {self.host}:{self.port}/{self.database}"

    def __repr__(self) -> str:  # keep the URI (and its password) out of reprs and tracebacks
        return f"ResolvedPostgres({self.describe()})"


def resolve(name: str, spec: PostgresConnection, base_dir: Path) -> ResolvedPostgres:
    where = f"connection {name!r}"
    if spec.uri is not None:
        uri = resolve_secrets(spec.uri, where=where, base_dir=base_dir)
    else:
        assert spec.host is not None
        user = resolve_secrets(spec.user or "", where=where, base_dir=base_dir)
        password = resolve_secrets(spec.password or "", where=where, base_dir=base_dir)
        host = resolve_secrets(spec.host, where=where, base_dir=base_dir)
        database = resolve_secrets(spec.database or "", where=where, base_dir=base_dir)
        auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
        at = auth + "@" if auth else ""
        uri = f"postgresql://{at}{host}:{spec.port}/{quote(database, safe='')}"
    options = {"connect_timeout": str(spec.connect_timeout), **spec.options}
    parts = urlsplit(uri)
    if parts.scheme not in ("postgres", "postgresql"):
        raise translate(ValueError(f"not a postgresql:// URI: {redact(uri)}"), where)
    missing = {k: v for k, v in options.items() if f"{k}=" not in (parts.query or "")}
    if missing:
        # libpq percent-decodes a URI query but reads "+" as itself, so spaces go as %20
        uri += ("&" if parts.query else "?") + urlencode(missing, quote_via=quote)
    return ResolvedPostgres(
        name=name,
        uri=uri,
        host=parts.hostname or "localhost",
        port=parts.port or 5432,
        database=(parts.path or "/").lstrip("/") or (parts.username or "postgres"),
    )


class Session:
    """One ADBC connection and the statements opened on it, closed in a safe order.

    Built on adbc_driver_manager's low-level API rather than its DB-API layer: the DB-API module
    imports pandas and polars when they are installed (about 90 MB of memory in a process that
    only streams Arrow), and arrowline needs none of what it adds.
    """

    def __init__(self, server: ResolvedPostgres, *, autocommit: bool = False) -> None:
        import adbc_driver_manager as adbc
        import adbc_driver_postgresql as driver

        self.server = server
        self._statements: list[Any] = []
        try:
            self.database = driver.connect(server.uri)
            self.connection = adbc.AdbcConnection(self.database)
            self.connection.set_autocommit(autocommit)
        except Exception as exc:
            raise translate(exc, "cannot connect", server) from None

    def statement(self, batch_bytes: int | None = None) -> Any:
        import adbc_driver_manager as adbc

        statement = adbc.AdbcStatement(self.connection)
        if batch_bytes is not None:
            statement.set_options(**{BATCH_SIZE_HINT: str(batch_bytes)})
        self._statements.append(statement)
        return statement

    @staticmethod
    def _bind(statement: Any, parameters: Sequence[Any] | None) -> None:
        if not parameters:
            return
        batch = pa.record_batch(
            [pa.array([value]) for value in parameters],
            names=[f"p{i}" for i in range(len(parameters))],
        )
        schema, array = batch.__arrow_c_array__()
        statement.bind(array, schema)

    def query(
        self,
        sql: str,
        parameters: Sequence[Any] | None = None,
        *,
        batch_bytes: int | None = None,
        what: str = "query failed",
    ) -> tuple[Any, pa.RecordBatchReader]:
        """(statement, reader) streaming the result; with parameters ADBC does not use COPY."""
        statement = self.statement(batch_bytes)
        try:
            statement.set_sql_query(sql)
            self._bind(statement, parameters)
            handle, _ = statement.execute_query()
            return statement, pa.RecordBatchReader._import_from_c(handle.address)
        except Exception as exc:
            raise translate(exc, what, self.server) from None

    def schema(self, sql: str, what: str = "cannot describe the query") -> pa.Schema:
        statement = self.statement()
        try:
            statement.set_sql_query(sql)
            handle = statement.execute_schema()
            return pa.Schema._import_from_c(handle.address)
        except Exception as exc:
            raise translate(exc, what, self.server) from None
        finally:
            self._close_statement(statement)

    def execute(
        self, sql: str, parameters: Sequence[Any] | None = None, what: str = "statement failed"
    ) -> int:
        """Run a statement that returns no rows; the affected row count (-1 when unknown)."""
        statement = self.statement()
        try:
            statement.set_sql_query(sql)
            self._bind(statement, parameters)
            return int(statement.execute_update())
        except Exception as exc:
            raise translate(exc, what, self.server) from None
        finally:
            self._close_statement(statement)

    def rows(
        self, sql: str, parameters: Sequence[Any] | None = None, what: str = "query failed"
    ) -> list[tuple[Any, ...]]:
        statement, reader = self.query(sql, parameters, what=what)
        try:
            table = reader.read_all()
        except Exception as exc:
            raise translate(exc, what, self.server) from None
        finally:
            self._close_statement(statement)
        columns = [column.to_pylist() for column in table.columns]
        return list(zip(*columns, strict=True)) if columns else []

    def ingest(
        self,
        table: str,
        data: pa.RecordBatchReader,
        *,
        db_schema: str | None,
        temporary: bool = False,
        what: str = "COPY failed",
    ) -> int:
        """Bulk-load a stream with COPY (ADBC's ingest) into an existing table."""
        import adbc_driver_manager as adbc

        options = {
            adbc.StatementOptions.INGEST_TARGET_TABLE.value: table,
            adbc.StatementOptions.INGEST_MODE.value: INGEST_APPEND,
        }
        if temporary:
            options[adbc.StatementOptions.INGEST_TEMPORARY.value] = "true"
        elif db_schema:
            options[adbc.StatementOptions.INGEST_TARGET_DB_SCHEMA.value] = db_schema
        statement = self.statement()
        try:
            statement.set_options(**options)
            statement.bind_stream(data.__arrow_c_stream__())
            return int(statement.execute_update())
        except Exception as exc:
            if isinstance(exc, ArrowlineError):
                raise
            raise translate(exc, what, self.server) from None
        finally:
            self._close_statement(statement)

    def _close_statement(self, statement: Any) -> None:
        # A broken connection may refuse; closing the connection follows anyway.
        with contextlib.suppress(Exception):
            statement.close()
        if statement in self._statements:
            self._statements.remove(statement)

    def commit(self) -> None:
        try:
            self.connection.commit()
        except Exception as exc:
            raise translate(exc, "commit failed", self.server) from None

    def rollback(self) -> None:
        # The failure that led here is the one worth reporting, not this one.
        with contextlib.suppress(Exception):
            self.connection.rollback()

    def close(self) -> None:
        for statement in list(self._statements):
            self._close_statement(statement)
        for handle in (getattr(self, "connection", None), getattr(self, "database", None)):
            if handle is not None:
                with contextlib.suppress(Exception):
                    handle.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is not None:
            self.rollback()
        self.close()


def check(server: ResolvedPostgres, *, capture: bool = False) -> CheckResult:
    """Connect, ask for the server version, and say how it went; with `capture` (a change
    capture task uses the connection), whether the server and role allow it."""
    started = time.perf_counter()
    try:
        with Session(server, autocommit=True) as session:
            (version,) = session.rows(
                "select current_setting('server_version')", what="version query failed"
            )[0]
            (user, database) = session.rows("select current_user, current_database()")[0]
            if capture:
                from connectors.postgres.cdc.slot import check_server

                check_server(session, server)
    except Exception as exc:
        return CheckResult(
            server.name,
            f"{server.host}:{server.port}/{server.database}",
            False,
            f"{type(exc).__name__}: {exc}",
        )
    latency = (time.perf_counter() - started) * 1000
    return CheckResult(
        server.name,
        f"{server.host}:{server.port}/{database}",
        True,
        f"PostgreSQL {version} as {user}",
        latency,
    )

"""Where the catalog lives, and the two databases that can hold it.

- Embedded (the default): SQLite in WAL mode at `<project>/.arrowline/catalog.db`. Nothing to run;
  every process on the machine shares it.
- Shared: a PostgreSQL database named by `ARROWLINE_CATALOG=postgresql://...` (tables in the
  schema `?schema=` names, `arrowline` by default), for scheduler replicas and runs on several
  hosts. Reached through psycopg (the `postgres` extra); see PostgresDatabase for why not ADBC.

The catalog's SQL is written once, in what both speak: `?` parameters, `insert ... on conflict`,
`returning` where a row count matters, `cast(? as text) is null` for an optional filter (a bare
`? is null` has no type PostgreSQL can infer), no `rowid`, aliased subqueries. The differences
left are data on the two `Database` classes: DDL spelling and how a writer excludes the others.

Writers are serialized on both: SQLite's `begin immediate` takes the database's write lock, and a
PostgreSQL write transaction first takes one transaction-scoped advisory lock for the catalog.
A read-then-write in the catalog (check a state, then move it) is therefore never interleaved with
another writer's, on either backend, without `select ... for update` in every query.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Protocol
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from engine.core.errors import StateError, full_disk_said
from engine.core.locking import advisory_key
from engine.core.secrets import redact, register_secret
from engine.state.folders import CATALOG_FILE, STATE_DIR

__all__ = [
    "CATALOG_ENV",
    "CatalogLocation",
    "Database",
    "PostgresDatabase",
    "Row",
    "SqliteDatabase",
    "catalog_location",
]

CATALOG_ENV = "ARROWLINE_CATALOG"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class Row(Protocol):
    """A result row: by position, by column name, `keys()`, and unpacking. sqlite3.Row is one."""

    def keys(self) -> list[str]: ...

    def __getitem__(self, key: Any, /) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class CatalogLocation:
    """The embedded file, or a PostgreSQL URI and schema."""

    path: Path
    """The SQLite file; for a shared catalog, where it would be (unused)."""
    uri: str | None = None
    schema: str = "arrowline"

    @property
    def shared(self) -> bool:
        return self.uri is not None

    def exists(self) -> bool:
        """False for an embedded catalog no run has made yet: no file, or a file whose tables
        the process creating it has not committed. A shared one is created on first use by
        whichever process comes first, readers included."""
        return self.shared or _made(self.path)

    def describe(self) -> str:
        """For messages and logs: the URI without its password."""
        if self.uri is None:
            return str(self.path)
        return f"{redact(self.uri)} (schema {self.schema})"

    def connect(self, *, writable: bool) -> Database:
        if self.uri is not None:
            return PostgresDatabase(self.uri, self.schema)
        return SqliteDatabase(self.path, writable=writable)


def catalog_location(project: Path, uri: str | None = None) -> CatalogLocation:
    """The catalog of a project: `uri`, else $ARROWLINE_CATALOG, else the embedded file."""
    path = project / STATE_DIR / CATALOG_FILE
    uri = uri if uri is not None else os.environ.get(CATALOG_ENV) or None
    if uri is None or uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        if uri is not None:
            path = Path(uri.removeprefix("sqlite:").removeprefix("file:").removeprefix("//"))
        return CatalogLocation(path)
    parts = urlsplit(uri)
    if parts.password:  # kept out of every log line and message, like a connection's
        register_secret(parts.password)
    if parts.scheme not in ("postgresql", "postgres"):
        raise StateError(
            f"the catalog {redact(uri)} names a {parts.scheme!r} database; a catalog lives in "
            "SQLite (a file path) or PostgreSQL (postgresql://...)",
            hint=f"the catalog is ${CATALOG_ENV} unless a command is given one",
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((value for key, value in query if key == "schema"), "arrowline")
    if not _SCHEMA_NAME.fullmatch(schema):
        raise StateError(
            f"the catalog {redact(uri)}: schema {schema!r} is not a plain lower-case identifier",
            hint="letters, digits and underscores, e.g. ?schema=arrowline",
        )
    rest = urlencode([(k, v) for k, v in query if k != "schema"], quote_via=quote)
    return CatalogLocation(path, urlunsplit(parts._replace(query=rest)), schema)


class Database(ABC):
    """One connection to the catalog's database; thread-safe (one statement at a time)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()

    @abstractmethod
    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        """Run one statement; its rows (none for a statement without `returning`)."""

    @abstractmethod
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    @abstractmethod
    def batches(self, sql: str, size: int) -> Iterator[list[Row]]:
        """A query's rows `size` at a time, read as they are needed (inside `snapshot()`)."""

    @abstractmethod
    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """A write transaction, exclusive among the catalog's writers; rolled back on error."""
        yield self

    @abstractmethod
    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every read inside sees the same committed state."""
        yield

    @abstractmethod
    def table_exists(self, name: str) -> bool: ...

    @abstractmethod
    def create(self, ddl: Sequence[str]) -> None:
        """Run schema statements written in SQLite's spelling; inside `transaction()`."""

    @abstractmethod
    def close(self) -> None: ...


def _enter_wal(connection: sqlite3.Connection, patience: float = 30.0) -> None:
    """Put the catalog in WAL mode. Processes that open a new catalog at the same moment race to
    switch it, and SQLite answers the loser 'database is locked' at once, without waiting out
    busy_timeout (about 1 in 30 when six start together): try again for up to `patience`
    seconds, as busy_timeout would have."""
    deadline = time.monotonic() + patience
    pause = 0.005
    while True:
        try:
            connection.execute("pragma journal_mode = wal")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def _open_read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(
        f"file:{path}?mode=ro", uri=True, timeout=30, isolation_level=None, check_same_thread=False
    )


def _has_tables(connection: sqlite3.Connection) -> bool:
    return bool(
        connection.execute("select 1 from sqlite_master where name = 'task_runs'").fetchall()
    )


def _made(path: Path) -> bool:
    """Whether the file holds a catalog's tables. The file of a new catalog exists a moment
    before them: its creator makes them in one transaction, which a reader does not see until
    it commits."""
    if not path.exists():
        return False
    connection = _open_read_only(path)
    try:
        return _has_tables(connection)
    except sqlite3.DatabaseError:
        return True  # not a catalog at all: opening it says so
    finally:
        connection.close()


class SqliteDatabase(Database):
    def __init__(self, path: Path, *, writable: bool) -> None:
        super().__init__()
        self.path = path
        if writable:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                path, timeout=30, isolation_level=None, check_same_thread=False
            )
        else:
            if not path.exists():
                raise StateError(
                    f"no arrowline catalog at {path}",
                    hint="run a pipeline first; the catalog is created by the first run",
                )
            connection = _open_read_only(path)
            if not _has_tables(connection):
                connection.close()
                raise StateError(
                    f"no arrowline catalog at {path}: the file has no tables yet",
                    hint="a first run is creating it, or the file is not an arrowline catalog",
                )
        connection.row_factory = sqlite3.Row
        with self._full_disk_said():  # a new catalog's first pages and its WAL need space
            connection.execute("pragma busy_timeout = 30000")
            if writable:
                _enter_wal(connection)
                connection.execute("pragma synchronous = normal")
        self._connection = connection

    def _full_disk_said(self) -> contextlib.AbstractContextManager[None]:
        """sqlite3's 'database or disk is full' as DiskFull naming the catalog's disk."""
        return full_disk_said(
            self.path, what="the catalog could not write", errors=(sqlite3.Error,)
        )

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        with self.lock, self._full_disk_said():
            return self._connection.execute(sql, parameters).fetchall()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.lock, self._full_disk_said():
            self._connection.executemany(sql, rows)

    def batches(self, sql: str, size: int) -> Iterator[list[Row]]:
        with self.lock:
            cursor = self._connection.execute(sql)
            while batch := cursor.fetchmany(size):
                yield batch

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        with self.lock, self._full_disk_said():
            self._connection.execute("begin immediate")
            try:
                yield self
                self._connection.execute("commit")
            except BaseException:
                # A failed commit (a full disk) can leave the transaction open; the next
                # `begin immediate` would fail for that, not for what really happened.
                if self._connection.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._connection.execute("rollback")
                raise

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        # in WAL mode a deferred transaction reads one snapshot, taken at its first read
        with self.lock:
            self._connection.execute("begin")
            try:
                yield
            finally:
                self._connection.execute("commit")

    def table_exists(self, name: str) -> bool:
        return bool(self.execute("select 1 from sqlite_master where name = ?", (name,)))

    def create(self, ddl: Sequence[str]) -> None:
        for statement in ddl:
            self.execute(statement)

    def close(self) -> None:
        with self.lock:
            self._connection.close()


@lru_cache(maxsize=512)
def _pyformat(sql: str) -> str:
    """The catalog's `?` parameters as psycopg's `%s`, outside quoted text; a `%` doubled."""
    out: list[str] = []
    in_quote: str | None = None
    for char in sql:
        if char == "%":
            out.append("%%")
            continue
        if in_quote is not None:
            if char == in_quote:
                in_quote = None
        elif char in "'\"":
            in_quote = char
        elif char == "?":
            out.append("%s")
            continue
        out.append(char)
    return "".join(out)


class _PgRow(tuple[Any, ...]):
    """A row of a PostgreSQL result with sqlite3.Row's access by column name."""

    _names: dict[str, int]

    def __new__(cls, values: Sequence[Any], names: dict[str, int]) -> _PgRow:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def keys(self) -> list[str]:
        return list(self._names)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names[key])
        return tuple.__getitem__(self, key)


def _pg_ddl(statement: str) -> str:
    """SQLite's DDL spelling in PostgreSQL's: 64-bit integers (row and byte counts exceed int4),
    identity keys, double precision."""
    statement = statement.replace(
        "integer primary key autoincrement", "bigint generated by default as identity primary key"
    )
    statement = re.sub(r"\binteger\b", "bigint", statement)
    return re.sub(r"\breal\b", "double precision", statement)


def _pg_parameter(value: Any) -> Any:
    # The catalog stores flags as 0/1 integers, as SQLite does; a bool would bind as boolean.
    return int(value) if isinstance(value, bool) else value


class PostgresDatabase(Database):
    """Through psycopg, not ADBC: the catalog is many small statements and short-lived sessions
    (a run, a lock, a probe), where ADBC's bulk-oriented connect (~60 ms, it loads the type
    catalog) and per-statement Arrow round trip cost more than the work."""

    KEEPALIVE: ClassVar[dict[str, str]] = {
        # libpq's side: notice a dead server within ~11 s instead of the OS's two hours
        "keepalives": "1",
        "keepalives_idle": "5",
        "keepalives_interval": "2",
        "keepalives_count": "3",
    }
    SERVER_KEEPALIVE: ClassVar[str] = (
        # the server's side: end the session of a vanished client (and free its advisory locks)
        "set tcp_keepalives_idle = 5; set tcp_keepalives_interval = 2; "
        "set tcp_keepalives_count = 3; set tcp_user_timeout = 10000"
    )

    def __init__(self, uri: str, schema: str, *, application_name: str = "arrowline") -> None:
        super().__init__()
        self.uri = uri
        self.schema = schema
        self.application_name = application_name
        self.writer_key = advisory_key("arrowline:catalog", schema)
        self._depth = 0
        """Open transactions and snapshots: a statement inside one is never retried."""
        self._connection = self._connect()

    def _reconnect(self) -> None:
        """A server restart or a dropped connection: a long-lived process (the scheduler) gets
        a new session instead of failing every tick until it is restarted. Session state (an
        advisory lock) is not carried over: a lock holder sees it lost, as it is."""
        with contextlib.suppress(Exception):
            self._connection.close()
        self._connection = self._connect()

    def _connect(self) -> Any:
        try:
            import psycopg
            from psycopg.conninfo import make_conninfo
        except ImportError as exc:
            raise StateError(
                f"a catalog in PostgreSQL ({CATALOG_ENV}) needs psycopg",
                hint="pip install 'arrowline[postgres]'",
            ) from exc
        try:
            conninfo = make_conninfo(
                self.uri, application_name=self.application_name[:63], **self.KEEPALIVE
            )
            connection = psycopg.connect(conninfo, autocommit=True)
            connection.execute(f'{self.SERVER_KEEPALIVE}; set search_path to "{self.schema}"')
            return connection
        except psycopg.Error as exc:
            reason = redact(str(exc)).strip().splitlines()
            raise StateError(
                f"cannot reach the arrowline catalog at {redact(self.uri)}: "
                f"{reason[0] if reason else type(exc).__name__}",
                hint=f"check {CATALOG_ENV}; the server must accept connections from this host",
            ) from None

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        import psycopg

        with self.lock:
            try:
                return self._execute(sql, parameters)
            except psycopg.OperationalError:
                if self._depth or not self._connection.broken:
                    raise  # inside a transaction the whole transaction fails, and is not replayed
            self._reconnect()
            return self._execute(sql, parameters)

    def _execute(self, sql: str, parameters: Sequence[Any]) -> list[Row]:
        with self._connection.cursor() as cursor:
            if parameters:
                cursor.execute(_pyformat(sql), [_pg_parameter(value) for value in parameters])
            else:
                cursor.execute(sql)  # without parameters psycopg sends the text as it is
            if cursor.description is None:
                return []
            names = {column.name: index for index, column in enumerate(cursor.description)}
            return [_PgRow(values, names) for values in cursor.fetchall()]

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        with self.lock, self._connection.cursor() as cursor:
            cursor.executemany(
                _pyformat(sql), [[_pg_parameter(value) for value in row] for row in rows]
            )

    def batches(self, sql: str, size: int) -> Iterator[list[Row]]:
        # a named (server-side) cursor: the rows stay on the server until fetched
        with self.lock, self._connection.cursor(name="arrowline_batches") as cursor:
            cursor.execute(sql)
            names = {column.name: index for index, column in enumerate(cursor.description or ())}
            while batch := cursor.fetchmany(size):
                yield [_PgRow(values, names) for values in batch]

    @contextmanager
    def _guarded(self) -> Iterator[None]:
        """Hold the connection for a transaction: reconnect first when it was lost since the
        last statement, and let nothing inside retry on its own."""
        with self.lock:
            if self._connection.broken:
                self._reconnect()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        with self._guarded(), self._connection.transaction():
            self.execute(
                "select pg_advisory_xact_lock(cast(? as int), cast(? as int))", self.writer_key
            )
            yield self

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        with self._guarded(), self._connection.transaction():
            self.execute("set transaction isolation level repeatable read, read only")
            yield

    def table_exists(self, name: str) -> bool:
        rows = self.execute(
            "select 1 from information_schema.tables where table_schema = ? and table_name = ?",
            (self.schema, name),
        )
        return bool(rows)

    def create(self, ddl: Sequence[str]) -> None:
        # inside the writer transaction: two processes creating the same tables at once would
        # otherwise collide in pg_type
        self.execute(f'create schema if not exists "{self.schema}"')
        for statement in ddl:
            self.execute(_pg_ddl(statement))

    def close(self) -> None:
        with self.lock:
            self._connection.close()

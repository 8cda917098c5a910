"""SQL tasks: a DuckDB SELECT over upstream outputs, written straight to Parquet.

Each upstream task a statement reads becomes a view over its Parquet files, named by task id;
an upstream handed over as its query (`materialize: ephemeral`) becomes a view of that query,
over views of its own inputs, so DuckDB plans it inside the reader's statement: filters and
column choices reach through it, and its rows are never written anywhere.
The statement runs inside `COPY (...) TO` so DuckDB reads, computes and writes in parallel
without the rows ever passing through Python; memory is DuckDB's, bounded by `memory_limit` and
spilled to the workspace's temp folder beyond it. A cancel or timeout interrupts the query.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from engine.core.cancel import CancelToken
from engine.core.errors import DataError, TaskError, disk_full
from engine.core.sqltext import quote_identifier, sql_literal
from engine.core.tables import THIS, InputTable

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from transforms.config import SqlIncremental

__all__ = ["DuckDBSettings", "DuckDatabase", "added_to_kept", "describe_sql", "run_sql"]


@dataclass(frozen=True)
class DuckDBSettings:
    threads: int | None = None
    """Worker threads per query; None lets DuckDB use every core."""
    memory_limit: str | None = None
    """e.g. '4GB'; None keeps DuckDB's default (80% of RAM)."""
    temp_directory: Path | None = None


def connect(settings: DuckDBSettings) -> duckdb.DuckDBPyConnection:
    import duckdb

    config: dict[str, str | bool | int | float | list[str]] = {}
    if settings.threads:
        config["threads"] = settings.threads
    if settings.memory_limit:
        config["memory_limit"] = settings.memory_limit
    if settings.temp_directory:
        settings.temp_directory.mkdir(parents=True, exist_ok=True)
        config["temp_directory"] = str(settings.temp_directory)
    return duckdb.connect(config=config)


def _statement(sql: str) -> str:
    """The statement up to its last token: trailing `;` and comments would break `COPY (...)`."""
    from sqlglot.dialects.duckdb import DuckDB
    from sqlglot.tokenizer_core import TokenType

    tokens = DuckDB().tokenize(sql)
    while tokens and tokens[-1].token_type == TokenType.SEMICOLON:
        tokens.pop()
    return sql[: tokens[-1].end + 1] if tokens else sql


class DuckDatabase:
    """One in-memory DuckDB database for the sql tasks of a run, started on first use.

    Starting a database costs ~25 ms, which every sql task paid; one database also gives the
    statements that run at once one thread pool and one memory limit, where each used to size
    itself to the whole machine. Each attempt works on a cursor of its own, in a schema of its
    own that holds the views of its inputs, dropped when it ends.
    """

    def __init__(self, settings: DuckDBSettings | None = None) -> None:
        self.settings = settings or DuckDBSettings()
        self._connection: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._serial = itertools.count()

    @contextmanager
    def session(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor whose unqualified names are a fresh schema's."""
        import duckdb

        with self._lock:
            if self._connection is None:
                self._connection = connect(self.settings)
            cursor = self._connection.cursor()
            schema = f"attempt_{next(self._serial)}"
        try:
            cursor.execute(f"create schema {schema}")
            cursor.execute(f"set schema = '{schema}'")
            yield cursor
        finally:
            with suppress(duckdb.Error):  # closed under it: the run is over
                cursor.execute(f"drop schema if exists {schema} cascade")
            cursor.close()

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


def run_sql(
    sql: str,
    inputs: Mapping[str, InputTable],
    output: Path,
    *,
    database: DuckDatabase | None = None,
    settings: DuckDBSettings | None = None,
    cancel: CancelToken | None = None,
) -> int:
    """Run `sql` over `inputs` (task id -> table) and write the result to `output`. Returns rows.
    Without a `database`, one is started for the statement alone (with `settings`)."""
    import duckdb

    statement = _statement(sql)
    offset: int | None = None  # the lines before the statement in what DuckDB reads
    with _database(database, settings) as db, db.session() as cursor:
        unregister = cancel.on_cancel(cursor.interrupt) if cancel else None
        try:
            _register(cursor, inputs, set())  # errors here are the inputs': no line of ours
            offset = 1  # `describe (`
            exact = _exact_integers(cursor, statement)
            offset = 1 + exact[: exact.index(statement)].count("\n")  # `copy (`, a wrapper
            result = cursor.execute(
                f"copy (\n{exact}\n) to {sql_literal(str(output))} "
                "(format parquet, compression snappy, row_group_size 122880)"
            ).fetchone()
            return int(result[0]) if result else 0
        except duckdb.InterruptException:
            if cancel is not None:
                cancel.raise_if_cancelled()
            raise TaskError("the query was interrupted") from None
        except (
            duckdb.ConversionException,
            duckdb.OutOfRangeException,
            duckdb.InvalidInputException,
        ) as exc:
            text, line = _said(exc, statement, offset)
            raise _at_line(DataError(f"the query failed on the data: {text}"), line) from None
        except duckdb.Error as exc:
            # a full disk under the output (or DuckDB's spill folder) is not a bug in the query
            text, line = _said(exc, statement, offset)
            full = disk_full(exc, output)
            raise full or _at_line(TaskError(f"DuckDB: {text}"), line) from None
        finally:
            if unregister:
                unregister()


def describe_sql(
    sql: str,
    inputs: Mapping[str, InputTable],
    *,
    database: DuckDatabase | None = None,
    settings: DuckDBSettings | None = None,
) -> pa.Schema:
    """The schema `sql` would produce over `inputs`, found by binding it, without running it:
    what an ephemeral task checks of its statement before its readers inline it."""
    import duckdb

    statement = _statement(sql)
    offset: int | None = None
    with _database(database, settings) as db, db.session() as cursor:
        try:
            _register(cursor, inputs, set())
            offset = 1
            relation = cursor.sql(f"select * from (\n{statement}\n) limit 0")
            return relation.to_arrow_table().schema
        except duckdb.Error as exc:
            text, line = _said(exc, statement, offset)
            raise _at_line(TaskError(f"DuckDB: {text}"), line) from None


@contextmanager
def _database(
    database: DuckDatabase | None, settings: DuckDBSettings | None
) -> Iterator[DuckDatabase]:
    """`database`, or one of `settings` for one statement, closed after it."""
    if database is not None:
        yield database
        return
    own = DuckDatabase(settings)
    try:
        yield own
    finally:
        own.close()


def _register(
    connection: duckdb.DuckDBPyConnection, inputs: Mapping[str, InputTable], seen: set[str]
) -> None:
    """A view per input, named by task id: over its files, or, for one handed over as its
    query, that query over views of its own inputs (registered first, each name once)."""
    for name, table in inputs.items():
        if name in seen:
            continue
        seen.add(name)
        if table.query is not None:
            _register(connection, table.query.inputs, seen)
            body = _statement(table.query.sql)
        else:
            body = f"select * from {table.duckdb_source()}"
        connection.execute(f"create view {quote_identifier(name)} as {body}")


def _exact_integers(connection: duckdb.DuckDBPyConnection, statement: str) -> str:
    """DuckDB sums integers into HUGEINT, which its Parquet writer stores as DOUBLE: a silent
    loss of type and, past 2**53, of value. Keep such columns integers (BIGINT); a value that
    does not fit fails the task with a DataError naming the overflow, instead of rounding.
    Cast to DECIMAL(38,0) in the query to keep 128-bit values."""
    columns = connection.execute(f"describe (\n{statement}\n)").fetchall()
    wide = [name for name, kind, *_ in columns if kind in ("HUGEINT", "UHUGEINT")]
    if not wide:
        return statement
    casts = ", ".join(
        f"cast({quote_identifier(name)} as bigint) as {quote_identifier(name)}" for name in wide
    )
    return f"select * replace ({casts}) from (\n{statement}\n)"


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else type(exc).__name__


_LINE = re.compile(r"^LINE (\d+):(.*)$", re.MULTILINE)
"""Where DuckDB's message points: `LINE 26:     o.nope as bad,` (the line's text, cut to a
window with `...` when it is long)."""


def _said(exc: BaseException, statement: str, offset: int | None) -> tuple[str, int | None]:
    """DuckDB's error, and the line of `statement` it points at (the text DuckDB read had
    `offset` lines before the statement; None: it read another text): said as that line, or
    None when DuckDB names no line, or one outside the statement or whose text is not there."""
    text = _first_line(exc)
    found = _LINE.search(str(exc))
    if found is None or offset is None:
        return text, None
    line = int(found[1]) - offset
    shown = found[2].strip().removeprefix("...").removesuffix("...").strip()
    lines = statement.splitlines()
    if not 1 <= line <= len(lines) or shown not in lines[line - 1]:
        return text, None
    return text.replace(f"LINE {found[1]}:", f"LINE {line}:", 1), line


def _at_line(error: TaskError, line: int | None) -> TaskError:
    error.statement_line = line
    return error


def added_to_kept(
    statement: str,
    incremental: SqlIncremental,
    kept: Sequence[str] | None = None,
    new_columns: Sequence[str] | None = None,
) -> str:
    """The statement of an incremental sql task that has a kept output (`THIS`, of columns
    `kept`): the kept rows (those whose key the new rows do not hold, when it merges) and the
    new rows (of `new_columns`), matched by column name, in the columns its on_schema_change
    keeps (a column only one side has is NULL on the other). DataError when it fails on a
    difference."""
    columns = _kept_columns(incremental, list(kept or []), list(new_columns or []))
    new = f"(select {_side(columns, new_columns)} from (\n{_statement(statement)}\n))"
    old = f"(select {_side(columns, kept)} from {THIS})" if columns else THIS
    if not incremental.merges:
        return f"select * from {old} union all by name select * from {new}"
    same = " and ".join(
        # a NULL key matches a NULL key: a row without one is replaced, not kept twice
        f"n.{quote_identifier(k)} is not distinct from k.{quote_identifier(k)}"
        for k in incremental.unique_key
    )
    return (
        f"with new_rows as {new}\n"
        f"select * from {old} as k where not exists (select 1 from new_rows as n where {same})\n"
        "union all by name select * from new_rows"
    )


def _side(columns: list[str], has: Sequence[str] | None) -> str:
    """One side's select list for the output's `columns`: NULL for one the side lacks."""
    if not columns:
        return "*"
    present = {c.lower() for c in has or ()}
    return ", ".join(
        quote_identifier(c) if c.lower() in present else f"null as {quote_identifier(c)}"
        for c in columns
    )


def _kept_columns(incremental: SqlIncremental, kept: list[str], new: list[str]) -> list[str]:
    """The output's columns by on_schema_change ([] for every column of both sides); the
    key columns always stay."""
    if not kept or not new or {c.lower() for c in kept} == {c.lower() for c in new}:
        return []  # the same columns, in any order: matched by name
    policy = incremental.on_schema_change
    if policy == "fail":
        raise DataError(
            f"the new rows' columns ({', '.join(new)}) differ from the kept output's "
            f"({', '.join(kept)}) and on_schema_change is fail",
            hint="set on_schema_change (append_new_columns, sync_all_columns, ignore), or run "
            "with --full-refresh to make the whole table with the new columns",
        )
    if policy == "append_new_columns":
        return []
    if policy == "sync_all_columns":
        return new
    left_out = [c for c in new if c.lower() not in {k.lower() for k in kept}]
    if left_out:
        logger.warning(
            "new columns {} are left out: on_schema_change is ignore (--full-refresh adds them)",
            ", ".join(left_out),
        )
    return kept

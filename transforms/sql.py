"""SQL tasks: a DuckDB SELECT over upstream outputs, written straight to Parquet.

Each upstream task an statement reads becomes a view over its Parquet files, named by task id.
The statement runs inside `COPY (...) TO` so DuckDB reads, computes and writes in parallel
without the rows ever passing through Python; memory is DuckDB's, bounded by `memory_limit` and
spilled to the workspace's temp folder beyond it. A cancel or timeout interrupts the query.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.core.cancel import CancelToken
from engine.core.sqltext import quote_identifier, sql_literal
from engine.core.tables import InputTable

if TYPE_CHECKING:
    import duckdb
from engine.core.errors import DataError, TaskError, disk_full

__all__ = ["DuckDBSettings", "run_sql"]


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


def run_sql(
    sql: str,
    inputs: Mapping[str, InputTable],
    output: Path,
    *,
    settings: DuckDBSettings | None = None,
    cancel: CancelToken | None = None,
) -> int:
    """Run `sql` over `inputs` (task id -> table) and write the result to `output`. Returns rows."""
    import duckdb

    connection = connect(settings or DuckDBSettings())
    unregister = cancel.on_cancel(connection.interrupt) if cancel else None
    try:
        for name, table in inputs.items():
            connection.execute(
                f"create view {quote_identifier(name)} as select * from {table.duckdb_source()}"
            )
        statement = _exact_integers(connection, _statement(sql))
        result = connection.execute(
            f"copy (\n{statement}\n) to {sql_literal(str(output))} "
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
        raise DataError(f"the query failed on the data: {_first_line(exc)}") from None
    except duckdb.Error as exc:
        # a full disk under the output (or DuckDB's spill folder) is not a bug in the query
        raise disk_full(exc, output) or TaskError(f"DuckDB: {_first_line(exc)}") from None
    finally:
        if unregister:
            unregister()
        connection.close()


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

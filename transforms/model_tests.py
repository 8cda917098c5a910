"""dbt's generic tests over a sql task's output, run in DuckDB once the output is written and
before it is published: `unique` and `accepted_values` count the failing values, `not_null`
and `relationships` the failing rows (NULLs are no value, as in dbt: two NULLs are not a
duplicate, a NULL refers to nothing). `error_if`/`warn_if` (default `!= 0`) decide on the count;
a failure of severity error fails the task with every failed test, its count and examples (the
orphan values of a relationship); one of severity warn is said in the log."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from loguru import logger

from engine.core.cancel import CancelToken
from engine.core.errors import DataError, DefinitionError
from engine.core.sqltext import quote_identifier, sql_literal, sql_number
from engine.core.tables import InputTable
from transforms.config import ModelTest
from transforms.sql import DuckDatabase, _database, _first_line, _register

__all__ = ["run_tests"]

_EXAMPLES = 5
_COMPARE: dict[str, Callable[[int, int], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


def run_tests(
    tests: Sequence[ModelTest],
    output: Path,
    inputs: Mapping[str, InputTable],
    *,
    task_id: str,
    database: DuckDatabase | None = None,
    cancel: CancelToken | None = None,
) -> None:
    """Run `tests` over the Parquet file `output`; raises DataError naming every test that
    failed with severity error."""
    import duckdb

    failed: list[str] = []
    with _database(database, None) as db, db.session() as cursor:
        unregister = cancel.on_cancel(cursor.interrupt) if cancel else None
        try:
            _register(cursor, inputs, set())
            model = f"read_parquet({sql_literal(str(output))})"
            described = cursor.execute(f"describe select * from {model}").fetchall()
            columns = [row[0] for row in described]
            for test in tests:
                query = _query(test, model, columns, inputs, task_id)
                try:
                    count = cursor.execute(f"select count(*) from ({query})").fetchone()
                    sample = cursor.execute(f"{query} limit {_EXAMPLES}").fetchall()
                except duckdb.InterruptException:
                    if cancel is not None:
                        cancel.raise_if_cancelled()
                    raise
                except duckdb.Error as exc:
                    raise DefinitionError(
                        f"test {test.name} of {task_id!r} cannot run: {_first_line(exc)}"
                    ) from None
                failures = int(count[0]) if count else 0
                examples = [row[0] for row in sample]
                verdict = _verdict(test, failures)
                if verdict is None:
                    continue
                rule = f"{verdict}_if {_condition(test, verdict)}"
                said = f"{test.name}: {failures} {_unit(test, failures)} ({rule})"
                if examples:
                    said += f"; e.g. {', '.join(_shown(e) for e in examples)}"
                if verdict == "error":
                    failed.append(said)
                else:
                    logger.bind(task_id=task_id).warning("test {}", said)
        finally:
            if unregister:
                unregister()
    if failed:
        raise DataError(
            f"{len(failed)} of {len(tests)} tests of {task_id!r} failed: " + "; ".join(failed),
            hint="the output is not published and nothing that reads it runs; fix the data "
            "or the model, or give the test severity: warn",
        )


def _query(
    test: ModelTest,
    model: str,
    columns: list[str],
    inputs: Mapping[str, InputTable],
    task_id: str,
) -> str:
    """The failing values (or rows) as one column, `value`."""

    def column(name: str) -> str:
        found = [c for c in columns if c.lower() == name.lower()]  # DuckDB's names ignore case
        if not found:
            raise DefinitionError(
                f"test {test.name} of {task_id!r}: the output has no column {name!r} "
                f"(its columns: {', '.join(columns)})"
            )
        return quote_identifier(found[0])

    if test.unique is not None:
        c = column(test.unique)
        return (
            f"select {c} as value from {model} where {c} is not null "
            f"group by {c} having count(*) > 1"
        )
    if test.not_null is not None:
        c = column(test.not_null)
        return f"select {c} as value from {model} where {c} is null"
    if test.accepted_values is not None:
        c = column(test.accepted_values.column)
        allowed = ", ".join(_literal(v) for v in test.accepted_values.values if v is not None)
        return (
            f"select {c} as value from {model} where {c} is not null "
            f"and {c} not in ({allowed or 'null'}) group by {c}"
        )
    assert test.relationships is not None
    found = test.relationships
    c = column(found.column)
    if found.to == task_id:  # rows referring to rows of the same output (a manager's id)
        parent = model
    elif found.to in inputs:
        parent = quote_identifier(found.to)
    else:  # validation names it first; a safeguard
        raise DefinitionError(f"test {test.name} of {task_id!r}: no task {found.to!r} to read")
    field = quote_identifier(found.field)
    return (
        f"select child.{c} as value from {model} as child where child.{c} is not null and not "
        f"exists (select 1 from {parent} as p where p.{field} = child.{c})"
    )


def _literal(value: Any) -> str:
    """A value as a SQL literal DuckDB compares in the column's type, as dbt's quoted values
    are: 1 matches 1.0 in a DOUBLE column, '2024-01-01' a DATE."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return sql_number(value)
    return sql_literal(str(value))


def _shown(value: Any) -> str:
    """An example value as a reader writes it (no `Decimal('1.50')`)."""
    return repr(value) if isinstance(value, str) else str(value)


def _unit(test: ModelTest, count: int) -> str:
    one = count == 1
    if test.unique is not None:
        return "value held twice or more" if one else "values held twice or more"
    if test.accepted_values is not None:
        return "value not accepted" if one else "values not accepted"
    if test.not_null is not None:
        return "row with NULL" if one else "rows with NULL"
    return "row referring to nothing" if one else "rows referring to nothing"


def _condition(test: ModelTest, verdict: str) -> str:
    return " ".join((test.error_if if verdict == "error" else test.warn_if).split())


def _verdict(test: ModelTest, failures: int) -> str | None:
    """'error', 'warn' or None, as dbt decides: with severity error, error_if first."""
    if test.severity == "error" and _holds(test.error_if, failures):
        return "error"
    if _holds(test.warn_if, failures):
        return "warn"
    return None


def _holds(condition: str, failures: int) -> bool:
    match = re.fullmatch(r"\s*(==|!=|>=|<=|>|<)\s*(\d+)\s*", condition)
    assert match is not None, condition  # the model's pattern admits nothing else
    return _COMPARE[match[1]](failures, int(match[2]))

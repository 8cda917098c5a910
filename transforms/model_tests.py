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
    quarantine: Path | None = None,
) -> int:
    """Run `tests` over the Parquet file `output`; raises DataError naming every test that
    failed with severity error. The rows of `store_failures` tests that failed without
    failing the task are written to the folder `quarantine`, each row once with every test it
    failed; returns how many."""
    import duckdb

    failed: list[str] = []
    stored: list[tuple[ModelTest, str]] = []
    with _database(database, None) as db, db.session() as cursor:
        unregister = cancel.on_cancel(cursor.interrupt) if cancel else None
        try:
            _register(cursor, inputs, set())
            model = f"read_parquet({sql_literal(str(output))})"
            if any(test.sql is not None for test in tests):  # they read the output by its id
                cursor.execute(
                    f"create or replace temp view {quote_identifier(task_id)} as "
                    f"select * from {model}"
                )
            described = cursor.execute(f"describe select * from {model}").fetchall()
            columns = [row[0] for row in described]
            for index, test in enumerate(tests):
                try:
                    query = _query(test, model, columns, inputs, task_id)
                except DefinitionError as exc:
                    exc.key = ("tests", index)  # said where the test is written
                    raise
                try:
                    count = cursor.execute(f"select count(*) from ({query})").fetchone()
                    failures = int(count[0]) if count else 0
                    verdict = _verdict(test, failures)
                    if verdict is None:  # nothing to show: the query does not run again
                        continue
                    sample = cursor.execute(f"{query} limit {_EXAMPLES}").fetchall()
                except duckdb.InterruptException:
                    if cancel is not None:
                        cancel.raise_if_cancelled()
                    raise
                except duckdb.Error as exc:
                    wrong = DefinitionError(
                        f"test {test.name} of {task_id!r} cannot run: {_first_line(exc)}"
                    )
                    wrong.key = ("tests", index)
                    raise wrong from None
                examples = [row[0] if len(row) == 1 or test.sql is None else row for row in sample]
                rule = f"{verdict}_if {_condition(test, verdict)}"
                said = f"{test.name}: {failures} {_unit(test, failures)} ({rule})"
                if examples:
                    said += f"; e.g. {', '.join(_shown(e) for e in examples)}"
                if verdict == "error":
                    failed.append(said)
                else:
                    logger.bind(task_id=task_id).warning("test {}", said)
                    if test.store_failures and test.sql is None:
                        stored.append((test, _failing_row(test, model, columns, inputs, task_id)))
            if stored and not failed and quarantine is not None:
                return _store(cursor, stored, output, quarantine)
        finally:
            if unregister:
                unregister()
    if not failed:
        logger.bind(task_id=task_id).info("{} tests passed or were said", len(tests))
    if failed:
        raise DataError(
            f"{len(failed)} of {len(tests)} tests of {task_id!r} failed: " + "; ".join(failed),
            hint="the output is not published and nothing that reads it runs; fix the data "
            "or the model, or give the test severity: warn",
        )
    return 0


def _failing_row(
    test: ModelTest,
    model: str,
    columns: list[str],
    inputs: Mapping[str, InputTable],
    task_id: str,
) -> str:
    """A condition on a row `child` of the output that holds when the row fails `test` (one
    of the four generic tests)."""
    values = _query(test, model, columns, inputs, task_id)  # the failing values, as `value`
    column = _tested_column(test)
    c = "child." + quote_identifier(next(n for n in columns if n.lower() == column.lower()))
    if test.not_null is not None:
        return f"{c} is null"
    return f"{c} is not null and {c} in (select value from ({values}))"


def _tested_column(test: ModelTest) -> str:
    column = test.tested_column
    assert column is not None  # one of the four generic tests
    return column


def _store(cursor: Any, stored: list[tuple[ModelTest, str]], output: Path, quarantine: Path) -> int:
    """The output's rows that failed a stored test, in the quarantine's shape: the row's
    place (`_arrowline_row`), its columns, and `_arrowline_errors` (column, check, value)."""
    reasons = ", ".join(
        f"case when {condition} then {{'column': {sql_literal(_tested_column(test))}, "
        f"'check': {sql_literal(test.name)}, 'value': cast(child."
        f"{quote_identifier(_tested_column(test))} as varchar)}} end"
        for test, condition in stored
    )
    where = " or ".join(f"({condition})" for _, condition in stored)
    quarantine.mkdir(parents=True, exist_ok=True)
    target = quarantine / "part-00000.parquet"
    source = f"read_parquet({sql_literal(str(output))}, file_row_number = true)"
    cursor.execute(
        f"copy (select file_row_number as _arrowline_row, * exclude (file_row_number), "
        f"list_filter([{reasons}], lambda r: r is not null) as _arrowline_errors "
        f"from {source} as child where {where} order by file_row_number) "
        f"to {sql_literal(str(target))} (format parquet)"
    )
    found = cursor.execute(f"select count(*) from read_parquet({sql_literal(str(target))})")
    return int(found.fetchone()[0])


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

    if test.sql is not None:  # its rows are the failures
        return test.sql.strip().rstrip(";")
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
    """An example value as a reader writes it (no `Decimal('1.50')`); a row as its values in
    parentheses."""
    if isinstance(value, tuple):
        return "(" + ", ".join(_shown(v) for v in value) + ")"
    return repr(value) if isinstance(value, str) else str(value)


def _unit(test: ModelTest, count: int) -> str:
    one = count == 1
    if test.unique is not None:
        return "value held twice or more" if one else "values held twice or more"
    if test.accepted_values is not None:
        return "value not accepted" if one else "values not accepted"
    if test.not_null is not None:
        return "row with NULL" if one else "rows with NULL"
    if test.sql is not None:
        return "failing row" if one else "failing rows"
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

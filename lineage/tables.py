"""Which tables a SQL statement reads, found with sqlglot's scope analysis.

Scope analysis (not a flat search for table nodes) is what tells a CTE named like a task from the
task itself, and a recursive CTE from a table it does not read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError
from sqlglot.optimizer.scope import traverse_scope

__all__ = ["SqlSyntaxError", "TableRef", "parse_select", "referenced_tables"]

DIALECT = "duckdb"
_INCOMPLETE = re.compile(r"Required keyword: .* missing for <class '[\w.]*?(\w+)'>")


@dataclass(frozen=True)
class TableRef:
    """A table a statement reads. `name` is the last part; `qualified` is the name as written."""

    name: str
    qualified: str
    line: int | None
    column: int | None


@dataclass(frozen=True)
class SqlSyntaxError:
    """Where and why a statement does not parse; lines count from 1 within the statement."""

    message: str
    line: int | None
    column: int | None


# Larger than the statements of one big pipeline (5,000 tasks): validation parses each and
# planning asks again; an LRU smaller than that loop evicts every entry before it is reused.
# About 6 KB per small statement's tree.
@lru_cache(maxsize=8192)
def parse_select(sql: str) -> exp.Expression | SqlSyntaxError:
    """Parse exactly one statement in DuckDB's dialect, or describe why it cannot be."""
    try:
        statements = [s for s in sqlglot.parse(sql, read=DIALECT) if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        detail = first.get("description") or str(exc).splitlines()[0]
        incomplete = _INCOMPLETE.match(detail)
        if incomplete:  # "Required keyword: 'this' missing for <class '...Where'>"
            detail = f"incomplete {incomplete.group(1).upper()} clause"
        near = first.get("highlight")
        if near:
            detail += f" near {near!r}"
        return SqlSyntaxError(detail, first.get("line"), first.get("col"))
    except sqlglot.errors.TokenError as exc:
        return SqlSyntaxError(str(exc), None, None)
    if not statements:
        return SqlSyntaxError("the statement is empty", 1, 1)
    if len(statements) > 1:
        return SqlSyntaxError(
            f"expected one statement, found {len(statements)}; a sql task is one SELECT", None, None
        )
    statement = statements[0]
    if not isinstance(statement, exp.Query):
        kind = type(statement).__name__.upper()
        return SqlSyntaxError(f"a sql task must be a query (SELECT), not {kind}", 1, 1)
    assert isinstance(statement, exp.Expression)  # Query is a mixin; a parsed one is both
    return statement


def referenced_tables(statement: exp.Expression) -> list[TableRef]:
    """Tables the statement reads, in order of first appearance, without CTEs or table functions."""
    seen: dict[str, TableRef] = {}
    for scope in traverse_scope(statement):
        for source in scope.sources.values():
            if not isinstance(source, exp.Table) or isinstance(source.this, exp.Func):
                continue
            if not source.name:
                continue
            parts = [part for part in (source.catalog, source.db, source.name) if part]
            qualified = ".".join(parts)
            if qualified in seen:
                continue
            meta = source.this.meta if isinstance(source.this, exp.Expression) else {}
            seen[qualified] = TableRef(source.name, qualified, meta.get("line"), meta.get("col"))
    return sorted(seen.values(), key=lambda ref: (ref.line or 0, ref.column or 0))

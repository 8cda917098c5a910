"""SQL text written from values: quoted identifiers and tables (PostgreSQL and DuckDB agree on
the quoting), DuckDB list literals of file paths, and the column names DuckDB cannot tell apart."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from engine.core.errors import DefinitionError, ParameterError

__all__ = [
    "NameClash",
    "distinct_names",
    "name_clash",
    "parquet_list_sql",
    "quote_identifier",
    "quote_table",
    "split_table",
    "sql_identifier",
    "sql_literal",
    "sql_number",
]

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def split_table(name: str) -> tuple[str | None, str]:
    """`main.orders` -> ("main", "orders"); `orders` -> (None, "orders")."""
    parts = name.split(".")
    if len(parts) > 2 or not all(parts):
        raise DefinitionError(f"table name {name!r} must be 'table' or 'schema.table'")
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def quote_table(name: str) -> str:
    schema, table = split_table(name)
    if schema:
        return f"{quote_identifier(schema)}.{quote_identifier(table)}"
    return quote_identifier(table)


@dataclass(frozen=True)
class NameClash:
    """Two column names DuckDB reads as one; `first` and `second` are 0-based positions."""

    names: tuple[str, ...]
    first: int
    second: int

    def describe(self) -> str:
        """`column 'id' twice (columns 1 and 2)`; names that differ in case are both quoted."""
        a, b = self.names[self.first], self.names[self.second]
        where = f"(columns {self.first + 1} and {self.second + 1})"
        if a == b:
            return f"column {a!r} twice {where}"
        return (
            f"columns {a!r} and {b!r} {where}, which differ only in case: "
            "DuckDB reads them as one name"
        )


def name_clash(names: Sequence[str]) -> NameClash | None:
    """The first two names DuckDB reads as one column, or None when all are distinct.

    DuckDB compares identifiers ignoring the case of ASCII letters only, and a relation with
    two such names gets the second renamed (`id_1`): the column a downstream task reads would
    silently change name between runs, so such names are refused where they enter."""
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        first = seen.setdefault(name.translate(_ASCII_LOWER), index)
        if first != index:
            return NameClash(tuple(names), first, index)
    return None


def distinct_names(names: Sequence[str]) -> list[str]:
    """The names DuckDB gives the columns of a table it writes: the second of two names that
    are one to it (equal but for ASCII case) gets `_1`, the next `_2`, skipping any suffix a
    name already in use has taken (`id, id, ID, id_1` -> `id, id_1, ID_2, id_1_1`)."""
    used: dict[str, int] = {}
    result = []
    for name in names:
        key = name.translate(_ASCII_LOWER)
        if key not in used:
            used[key] = 1
            result.append(name)
            continue
        renamed = f"{name}_{used[key]}"
        while renamed.translate(_ASCII_LOWER) in used:
            used[key] += 1
            renamed = f"{name}_{used[key]}"
        used[renamed.translate(_ASCII_LOWER)] = 1
        result.append(renamed)
    return result


def parquet_list_sql(files: tuple[Path, ...] | list[Path]) -> str:
    """A DuckDB list literal of file paths."""
    return "[" + ", ".join(sql_literal(str(path)) for path in files) + "]"


def sql_literal(value: Any) -> str:
    """Render a Python value as one SQL literal (DuckDB and PostgreSQL syntax)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return sql_number(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ParameterError(f"cannot write {value!r} as a SQL literal")
        return sql_number(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ParameterError(f"cannot write {value!r} as a SQL literal")
        return sql_number(value)
    if isinstance(value, datetime):
        kind = "TIMESTAMPTZ" if value.tzinfo is not None else "TIMESTAMP"
        return f"{kind} '{value.isoformat(sep=' ')}'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        if not items:
            raise ParameterError("an empty list has no SQL literal (IN () is not valid SQL)")
        return "(" + ", ".join(sql_literal(item) for item in items) + ")"
    if isinstance(value, str):
        if "\x00" in value:
            raise ParameterError("text with a NUL character cannot be a SQL literal")
        return "'" + value.replace("'", "''") + "'"
    raise ParameterError(f"cannot write a {type(value).__name__} as a SQL literal")


def sql_number(value: int | float | Decimal) -> str:
    """A number as SQL text; a negative one in parentheses, since after a minus `10--5` would
    start a comment."""
    text = repr(value) if isinstance(value, float) else str(value)
    return f"({text})" if text.startswith("-") else text


def sql_identifier(value: Any) -> str:
    """Render text as one quoted SQL identifier; dots are part of the name, not separators."""
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ParameterError(f"{value!r} is not a usable SQL identifier")
    return quote_identifier(value)

"""Quoting of (optionally schema-qualified) identifiers; PostgreSQL and DuckDB agree on it."""

from __future__ import annotations

from engine.errors import DefinitionError

__all__ = ["quote_identifier", "quote_table", "split_table"]


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

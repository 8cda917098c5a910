"""DuckDB exceptions, classified: a lock held by another process or a write-write conflict may go
away on retry; a conversion or constraint error is about the data; the rest is terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.core.errors import ArrowlineError, DataError, TaskError, TransientTaskError, disk_full

if TYPE_CHECKING:
    from pathlib import Path

    import duckdb

__all__ = ["translate"]


def translate(exc: duckdb.Error, what: str, path: Path | None = None) -> ArrowlineError:
    """`exc` as an arrowline error; `path` is the database file, named when the disk is full."""
    import duckdb

    full = disk_full(exc, path) if path is not None else None
    if full is not None:
        return full
    message = str(exc).strip().splitlines()[0]
    if isinstance(exc, duckdb.IOException) and "lock" in message.lower():
        return TransientTaskError(
            f"{what}: the database file is locked by another process ({message})",
            hint="DuckDB allows one writing process per file: close the other one (a notebook, "
            "another pipeline), or give the task more `retry` attempts or backoff to outwait it",
        )
    if isinstance(exc, duckdb.TransactionException):
        return TransientTaskError(f"{what}: transaction conflict ({message})")
    if isinstance(
        exc, duckdb.ConversionException | duckdb.ConstraintException | duckdb.InvalidInputException
    ):
        return DataError(f"{what}: {message}")
    return TaskError(f"{what}: {message}")

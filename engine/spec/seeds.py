"""A SQL project's seeds: each `.csv` file under its seed folders is an extract task named by the
file, read with the files connector; `+column_types` declare types in dbt's spelling or
Arrow's, and a seed with a database (its own `+database`, or the target's) is published as a
model is (engine.spec.publish)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.spec.publish import publish_task

__all__ = ["SEED_SETTINGS", "seed_tasks"]

SEED_SETTINGS = {"column_types", "enabled", "tags", "description", "database", "schema"}
"""What a seed's folders (and its own entry) may set."""

_SQL_TYPES = {
    "integer": "int32",
    "int": "int32",
    "int4": "int32",
    "smallint": "int16",
    "int2": "int16",
    "tinyint": "int8",
    "bigint": "int64",
    "int8": "int64",
    "hugeint": "decimal(38,0)",
    "real": "float32",
    "float4": "float32",
    "float": "float64",
    "double": "float64",
    "float8": "float64",
    "double precision": "float64",
    "varchar": "string",
    "text": "string",
    "string": "string",
    "char": "string",
    "boolean": "bool",
    "bool": "bool",
    "date": "date",
    "timestamp": "timestamp",
    "datetime": "timestamp",
    "timestamptz": "timestamptz",
    "timestamp with time zone": "timestamptz",
    "time": "time",
}
"""dbt's (SQL's) type names as the files connector's; the rest are its own names already."""
_SIZED = re.compile(r"\s*(varchar|char|character varying|text)\s*\(\s*\d+\s*\)\s*", re.IGNORECASE)
_NUMERIC = re.compile(r"\s*(?:numeric|decimal)\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*", re.IGNORECASE)


def arrow_type(name: Any) -> Any:
    """A column type as dbt writes it (`integer`, `varchar(20)`, `numeric(12,2)`) in the files
    connector's spelling; anything else as it is (validation says what is wrong with it)."""
    if not isinstance(name, str):
        return name
    if _SIZED.fullmatch(name):
        return "string"
    if found := _NUMERIC.fullmatch(name):
        return f"decimal({found[1]},{found[2]})"
    return _SQL_TYPES.get(" ".join(name.lower().split()), name)


def seed_tasks(
    path: Path,
    root: Path,
    settings: Mapping[str, Any],
    connections: Mapping[str, Any],
    labels: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], str | None]:
    """The extract task of the seed at `path` (and its publishing load, with a database), or
    what is wrong with its settings."""
    extract: dict[str, Any] = {"from": "files", "path": path.relative_to(root).as_posix()}
    types = settings.get("column_types")
    if isinstance(types, dict) and types:
        extract["columns"] = {column: arrow_type(kind) for column, kind in types.items()}
    elif types:
        extract["columns"] = types  # validation says it must be a mapping
    tasks: list[dict[str, Any]] = [{"id": path.stem, "extract": extract, **labels}]
    published, wrong = publish_task(path.stem, settings, connections)
    if published is not None:
        tasks.append(published)
    return tasks, wrong

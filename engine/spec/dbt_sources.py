"""Where a dbt source table is read from when its YAML gives no `extract:`: as dbt reads it.

dbt's sources are tables already in the warehouse: `schema` (default: the source's name) and
`identifier` (default: the table's name). Here such a table is read from the project's target
database (the DuckDB file or PostgreSQL connection its models are published into), through the
connector that publishes there (`Connector.table_source`). dbt-duckdb's `external_location`
(in the table's or the source's `meta:`, `config:` or `config: {meta:}`; `{name}`,
`{identifier}` and `{schema}` filled in) names files instead: a files extract reads them, its
format from their suffix. A location that is a function call (`read_csv(...)`) is not read:
the table needs an `extract:` then.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["read_sources", "source_extract"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def source_extract(
    source: Mapping[str, Any],
    table: Mapping[str, Any],
    published: Mapping[str, Any],
    project: Mapping[str, Any],
) -> dict[str, Any] | str:
    """The extract of a source table: its own `extract:`, or where dbt would read it; else
    what is wrong, to be said at the table's line."""
    said = f"source table {source.get('name')}.{table.get('name')}"
    if "extract" in table:
        given = table["extract"]
        return given if isinstance(given, dict) else f"{said}: extract must be a mapping"
    identifier = table.get("identifier") or table.get("name")
    schema = table.get("schema") or source.get("schema") or source.get("name")
    for key, value in (("identifier", identifier), ("schema", schema)):
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            return f"{said}: {key} {value!r} is not a name of letters, digits and _"
    location = _external_location(table) or _external_location(source)
    missing = (
        f"{said} needs `extract:` ({{from: files, path: x.csv}}), meta.external_location or "
        "a target database"
    )
    if isinstance(location, str) and "(" in location:  # read_csv(...): give an extract:
        return missing
    if isinstance(location, str) and location:
        filled = {"{name}": table.get("name"), "{identifier}": identifier, "{schema}": schema}
        for field, value in filled.items():  # dbt-duckdb's fields of a location
            location = location.replace(field, str(value))
        return {"from": "files", "path": location}
    database = published.get("database")
    if not isinstance(database, str):
        return missing
    connections = project.get("connections")
    named = connections.get(database) if isinstance(connections, Mapping) else None
    from connectors.registry import connectors

    for owner in connectors():
        found = owner.table_source(
            database, named if isinstance(named, Mapping) else None, f"{schema}.{identifier}"
        )
        if found is not None:
            return found
    return missing


def _external_location(holder: Mapping[str, Any]) -> Any:
    """dbt-duckdb's `external_location`: under `meta:`, `config:` or (dbt 1.10) `config:
    {meta:}`."""
    config = holder.get("config")
    for settings in (
        holder.get("meta"),
        config,
        config.get("meta") if isinstance(config, Mapping) else None,
    ):
        if isinstance(settings, Mapping) and settings.get("external_location"):
            return settings["external_location"]
    return None


def read_sources(
    sources: list[dict[str, Any]], files: Iterable[Path], tasks: Any
) -> list[dict[str, Any]]:
    """The source tables' tasks something of the project may read: those whose table (or
    task id) the models', macros' and tests' `files` or the project's settings and other
    tasks (`tasks`: its `vars` may name a table a macro reads) name. dbt reads no source no
    model reads, so one declared for documentation, or not made yet, is no task (whose
    extract would read, or fail on, a table nothing uses)."""
    texts = [*(file.read_text("utf-8", "replace") for file in files)]
    said = "\n".join([*texts, json.dumps(tasks, default=str)])
    return [
        task
        for task in sources
        if any(
            re.search(rf"\b{re.escape(name)}\b", said)
            for name in (task["id"], task["id"].split("__", 1)[-1])
        )
    ]

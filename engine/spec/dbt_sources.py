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

from collections.abc import Mapping
from typing import Any

__all__ = ["source_extract"]


def source_extract(
    source: Mapping[str, Any],
    table: Mapping[str, Any],
    published: Mapping[str, Any],
    connections: Any,
) -> dict[str, Any] | None:
    """The extract of a source table declared without one, or None when nothing says where it
    is (no external location, no target database)."""
    identifier = table.get("identifier") or table.get("name")
    schema = table.get("schema") or source.get("schema") or source.get("name")
    location = _external_location(table) or _external_location(source)
    if isinstance(location, str) and "(" in location:  # read_csv(...): give an extract:
        return None
    if isinstance(location, str) and location:
        names = {"{name}": table.get("name"), "{identifier}": identifier, "{schema}": schema}
        for placeholder, value in names.items():
            location = location.replace(placeholder, str(value))
        return {"from": "files", "path": location}
    database = published.get("database")
    if not isinstance(database, str):
        return None
    named = connections.get(database) if isinstance(connections, Mapping) else None
    from connectors.registry import connectors

    for owner in connectors():
        found = owner.table_source(
            database, named if isinstance(named, Mapping) else None, f"{schema}.{identifier}"
        )
        if found is not None:
            return found
    return None


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

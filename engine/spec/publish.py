"""Where a SQL project's model is published: dbt's `+database` and `+schema`, as the load task
the project makes for the model (so that no load has to be written by hand per model).

    models:
      shop:
        marts: {+database: out/warehouse.duckdb, +schema: marts}   # a DuckDB file
        finance: {+database: warehouse}                            # a postgres connection

A model with a database gets a load task `<model>__publish` reading its output, into
`<schema>.<model>` (or `<model>`): `table` replaces the table, `view` makes it a view of the
model's output (in DuckDB over the workspace's files, no row copied; in PostgreSQL switched to
a new table on commit), and `incremental` replaces it too: the model's output holds every row
(a merge would keep rows a --full-refresh dropped). An ephemeral model keeps nothing to
publish.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from engine.core.problems import did_you_mean

__all__ = ["PUBLISH_SUFFIX", "publish_task"]

PUBLISH_SUFFIX = "__publish"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def publish_task(
    model: str, settings: Mapping[str, Any], connections: Mapping[str, Any]
) -> tuple[dict[str, Any] | None, str | None]:
    """The load task that publishes `model` with its `settings`, or None and what is wrong (or
    None and None when it has no database)."""
    database = settings.get("database")
    schema = settings.get("schema")
    if database is None:
        if schema is not None:
            return None, (
                f"schema {schema!r} needs +database, the DuckDB file or postgres connection "
                "it is in"
            )
        return None, None
    if not isinstance(database, str) or not database.strip():
        return None, "database must be a DuckDB file's path or a postgres connection's name"
    if schema is not None and (not isinstance(schema, str) or not _NAME.fullmatch(schema)):
        return None, f"schema {schema!r} is not a name (letters, digits and _)"
    materialized = settings.get("materialized", "table")
    if materialized == "ephemeral":
        return None, "an ephemeral model keeps no output to publish: make it a table or a view"
    from connectors.registry import connectors

    table = f"{schema}.{model}" if schema else model
    named = connections.get(database)
    connection = named if isinstance(named, Mapping) else None
    target = next(
        (
            found
            for each in connectors()
            if (found := each.publish_target(database, connection, table)) is not None
        ),
        None,
    )
    if target is None:
        if connection is not None:
            return None, (
                f"database {database!r} is a {connection.get('kind')} connection: a model is "
                "published into a DuckDB file or a postgres connection"
            )
        if "://" in database:  # a URI would put its password in plans, logs and docs
            return None, "database is a DuckDB file's path or a connection's name, not a URI"
        named = did_you_mean(database, sorted(str(name) for name in connections))
        return None, (
            f"database {database!r} names no connection.{named} A DuckDB file is a path "
            "(warehouse.duckdb, out/warehouse.db)"
        )
    load: dict[str, Any] = {"input": model, **target}
    # replace, an incremental model's too: its output is the whole table, and after a
    # --full-refresh only a replace drops the rows the rebuilt table no longer has
    load["mode"] = "replace"
    task: dict[str, Any] = {"id": model + PUBLISH_SUFFIX, "load": load, "part_of": model}
    if materialized == "view":
        task["materialize"] = "view"
    tags = settings.get("tags")
    if tags:
        task["tags"] = [tags] if isinstance(tags, str) else list(tags)
    return task, None

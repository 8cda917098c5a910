"""DuckDB database files: a source (table or query) and a transactional sink."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from connectors.base import (
    Capabilities,
    Connector,
    ConnectorContext,
    NamingContext,
    ProfileOutput,
    SinkResult,
    SinkState,
)
from connectors.duckdb.config import DuckDBSink, DuckDBSource
from connectors.duckdb.reference import SECTIONS
from engine.core.config import ConfigModel
from engine.core.files import FileVersion
from engine.core.places import Place
from engine.core.problems import Finding
from engine.core.tables import InputTable

__all__ = ["CONNECTOR", "DuckDBConnector"]


def _file(path: str, base_dir: Path) -> Path:
    full = Path(path).expanduser()
    return full if full.is_absolute() else base_dir / full


def catalog_name(path: str) -> str:
    """The name DuckDB gives the catalog of the database file `path` when it opens it (the
    sink's `current_database()`): the file's name up to its first dot (`w.v2.duckdb` is `w`),
    with `_db` after names it keeps for itself (`main.duckdb` is `main_db`)."""
    name = Path(path).name.split(".", 1)[0]
    return f"{name}_db" if name in ("main", "temp", "system") else name


class DuckDBConnector(Connector):
    name = "duckdb"
    capabilities = Capabilities(
        transactional=True,
        load_modes=("append", "replace", "merge", "apply"),
        sqlglot_dialect="duckdb",
        views=True,
        views_read_files=True,
        hooks=True,
    )
    source = DuckDBSource
    sink = DuckDBSink
    reference = SECTIONS

    def publish_target(
        self, database: str, connection: Mapping[str, Any] | None, table: str
    ) -> dict[str, Any] | None:
        # a database that names no connection and reads as a file's path is a DuckDB file, as
        # dbt-duckdb's path: `warehouse.duckdb`, `out/w.db`; not a URI, not a bare word (a
        # connection's name misspelt would otherwise make a file of that name)
        looks_like_file = database.endswith((".duckdb", ".db", ".ddb")) or "/" in database
        if connection is not None or "://" in database or not looks_like_file:
            return None
        return {"to": self.name, "path": database, "table": table}

    def profile_output(self, values: Mapping[str, Any], connection: str) -> ProfileOutput | None:
        known = {"type", "path", "schema", "threads", "database", "extensions", "settings"}
        problems = [(k, f"{k!r} is not read for duckdb") for k in values if k not in known]
        path = values.get("path")
        if not isinstance(path, str) or path in ("", ":memory:") or path.startswith("md:"):
            said = "path must be a DuckDB file the models are published into (not :memory:)"
            problems.append(("path", said))
        if problems:
            return ProfileOutput(None, problems=tuple(problems))
        return ProfileOutput({"database": path, "schema": values.get("schema") or "main"})

    def relation(self, config: ConfigModel) -> str | None:
        # dbt-duckdb's "catalog"."schema"."table": in marts.duckdb, "marts"."orders" could
        # also be catalog marts's table orders, and DuckDB refuses the ambiguity (as the sink)
        from engine.core.sqltext import quote_identifier, quote_table, split_table

        assert isinstance(config, DuckDBSource | DuckDBSink)
        table = config.table
        if table is None:
            return None
        if split_table(table)[0] is None:
            return quote_table(table)
        return f"{quote_identifier(catalog_name(config.path))}.{quote_table(table)}"

    def place(self, config: ConfigModel, ctx: NamingContext) -> Place:
        assert isinstance(config, DuckDBSource | DuckDBSink)
        tag = "duckdb"
        return Place(
            f"{tag}:{config.path}",
            f"duckdb://{_file(config.path, ctx.base_dir.resolve()).resolve()}",
            table=config.table,
            query=config.query if isinstance(config, DuckDBSource) else None,
            dialect=self.capabilities.sqlglot_dialect,
            default_schema="main",
        )

    def check(self, config: ConfigModel, base_dir: Path) -> list[Finding]:
        if not isinstance(config, DuckDBSource) or "{{" in config.path:
            return []
        if _file(config.path, base_dir).exists():
            return []
        message = f"DuckDB file {config.path!r} does not exist yet"
        return [Finding("no-files", message, ("path",), "warning")]

    def observe(self, config: ConfigModel, base_dir: Path) -> tuple[FileVersion, ...] | None:
        from connectors.duckdb.source import observe_duckdb

        assert isinstance(config, DuckDBSource)
        return observe_duckdb(config, base_dir)

    def open(self, config: ConfigModel, ctx: ConnectorContext) -> list[pa.RecordBatchReader]:
        from connectors.duckdb.source import open_duckdb

        assert isinstance(config, DuckDBSource)
        return open_duckdb(config, ctx)

    def write(self, table: InputTable, config: ConfigModel, ctx: ConnectorContext) -> SinkResult:
        from connectors.duckdb.sink import write_duckdb

        assert isinstance(config, DuckDBSink)
        return write_duckdb(table, config, ctx)

    def view(self, table: InputTable, config: ConfigModel, ctx: ConnectorContext) -> SinkResult:
        from connectors.duckdb.sink import write_duckdb

        assert isinstance(config, DuckDBSink)
        return write_duckdb(table, config, ctx, view=True)

    def state(self, config: ConfigModel) -> SinkState | None:
        from connectors.duckdb import state

        return state


CONNECTOR = DuckDBConnector()

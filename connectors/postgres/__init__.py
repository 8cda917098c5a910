"""PostgreSQL through ADBC: streaming and partitioned reads, COPY loads, merges, watermarks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa

from connectors.base import (
    Capabilities,
    CheckResult,
    Connector,
    ConnectorContext,
    IncrementalSpec,
    NamingContext,
    ProfileOutput,
    SinkResult,
    SinkState,
)
from connectors.changes import CHANGE_COLUMNS
from connectors.postgres.config import (
    PostgresConnection,
    PostgresSink,
    PostgresSource,
    default_slot,
)
from connectors.postgres.reference import SECTIONS
from engine.core.config import ConfigModel
from engine.core.places import Place
from engine.core.problems import Finding
from engine.core.sqltext import quote_table
from engine.core.tables import InputTable
from engine.core.watermark import Watermark

__all__ = ["CONNECTOR", "PostgresConnector"]


def _server(name: str, connection: Any) -> tuple[str, str]:
    """(OpenLineage namespace, database) of a connection: resolved (host, port and database are
    not secrets; the password is), else from its spec when that says them outright, else named
    after the connection rather than guessed."""
    host, port = getattr(connection, "host", None), getattr(connection, "port", None) or 5432
    database = getattr(connection, "database", None)
    uri = getattr(connection, "uri", None)
    if uri and "${" not in uri and not (host and database):
        parts = urlsplit(uri)
        host, port = host or parts.hostname, parts.port or port
        database = database or parts.path.lstrip("/") or None
    known = host and "${" not in str(host)
    namespace = f"postgres://{host}:{port}" if known else f"postgres://{name}"
    return namespace, database if database and "${" not in database else name


_DBT_KEYS = {
    *("type", "host", "port", "user", "password", "pass", "dbname", "database", "schema"),
    *("threads", "sslmode", "connect_timeout", "keepalives_idle", "search_path", "role"),
}
"""The settings of a dbt profile's postgres output that are read (or harmless to skip)."""


class PostgresConnector(Connector):
    name = "postgres"
    capabilities = Capabilities(
        transactional=True,
        load_modes=("append", "replace", "merge", "apply"),
        sqlglot_dialect="postgres",
        sink_streams=True,
        key_queries=True,
        views=True,
        hooks=True,
    )
    source = PostgresSource
    sink = PostgresSink
    connection = PostgresConnection

    def publish_target(
        self, database: str, connection: Mapping[str, Any] | None, table: str
    ) -> dict[str, Any] | None:
        if connection is None or connection.get("kind") != self.name:
            return None
        return {"to": self.name, "connection": database, "table": table}

    reference = SECTIONS

    def connection_name(self, config: ConfigModel) -> str | None:
        assert isinstance(config, PostgresSource | PostgresSink)
        return config.connection

    def expand(
        self, config: ConfigModel, task_id: str, pipeline: str
    ) -> list[tuple[str, ConfigModel]] | None:
        if not isinstance(config, PostgresSource) or config.cdc is None:
            return None
        if config.cdc.tables is None or config.table is not None:
            return None
        slot = config.cdc.slot or default_slot(pipeline, task_id)
        shared = config.cdc.model_copy(
            update={"slot": slot, "publication": config.cdc.publication or slot}
        )
        return [
            (member, config.model_copy(update={"table": table, "cdc": shared}))
            for member, table in config.members(task_id)
        ]

    def profile_output(self, values: Mapping[str, Any], connection: str) -> ProfileOutput | None:
        made: dict[str, Any] = {"kind": "postgres"}
        for ours, theirs in (("host", "host"), ("port", "port"), ("user", "user")):
            if values.get(theirs) is not None:
                made[ours] = values[theirs]
        for ours, names in (
            ("password", ("password", "pass")),
            ("database", ("dbname", "database")),
        ):
            found = next((values[n] for n in names if values.get(n) is not None), None)
            if found is not None:
                made[ours] = found
        for option in ("sslmode", "connect_timeout"):
            if values.get(option) is not None:
                made.setdefault("options", {})[option] = str(values[option])
        problems = [
            (key, f"{key!r} is not read for postgres") for key in values if key not in _DBT_KEYS
        ]
        if "host" not in made:
            problems.append(("", "a postgres output needs its host"))
        if problems:
            return ProfileOutput(None, problems=tuple(problems))
        return ProfileOutput({"database": connection, "schema": values.get("schema")}, made)

    def claims(self, config: ConfigModel, task_id: str, pipeline: str) -> str | None:
        if not isinstance(config, PostgresSource) or config.cdc is None:
            return None
        slot = config.cdc.slot or default_slot(pipeline, task_id)
        return f"replication slot {slot!r} of connection {config.connection!r}"

    def release_group(self, config: ConfigModel, task_id: str) -> tuple[str, ...]:
        if not isinstance(config, PostgresSource) or config.cdc is None:
            return ()
        if config.cdc.tables is None or config.table is None:
            return ()
        suffix = {table: member for member, table in config.members("")}[config.table]
        if not task_id.endswith(suffix):  # not named as `expand` names it
            return ()
        return tuple(member for member, _ in config.members(task_id[: -len(suffix)]))

    def incremental(self, config: ConfigModel) -> IncrementalSpec | None:
        if not isinstance(config, PostgresSource):
            return None
        if config.cdc is not None:  # a change's transaction commit position
            return IncrementalSpec(cursor="_lsn")
        return config.incremental

    def place(self, config: ConfigModel, ctx: NamingContext) -> Place:
        assert isinstance(config, PostgresSource | PostgresSink)
        namespace, database = _server(config.connection, ctx.connections.get(config.connection))
        return Place(
            f"postgres:{config.connection}",
            namespace,
            table=config.table,
            query=config.query if isinstance(config, PostgresSource) else None,
            dialect=self.capabilities.sqlglot_dialect,
            default_schema="public",
            database=database,
            generated=CHANGE_COLUMNS if getattr(config, "cdc", None) is not None else (),
        )

    def open(self, config: ConfigModel, ctx: ConnectorContext) -> list[pa.RecordBatchReader]:
        assert isinstance(config, PostgresSource)
        if config.cdc is not None:
            from connectors.postgres.cdc.source import open_cdc

            return open_cdc(config, ctx)
        from connectors.postgres.source import open_postgres

        return open_postgres(config, ctx)

    def split(
        self, config: ConfigModel, ctx: ConnectorContext
    ) -> AbstractContextManager[Sequence[Any]] | None:
        assert isinstance(config, PostgresSource)
        if config.cdc is not None or config.partition is None:
            return None  # a change stream reads one slot, in one piece
        from connectors.postgres.source import split_postgres

        return split_postgres(config, ctx)

    def open_part(
        self, config: ConfigModel, piece: Any, ctx: ConnectorContext
    ) -> pa.RecordBatchReader:
        assert isinstance(config, PostgresSource)
        from connectors.postgres.source import open_part

        return open_part(config, piece, ctx)

    def release(
        self, config: ConfigModel, watermark: Watermark | None, ctx: ConnectorContext
    ) -> None:
        assert isinstance(config, PostgresSource)
        if config.cdc is not None:
            from connectors.postgres.cdc.source import release

            release(config, ctx, watermark)

    def key_rows(self, config: ConfigModel, query: str, connection: Any) -> list[tuple[Any, ...]]:
        from connectors.postgres.connection import Session

        with Session(connection, autocommit=True) as session:
            return session.rows(query, what="cache key query failed")

    def source_status(self, config: ConfigModel, ctx: ConnectorContext) -> dict[str, Any] | None:
        if not isinstance(config, PostgresSource) or config.cdc is None:
            return None
        from connectors.postgres.cdc.source import status

        return status(config, ctx)

    def takes_stream(self, config: ConfigModel) -> bool:
        """Not mode: apply, which reduces its input in DuckDB from the files."""
        return getattr(config, "mode", None) != "apply"

    def write(self, table: InputTable, config: ConfigModel, ctx: ConnectorContext) -> SinkResult:
        from connectors.postgres.sink import write_postgres

        assert isinstance(config, PostgresSink)
        return write_postgres(table, config, ctx)

    def view(self, table: InputTable, config: ConfigModel, ctx: ConnectorContext) -> SinkResult:
        from connectors.postgres.sink import write_postgres

        assert isinstance(config, PostgresSink)
        return write_postgres(table, config, ctx, view=True)

    def state(self, config: ConfigModel) -> SinkState | None:
        from connectors.postgres import state

        return state

    def resolve(self, name: str, spec: ConfigModel, base_dir: Path) -> Any:
        from connectors.postgres.connection import resolve

        assert isinstance(spec, PostgresConnection)
        return resolve(name, spec, base_dir)

    def check(self, config: ConfigModel, base_dir: Path) -> list[Finding]:
        """A table name with capitals is taken exactly as written, as a quoted identifier is:
        `Orders` is the table "Orders", not the `orders` an unquoted Orders names in SQL."""
        table = getattr(config, "table", None)
        if not table or table == table.lower():
            return []
        return [
            Finding(
                "table-case",
                f"table {table!r} is used exactly as written, capitals included (as "
                f"{quote_table(table)} in SQL), not folded to {table.lower()!r} as an unquoted "
                "name is in PostgreSQL",
                ("table",),
                severity="warning",
                hint=f"write {table.lower()!r} for a table created without quotes",
            )
        ]

    def check_connection(self, resolved: Any, uses: Sequence[ConfigModel] = ()) -> CheckResult:
        from connectors.postgres.connection import check

        capture = any(getattr(config, "cdc", None) is not None for config in uses)
        return check(resolved, capture=capture)


CONNECTOR = PostgresConnector()

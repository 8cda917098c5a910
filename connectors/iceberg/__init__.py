"""Apache Iceberg tables through pyiceberg (embedded: SQL catalogs on SQLite or PostgreSQL, or a
REST catalog): a source (a snapshot, its columns, a filter, incremental by snapshot) and a sink
whose every load is one transaction holding its run and watermarks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from connectors.base import (
    Capabilities,
    CheckResult,
    Connector,
    ConnectorContext,
    IncrementalSpec,
    Maintenance,
    NamingContext,
    SinkResult,
    SinkState,
    Unknown,
)
from connectors.iceberg.config import IcebergConnection, IcebergSink, IcebergSource
from connectors.iceberg.reference import SECTIONS
from engine.core.config import ConfigModel
from engine.core.errors import Classification
from engine.core.files import FileVersion
from engine.core.places import Place
from engine.core.problems import Finding
from engine.core.tables import InputTable

if TYPE_CHECKING:
    import polars as pl

__all__ = ["CONNECTOR", "IcebergConnector"]


class IcebergConnector(Connector):
    """Not `sink_streams`: the ledger entry, with the watermarks, is part of the load's
    transaction, and a streamed extract's watermark is known only when its stream ends."""

    name = "iceberg"
    capabilities = Capabilities(
        transactional=True, load_modes=("append", "replace", "merge", "apply"), tables=True
    )
    source = IcebergSource
    sink = IcebergSink
    connection = IcebergConnection
    reference = SECTIONS

    def connection_name(self, config: ConfigModel) -> str | None:
        assert isinstance(config, IcebergSource | IcebergSink)
        return config.connection

    def incremental(self, config: ConfigModel) -> IncrementalSpec | None:
        from connectors.iceberg.source import SEQUENCE_COLUMN

        if isinstance(config, IcebergSource) and config.incremental:
            return IncrementalSpec(cursor=SEQUENCE_COLUMN)
        return None

    def place(self, config: ConfigModel, ctx: NamingContext) -> Place:
        """OpenLineage names an Iceberg table `namespace.table` in its catalog: the embedded
        one's file, or the connection's catalog URI without its credentials."""
        from urllib.parse import urlsplit, urlunsplit

        from connectors.iceberg.catalog import EMBEDDED

        assert isinstance(config, IcebergSource | IcebergSink)
        if config.connection is None:
            namespace = (ctx.base_dir.resolve() / EMBEDDED / "catalog.db").as_uri()
        else:
            namespace = f"iceberg://{config.connection}"
            resolved = ctx.connections.get(config.connection)
            uri = getattr(resolved, "properties", {}).get("uri")
            if isinstance(uri, str):
                parts = urlsplit(uri.replace("+psycopg", ""))
                host = parts.hostname or ""
                netloc = f"{host}:{parts.port}" if parts.port else host
                namespace = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        return Place(f"iceberg:{config.connection or 'embedded'}", namespace, table=config.table)

    def check(self, config: ConfigModel, base_dir: Path) -> list[Finding]:
        """A filter or predicate pyiceberg cannot read, before any run."""
        from connectors.iceberg.catalog import condition_problem

        found = []
        for key in ("filter", "predicate"):
            text = getattr(config, key, None)
            if isinstance(text, str) and "{{" not in text and "{%" not in text:
                problem = condition_problem(text)
                if problem is not None:
                    found.append(Finding("iceberg-condition", problem, (key,), "error"))
        return found

    def schema(self, config: ConfigModel, ctx: ConnectorContext) -> pa.Schema | Unknown:
        from connectors.iceberg.source import iceberg_schema

        assert isinstance(config, IcebergSource)
        return iceberg_schema(config, ctx)

    def observe(self, config: ConfigModel, base_dir: Path) -> tuple[FileVersion, ...] | None:
        return None  # a catalog may be a server: what changed is not told without asking it

    def open(self, config: ConfigModel, ctx: ConnectorContext) -> list[pa.RecordBatchReader]:
        from connectors.iceberg.source import open_iceberg

        assert isinstance(config, IcebergSource)
        return open_iceberg(config, ctx)

    def write(self, table: InputTable, config: ConfigModel, ctx: ConnectorContext) -> SinkResult:
        from connectors.iceberg.sink import write_iceberg

        assert isinstance(config, IcebergSink)
        return write_iceberg(table, config, ctx)

    def state(self, config: ConfigModel) -> SinkState | None:
        from connectors.iceberg import state

        return state

    def maintain(
        self, config: ConfigModel, job: Maintenance, ctx: ConnectorContext
    ) -> dict[str, Any]:
        from connectors.iceberg.maintenance import maintain_iceberg

        return maintain_iceberg(config, job, ctx)

    def read_target(self, target: str, details: Mapping[str, Any]) -> pl.LazyFrame | None:
        """The table as the load's commit left it: its metadata file, at its snapshot."""
        import polars as pl

        metadata = details.get("metadata")
        if not isinstance(metadata, str):
            return None
        return pl.scan_iceberg(metadata, snapshot_id=details.get("snapshot_id"))

    def resolve(self, name: str, spec: ConfigModel, base_dir: Path) -> Any:
        from connectors.iceberg.catalog import resolve

        assert isinstance(spec, IcebergConnection)
        return resolve(name, spec, base_dir)

    def check_connection(self, resolved: Any, uses: Sequence[ConfigModel] = ()) -> CheckResult:
        import time

        from connectors.iceberg.catalog import open_catalog

        started = time.perf_counter()
        try:
            namespaces = open_catalog(resolved).list_namespaces()
        except Exception as exc:
            return CheckResult(resolved.name, resolved.describe(), False, str(exc).splitlines()[0])
        latency = (time.perf_counter() - started) * 1000
        detail = f"{len(namespaces)} namespaces"
        return CheckResult(resolved.name, resolved.describe(), True, detail, latency)

    def classify(self, exc: BaseException) -> Classification | None:
        from connectors.iceberg.catalog import translate
        from engine.core.errors import TransientTaskError

        if type(exc).__module__.startswith("pyiceberg"):
            said = translate(exc, "")
            return Classification(isinstance(said, TransientTaskError), type(exc).__name__)
        return None


CONNECTOR = IcebergConnector()

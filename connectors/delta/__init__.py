"""Delta Lake tables: a source (a version, its columns, a filter, incremental by version) and a
sink whose every load is one commit holding its run and watermarks (delta-rs, embedded)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pyarrow as pa

from connectors.base import (
    Capabilities,
    Connector,
    ConnectorContext,
    IncrementalSpec,
    Maintenance,
    NamingContext,
    SinkResult,
    SinkState,
    Unknown,
)
from connectors.delta.config import DeltaSink, DeltaSource
from connectors.delta.reference import SECTIONS
from engine.core.config import ConfigModel
from engine.core.errors import Classification
from engine.core.files import FileVersion
from engine.core.places import Place
from engine.core.problems import Finding
from engine.core.tables import InputTable

if TYPE_CHECKING:
    import polars as pl

__all__ = ["CONNECTOR", "DeltaConnector"]


class DeltaConnector(Connector):
    """Not `sink_streams`: delta-rs takes the commit's metadata (the ledger entry, with the
    watermarks) before it reads the first batch, and a streamed extract's watermark is known
    only when its stream ends."""

    name = "delta"
    capabilities = Capabilities(
        transactional=True,
        load_modes=("append", "replace", "merge", "apply"),
        sqlglot_dialect=None,
        tables=True,
    )
    source = DeltaSource
    sink = DeltaSink
    reference = SECTIONS

    def incremental(self, config: ConfigModel) -> IncrementalSpec | None:
        from connectors.delta.source import VERSION_COLUMN

        if isinstance(config, DeltaSource) and config.incremental:
            return IncrementalSpec(cursor=VERSION_COLUMN)
        return None

    def connection_name(self, config: ConfigModel) -> str | None:
        assert isinstance(config, DeltaSource | DeltaSink)
        return config.connection

    def takes_connection(self, given: Connector) -> bool:
        return given.capabilities.object_store  # an s3:// table's store

    def place(self, config: ConfigModel, ctx: NamingContext) -> Place:
        """OpenLineage's naming of a table in storage: `file` and its absolute folder, or the
        URI's scheme and bucket and the path inside."""
        from connectors.delta.table import is_uri, table_location

        assert isinstance(config, DeltaSource | DeltaSink)
        if is_uri(config.path) and not config.path.startswith("file://"):
            parts = urlsplit(config.path)
            return Place(
                f"delta:{config.path}",
                f"{parts.scheme}://{parts.netloc}",
                paths=(parts.path.lstrip("/"),),
            )
        location = table_location(config.path, ctx.base_dir.resolve())
        return Place(f"delta:{config.path}", "file", paths=(location,))

    def check(self, config: ConfigModel, base_dir: Path) -> list[Finding]:
        from connectors.delta.table import is_uri, table_location

        assert isinstance(config, DeltaSource | DeltaSink)
        if config.connection is not None and not config.path.startswith("s3://"):
            message = "`connection` names an S3-compatible store: it goes with an s3:// path"
            return [Finding("connection-path", message, ("connection",))]

        if not isinstance(config, DeltaSource) or "{{" in config.path or is_uri(config.path):
            return []
        location = Path(table_location(config.path, base_dir))
        if (location / "_delta_log").is_dir():
            return []
        message = f"no Delta table at {config.path!r} yet (no _delta_log folder)"
        return [Finding("no-files", message, ("path",), "warning")]

    def schema(self, config: ConfigModel, ctx: ConnectorContext) -> pa.Schema | Unknown:
        from connectors.delta.source import delta_schema

        assert isinstance(config, DeltaSource)
        return delta_schema(config, ctx)

    def observe(self, config: ConfigModel, base_dir: Path) -> tuple[FileVersion, ...] | None:
        """The table's version: a new commit is something else to read."""
        from connectors.delta.table import open_table, table_location

        assert isinstance(config, DeltaSource)
        if config.connection is not None:
            return None  # its store is read with credentials a run resolves, not here
        location = table_location(config.path, base_dir)
        table = open_table(location, version=config.version, as_of=config.as_of)
        return ((location, table.version() if table is not None else -1, 0),)

    def open(self, config: ConfigModel, ctx: ConnectorContext) -> list[pa.RecordBatchReader]:
        from connectors.delta.source import open_delta

        assert isinstance(config, DeltaSource)
        return open_delta(config, ctx)

    def write(self, table: InputTable, config: ConfigModel, ctx: ConnectorContext) -> SinkResult:
        from connectors.delta.sink import write_delta

        assert isinstance(config, DeltaSink)
        return write_delta(table, config, ctx)

    def state(self, config: ConfigModel) -> SinkState | None:
        from connectors.delta import state

        return state

    def maintain(
        self, config: ConfigModel, job: Maintenance, ctx: ConnectorContext
    ) -> dict[str, Any]:
        from connectors.delta.maintenance import maintain_delta

        return maintain_delta(config, job, ctx)

    def read_target(self, target: str, details: Mapping[str, Any]) -> pl.LazyFrame | None:
        """The table at the version the load committed."""
        import polars as pl

        if details.get("connection"):  # its keys are the run's: never the environment's
            return None
        version = details.get("version")
        return pl.scan_delta(target.removeprefix("delta:"), version=version)

    def classify(self, exc: BaseException) -> Classification | None:
        from deltalake.exceptions import CommitFailedError

        if isinstance(exc, CommitFailedError):
            return Classification(True, "CommitFailedError")
        return None


CONNECTOR = DeltaConnector()

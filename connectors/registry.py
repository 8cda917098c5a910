"""Which code reads each source, writes each sink, keeps each sink's state and resolves each
kind of connection, keyed by config type.

Adding a connector adds entries here and members to the tagged unions in `engine.spec.model`; the
engine never branches on a connector's name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa

from connectors import postgres
from connectors.base import Capabilities, ConnectorContext, SinkResult
from connectors.duckdb import CAPABILITIES as DUCKDB
from connectors.duckdb import DuckDBSink, DuckDBSource, observe_duckdb, open_duckdb, write_duckdb
from connectors.duckdb import state as duckdb_state
from connectors.files import CAPABILITIES as FILES
from connectors.files import FilesSource, ParquetSink, observe_files, open_files, write_parquet
from connectors.postgres import state as postgres_state
from engine.core.files import FileVersion
from engine.core.tables import InputTable
from engine.core.watermark import Watermark, WatermarkUpdate

__all__ = [
    "CONNECTIONS",
    "SINKS",
    "SOURCES",
    "ConnectionKind",
    "capabilities_of",
    "observe_source",
    "open_source",
    "sink_state",
    "write_sink",
]


@dataclass(frozen=True)
class Source:
    open: Callable[[Any, ConnectorContext], list[pa.RecordBatchReader]]
    capabilities: Capabilities
    observe: Callable[[Any, Path], tuple[FileVersion, ...]] | None = None
    """The files the source would read now, for reuse decisions; None for a source whose data
    cannot be observed without reading it (a database server)."""


@dataclass(frozen=True)
class Sink:
    write: Callable[[InputTable, Any, ConnectorContext], SinkResult]
    capabilities: Capabilities
    state: ModuleType | None = None
    """A module with read/put/delete of watermarks kept in the target, for transactional sinks."""


@dataclass(frozen=True)
class ConnectionKind:
    resolve: Callable[[str, Any, Path], Any]
    check: Callable[[Any], Any]
    capabilities: Capabilities


SOURCES: dict[type, Source] = {
    FilesSource: Source(open_files, FILES, observe_files),
    DuckDBSource: Source(open_duckdb, DUCKDB, observe_duckdb),
    postgres.PostgresSource: Source(postgres.open_postgres, postgres.CAPABILITIES),
}
SINKS: dict[type, Sink] = {
    ParquetSink: Sink(write_parquet, FILES),
    DuckDBSink: Sink(write_duckdb, DUCKDB, duckdb_state),
    postgres.PostgresSink: Sink(postgres.write_postgres, postgres.CAPABILITIES, postgres_state),
}
CONNECTIONS: dict[type, ConnectionKind] = {
    postgres.PostgresConnection: ConnectionKind(
        postgres.resolve, postgres.check, postgres.CAPABILITIES
    ),
}


def open_source(config: Any, ctx: ConnectorContext) -> list[pa.RecordBatchReader]:
    return SOURCES[type(config)].open(config, ctx)


def observe_source(config: Any, base_dir: Path) -> tuple[FileVersion, ...] | None:
    """What the source would read now (see `Source.observe`), or None when it cannot tell."""
    observe = SOURCES[type(config)].observe
    return observe(config, base_dir) if observe is not None else None


def write_sink(source: InputTable, config: Any, ctx: ConnectorContext) -> SinkResult:
    return SINKS[type(config)].write(source, config, ctx)


def capabilities_of(config: Any) -> Capabilities:
    for table in (SOURCES, SINKS, CONNECTIONS):
        entry = table.get(type(config))
        if entry is not None:
            return entry.capabilities
    raise KeyError(type(config).__name__)


class SinkState:
    """Watermarks as one sink keeps them: in its own database for transactional sinks."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.module = SINKS[type(config)].state

    @property
    def transactional(self) -> bool:
        return self.module is not None

    def read(self, ctx: ConnectorContext) -> dict[str, tuple[Watermark, str]]:
        assert self.module is not None
        return self.module.read(self.config, ctx)  # type: ignore[no-any-return]

    def put(self, ctx: ConnectorContext, updates: Sequence[WatermarkUpdate]) -> None:
        assert self.module is not None
        self.module.put(self.config, ctx, updates)

    def delete(self, ctx: ConnectorContext, task: str | None) -> None:
        assert self.module is not None
        self.module.delete(self.config, ctx, task)


def sink_state(config: Any) -> SinkState:
    return SinkState(config)

"""PostgreSQL through ADBC: streaming and partitioned reads, COPY loads, merges, watermarks."""

from connectors.postgres.capabilities import CAPABILITIES
from connectors.postgres.config import (
    IncrementalSpec,
    PartitionSpec,
    PostgresConnection,
    PostgresSink,
    PostgresSource,
)
from connectors.postgres.connection import ResolvedPostgres, Session, check, resolve
from connectors.postgres.sink import write_postgres
from connectors.postgres.source import open_postgres

__all__ = [
    "CAPABILITIES",
    "IncrementalSpec",
    "PartitionSpec",
    "PostgresConnection",
    "PostgresSink",
    "PostgresSource",
    "ResolvedPostgres",
    "Session",
    "check",
    "open_postgres",
    "resolve",
    "write_postgres",
]

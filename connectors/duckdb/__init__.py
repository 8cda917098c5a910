"""DuckDB database files: a source (table or query) and a transactional sink."""

from connectors.duckdb.capabilities import CAPABILITIES
from connectors.duckdb.config import DuckDBSink, DuckDBSource
from connectors.duckdb.sink import write_duckdb
from connectors.duckdb.source import observe_duckdb, open_duckdb

__all__ = [
    "CAPABILITIES",
    "DuckDBSink",
    "DuckDBSource",
    "observe_duckdb",
    "open_duckdb",
    "write_duckdb",
]

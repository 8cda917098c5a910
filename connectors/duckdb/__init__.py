"""DuckDB database files: a source (table or query) and a transactional sink."""

from connectors.duckdb.capabilities import CAPABILITIES
from connectors.duckdb.config import DuckDBSink, DuckDBSource
from connectors.duckdb.sink import write_duckdb
from connectors.duckdb.source import open_duckdb

__all__ = ["CAPABILITIES", "DuckDBSink", "DuckDBSource", "open_duckdb", "write_duckdb"]

"""What the DuckDB connector can do."""

from connectors.base import Capabilities

CAPABILITIES = Capabilities(
    name="duckdb",
    transactional=True,
    load_modes=("append", "replace", "merge"),
    sqlglot_dialect="duckdb",
    streaming=True,
)

"""What the PostgreSQL connector can do."""

from connectors.base import Capabilities

CAPABILITIES = Capabilities(
    name="postgres",
    transactional=True,
    load_modes=("append", "replace", "merge"),
    sqlglot_dialect="postgres",
    streaming=True,
)

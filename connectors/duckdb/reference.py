"""The DuckDB connector's sections of `docs/pipeline-reference.md`."""

from __future__ import annotations

from connectors.base import Section
from connectors.duckdb.config import DuckDBSink, DuckDBSource

__all__ = ["SECTIONS"]

SECTIONS = (
    Section(
        "extract: from: duckdb",
        DuckDBSource,
        "Streams a table or query out of a DuckDB file.",
        """\
extract: {from: duckdb, path: warehouse.duckdb, query: "select * from sales where year = 2024"}""",
    ),
    Section(
        "load: to: duckdb",
        DuckDBSink,
        "One transaction per load: readers see the table before or "
        "after, never half. `merge` refuses NULL or duplicated keys in the input and creates new "
        "tables with a primary key on `keys`. Columns the table lacks are an error.",
        """\
load:
  input: daily_revenue
  to: duckdb
  path: out/warehouse.duckdb
  table: analytics.daily_revenue
  mode: merge
  keys: [order_date, segment]""",
    ),
)

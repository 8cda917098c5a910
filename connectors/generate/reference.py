"""The generate connector's section of `docs/pipeline-reference.md`."""

from __future__ import annotations

from connectors.base import Section
from connectors.generate.config import GeneratedColumn, GenerateSource

__all__ = ["SECTIONS"]

SECTIONS = (
    Section(
        "extract: from: generate",
        GenerateSource,
        "Generates `rows` rows from the column specs, deterministically: the same `seed` and "
        "columns give the same rows on every run and machine with the same pyarrow, whatever "
        "the `batch_size`. Rows are drawn in blocks of 65,536, so memory stays at a block and a "
        "batch. Useful for demos, tests and benchmarks without a data file.",
        """\
extract:
  from: generate
  rows: 1000000
  seed: 42
  columns:
    order_id: {type: int64, sequence: true}        # 1, 2, 3, ...: a unique key
    amount: {type: decimal(12,2), min: 1, max: 5000}
    status: {type: string, values: [placed, shipped, returned], weights: [6, 3, 1]}
    placed_at: {type: "timestamp[us, UTC]", min: "2024-01-01", max: "2024-12-31"}
    coupon: {type: string, cardinality: 50, nulls: 0.8}
    express: bool""",
    ),
    Section(
        "extract: generate column",
        GeneratedColumn,
        "A column spec, or just its type name. Integers and floats are uniform between `min` "
        "and `max` (integers: 0 to 1,000,000; floats: 0 to 1); decimals likewise, at their "
        "scale; dates and timestamps uniform in time (2020 to 2024 by default); strings are "
        "`<column>_<n>`, one per row or `cardinality` distinct; booleans true in `true_share` "
        "of rows. `values` draws from a list instead (with `weights`), and `nulls` replaces that "
        "share of rows with NULL.",
        """\
amount: {type: float64, min: 0, max: 100, nulls: 0.05}""",
    ),
)

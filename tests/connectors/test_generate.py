"""The generate source: deterministic typed rows, in any batch size, within their specs, and a
pipeline that reads them like any other source."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import Result
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.base import ConnectorContext
from connectors.generate.config import GenerateSource
from connectors.generate.source import BLOCK_ROWS, open_generate
from tests.conftest import WritePipeline

Cli = Callable[..., Result]

COLUMNS: dict[str, Any] = {
    "id": {"type": "int64", "sequence": True, "min": 10},
    "qty": {"type": "int32", "min": -5, "max": 5},
    "amount": {"type": "decimal(12,2)", "min": 1, "max": 5000},
    "ratio": {"type": "float64", "min": 0.5, "max": 2.5, "nulls": 0.1},
    "status": {"type": "string", "values": ["placed", "shipped", "returned"], "weights": [6, 3, 1]},
    "coupon": {"type": "string", "cardinality": 50, "nulls": 0.8},
    "name": "string",
    "placed_at": {"type": "timestamp[us, UTC]", "min": "2024-01-01", "max": "2024-06-30"},
    "day": {"type": "date", "min": "2023-01-01", "max": "2023-01-31"},
    "express": {"type": "bool", "true_share": 0.25},
}


def generate(rows: int, batch_size: int = 65_536, seed: int = 7, **columns: Any) -> pa.Table:
    config = GenerateSource.model_validate(
        {
            "from": "generate",
            "rows": rows,
            "seed": seed,
            "batch_size": batch_size,
            "columns": columns or COLUMNS,
        }
    )
    (reader,) = open_generate(config, ConnectorContext(Path("."), "p", "r", "t"))
    return reader.read_all()


def test_the_same_seed_gives_the_same_rows_whatever_the_batch_size() -> None:
    reference = generate(150_000)
    for batch_size in (1, 997, BLOCK_ROWS, 100_000, 1_000_000):
        if batch_size == 1:
            assert generate(300, batch_size=1).equals(reference.slice(0, 300))
            continue
        assert generate(150_000, batch_size=batch_size).equals(reference), batch_size
    assert not generate(150_000, seed=8).equals(reference)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(0, 3 * BLOCK_ROWS + 5), batch_size=st.integers(1, 200_000))
def test_batches_have_the_asked_size_and_add_up_to_the_rows(rows: int, batch_size: int) -> None:
    config = GenerateSource.model_validate(
        {"from": "generate", "rows": rows, "batch_size": batch_size, "columns": {"x": "int64"}}
    )
    (reader,) = open_generate(config, ConnectorContext(Path("."), "p", "r", "t"))
    sizes = [batch.num_rows for batch in reader]
    assert sum(sizes) == rows
    assert all(size == batch_size for size in sizes[:-1])
    assert not sizes or 0 < sizes[-1] <= batch_size


def test_values_keep_to_their_specs() -> None:
    table = generate(200_000)
    rows = table.num_rows
    assert table.schema.field("placed_at").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("amount").type == pa.decimal128(12, 2)
    assert table.column("id").to_pylist()[:3] == [10, 11, 12]
    assert pc.count_distinct(table.column("id")).as_py() == rows
    assert pc.min_max(table.column("qty")).as_py() == {"min": -5, "max": 5}
    amount = pc.min_max(table.column("amount")).as_py()
    assert Decimal(1) <= amount["min"]
    assert amount["max"] <= Decimal(5000)
    assert all(
        value.as_tuple().exponent == -2 for value in table.column("amount")[:100].to_pylist()
    )
    ratio = pc.min_max(table.column("ratio")).as_py()
    assert ratio["min"] >= 0.5
    assert ratio["max"] <= 2.5
    assert abs(table.column("ratio").null_count / rows - 0.1) < 0.01
    counts = {c["values"]: c["counts"] for c in pc.value_counts(table.column("status")).to_pylist()}
    assert set(counts) == {"placed", "shipped", "returned"}
    assert abs(counts["placed"] / rows - 0.6) < 0.01
    assert abs(counts["returned"] / rows - 0.1) < 0.01
    assert abs(table.column("coupon").null_count / rows - 0.8) < 0.01
    assert pc.count_distinct(table.column("coupon")).as_py() <= 50
    assert table.column("name").to_pylist()[:2] == ["name_1", "name_2"]
    placed = pc.min_max(table.column("placed_at")).as_py()
    assert datetime(2024, 1, 1, tzinfo=UTC) <= placed["min"]
    assert placed["max"] <= datetime(2024, 6, 30, tzinfo=UTC)
    days = pc.min_max(table.column("day")).as_py()
    assert date(2023, 1, 1) <= days["min"]
    assert days["max"] <= date(2023, 1, 31)
    assert abs(pc.sum(table.column("express")).as_py() / rows - 0.25) < 0.01


def test_decimals_are_exact_at_every_scale() -> None:
    table = generate(
        20_000,
        small={"type": "decimal(38,18)", "min": -2, "max": 2},
        whole={"type": "decimal(10,0)", "min": -100, "max": 100},
    )
    small = table.column("small").to_pylist()
    assert all(Decimal(-2) <= v <= Decimal(2) for v in small)
    assert all(v.as_tuple().exponent == -18 for v in small)
    assert any(v < 0 for v in small)
    assert pc.min_max(table.column("whole")).as_py() == {"min": -100, "max": 100}


def test_zero_rows_is_an_empty_table_of_the_schema() -> None:
    table = generate(0)
    assert table.num_rows == 0
    assert table.schema.names == list(COLUMNS)


PIPELINE = """
pipeline: demo
tasks:
  - id: orders
    extract:
      from: generate
      rows: 120000
      seed: 3
      batch_size: 10000
      columns:
        order_id: {type: int64, sequence: true}
        status: {type: string, values: [placed, shipped]}
        amount: {type: "decimal(10,2)", min: 1, max: 100}
  - id: by_status
    sql: select status, count(*) as n, sum(amount) as total from orders group by status
  - id: out
    load: {input: by_status, to: parquet, path: out/by_status.parquet}
"""


def test_a_pipeline_reads_generated_rows_and_plan_knows_their_schema_first(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    path = write("p.yaml", PIPELINE)
    planned = cli("plan", path, "--format", "json")
    assert planned.exit_code == 0, planned.output
    schemas = json.loads(planned.stdout)["schemas"]["schemas"]
    assert [c["name"] for c in schemas["orders"]] == ["order_id", "status", "amount"]
    assert [c["name"] for c in schemas["by_status"]] == ["status", "n", "total"]
    ran = cli("run", path, "--no-progress")
    assert ran.exit_code == 0, ran.output
    out = pq.read_table(project / "out" / "by_status.parquet")
    assert sum(out.column("n").to_pylist()) == 120_000
    # the config is the data: an unchanged generate extract is reused by a later selection
    again = cli("plan", path, "--select", "by_status", "--format", "json")
    assert again.exit_code == 0, again.output
    actions = {t["id"]: t["action"] for t in json.loads(again.stdout)["tasks"]}
    assert actions == {"orders": "reuse", "by_status": "run"}


@pytest.mark.parametrize(
    ("column", "said"),
    [
        ("{type: string, sequence: true}", "'sequence' needs an integer type"),
        ("{type: date, values: [yesterday]}", "its values do not fit the type"),
        ("{type: int8, min: 0, max: 1000}", "do not fit the type"),
        ('{type: "list<int64>"}', "this type cannot be generated"),
    ],
)
def test_a_column_spec_its_type_cannot_take_is_a_validation_error_at_its_line(
    cli: Cli, write: WritePipeline, column: str, said: str
) -> None:
    path = write(
        "p.yaml",
        f"""
        pipeline: bad
        tasks:
          - id: g
            extract:
              from: generate
              rows: 10
              columns:
                x: {column}
        """,
    )
    result = cli("validate", path)
    assert result.exit_code == 2
    text = " ".join(result.stderr.split())
    assert f"{path}:8: error [task g]: generate column 'x'" in text
    assert said in text


def test_an_unknown_type_name_is_refused_with_the_valid_ones(
    cli: Cli, write: WritePipeline
) -> None:
    path = write(
        "p.yaml",
        """
        pipeline: bad
        tasks:
          - id: g
            extract: {from: generate, rows: 10, columns: {x: integer64}}
        """,
    )
    result = cli("validate", path)
    assert result.exit_code == 2
    text = " ".join(result.stderr.split())
    assert "unknown type 'integer64'" in text
    assert "int64" in text

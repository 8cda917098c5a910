"""Lineage of UDF tasks: expression trees read exactly, frame UDFs by schema comparison."""

from __future__ import annotations

import polars as pl

from engine.spec import UdfSpec
from lineage.udf import udf_lineage

SCHEMA = pl.Schema({"id": pl.Int64, "g": pl.String, "amount": pl.Float64, "qty": pl.Int64})


def spec(**config: object) -> UdfSpec:
    return UdfSpec.model_validate({"input": "orders", "function": "x.py:f", **config})


def edges(lineage: object) -> set[tuple[str, str, str, bool]]:
    return {(e.output, e.table, e.column, e.inferred) for e in lineage.edges}  # type: ignore[attr-defined]


def scores(limit: float = 10.0) -> dict[str, pl.Expr]:
    return {
        "total": pl.col("amount") * pl.col("qty"),
        "share": pl.col("amount") / pl.col("amount").sum().over("g"),
        "big": pl.col("amount") > limit,
    }


def test_expressions_with_columns_keep_the_other_columns() -> None:
    lineage = udf_lineage(scores, spec(args={"limit": 5}), "orders", SCHEMA)
    assert lineage.outputs == ["id", "g", "amount", "qty", "total", "share", "big"]
    assert edges(lineage) == {
        ("id", "orders", "id", False),
        ("g", "orders", "g", False),
        ("amount", "orders", "amount", False),
        ("qty", "orders", "qty", False),
        ("total", "orders", "amount", False),
        ("total", "orders", "qty", False),
        ("share", "orders", "amount", False),
        ("share", "orders", "g", False),
        ("big", "orders", "amount", False),
    }


def test_expressions_select_only_themselves_and_an_overwritten_column_is_recomputed() -> None:
    def fix() -> list[pl.Expr]:
        return [(pl.col("amount") * 100).round(0), pl.col("id")]

    lineage = udf_lineage(fix, spec(output="select"), "orders", SCHEMA)
    assert lineage.outputs == ["amount", "id"]
    assert edges(lineage) == {("amount", "orders", "amount", False), ("id", "orders", "id", False)}


def test_a_frame_udf_is_traced_by_schema_comparison_and_says_so() -> None:
    def dedupe(frame: pl.LazyFrame) -> pl.LazyFrame:
        return frame.unique(subset=["id"]).with_columns(rank=pl.col("amount").rank())

    lineage = udf_lineage(dedupe, spec(mode="frame"), "orders", SCHEMA)
    assert lineage.outputs == ["id", "g", "amount", "qty", "rank"]
    assert edges(lineage) == {
        ("id", "orders", "id", True),
        ("g", "orders", "g", True),
        ("amount", "orders", "amount", True),
        ("qty", "orders", "qty", True),
    }
    (problem,) = lineage.unresolved
    assert problem.output == "rank"

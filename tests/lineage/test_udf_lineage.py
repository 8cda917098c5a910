"""Lineage of UDF tasks: expression trees read exactly, frame UDFs by schema comparison."""

from __future__ import annotations

import polars as pl

from lineage.udf import udf_lineage
from transforms.config import UdfSpec

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


def test_a_frame_udf_is_traced_from_its_polars_plan() -> None:
    def dedupe(frame: pl.LazyFrame) -> pl.LazyFrame:
        return frame.unique(subset=["id"]).with_columns(rank=pl.col("amount").rank())

    lineage = udf_lineage(dedupe, spec(mode="frame"), "orders", SCHEMA)
    assert lineage.outputs == ["id", "g", "amount", "qty", "rank"]
    assert lineage.unresolved == []
    assert {(e.output, e.column, e.kind, e.inferred) for e in lineage.edges} == {
        ("id", "id", "value", False),
        ("g", "g", "value", False),
        ("amount", "amount", "value", False),
        ("qty", "qty", "value", False),
        ("rank", "amount", "value", False),
        *((name, "id", "filter", False) for name in ("id", "g", "amount", "qty", "rank")),
    }


def test_plan_reading_follows_filters_renames_and_a_sorted_head() -> None:
    def top(frame: pl.LazyFrame) -> pl.LazyFrame:
        return (
            frame.filter(pl.col("qty") > 0)
            .rename({"amount": "value"})
            .sort("value", descending=True)
            .head(10)
            .select("id", (pl.col("value") * 2).alias("double"))
        )

    lineage = udf_lineage(top, spec(mode="frame"), "orders", SCHEMA)
    assert {(e.output, e.column, e.kind) for e in lineage.edges} == {
        ("id", "id", "value"),
        ("double", "amount", "value"),
        *((name, column, "filter") for name in ("id", "double") for column in ("qty", "amount")),
    }


def test_a_plan_it_cannot_read_falls_back_to_schema_comparison_and_says_so() -> None:
    def per_group(frame: pl.LazyFrame) -> pl.LazyFrame:
        totals = frame.group_by("g").agg(total=pl.col("amount").sum())
        return frame.join(totals, on="g")

    lineage = udf_lineage(per_group, spec(mode="frame"), "orders", SCHEMA)
    assert lineage.outputs == ["id", "g", "amount", "qty", "total"]
    assert edges(lineage) == {
        ("id", "orders", "id", True),
        ("g", "orders", "g", True),
        ("amount", "orders", "amount", True),
        ("qty", "orders", "qty", True),
    }
    (problem,) = lineage.unresolved
    assert problem.output == "total"

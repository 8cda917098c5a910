"""UDFs of the quickstart: Polars expressions, added to the input's columns."""

import polars as pl


def score(large_order_usd: float = 500.0) -> dict[str, pl.Expr]:
    """Flag large orders and put each order in a value band."""
    threshold = float(large_order_usd)
    amount = pl.col("amount_usd")
    return {
        "is_large": amount >= threshold,
        "value_band": pl.when(amount < 100)
        .then(pl.lit("small"))
        .when(amount < threshold)
        .then(pl.lit("medium"))
        .otherwise(pl.lit("large")),
        "unit_price_usd": (amount / pl.col("quantity")).round(2),
    }

"""Deterministic test frames for the transform workloads (no RNG, no download): every value is
a function of the row number, so every machine generates the same bytes."""

from __future__ import annotations

from pathlib import Path

CATEGORIES = ["books", "games", "garden", "music", "office", "sports", "tools", "toys"]


def generate(rows: int, path: Path, bad_every: int = 0) -> Path:
    """`rows` orders as Parquet: id, amount, qty, category, day. With `bad_every`, every n-th
    row breaks one rule of the validate workload's schema (range, set, null or duplicate)."""
    import polars as pl

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    i = pl.int_range(0, rows, dtype=pl.Int64, eager=True)
    frame = pl.DataFrame({"id": i}).with_columns(
        amount=((pl.col("id") * 2654435761) % 100_000) / 100.0,
        qty=((pl.col("id") * 40503) % 20 + 1).cast(pl.Int32),
        category=pl.lit(pl.Series(CATEGORIES)).gather((pl.col("id") * 7919) % len(CATEGORIES)),
        day=pl.date(2024, 1, 1) + pl.duration(days=pl.col("id") % 365),
    )
    if bad_every:
        kind = (pl.col("id") // bad_every) % 4
        bad = (pl.col("id") % bad_every) == bad_every - 1
        frame = frame.with_columns(
            amount=pl.when(bad & (kind == 0)).then(-1.0).otherwise(pl.col("amount")),
            category=pl.when(bad & (kind == 1)).then(pl.lit("unknown")).otherwise("category"),
            qty=pl.when(bad & (kind == 2)).then(None).otherwise(pl.col("qty")),
            id=pl.when(bad & (kind == 3)).then(pl.col("id") - 1).otherwise(pl.col("id")),
        )
    temporary = path.with_suffix(".tmp")
    frame.write_parquet(temporary, row_group_size=256_000)
    temporary.replace(path)
    return path

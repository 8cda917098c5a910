"""RowsAfter: the rows past a sink's own watermark, by the row comparison PostgreSQL reads an
incremental extract with, `(cursor, key...) > (watermark)`; and when that comparison cannot
be made exactly in Arrow, a refusal (the rows are then sent again, never lost)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.watermark import RowsAfter, Watermark

values = st.one_of(st.none(), st.integers(0, 3))


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.tuples(values, values, values), max_size=25),
    mark=st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
)
def test_the_mask_keeps_the_rows_past_the_watermark(
    rows: list[tuple[int | None, int | None, int | None]], mark: tuple[int, int, int]
) -> None:
    batch = pa.RecordBatch.from_pylist(
        [{"c": c, "k1": a, "k2": b} for c, a, b in rows],
        schema=pa.schema([("c", pa.int64()), ("k1", pa.int64()), ("k2", pa.int64())]),
    )
    after = RowsAfter("c", ("k1", "k2"), Watermark(mark[0], (mark[1], mark[2])))

    def expected(row: tuple[int | None, ...]) -> bool:
        if row[0] is None:
            return True  # a NULL cursor: read again every run, never held back
        for value, bound in zip(row, mark, strict=True):
            if value is None:
                return True  # unknowable: sending it again is the lesser harm
            if value != bound:
                return value > bound
        return False  # the watermark's own row was committed

    assert after.refusal(batch.schema) is None
    kept = batch.filter(after.mask(batch)).to_pylist()
    assert [tuple(r.values()) for r in kept] == [r for r in rows if expected(r)]


def test_the_mask_agrees_with_postgresql_where_both_decide(pg_uri: str) -> None:
    """Every row PostgreSQL's row comparison says is past the watermark is kept, and every row
    it says is not (false, not NULL) is dropped."""
    rows = [(c, k) for c in (1, 2, 3, None) for k in (1, 2, 3, None)]
    batch = pa.RecordBatch.from_pylist(
        [{"c": c, "k": k} for c, k in rows],
        schema=pa.schema([("c", pa.int64()), ("k", pa.int64())]),
    )
    kept = batch.filter(RowsAfter("c", ("k",), Watermark(2, (2,))).mask(batch)).to_pylist()
    with psycopg.connect(pg_uri) as connection:
        decided = connection.execute(
            "select c, k, (c, k) > (2, 2) from (values "
            + ", ".join(f"({c or 'null'}::int, {k or 'null'}::int)" for c, k in rows)
            + ") as t(c, k)"
        ).fetchall()
    sent = {(r["c"], r["k"]) for r in kept}
    for c, k, past in decided:
        if past is not None:
            assert ((c, k) in sent) == past, (c, k)


def test_a_nan_cursor_is_kept() -> None:
    """PostgreSQL orders NaN above every number: a NaN row is past any watermark."""
    batch = pa.RecordBatch.from_pylist([{"c": 1.0}, {"c": math.nan}, {"c": 3.0}, {"c": None}])
    after = RowsAfter("c", (), Watermark(2.0))
    assert after.refusal(batch.schema) is None
    kept = batch.filter(after.mask(batch)).column("c").to_pylist()
    assert kept[0] != kept[0]
    assert kept[1:] == [3.0, None]


@pytest.mark.parametrize(
    ("column", "watermark", "reason"),
    [
        (pa.field("c", pa.string()), Watermark("b"), "collation"),
        (pa.field("c", pa.large_string()), Watermark("b"), "collation"),
        (pa.field("c", pa.timestamp("us")), Watermark(datetime(2024, 1, 1, tzinfo=UTC)), "zone"),
        (pa.field("c", pa.timestamp("us", "UTC")), Watermark(datetime(2024, 1, 1)), "zone"),
        (pa.field("c", pa.float64()), Watermark(math.nan), "NaN"),
        (pa.field("c", pa.int32()), Watermark(Decimal("1.5")), "not a int32"),
        (pa.field("c", pa.int64()), Watermark("1"), "not a int64"),
        (pa.field("d", pa.int64()), Watermark(1), "not in the extract's output"),
    ],
)
def test_what_arrow_cannot_compare_as_the_source_did_is_refused(
    column: pa.Field, watermark: Watermark, reason: str
) -> None:
    refusal = RowsAfter("c", (), watermark).refusal(pa.schema([column]))
    assert refusal is not None
    assert reason in refusal


def test_a_text_key_is_refused_and_a_key_the_watermark_lacks_is_not_compared() -> None:
    schema = pa.schema([("c", pa.int64()), ("k", pa.string())])
    refusal = RowsAfter("c", ("k",), Watermark(1, ("a",))).refusal(schema)
    assert refusal is not None
    assert "'k' is text" in refusal
    cursor_only = RowsAfter("c", ("k",), Watermark(1))  # as the source compares it then
    assert cursor_only.refusal(schema) is None
    batch = pa.RecordBatch.from_pylist([{"c": 1, "k": "z"}, {"c": 2, "k": "a"}], schema=schema)
    assert batch.filter(cursor_only.mask(batch)).column("c").to_pylist() == [2]


def test_timestamps_with_a_zone_compare_as_instants() -> None:
    schema = pa.schema([("c", pa.timestamp("us", "UTC"))])
    mark = datetime(2024, 1, 1, 10, tzinfo=UTC)
    batch = pa.RecordBatch.from_pylist(
        [
            {"c": datetime(2024, 1, 1, 9, 59, tzinfo=UTC)},
            {"c": datetime(2024, 1, 1, 10, 1, tzinfo=UTC)},
        ],
        schema=schema,
    )
    after = RowsAfter("c", (), Watermark(mark))
    assert after.refusal(schema) is None
    assert batch.filter(after.mask(batch)).num_rows == 1

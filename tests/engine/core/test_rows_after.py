"""RowsAfter: the rows past a watermark, as an Arrow mask and as a DuckDB predicate, both the
row comparison `(cursor, key...) > (watermark)` the sources read with."""

from __future__ import annotations

import duckdb
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.watermark import RowsAfter, Watermark

values = st.one_of(st.none(), st.integers(0, 3))


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.tuples(values, values, values), max_size=25),
    mark=st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
)
def test_the_mask_and_the_predicate_keep_the_rows_past_the_watermark(
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

    kept = batch.filter(after.mask(batch)).to_pylist()
    assert [tuple(r.values()) for r in kept] == [r for r in rows if expected(r)]
    connection = duckdb.connect()
    connection.register("t", pa.Table.from_batches([batch]))
    found = connection.execute(f"select c, k1, k2 from t where {after.sql()}").fetchall()
    assert sorted(found, key=repr) == sorted([r for r in rows if expected(r)], key=repr)

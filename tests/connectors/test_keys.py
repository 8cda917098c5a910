"""Merge keys of a table sink checked in Arrow (`connectors.keys.check_key_values`): the same
refusals as the SQL check on a database sink, for every key type a merge can match on."""

from __future__ import annotations

import pyarrow as pa
import pytest

from connectors.keys import check_key_values
from engine.core.errors import DataError


@pytest.mark.parametrize(
    ("keys", "repeated"),
    [
        (pa.array([1, 2, 3]), None),
        (pa.array([3, 1, 3, 2, 3]), "k=3 (3 rows)"),
        (pa.array([1.5, float("nan"), float("nan")]), "k=nan (2 rows)"),  # NaN is NaN, as in SQL
        (pa.array([0.0, -0.0, 1.0]), "1 merge keys appear more than once in the input, e.g. k="),
        (pa.array(["x", "y", "x"]).dictionary_encode(), "k='x' (2 rows)"),
        (pa.array([{"a": 1}, {"a": 2}]), None),  # a struct Arrow cannot sort: DuckDB's check
        (pa.array([{"a": 1}, {"a": 1}]), "k={'a': 1} (2 rows)"),
        (pa.array([[1, 2], [1, 2], [2]]), "k=[1, 2] (2 rows)"),
    ],
)
def test_repeated_keys_are_refused_whatever_their_type(
    keys: pa.Array, repeated: str | None
) -> None:
    table = pa.table({"k": keys})
    if repeated is None:
        check_key_values(table, ["k"])
        return
    with pytest.raises(DataError) as refused:
        check_key_values(table, ["k"])
    assert repeated in refused.value.message


def test_two_keys_are_one_key_and_nulls_are_counted() -> None:
    both = pa.table({"a": [1, 1, 2], "b": ["x", "y", "x"]})
    check_key_values(both, ["a", "b"])  # (1, x), (1, y), (2, x): each once
    with pytest.raises(DataError, match=r"a=1, b='x' \(2 rows\)"):
        check_key_values(pa.table({"a": [1, 1, 2], "b": ["x", "x", "x"]}), ["a", "b"])
    with pytest.raises(DataError, match=r"b: 1 rows"):
        check_key_values(pa.table({"a": [1, 2], "b": ["x", None]}), ["a", "b"])

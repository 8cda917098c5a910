"""Column lineage against hand-labelled golden cases (tests/fixtures/lineage/golden.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lineage.columns import column_lineage

GOLDEN = yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "fixtures" / "lineage" / "golden.yaml").read_text()
)
SCHEMAS: dict[str, dict[str, str]] = GOLDEN["schemas"]
CASES: list[dict[str, Any]] = GOLDEN["cases"]


def expected_edges(case: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    edges = set()
    for output, kinds in case["expect"].items():
        for kind, sources in (kinds or {}).items():
            for source in sources:
                table, column = source.split(".")
                edges.add((output, table, column, kind))
    return edges


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_golden_case(case: dict[str, Any]) -> None:
    lineage = column_lineage(case["sql"], SCHEMAS)
    assert not lineage.unresolved, lineage.unresolved
    assert lineage.outputs == list(case["expect"])
    actual = {(e.output, e.table, e.column, e.kind) for e in lineage.edges}
    expected = expected_edges(case)
    assert actual - expected == set(), "edges asserted that are not in the hand-labelled answer"
    assert expected - actual == set(), "edges missing"
    assert lineage.recursive == case.get("recursive", False)


def test_a_column_that_cannot_be_resolved_is_reported_not_guessed() -> None:
    lineage = column_lineage("select nope from orders", SCHEMAS)
    assert lineage.edges == []
    (problem,) = lineage.unresolved
    assert "nope" in problem.reason


def test_a_table_that_is_not_upstream_is_reported() -> None:
    lineage = column_lineage("select x from elsewhere", SCHEMAS)
    assert lineage.edges == []
    assert lineage.unresolved


@pytest.mark.parametrize(
    ("sql", "output", "reason"),
    [
        (
            "select s.a as a, id from (select {'a': id, 'b': amount} as s, id from orders) t",
            "a",
            "a field of a struct (or list) built inside the statement",
        ),
        ("select columns('a.*') + 1 from orders", "_col_0", "COLUMNS(...)"),
        ("select columns('a.*') as x from orders", "x", "COLUMNS(...)"),
    ],
    ids=["struct-field", "columns-in-an-expression", "columns-aliased-many"],
)
def test_constructs_it_cannot_trace_are_unresolved_not_guessed(
    sql: str, output: str, reason: str
) -> None:
    lineage = column_lineage(sql, SCHEMAS)
    assert output in lineage.outputs
    assert any(u.output == output and reason in u.reason for u in lineage.unresolved)
    assert not lineage.of(output)  # no edge asserted for it


def test_a_pivot_whose_columns_depend_on_the_data_is_reported() -> None:
    lineage = column_lineage("pivot orders on status using sum(amount)", SCHEMAS)
    assert lineage.edges == []
    (problem,) = lineage.unresolved
    assert problem.output is None
    assert "PIVOT without a static IN list" in problem.reason

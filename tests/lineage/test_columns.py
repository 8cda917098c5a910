"""Column lineage against hand-labelled golden cases (tests/fixtures/lineage/golden.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lineage.columns import column_lineage

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lineage"
GOLDEN_FILES = ("golden.yaml", "tpch.yaml", "tpcds.yaml")
"""golden.yaml over small tables; tpch.yaml and tpcds.yaml: benchmark queries over the
benchmarks' full schemas, where a wrong rule multiplies into hundreds of wrong edges."""


def golden(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((FIXTURES / name).read_text(encoding="utf-8"))
    return data


SCHEMAS: dict[str, dict[str, str]] = golden("golden.yaml")["schemas"]
CASES: list[tuple[dict[str, dict[str, str]], dict[str, Any]]] = [
    (data["schemas"], case) for data in map(golden, GOLDEN_FILES) for case in data["cases"]
]


def expected_edges(case: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    edges = set()
    for output, kinds in case["expect"].items():
        for kind, sources in (kinds or {}).items():
            for source in sources:
                table, column = source.split(".")
                edges.add((output, table, column, kind))
    return edges


@pytest.mark.parametrize(("schemas", "case"), CASES, ids=[c["name"] for _, c in CASES])
def test_golden_case(schemas: dict[str, dict[str, str]], case: dict[str, Any]) -> None:
    lineage = column_lineage(case["sql"], schemas)
    assert not lineage.unresolved, lineage.unresolved
    assert lineage.outputs == list(case["expect"])
    actual = {(e.output, e.table, e.column, e.kind) for e in lineage.edges}
    expected = expected_edges(case)
    assert actual - expected == set(), "edges asserted that are not in the hand-labelled answer"
    assert expected - actual == set(), "edges missing"
    assert lineage.recursive == case.get("recursive", False)
    if "edges" in case:  # stated in the file too, where a count is the point of the case
        assert len(lineage.edges) == case["edges"]


def test_exists_select_star_adds_no_column_it_does_not_reference() -> None:
    # Every column of the EXISTS subqueries' tables used to be a filter of every output:
    # 26, 24 and 24 wrong edges in TPC-H Q4, Q21 and Q22, 1,980 in TPC-DS Q35.
    queries = {"tpch_q4": 13, "tpch_q21": 23, "tpch_q22": 14, "tpcds_q35": 375}
    counts = {
        query: len(column_lineage(case["sql"], schemas).edges)
        for schemas, case in CASES
        for query in queries
        if case["name"].startswith(f"{query}_")
    }
    assert counts == queries


@pytest.mark.parametrize(
    "sql",
    [
        'select o.cid, c.cid, o.id as "CID", o.amount as cid_1 '
        "from orders o join customers c on o.cid = c.cid",
        "select * from orders o join customers c on o.cid = c.cid",
        "select id, id, id from orders",
        'select amount as "Amount", STATUS, o.day as Day_ from orders o',
        'select cid as "K" from orders union all select cid from customers',
    ],
    ids=["aliases-and-case", "star-over-a-join", "one-column-thrice", "case", "union"],
)
def test_output_names_are_the_names_duckdb_writes(sql: str, tmp_path: Path) -> None:
    import duckdb
    import pyarrow.parquet as pq

    with duckdb.connect() as connection:
        for table, columns in SCHEMAS.items():
            ddl = ", ".join(f'"{name}" {type_}' for name, type_ in columns.items())
            connection.execute(f"create table {table} ({ddl})")
        connection.execute(f"copy ({sql}) to '{tmp_path / 'out.parquet'}' (format parquet)")
    written = pq.read_schema(tmp_path / "out.parquet").names
    lineage = column_lineage(sql, SCHEMAS)
    assert lineage.outputs == written
    assert {e.output for e in lineage.edges} == set(written)


def test_the_written_output_names_replace_those_sqlglot_gives_unnamed_expressions() -> None:
    sql = "select status, count(*), max(amount) from orders group by status"
    assert column_lineage(sql, SCHEMAS).outputs == ["status", "_col_1", "_col_2"]
    named = column_lineage(sql, SCHEMAS, ["status", "count_star()", "max(amount)"])
    assert named.outputs == ["status", "count_star()", "max(amount)"]
    assert named.of("max(amount)", "value") == {("orders", "amount")}


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

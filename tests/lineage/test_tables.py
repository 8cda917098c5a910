import pytest

from lineage.tables import SqlSyntaxError, parse_select, referenced_tables

CASES = [
    ("select * from a", ["a"]),
    ("select * from a join b using (id)", ["a", "b"]),
    ("with a as (select * from src) select * from a", ["src"]),  # the CTE shadows a task named a
    (
        "with recursive r as (select 1 as n union all select n + 1 from r where n < 3) select * from r",
        [],
    ),
    ("select * from a where x in (select x from b)", ["a", "b"]),
    ("select * from a, lateral (select * from b where b.x = a.x) l", ["a", "b"]),
    ("select * from read_parquet('f.parquet')", []),
    ("select * from main.c", ["main.c"]),
    ("select 1 union all select * from z", ["z"]),
]


@pytest.mark.parametrize(("sql", "tables"), CASES)
def test_referenced_tables(sql: str, tables: list[str]) -> None:
    statement = parse_select(sql)
    assert not isinstance(statement, SqlSyntaxError)
    assert sorted(ref.qualified for ref in referenced_tables(statement)) == sorted(tables)


def test_table_positions_are_known() -> None:
    statement = parse_select("select *\nfrom a\njoin b using (id)")
    assert not isinstance(statement, SqlSyntaxError)
    assert [(r.name, r.line) for r in referenced_tables(statement)] == [("a", 2), ("b", 3)]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("selec 1", "Invalid expression"),
        ("select 1; select 2", "expected one statement"),
        ("", "empty"),
        ("insert into t values (1)", "must be a query"),
        ("select a from t where", "incomplete WHERE clause"),
    ],
)
def test_what_is_not_one_select(sql: str, message: str) -> None:
    problem = parse_select(sql)
    assert isinstance(problem, SqlSyntaxError)
    assert message in problem.message

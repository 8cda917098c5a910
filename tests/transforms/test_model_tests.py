"""Tests that belong to a sql task (dbt's generic tests): what each counts, NULLs aside, the
thresholds, how a failure gates what reads the output, and the wrong ones refused at their
line."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.api.pipeline import run
from tests.conftest import WritePipeline, problems_of

PIPELINE = """
    pipeline: shop
    tasks:
      - id: customers
        sql: select * from (values (1, 'a'), (2, 'b'), (null, 'c')) t(id, name)
        tests:
          - unique: id
          - {{not_null: id, severity: warn}}
      - id: orders
        sql: |
          select * from (values (10, 1, 'paid'), (11, 2, 'paid'), (12, null, 'paid'),
                                (13, 1, 'refunded')) t(id, customer_id, status)
        tests:
{tests}
      - id: report
        sql: select count(*) as n from orders
"""


def _pipeline(write: WritePipeline, tests: str) -> Path:
    indented = "\n".join(f"          - {line}" for line in tests.strip().splitlines())
    return write("p.yaml", PIPELINE.format(tests=indented))


def test_passing_tests_let_the_output_through_and_nulls_count_as_no_value(
    write: WritePipeline,
) -> None:
    path = _pipeline(
        write,
        """
        unique: id
        accepted_values: {column: status, values: [paid, refunded]}
        relationships: {column: customer_id, to: customers, field: id}
        """,
    )
    result = run(path)
    assert result.ok, {k: t.error for k, t in result.tasks.items() if t.error}
    assert result.tasks["report"].rows_out == 1


@pytest.mark.parametrize(
    ("test", "said"),
    [
        ("unique: customer_id", "unique(customer_id): 1 value held twice or more"),
        ("not_null: customer_id", "not_null(customer_id): 1 row with NULL"),
        (
            "accepted_values: {column: status, values: [paid]}",
            "accepted_values(status): 1 value not accepted (error_if != 0); e.g. 'refunded'",
        ),
        (
            "relationships: {column: id, to: customers, field: id}",
            "relationships(id -> customers.id): 4 rows referring to nothing",
        ),
    ],
)
def test_a_failing_test_fails_the_task_and_nothing_reads_its_output(
    write: WritePipeline, test: str, said: str
) -> None:
    result = run(_pipeline(write, test))
    assert not result.ok
    assert said in (result.tasks["orders"].error or "")
    assert result.tasks["orders"].output is None  # not published
    assert result.tasks["report"].state.value == "SKIPPED"


def test_thresholds_decide_as_dbt_does(write: WritePipeline) -> None:
    allowed = "{unique: customer_id, error_if: '> 1'}"  # one duplicate is tolerated
    assert run(_pipeline(write, allowed)).ok
    warned = "{unique: customer_id, severity: warn, warn_if: '>= 1'}"
    assert run(_pipeline(write, warned)).ok
    strict = "{unique: customer_id, error_if: '>= 1'}"
    assert not run(_pipeline(write, strict)).ok


def test_wrong_tests_are_refused_at_their_line(write: WritePipeline) -> None:
    unknown = _pipeline(write, "relationships: {column: customer_id, to: custmers, field: id}")
    (problem,) = [p for p in problems_of(unknown) if p.code == "unknown-dependency"]
    assert "refers to unknown task 'custmers'. Did you mean 'customers'?" in problem.message
    assert problem.line == 13  # the test's own line
    two = _pipeline(write, "{unique: id, not_null: id}")
    assert any("give exactly one of" in p.message for p in problems_of(two))
    threshold = _pipeline(write, "{unique: id, error_if: 'lots'}")
    assert any(p.code == "invalid-value" for p in problems_of(threshold))
    path = write(
        "q.yaml",
        """
        pipeline: q
        tasks:
          - id: a
            sql: select 1 as x
            materialize: ephemeral
            tests: [{unique: x}]
        """,
    )
    (problem,) = [p for p in problems_of(path) if p.code == "tests-not-here"]
    assert "an ephemeral one keeps none" in problem.message


def test_a_test_of_a_column_the_output_lacks_names_the_columns(write: WritePipeline) -> None:
    result = run(_pipeline(write, "unique: custmer_id"))
    error = result.tasks["orders"].error or ""
    assert "the output has no column 'custmer_id' (its columns: id, customer_id, status)" in error


def test_a_relationship_within_one_output_and_values_compared_in_the_columns_type(
    write: WritePipeline,
) -> None:
    """A manager's id refers to a row of the same output; accepted numbers match as numbers
    (1 is 1.0 in a DOUBLE column, as DuckDB compares dbt's quoted values)."""
    path = write(
        "p.yaml",
        """
        pipeline: staff
        tasks:
          - id: employees
            sql: |
              select * from (values (1, null, 1.0), (2, 1, 2.5), (3, 2, 1.0)) t(id, manager, grade)
            tests:
              - relationships: {column: manager, to: employees, field: id}
              - accepted_values: {column: grade, values: [1, 2.5]}
        """,
    )
    result = run(path)
    assert result.ok, {k: t.error for k, t in result.tasks.items() if t.error}


def test_a_test_that_cannot_run_names_itself(write: WritePipeline) -> None:
    result = run(
        _pipeline(write, "relationships: {column: customer_id, to: customers, field: nope}")
    )
    error = result.tasks["orders"].error or ""
    assert "test relationships(customer_id -> customers.nope) of 'orders' cannot run" in error


def test_a_cycle_a_relationships_test_makes_is_named_with_the_test(write: WritePipeline) -> None:
    path = write(
        "p.yaml",
        """
        pipeline: cy
        tasks:
          - id: orders
            sql: select 1 as id, 1 as customer_id
            tests: [{relationships: {column: customer_id, to: customers, field: id}}]
          - id: customers
            sql: select customer_id as id from orders
        """,
    )
    (problem,) = [p for p in problems_of(path) if p.code == "cycle"]
    assert (
        "made by the test relationships(customer_id -> customers.id) of orders" in problem.message
    )
    assert problem.hint is not None
    assert "move it to the other side" in problem.hint

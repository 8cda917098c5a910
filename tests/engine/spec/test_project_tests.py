"""A SQL project's tests written wrong, and written in the less common shapes dbt takes: each
said at its file and line, none crashing validation, none silently left out."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from engine.api.pipeline import plan, run
from engine.core.problems import Problem
from tests.conftest import only, problems_of

SHOP = Path(__file__).resolve().parents[2] / "fixtures" / "sql_projects" / "shop"


@pytest.fixture
def shop(project: Path) -> Path:
    return Path(shutil.copytree(SHOP, project / "shop"))


def _at(problem: Problem) -> tuple[str, int | None]:
    return Path(problem.file or "").name, problem.line


def test_a_template_that_does_not_parse_is_said_not_raised(shop: Path) -> None:
    model = shop / "models" / "staging" / "stg_orders.sql"
    model.write_text(model.read_text().replace("{{ ref('raw_orders') }}", "{{ ref('raw_orders') }"))
    problem = only(problems_of(shop), "template")
    assert _at(problem) == ("stg_orders.sql", 2)
    (shop / "tests" / "broken.sql").write_text("select * from {{ ref('orders') }")
    assert ("broken.sql", 1) in {_at(p) for p in problems_of(shop) if p.code == "template"}


def test_a_generic_test_in_tests_generic_is_a_custom_test(shop: Path) -> None:
    """dbt keeps custom generic tests in tests/generic/ too: not singular tests."""
    (shop / "tests" / "generic").mkdir()
    (shop / "tests" / "generic" / "at_least.sql").write_text(
        "{% test at_least(model, column_name, minimum) %}\n"
        "select {{ column_name }} from {{ model }} where {{ column_name }} < {{ minimum }}\n"
        "{% endtest %}\n"
    )
    schema = shop / "models" / "marts" / "schema.yml"
    schema.write_text(
        schema.read_text().replace(
            "tests: [not_null, not_negative]",
            "tests: [not_null, not_negative, {at_least: {minimum: 1000}}]",
        )
    )
    names = [t.name for t in plan(shop).task("orders").spec.tests]
    assert "at_least(amount)" in names
    failed = run(shop)
    assert "at_least(amount):" in (failed.tasks["orders"].error or "")


def test_a_singular_test_reads_only_what_the_pipeline_makes(shop: Path) -> None:
    test = shop / "tests" / "joined.sql"
    test.write_text("select * from {{ ref('orders') }} join nosuchtable using (order_id)")
    problem = only(problems_of(shop), "unknown-table")
    assert _at(problem) == ("joined.sql", 1)
    assert "'nosuchtable'" in problem.message
    test.write_text("select * from {{ ref('raw_orders') }} where id > 0")
    problem = only(problems_of(shop), "unknown-ref")
    assert _at(problem) == ("joined.sql", 1)
    assert "no model of this project" in problem.message
    test.write_text("select * from {{ ref('custmers') }} where false")
    assert "Did you mean 'customers'?" in only(problems_of(shop), "unknown-ref").message


@pytest.mark.parametrize(
    ("test", "says"),
    [
        ("- not_null: {severty: warn}", "unknown argument 'severty'. Did you mean 'severity'?"),
        (
            "- unique: {config: {stor_failures: true}}",
            "unknown config 'stor_failures'. Did you mean 'store_failures'?",
        ),
        ("- accepted_values: {values: [1], vales: [2]}", "unknown argument 'vales'"),
    ],
)
def test_a_misspelt_test_setting_is_an_error_at_its_line(shop: Path, test: str, says: str) -> None:
    schema = shop / "models" / "marts" / "schema.yml"
    schema.write_text(
        schema.read_text().replace(
            "        tests: [not_null, not_negative]",
            f"        tests:\n          {test}",
        )
    )
    problem = only(problems_of(shop), "invalid-value")
    assert says in problem.message, problem.format()
    lines = schema.read_text().splitlines()
    assert _at(problem) == ("schema.yml", 1 + lines.index(f"          {test}"))


def test_a_custom_tests_ref_argument_names_the_task_it_reads(shop: Path) -> None:
    (shop / "macros" / "exists_in.sql").write_text(
        "{% test exists_in(model, column_name, to, field) %}\n"
        "select {{ column_name }} from {{ model }}\n"
        "where {{ column_name }} not in (select {{ field }} from {{ to }})\n"
        "{% endtest %}\n"
    )
    schema = shop / "models" / "marts" / "schema.yml"
    schema.write_text(
        schema.read_text().replace(
            "- relationships: {to: ref('customers'), field: customer_id}",
            "- exists_in: {to: ref('customers'), field: customer_id}",
        )
    )
    assert "customers" in plan(shop).task("orders").inputs
    result = run(shop)
    assert result.ok, result


def test_a_test_of_a_column_the_model_lacks_is_said_at_the_test_by_plan(
    shop: Path, cli: Callable[..., Result]
) -> None:
    schema = shop / "models" / "marts" / "schema.yml"
    schema.write_text(schema.read_text().replace("      - name: amount\n", "      - name: amout\n"))
    result = cli("plan", shop)
    assert result.exit_code != 0
    line = 1 + schema.read_text().splitlines().index("      - name: amout") + 1
    assert f"schema.yml:{line}: error [task orders]" in result.output, result.output
    assert "the output has no column 'amout'" in " ".join(result.output.split())


def test_what_a_source_table_asks_that_is_not_run_is_said(shop: Path) -> None:
    sources = shop / "models" / "staging" / "_sources.yml"
    sources.write_text(
        sources.read_text().replace(
            "extract:",
            "loaded_at_field: paid_at\n        columns:\n          - name: id\n"
            "            tests: [unique]\n        extract:",
            1,
        )
    )
    problem = only(problems_of(shop), "not-supported")
    assert "loaded_at_field, tests (test the models that read it) not run" in problem.message
    assert problem.severity == "warning"


def test_a_misspelt_macro_is_named_with_the_one_meant(shop: Path) -> None:
    model = shop / "models" / "staging" / "stg_payments.sql"
    model.write_text(model.read_text().replace("cents_to_dollars(", "cent_to_dollars("))
    problem = only(problems_of(shop), "undefined-variable")
    assert "Did you mean 'cents_to_dollars'?" in problem.message

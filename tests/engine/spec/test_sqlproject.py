"""A folder of SQL models run as a pipeline: the golden shop project (dbt's jaffle_shop shape)
end to end, each table against the same question asked in plain SQL of the seed files, the
settings folders and models give, and every new input's wrong spelling at its file:line."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import polars as pl
import pytest
from click.testing import Result
from polars.testing import assert_frame_equal

from engine.api.pipeline import plan, run
from engine.core.errors import DefinitionError, PipelineInvalid
from engine.core.problems import Problem
from tests.conftest import only, problems_of

SHOP = Path(__file__).resolve().parents[2] / "fixtures" / "sql_projects" / "shop"

ORDERS = """
select o.id as order_id, o.user_id as customer_id, cast(o.order_date as date) as order_date,
       o.status,
       coalesce(sum(p.amount) filter (where p.payment_method = 'credit_card'), 0) / 100
           as credit_card_amount,
       coalesce(sum(p.amount) filter (where p.payment_method = 'coupon'), 0) / 100
           as coupon_amount,
       coalesce(sum(p.amount) filter (where p.payment_method = 'bank_transfer'), 0) / 100
           as bank_transfer_amount,
       coalesce(sum(p.amount) filter (where p.payment_method = 'gift_card'), 0) / 100
           as gift_card_amount,
       coalesce(sum(p.amount), 0) / 100 as amount
from read_csv('{seeds}/raw_orders.csv') as o
left join read_csv('{data}/payments.csv') as p on p.order_id = o.id
where o.order_date >= date '2018-01-01'
group by all
order by order_id
"""
CUSTOMERS = """
select c.id as customer_id, c.first_name, c.last_name,
       min(cast(o.order_date as date)) as first_order,
       max(cast(o.order_date as date)) as most_recent_order,
       count(distinct o.id) as number_of_orders,
       coalesce(sum(p.amount), 0) / 100 as customer_lifetime_value
from read_csv('{seeds}/raw_customers.csv') as c
left join read_csv('{seeds}/raw_orders.csv') as o on o.user_id = c.id
left join read_csv('{data}/payments.csv') as p on p.order_id = o.id
group by all
order by customer_id
"""


@pytest.fixture
def shop(project: Path) -> Path:
    """The golden project, copied into the test's project folder."""
    return Path(shutil.copytree(SHOP, project / "shop"))


def _oracle(query: str, seeds: Path) -> pl.DataFrame:
    return duckdb.sql(query.format(seeds=seeds, data=seeds.parent / "data")).pl()


def _output(result_files: list[Path]) -> pl.DataFrame:
    return pl.read_parquet([str(f) for f in result_files])


def test_the_shop_project_runs_and_every_table_equals_plain_sql(shop: Path) -> None:
    result = run(shop)
    assert result.ok, {k: t.error for k, t in result.tasks.items() if t.error}
    seeds = shop / "seeds"
    for task_id, query in (("orders", ORDERS), ("customers", CUSTOMERS)):
        output = result.tasks[task_id].output
        assert output is not None
        found = _output(list(output.files)).sort(by=pl.first())
        expected = _oracle(query, seeds)
        assert_frame_equal(found, expected, check_dtypes=False)
    assert len(_oracle(ORDERS, seeds)) == 7  # order 6 is before var('start_date')
    with duckdb.connect(str(shop / "out" / "shop.duckdb"), read_only=True) as db:
        published = db.sql("select * from customers order by customer_id").pl()
    assert_frame_equal(published, _oracle(CUSTOMERS, seeds), check_dtypes=False)


def test_folders_and_models_set_what_each_task_is(shop: Path) -> None:
    tasks = {t.id: t for t in plan(shop).tasks}
    assert set(tasks) == {
        *("raw_customers", "raw_orders", "stripe__payments"),
        *("stg_customers", "stg_orders", "stg_payments", "orders", "customers"),
        "publish_customers",
    }
    staging = [tasks[t].spec for t in ("stg_customers", "stg_orders", "stg_payments")]
    assert {(s.materialize, s.tags) for s in staging} == {("ephemeral", ("staging",))}
    assert tasks["orders"].spec.tags == ("marts", "finance")  # the folder's, then its own
    assert tasks["customers"].spec.materialize == "table"
    assert tasks["orders"].inputs == ("stg_payments", "stg_orders", "customers")  # ref(), a test
    assert plan(shop, params={"start_date": "2018-01-05"}).params["start_date"] == "2018-01-05"
    assert {t.id for t in plan(shop, select=["tag:finance"]).to_run} == {
        "orders",
        *("raw_orders", "stripe__payments"),
        *("stg_orders", "stg_payments"),
        *("customers", "stg_customers", "raw_customers"),  # its relationships test reads them
    }


def test_a_project_folder_is_a_pipeline_for_the_command_line(
    shop: Path, cli: Callable[..., Result]
) -> None:
    result = cli("validate", shop)
    assert result.exit_code == 0, result.output
    assert "valid, 9 tasks" in result.output
    result = cli("run", shop / "arrowline_project.yml", "--select", "+customers", "--no-progress")
    assert result.exit_code == 0, result.output
    # an ephemeral model runs inside its readers: it counts no rows of its own
    line = next(t for t in result.output.splitlines() if "│ stg_orders " in t)
    cells = [cell.strip() for cell in line.split("│")[1:-1]]
    assert cells[:6] == ["stg_orders", "sql", "SUCCESS", "1", "", ""], cells


def test_a_model_reading_what_is_not_there_is_named_at_its_line(shop: Path) -> None:
    model = shop / "models" / "marts" / "orders.sql"
    model.write_text(model.read_text().replace("ref('stg_orders')", "ref('stg_order')"))
    problem = only(problems_of(shop), "unknown-ref")
    assert Path(problem.file or "").resolve() == model
    lines = model.read_text().splitlines()
    assert problem.line == 1 + next(i for i, t in enumerate(lines) if "ref('stg_order')" in t)
    assert "Did you mean 'stg_orders'" in problem.message


def test_two_models_of_one_name_are_refused_naming_both_files(shop: Path) -> None:
    (shop / "models" / "marts" / "stg_orders.sql").write_text("select 1 as x")
    problem = only(problems_of(shop), "duplicate-id")
    assert "models/marts/stg_orders.sql" in problem.message
    assert "models/staging/stg_orders.sql" in problem.message


def test_wrong_settings_are_named_where_they_are_written(shop: Path) -> None:
    settings = shop / "arrowline_project.yml"
    settings.write_text(settings.read_text().replace("+tags: [marts]", "+tgas: [marts]"))
    problem = only(problems_of(shop), "unknown-key")
    assert (Path(problem.file or "").name, problem.line) == ("arrowline_project.yml", 17)
    assert "'+tgas'" in problem.message

    model = shop / "models" / "marts" / "customers.sql"
    model.write_text("{{ config(materialized='snapshot') }}\n" + model.read_text())
    problem = only(problems_of(shop), "not-supported")
    assert Path(problem.file or "").resolve() == model
    assert "materialized 'snapshot' is not supported for models yet" in problem.message

    model.write_text("{{ config(materialized=var('m')) }}\nselect 1 as x\n")
    problem = only(problems_of(shop), "invalid-value")
    assert (Path(problem.file or "").resolve(), problem.line) == (model, 1)


def test_disabled_models_and_seeds_make_no_task(shop: Path) -> None:
    settings = shop / "arrowline_project.yml"
    text = settings.read_text().replace(
        "+tags: [marts]", "+tags: [marts]\n      orders: {+enabled: false}"
    )
    settings.write_text(text)
    assert "orders" not in {t.id for t in plan(shop).tasks}


def test_a_source_is_read_by_the_extract_its_table_declares(shop: Path) -> None:
    tasks = {t.id: t for t in plan(shop).tasks}
    source = tasks["stripe__payments"].spec
    assert source.extract is not None
    assert source.tags == ("source",)
    assert source.description == "one row per payment, amounts in cents"
    assert tasks["stg_payments"].inputs == ("stripe__payments",)


def test_an_undeclared_source_or_a_table_without_extract_is_named_at_its_line(shop: Path) -> None:
    model = shop / "models" / "staging" / "stg_payments.sql"
    model.write_text(model.read_text().replace("'payments'", "'payment'"))
    problem = only(problems_of(shop), "unknown-source")
    assert Path(problem.file or "").resolve() == model
    assert problem.line == 3
    assert "Did you mean 'stripe.payments'" in problem.message

    sources = shop / "models" / "staging" / "_sources.yml"
    sources.write_text(sources.read_text().replace("extract:", "extrakt:"))
    problem = only(problems_of(shop), "invalid-value")
    assert (Path(problem.file or "").resolve(), problem.line) == (sources, 7)  # the table
    assert "stripe.payments needs `extract:`" in problem.message


def test_the_tests_of_a_property_file_gate_the_model_and_what_reads_it(shop: Path) -> None:
    """dbt's generic tests of the marts run after each mart and before anything reads it."""
    tasks = {t.id: t.spec for t in plan(shop).tasks}
    assert [t.name for t in tasks["customers"].tests] == [
        "unique(customer_id)",
        "not_null(customer_id)",
    ]
    assert (
        tasks["customers"].description
        == "one row per customer, with their orders and what they paid"
    )
    assert "customers" in plan(shop).task("orders").inputs  # its relationships test reads it
    assert run(shop).ok

    seeds = shop / "seeds"
    customers = (seeds / "raw_customers.csv").read_text()
    (seeds / "raw_customers.csv").write_text(customers + "2,Shawn,M.\n")  # a second 2
    failed = run(shop)
    assert not failed.ok
    error = failed.tasks["customers"].error or ""
    assert "unique(customer_id): 1 value held twice or more (error_if != 0); e.g. 2" in error
    assert failed.tasks["publish_customers"].state.value == "SKIPPED"
    (seeds / "raw_customers.csv").write_text(customers)

    orders = (seeds / "raw_orders.csv").read_text()
    (seeds / "raw_orders.csv").write_text(orders + "9,99,2018-01-10,lost\n")
    failed = run(shop)
    error = failed.tasks["orders"].error or ""
    assert "accepted_values(status): 1 value not accepted" in error
    assert "e.g. 'lost'" in error
    assert (
        "relationships(customer_id -> customers.customer_id): 1 row referring to nothing" in error
    )
    assert "e.g. 99" in error


def test_a_test_given_severity_warn_is_said_and_lets_the_model_through(shop: Path) -> None:
    schema = shop / "models" / "marts" / "schema.yml"
    schema.write_text(
        schema.read_text().replace(
            "- relationships: {to: ref('customers'), field: customer_id}",
            "- relationships: {to: ref('customers'), field: customer_id, config: {severity: warn}}",
        )
    )
    orders = shop / "seeds" / "raw_orders.csv"
    orders.write_text(orders.read_text() + "9,99,2018-01-10,placed\n")
    assert run(shop).ok


def test_a_test_this_cannot_run_is_said(shop: Path) -> None:
    (shop / "models" / "marts" / "more.yml").write_text(
        "version: 2\nmodels:\n  - name: customers\n"
        "    tests: [dbt_utils.expression_is_true]\n"
        "    columns:\n      - name: first_name\n        tests: [dbt_expectations.x]\n"
    )
    said = sorted((p.line, p.message) for p in problems_of(shop) if p.code == "not-supported")
    assert [line for line, _ in said] == [4, 7]
    assert all(p.severity == "warning" for p in problems_of(shop) if p.code == "not-supported")


def test_macros_are_callable_by_name_and_importable_by_file(shop: Path) -> None:
    tasks = {t.id: t for t in plan(shop).tasks}
    assert "round(amount / 100, 2) as amount" in (tasks["stg_payments"].sql or "")
    model = shop / "models" / "staging" / "stg_payments.sql"
    model.write_text(
        "{% import 'macros/money.sql' as money %}\n"
        + model.read_text().replace("cents_to_dollars(", "money.cents_to_dollars(")
    )
    assert "round(amount / 100, 2)" in (plan(shop).task("stg_payments").sql or "")


def test_a_macro_is_checked_as_a_template_is_at_its_own_line(shop: Path) -> None:
    macros = shop / "macros" / "money.sql"
    macros.write_text(
        macros.read_text() + "\n{% macro region() %}\n  {{ var('start_date') }}\n{% endmacro %}\n"
    )
    problem = only(problems_of(shop), "unquoted-parameter")
    assert (Path(problem.file or "").resolve(), problem.line) == (macros, 7)
    macros.write_text("{% macro broken( %}\n{% endmacro %}\n")
    in_file = [p for p in problems_of(shop) if Path(p.file or "").resolve() == macros]
    assert [(p.code, p.line) for p in in_file] == [("template", 1)]


def test_a_macro_edited_changes_the_fingerprint_of_what_uses_it(shop: Path) -> None:
    settings = shop / "arrowline_project.yml"
    settings.write_text(settings.read_text().replace("name: shop", "name: shop\ncache: true"))
    assert run(shop).ok
    marts = ("customers", "orders", "raw_orders")
    assert [plan(shop).task(t).action for t in marts] == ["reuse", "reuse", "reuse"]
    macros = shop / "macros" / "money.sql"
    macros.write_text(macros.read_text().replace("{{ scale }})", "{{ scale }}) * 1"))
    assert [plan(shop).task(t).action for t in marts] == ["run", "run", "reuse"]


def test_dbt_project_files_as_dbt_writes_them(shop: Path) -> None:
    """Settings without `+` (jaffle_shop's own file), a package beside the project, scoped vars,
    and a folder named in the settings that is not there (a typo applies to nothing)."""
    (shop / "arrowline_project.yml").write_text(
        "name: shop\n"
        "vars:\n  shop: {start_date: '2018-01-05'}\n"
        "models:\n"
        "  shop:\n"
        "    materialized: table\n"
        "    staging: {materialized: ephemeral}\n"
        "    stagging: {+tags: [typo]}\n"
        "  dbt_utils: {+enabled: false}\n"
    )
    problems = problems_of(shop)
    warnings = sorted((p.code, p.line) for p in problems if p.severity == "warning")
    assert warnings == [("not-supported", 9), ("unknown-key", 8)], [p.format() for p in problems]
    assert not [p for p in problems if p.severity == "error"], [p.format() for p in problems]
    the_plan = plan(shop)
    assert the_plan.task("stg_orders").spec.materialize == "ephemeral"
    assert the_plan.params["start_date"] == "2018-01-05"


def test_a_file_name_that_cannot_name_a_table_is_named_with_the_fix(shop: Path) -> None:
    bad = shop / "models" / "marts" / "stg-orders.sql"
    bad.write_text("select 1 as x")
    problem = only(problems_of(shop), "invalid-name")
    assert Path(problem.file or "").resolve() == bad
    assert problem.hint == "rename the file, e.g. to 'stg_orders'"
    bad.unlink()
    (shop / "models" / "marts" / "Customers.sql").write_text("select 1 as x")
    problem = only(problems_of(shop), "duplicate-id")
    assert "table names ignore case" in problem.message


def test_an_unknown_filter_in_a_model_is_a_problem_at_its_line(shop: Path) -> None:
    model = shop / "models" / "marts" / "customers.sql"
    model.write_text("select 1 as x\nfrom {{ ref('stg_orders') | nosuch }}\n")
    problem = only(problems_of(shop), "template")
    assert (Path(problem.file or "").resolve(), problem.line) == (model, 2)
    assert "No filter named 'nosuch'" in problem.message


def test_dbt_test_shapes_in_a_property_file(shop: Path) -> None:
    """dbt 1.10's `arguments:`, `to: source(...)`, `enabled: false`, a `where:` this cannot
    honour, a test without its values, and tests of an ephemeral model."""
    (shop / "models" / "staging" / "schema.yml").write_text(
        "version: 2\n"
        "models:\n"
        "  - name: stg_customers\n"
        "    columns:\n"
        "      - name: customer_id\n"
        "        data_tests: [unique]\n"
        "  - name: stg_payments\n"
        "    columns:\n"
        "      - name: payment_method\n"
        "        tests:\n"
        "          - accepted_values: {arguments: {values: [credit_card]}}\n"
    )
    (shop / "models" / "marts" / "schema.yml").write_text(
        "version: 2\n"
        "models:\n"
        "  - name: orders\n"
        "    columns:\n"
        "      - name: order_id\n"
        "        tests:\n"
        "          - relationships: {to: \"source('stripe', 'payments')\", field: order_id}\n"
        "          - not_null: {config: {enabled: false}}\n"
        "          - unique: {config: {where: 'order_id > 3'}}\n"
        "          - accepted_values: {quote: false}\n"
    )
    problems = problems_of(shop)
    said = sorted((Path(p.file or "").name, p.line, p.code, p.severity) for p in problems)
    assert said == [
        ("schema.yml", 6, "not-supported", "warning"),  # stg_customers is ephemeral
        ("schema.yml", 9, "not-supported", "warning"),  # where: would judge other rows
        ("schema.yml", 10, "invalid-value", "error"),  # accepted_values without values
        ("schema.yml", 11, "not-supported", "warning"),  # stg_payments is ephemeral too
    ], [p.format() for p in problems]
    (shop / "models" / "marts" / "schema.yml").write_text(
        (shop / "models" / "marts" / "schema.yml").read_text().rsplit("          - unique", 1)[0]
    )
    tests = plan(shop).task("orders").spec.tests
    assert [t.name for t in tests] == ["relationships(order_id -> stripe__payments.order_id)"]


def test_an_empty_project_says_where_models_go(project: Path) -> None:
    (project / "empty").mkdir()
    (project / "empty" / "arrowline_project.yml").write_text("name: nothing\n")
    (problem,) = problems_of(project / "empty")
    assert problem.code == "no-tasks"
    assert "no .sql model or .csv seed under empty/models, empty/seeds" in problem.message


def _at(problem: Problem) -> tuple[Path, int | None]:
    return Path(problem.file or "").resolve(), problem.line


def test_a_models_problems_found_after_the_project_is_read_name_the_models_files(
    shop: Path,
) -> None:
    """Problems found once the project is a pipeline (cycles, a test's settings, ephemeral
    models nobody reads) name the file that wrote the model or test, not the project file."""
    staging = shop / "models" / "staging" / "stg_orders.sql"
    staging.write_text(
        staging.read_text() + " where user_id in (select customer_id from {{ ref('customers') }})"
    )
    cycle = only(problems_of(shop), "cycle")
    assert _at(cycle) in {(staging, 1), (shop / "models" / "marts" / "customers.sql", 1)}
    shutil.copy(SHOP / "models" / "staging" / "stg_orders.sql", staging)

    schema = shop / "models" / "marts" / "schema.yml"
    text = schema.read_text()
    schema.write_text(
        text.replace("values: [placed,", "config: {severity: wran}\n              values: [placed,")
    )
    wrong = only(problems_of(shop), "invalid-value")
    lines = schema.read_text().splitlines()
    assert _at(wrong) == (
        schema,
        1 + next(i for i, t in enumerate(lines) if "accepted_values" in t),
    )
    assert "'wran'" in wrong.message


def test_a_wrong_ref_is_said_once_at_its_line(shop: Path) -> None:
    model = shop / "models" / "marts" / "orders.sql"
    model.write_text(model.read_text().replace("ref('stg_orders')", "ref('stg_ordrs')"))
    problems = [p for p in problems_of(shop) if p.severity == "error"]
    assert [p.code for p in problems] == ["unknown-ref"], [p.format() for p in problems]


def test_a_versioned_ref_is_refused_at_its_line_saying_what_to_write(shop: Path) -> None:
    """dbt's `ref('m', v=2)`: versions are not supported, said at the call's line with the
    ref that works (the model itself, or the model of the version's own file)."""
    model = shop / "models" / "marts" / "orders.sql"
    text = model.read_text()
    model.write_text(text.replace("ref('stg_orders')", "ref('stg_orders', v=2)"))
    line = 1 + next(i for i, t in enumerate(text.splitlines()) if "ref('stg_orders')" in t)
    with pytest.raises(PipelineInvalid) as invalid:
        plan(shop)
    assert isinstance(invalid.value, DefinitionError)
    (problem,) = [p for p in invalid.value.problems if p.severity == "error"]
    assert (problem.code, _at(problem)) == ("not-supported", (model, line)), problem.format()
    assert "ref('stg_orders', v=2): dbt's model versions are not supported" in problem.message
    assert problem.hint == "write ref('stg_orders'): there are no versions of 'stg_orders' here"
    shutil.copy(shop / "models" / "staging" / "stg_orders.sql", model.parent / "stg_orders_v2.sql")
    model.write_text(text.replace("ref('stg_orders')", "ref('stg_orders', version=2)"))
    (problem,) = [p for p in problems_of(shop) if p.severity == "error"]
    assert _at(problem) == (model, line)
    assert problem.hint == "write ref('stg_orders_v2'), the model of that version's file"


def test_versions_in_a_property_file_are_said_not_read(shop: Path) -> None:
    schema = shop / "models" / "marts" / "schema.yml"
    text = schema.read_text()
    schema.write_text(
        text.replace("  - name: orders\n", "  - name: orders\n    versions: [{v: 2}]\n")
    )
    (said,) = [p for p in problems_of(shop) if "versions are not read" in p.message]
    line = 1 + next(i for i, t in enumerate(schema.read_text().splitlines()) if "versions:" in t)
    assert (said.severity, _at(said)) == ("warning", (schema, line)), said.format()


def test_ref_given_a_version_fails_its_render_saying_so() -> None:
    from datetime import UTC, datetime

    from engine.core.errors import ParameterError
    from engine.spec.params import RenderContext, render

    context = RenderContext("p", {}, "r", datetime(2024, 1, 1, tzinfo=UTC))
    with pytest.raises(ParameterError, match="model versions are not supported"):
        render("{{ ref('t', v=2) }}", context)
    with pytest.raises(ParameterError, match="no package="):
        render("{{ ref('t', package='p') }}", context)


def test_a_macro_that_fails_is_said_once_at_the_macros_line(shop: Path) -> None:
    macros = shop / "macros" / "shout.sql"
    macros.write_text(
        "{% macro shout(column) -%}\n  upper({{ column }}) || {{ nowhere }}\n{%- endmacro %}\n"
    )
    for name in ("customers.sql", "orders.sql"):
        model = shop / "models" / "marts" / name
        model.write_text(
            model.read_text().replace("o.status,", "{{ shout('o.status') }} as status,")
        )
    model = shop / "models" / "marts" / "customers.sql"
    model.write_text(
        model.read_text().replace("c.first_name,", "{{ shout('c.first_name') }} as first_name,")
    )
    problems = [p for p in problems_of(shop) if p.severity == "error"]
    assert [(p.code, _at(p)) for p in problems] == [("template", (macros, 2))], [
        p.format() for p in problems
    ]
    assert "'nowhere' is undefined" in problems[0].message
    macros.write_text("{% macro shout(column) %}\n  {{ column \n{% endmacro %}\n")
    problems = [p for p in problems_of(shop) if p.severity == "error"]
    assert [(p.code, _at(p)) for p in problems] == [("template", (macros, 3))], [
        p.format() for p in problems
    ]


def test_custom_generic_and_singular_tests_run_with_their_model_and_gate_it(shop: Path) -> None:
    """`{% test not_negative(model, column_name) %}` in macros/ is a test a property file
    names; a .sql file in tests/ is a test whose rows are failures, run with the model it
    belongs to (the one that reads the others it names)."""
    tests = plan(shop).task("orders").spec.tests
    assert [t.name for t in tests][-3:] == [
        "not_null(amount)",
        "not_negative(amount)",
        "tests/assert_lifetime_value_covers_orders.sql",
    ]
    assert run(shop).ok

    payments = shop / "data" / "payments.csv"
    clean = payments.read_text()
    payments.write_text(clean.replace("\n1,1,credit_card,1000\n", "\n1,1,credit_card,-1000\n"))
    failed = run(shop)
    error = failed.tasks["orders"].error or ""
    assert "not_negative(amount): 1 failing row (error_if != 0); e.g. -10.0" in error, error
    assert failed.tasks["customers"].state.value == "SUCCESS"  # its own tests passed
    payments.write_text(clean)

    (shop / "tests" / "no_big_orders.sql").write_text(
        "{{ config(severity='warn') }}\n"
        "select order_id, amount from {{ ref('orders') }} where amount > 20"
    )
    (shop / "tests" / "no_big_customers.sql").write_text(
        "{{ config(error_if='> 2') }}\n"
        "select customer_id from {{ ref('customers') }} where customer_id <= 2 order by customer_id"
    )
    warned = run(shop)
    assert warned.ok  # a warning lets the model through; 2 rows are not > 2
    (shop / "tests" / "no_big_customers.sql").write_text(
        "select customer_id from {{ ref('customers') }} where customer_id <= 2 order by customer_id"
    )
    failed = run(shop)
    error = failed.tasks["customers"].error or ""
    assert "tests/no_big_customers.sql: 2 failing rows (error_if != 0); e.g. 1, 2" in error, error
    assert failed.tasks["orders"].state.value == "SKIPPED"  # it reads customers


def test_property_files_are_read_strictly(shop: Path) -> None:
    """A misspelt key or test is an error at its line, with what was meant; a model's
    `config:` there sets what its folders would."""
    schema = shop / "models" / "marts" / "schema.yml"
    schema.write_text(
        schema.read_text()
        .replace(
            "    description: one row per order",
            "    confg: {tags: [x]}\n    description: one row per order",
        )
        .replace(
            "in the shop\n        tests: [unique, not_null]",
            "in the shop\n        tests: [uniqe, not_null]",
        )
        .replace("      - name: status\n", "      - name: status\n        quoet: true\n")
    )
    problems = [p for p in problems_of(shop) if p.severity == "error"]
    lines = schema.read_text().splitlines()

    def line_of(text: str) -> int:
        return 1 + next(i for i, t in enumerate(lines) if text in t)

    said = sorted((p.line, p.message) for p in problems)
    assert [line for line, _ in said] == [line_of("uniqe"), line_of("confg"), line_of("quoet")]
    assert "unknown test 'uniqe'. Did you mean 'unique'?" in said[0][1]
    assert "unknown key 'confg'. Did you mean 'config'?" in said[1][1]
    assert "unknown key 'quoet'. Did you mean 'quote'?" in said[2][1]

    schema.write_text(
        (SHOP / "models" / "marts" / "schema.yml")
        .read_text()
        .replace(
            "  - name: orders\n",
            "  - name: orders\n    config: {tags: [finance_props], enabled: true}\n",
        )
    )
    assert "finance_props" in plan(shop).task("orders").spec.tags
    assert list(plan(shop, select=["tag:finance_props"]).selected or ()) == ["orders"]
    schema.write_text(schema.read_text().replace("enabled: true", "enabled: false"))
    assert "orders" not in {t.id for t in plan(shop).tasks}


def test_a_singular_test_that_names_no_model_is_refused_at_its_file(shop: Path) -> None:
    test = shop / "tests" / "orphan.sql"
    test.write_text("select 1 as x where false")
    problem = only(problems_of(shop), "invalid-value")
    assert _at(problem) == (test, 1)
    assert "names none" in problem.message


def test_store_failures_keeps_the_failing_rows_in_the_quarantine(shop: Path) -> None:
    """A warn test with store_failures lets the model through and keeps the rows it failed,
    each once with every test it failed, where the quarantine is read."""
    import engine

    schema = shop / "models" / "marts" / "schema.yml"
    schema.write_text(
        schema.read_text()
        .replace(
            "          - accepted_values:\n",
            "          - accepted_values:\n              config: {severity: warn, store_failures: true}\n",
        )
        .replace(
            "- relationships: {to: ref('customers'), field: customer_id}",
            "- relationships: {to: ref('customers'), field: customer_id, "
            "config: {severity: warn, store_failures: true}}",
        )
    )
    orders = shop / "seeds" / "raw_orders.csv"
    orders.write_text(orders.read_text() + "9,99,2018-01-10,lost\n10,1,2018-01-11,gone\n")
    result = run(shop)
    assert result.ok
    with engine.open(shop.parent) as project:
        assert project.table("orders").select(pl.len()).collect().item() == 9  # all published
        stored = project.quarantine("orders").sort("order_id").collect()
    assert stored["order_id"].to_list() == [9, 10]
    assert [sorted(e["check"] for e in errors) for errors in stored["_arrowline_errors"]] == [
        ["accepted_values(status)", "relationships(customer_id -> customers.customer_id)"],
        ["accepted_values(status)"],
    ]
    assert stored["_arrowline_errors"][0][0]["value"] in {"lost", "99"}

    (shop / "tests" / "stored.sql").write_text(
        "{{ config(store_failures=true) }}\nselect * from {{ ref('orders') }} where false"
    )
    said = [p for p in problems_of(shop) if p.code == "not-supported"]
    assert [(Path(p.file or "").name, p.severity) for p in said] == [("stored.sql", "warning")]


def test_a_python_pipeline_builds_on_a_projects_models(shop: Path) -> None:
    import polars as pl

    from engine.api.pipeline import Pipeline

    pipeline = Pipeline.from_project(shop)
    pipeline.udf(
        "big_orders", input="orders", function=lambda orders: orders.filter(pl.col("amount") > 20)
    )
    result = pipeline.run()
    assert result.ok, result
    big = result.tasks["big_orders"].output
    assert big is not None
    expected = _oracle(ORDERS, shop / "seeds").filter(pl.col("amount") > 20)["order_id"]
    assert _output(list(big.files))["order_id"].sort().to_list() == expected.to_list()
    with pytest.raises(DefinitionError, match=r"holds no arrowline_project\.yml"):
        Pipeline.from_project(shop / "models")
    (shop / "models" / "marts" / "orders.sql").write_text("select * from nowhere")
    with pytest.raises(PipelineInvalid, match="nowhere") as invalid:
        Pipeline.from_project(shop).definition  # noqa: B018
    (problem,) = invalid.value.problems
    assert Path(problem.file or "").name == "orders.sql"  # found where the model is written

"""`arrowline init`: a new SQL project that validates, runs on the embedded default and is
scheduled as it is, and a folder that holds one already is left alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
from click.testing import Result

from engine.api.pipeline import plan
from engine.scheduling.discover import discover_pipelines


def test_a_new_project_runs_as_it_is(project: Path, cli: Callable[..., Result]) -> None:
    result = cli("init", "shop")
    assert result.exit_code == 0, result.output
    assert "run it with: arrowline run shop" in result.output
    assert cli("validate", "shop").exit_code == 0
    result = cli("run", "shop", "--no-progress")
    assert result.exit_code == 0, result.output
    with duckdb.connect(str(project / "shop" / "out" / "warehouse.duckdb"), read_only=True) as db:
        rows = db.sql(
            "select name, orders, revenue from customer_revenue order by customer_id"
        ).fetchall()
    # Grace's one order of 2023 is before var('start_date'), her 2024 one refunded
    assert rows == [("Ada", 2, 52.5), ("Grace", 1, 0.0), ("Linus", 1, 150.0)]
    assert discover_pipelines(project) == {"shop": project / "shop" / "arrowline_project.yml"}
    result = cli("schedule", "list")
    assert "0 6 * * *" in result.output
    tests = [t.name for t in plan(project / "shop").task("customer_revenue").spec.tests]
    assert tests == [
        "unique(customer_id)",
        "not_null(customer_id)",
        "accepted_values(country)",
        "not_negative(revenue)",
        "tests/every_customer_has_a_country.sql",
    ]
    orders = project / "shop" / "seeds" / "raw_orders.csv"
    orders.write_text(orders.read_text() + "6,9,2024-02-01,100,paid\n")  # nobody's order
    result = cli("run", "shop", "--no-progress")
    assert result.exit_code == 0  # customer 9 is not a customer: no row, no failure
    orders.write_text(orders.read_text() + "7,1,2024-02-02,-90000,paid\n")  # revenue < 0
    result = cli("run", "shop", "--no-progress")
    assert result.exit_code != 0
    assert "not_negative(revenue): 1 failing row" in result.output
    orders.write_text(orders.read_text().replace("7,1,2024-02-02,-90000,paid\n", ""))
    customers = project / "shop" / "seeds" / "raw_customers.csv"
    customers.write_text(customers.read_text() + "4,Alan,\n")  # no country
    result = cli("run", "shop", "--no-progress")
    assert result.exit_code != 0
    assert "tests/every_customer_has_a_country.sql: 1 failing row" in result.output


def test_a_folder_that_holds_a_project_is_left_alone(
    project: Path, cli: Callable[..., Result]
) -> None:
    assert cli("init", "shop").exit_code == 0
    model = project / "shop" / "models" / "marts" / "customer_revenue.sql"
    model.write_text("select 1 as customer_id, 0.0 as revenue")
    result = cli("init", "shop")
    assert result.exit_code != 0
    assert "already holds" in result.output
    assert "nothing written" in result.output
    assert model.read_text() == "select 1 as customer_id, 0.0 as revenue"


def test_the_project_is_named_after_its_folder(project: Path, cli: Callable[..., Result]) -> None:
    assert cli("init", "2024 Sales-Reports").exit_code == 0
    text = (project / "2024 Sales-Reports" / "arrowline_project.yml").read_text()
    assert "name: p_2024_sales_reports" in text

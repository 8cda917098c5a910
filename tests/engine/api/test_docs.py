"""`arrowline docs`: a pipeline documented in one offline HTML file: each task's description,
tests and file, its columns' types, descriptions (a SQL project's property files) and the
columns each is computed from, and the task graph linking to each task."""

from __future__ import annotations

import html
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from click.testing import Result

from engine.api.docs import pipeline_docs
from engine.api.project import Project

SHOP = Path(__file__).resolve().parents[2] / "fixtures" / "sql_projects" / "shop"


def test_a_sql_project_is_documented_with_descriptions_tests_and_lineage(
    project: Path, cli: Callable[..., Result]
) -> None:
    shop = Path(shutil.copytree(SHOP, project / "shop"))
    with Project.find(project) as opened:  # before any run: nothing but the files
        docs = pipeline_docs(opened, shop)
    tasks = {t.id: t for t in docs.tasks}
    customers = tasks["customers"]
    assert customers.description == "one row per customer, with their orders and what they paid"
    assert customers.file == "models/marts/customers.sql"
    assert customers.downstream == ("publish_customers", "orders")
    columns = {c.name: c for c in customers.columns}
    assert columns["customer_id"].description == "the customer's id in the shop"
    assert columns["customer_id"].tests == ("unique(customer_id)", "not_null(customer_id)")
    assert "stg_customers.customer_id (value)" in columns["customer_id"].sources
    assert "stg_payments.amount (value)" in columns["customer_lifetime_value"].sources
    assert tasks["orders"].tests == ("tests/assert_lifetime_value_covers_orders.sql",)
    assert tasks["stg_orders"].output == "inlined into its readers"

    target = project / "shop.html"
    result = cli("docs", shop, "-o", target)
    assert result.exit_code == 0, result.output
    text = target.read_text()
    shown = html.unescape(text)
    assert "what the customer paid over all their orders, in dollars" in shown
    assert 'id="task-customers"' in text
    assert 'href="#task-customers"' in text  # the graph's box links to the section
    assert not re.search(r"(src|href)=\"https?://", text)  # nothing fetched: it opens offline
    assert cli("docs", project / "nothing.yaml", "-o", target).exit_code != 0

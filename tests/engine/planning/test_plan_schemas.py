"""`arrowline plan` computes output schemas over empty inputs: type errors, broken references and
schema changes are found before any data moves."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
from click.testing import Result

from engine.api.pipeline import run
from engine.tasks.base import schema_json
from tests.conftest import WritePipeline

Cli = Callable[..., Result]

PIPELINE = """
pipeline: shop
tasks:
  - id: orders
    extract: {{from: files, path: orders.csv}}
  - id: staged
    sql: {staged}
  - id: report
    sql: select customer, sum(amount) as total from staged group by customer
  - id: scored
    udf: {{input: staged, function: "udfs.py:{udf}"}}
"""

UDFS = """
import polars as pl

def doubled():
    return {"double_amount": pl.col("amount") * 2}

def wrong_column():
    return {"x": pl.col("no_such_column") + 1}
"""


def _project(write: WritePipeline, staged: str, udf: str = "doubled") -> Path:
    write("orders.csv", "id,customer,amount\n1,ann,10.5\n2,bob,3.25\n")
    write("udfs.py", UDFS)
    return write("p.yaml", PIPELINE.format(staged=staged, udf=udf))


def _plan(cli: Cli, path: Path) -> tuple[int, dict[str, object]]:
    result = cli("plan", path, "--format", "json")
    return result.exit_code, json.loads(result.stdout)


def test_schemas_are_known_before_the_first_run(cli: Cli, write: WritePipeline) -> None:
    path = _project(write, "select id, customer, amount * 100 as amount from orders")
    code, data = _plan(cli, path)
    assert code == 0
    schemas = data["schemas"]["schemas"]  # type: ignore[index]
    assert [(c["name"], c["type"]) for c in schemas["report"]] == [
        ("customer", "string"),
        ("total", "double"),
    ]
    assert [c["name"] for c in schemas["scored"]] == ["id", "customer", "amount", "double_amount"]
    assert data["schemas"]["problems"] == []  # type: ignore[index]


def test_the_planned_schema_is_the_schema_a_run_writes(cli: Cli, write: WritePipeline) -> None:
    path = _project(write, "select id::int as id, customer, round(amount, 1) as amount from orders")
    _, data = _plan(cli, path)
    result = run(path)
    assert result.ok
    for task in ("staged", "report", "scored"):
        output = result.tasks[task].output
        assert output is not None
        written = pq.read_schema(output.files[0])
        planned = data["schemas"]["schemas"][task]  # type: ignore[index]
        assert [(c["name"], c["type"]) for c in planned] == [
            (c["name"], c["type"]) for c in schema_json(written)
        ]


def test_a_dropped_column_read_downstream_is_a_broken_reference(
    cli: Cli, write: WritePipeline
) -> None:
    path = _project(write, "select id, customer, amount from orders")
    assert run(path).ok
    write("p.yaml", PIPELINE.format(staged="select id, amount from orders", udf="doubled"))
    result = cli("plan", path)
    assert result.exit_code == 2
    assert "p.yaml:8: error [task report]" in result.stderr
    assert "reads column 'customer' of 'staged', which 'staged' will no longer produce" in (
        " ".join(result.stderr.split())
    )
    assert "(broken-reference)" in result.stderr
    # and the change itself is shown, with the last run it is measured against
    assert "schema changes of staged since its last run:" in result.stdout
    assert "customer: dropped (string -> -)" in result.stdout


def test_a_type_error_is_a_plan_error_with_the_tasks_line(cli: Cli, write: WritePipeline) -> None:
    path = _project(write, "select id, customer, amount + customer as amount from orders")
    result = cli("plan", path)
    assert result.exit_code == 2
    assert "p.yaml:6: error [task staged]" in result.stderr
    assert "(schema-error)" in result.stderr
    assert "+" in result.stderr  # DuckDB names the operator it could not bind


def test_a_udf_reading_a_missing_column_is_a_plan_error(cli: Cli, write: WritePipeline) -> None:
    path = _project(write, "select id, customer, amount from orders", udf="wrong_column")
    code, data = _plan(cli, path)
    assert code == 2
    (problem,) = data["schemas"]["problems"]  # type: ignore[index]
    assert problem["task_id"] == "scored"
    assert "no_such_column" in problem["message"]


def test_a_change_the_policy_refuses_is_a_plan_error(cli: Cli, write: WritePipeline) -> None:
    path = _project(write, "select id, customer, amount from orders")
    assert run(path).ok
    text = PIPELINE.format(
        staged="select id::bigint as id, customer, amount from orders", udf="doubled"
    )
    text = text.replace("  - id: staged\n", "  - id: staged\n    schema_change: freeze\n")
    write("p.yaml", text)
    code, data = _plan(cli, path)
    assert code == 0  # int64 was int64: nothing changed, nothing refused
    text = text.replace("id::bigint", "id::hugeint::varchar")
    write("p.yaml", text)
    code, data = _plan(cli, path)
    assert code == 2
    changes = data["schemas"]["changes"]["staged"]  # type: ignore[index]
    assert [(c["change"], c["column"], c["before"], c["after"]) for c in changes] == [
        ("changed", "id", "int64", "string")
    ]
    (problem,) = data["schemas"]["problems"]  # type: ignore[index]
    assert problem["code"] == "schema-change"
    assert "schema_change is freeze" in problem["message"]


def test_no_schemas_skips_the_check(cli: Cli, write: WritePipeline) -> None:
    path = _project(write, "select id, customer, amount + customer as amount from orders")
    assert cli("plan", path, "--no-schemas").exit_code == 0


def test_plan_shows_a_rename_that_lineage_proves(cli: Cli, write: WritePipeline) -> None:
    path = _project(write, "select id, customer, amount from orders")
    assert run(path).ok
    write(
        "p.yaml",
        PIPELINE.format(staged="select id, customer as client, amount from orders", udf="doubled"),
    )
    code, data = _plan(cli, path)
    changes = data["schemas"]["changes"]["staged"]  # type: ignore[index]
    assert [(c["change"], c["column"], c["before"]) for c in changes] == [
        ("renamed", "client", "customer")
    ]
    (problem,) = data["schemas"]["problems"]  # type: ignore[index]
    assert problem["code"] == "broken-reference"  # `report` still reads `customer`
    assert problem["task_id"] == "report"
    assert code == 2


def test_a_selection_reads_the_schemas_of_the_outputs_it_reuses(
    cli: Cli, write: WritePipeline
) -> None:
    path = _project(write, "select id, customer, amount from orders")
    assert run(path).ok
    result = cli("plan", path, "--select", "scored+", "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    actions = {t["id"]: t["action"] for t in data["tasks"]}
    assert actions == {"staged": "reuse", "scored": "run"}
    schemas = data["schemas"]
    assert schemas["unknown"] == {}
    assert [c["name"] for c in schemas["schemas"]["scored"]] == [
        "id",
        "customer",
        "amount",
        "double_amount",
    ]
    text = cli("plan", path, "--select", "scored+")
    assert text.exit_code == 0
    assert "not known" not in text.stdout


def test_schemas_not_known_before_running_are_said_in_whole_sentences(
    cli: Cli, write: WritePipeline
) -> None:
    path = _project(write, "select id, customer, amount from orders")
    (path.parent / "orders.csv").unlink()  # never run, no file: the extract's schema is unknown
    text = cli("plan", path)
    assert text.exit_code == 0
    lines = [line for line in text.stdout.splitlines() if "not known" in line]
    assert lines[0].startswith("schema of orders not known before running: ")
    assert lines[1:] == [
        "so the schemas of staged, report, scored are not known before running either"
    ]

"""A database error of a model's SQL names the model's file, and the line there when the line
DuckDB points at can be told from the template; never a line it cannot be."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from click.testing import Result

from engine.api.pipeline import run
from engine.tasks.sql_errors import template_line

SHOP = Path(__file__).resolve().parents[2] / "fixtures" / "sql_projects" / "shop"


@pytest.fixture
def shop(project: Path) -> Path:
    return Path(shutil.copytree(SHOP, project / "shop"))


def _with(model: Path, after: str, line: str) -> int:
    """`line` put into the model below the line holding `after`; its line number."""
    lines = model.read_text().splitlines()
    at = next(n for n, text in enumerate(lines) if after in text) + 1
    model.write_text("\n".join([*lines[:at], line, *lines[at:]]) + "\n")
    return at + 1


def _error(shop: Path, task: str = "orders") -> str:
    result = run(shop)
    assert not result.ok
    error = result.tasks[task].error
    assert error is not None
    return error


def test_a_binding_error_names_the_models_file_and_line_at_plan_and_run(
    shop: Path, cli: Callable[..., Result]
) -> None:
    model = shop / "models" / "marts" / "orders.sql"
    line = _with(model, "o.status,", "    o.nope as bad,")
    planned = " ".join(cli("plan", shop).output.split())
    assert f"shop/models/marts/orders.sql:{line}: error [task orders]: fails over empty " in (
        planned
    )
    assert f'named "nope" LINE {line}: o.nope' in planned  # the file's line, not the rendered
    error = _error(shop)
    assert error.startswith(f"shop/models/marts/orders.sql:{line}: DuckDB: Binder Error"), error


def test_a_data_error_on_a_line_with_a_printed_value_names_that_line(shop: Path) -> None:
    model = shop / "models" / "marts" / "orders.sql"
    text = model.read_text()
    line = 1 + next(n for n, t in enumerate(text.splitlines()) if "var('start_date')" in t)
    model.write_text(
        text.replace(
            "{{ var('start_date') | sql_literal }}",
            "{{ var('start_date') | sql_literal }} and cast(o.status as integer) > 0",
        )
    )
    error = _error(shop)
    assert error.startswith(f"shop/models/marts/orders.sql:{line}: the query failed on the data")
    assert "Could not convert string" in error


def test_a_line_a_loop_made_names_the_loops_line(shop: Path) -> None:
    model = shop / "models" / "marts" / "orders.sql"
    text = model.read_text()
    looped = "    coalesce(p.{{ payment_method }}_amount, 0) as {{ payment_method }}_amount,"
    line = 1 + text.splitlines().index(looped)
    model.write_text(text.replace(looped, looped.replace(", 0)", ", 0) + p.nope")))
    error = _error(shop)
    assert error.startswith(f"shop/models/marts/orders.sql:{line}: DuckDB: Binder Error"), error


def test_a_line_that_cannot_be_told_is_said_as_the_file_not_a_guessed_line(shop: Path) -> None:
    model = shop / "models" / "marts" / "orders.sql"
    text = model.read_text().replace("    o.status,\n", "    o.status,\n    {{ wrong }}\n")
    model.write_text("{% set wrong = 'o.nope as bad,' %}\n" + text)
    error = _error(shop)
    assert error.startswith("shop/models/marts/orders.sql: DuckDB: Binder Error"), error
    assert "rendered LINE " in error


def test_an_error_of_an_inline_statement_is_left_as_the_database_says_it(
    project: Path,
) -> None:
    (project / "p.yaml").write_text(
        "pipeline: p\ntasks:\n  - id: t\n    sql: |\n      select\n        cast('x' as int) as y\n"
    )
    result = run(project / "p.yaml")
    error = result.tasks["t"].error or ""
    assert error.startswith("the query failed on the data: Conversion Error"), error
    assert "LINE 2:" in error  # the statement's own line, not DuckDB's wrapper's


def test_a_model_publishing_into_a_duckdb_file_still_fails_at_its_line(shop: Path) -> None:
    settings = shop / "arrowline_project.yml"
    settings.write_text(settings.read_text() + "\ntargets:\n  dev: {database: out/dev.duckdb}\n")
    model = shop / "models" / "marts" / "customers.sql"
    line = _with(model, "    c.customer_id,", "    cast(c.first_name as integer) as bad,")
    error = _error(shop, "customers")
    assert error.startswith(f"shop/models/marts/customers.sql:{line}: "), error
    with duckdb.connect(str(shop / "out" / "dev.duckdb"), read_only=True) as db:
        assert ("customers",) not in db.sql("select table_name from duckdb_tables()").fetchall()


@pytest.mark.parametrize(
    ("template", "rendered", "line", "expected"),
    [
        ("a\nb\nc", "a\nb\nc", 2, 2),
        ("{{ config() }}\nselect\n  x\nfrom t", "\nselect\n  x\nfrom t", 3, 3),
        ("select\n  {{ c }} as v\nfrom t", "select\n  1 as v\nfrom t", 2, 2),  # one for one
        (
            "{% for c in cs %}\n  sum({{ c }}) as s,\n{% endfor %}\nx",
            "\n  sum(a) as s,\n\n  sum(b) as s,\n\nx",
            4,
            2,
        ),
        # a print and a comma: a variable of several lines could have made it too
        ("{% for c in cs %}\n  {{ c }},\n{% endfor %}\nx", "\n  a,\n\n  b,\n\nx", 4, None),
        # a macro's lines are not the comma line's before it, nor anyone's
        (
            "select\n  {{ 'o.id' }} as i,\n  {{ audit() }}\nfrom o",
            "select\n  o.id as i,\n  \n  o.nope as i,\nfrom o",
            4,
            None,
        ),
        (
            "{% for m in ms %}\n  {{ m }} as x,\n{% endfor %}\nfrom {{ ref('t') }}",
            "\n  a as x,\n\nfrom main.t",
            2,
            2,
        ),
        ("{{ cols }}\nfrom t", "a, b\nfrom t", 1, None),  # prints alone: could be anything
        ("{{ a }},\n{{ b }},\nx", "1,\n2,\nx", 2, None),  # either line could have made it
        ("{% if a %}\nfrom {{ t }} x\n{% endif %}", "\nfrom t y\n", 2, None),  # not its text
        ("{% if a %}\nwhere {{ c }} > 1\n{% endif %}", "\nwhere c > 1\n", 2, 2),
        ("a\nb", "a\nb", 3, None),
    ],
)
def test_template_line_tells_only_the_lines_it_can(
    template: str, rendered: str, line: int, expected: int | None
) -> None:
    assert template_line(template, rendered, line) == expected


def test_an_incremental_models_error_adding_to_its_output_names_its_line(project: Path) -> None:
    """The statement that adds to the kept output is built around the model's: its line is
    still told."""
    folder = project / "events"
    (folder / "models").mkdir(parents=True)
    (folder / "data").mkdir()
    (folder / "arrowline_project.yml").write_text(
        "name: events\nsources:\n  - name: app\n    tables:\n"
        "      - {name: events, extract: {from: files, path: data/events.csv}}\n"
    )
    model = folder / "models" / "latest.sql"
    model.write_text(
        "{{ config(materialized='incremental', unique_key='event_id') }}\n"
        "select event_id, status\n"
        "from {{ source('app', 'events') }}\n"
        "{% if is_incremental() %}\n"
        "where cast(status as integer) > (select count(*) from {{ this }})\n"
        "{% endif %}\n"
    )
    (folder / "data" / "events.csv").write_text("event_id,status\n1,new\n")
    assert run(folder).ok
    error = _error(folder, "latest")
    assert error.startswith("events/models/latest.sql:5: the query failed on the data"), error

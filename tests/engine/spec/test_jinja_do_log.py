"""dbt's `{% do ... %}` and `{{ log(...) }}` in models and macros: a project run through the
command line builds what the statements say, the messages reach the log at the level asked
for with secrets masked, and what a template changes stays its own."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from click.testing import Result

from engine.api.pipeline import run
from engine.core.errors import ParameterError
from engine.spec.params import RenderContext, render
from engine.spec.templates import unfiltered_sql_params
from tests.conftest import WritePipeline, problems_of

PROJECT = {
    "arrowline_project.yml": """\
name: dolog
vars:
  methods: [card, cash, gift]
  api_token: "tok-9f8e7d6c5b"
models:
  dolog:
    +database: out/dolog.duckdb
""",
    "seeds/payments.csv": "id,method,amount\n1,card,10\n2,cash,5\n3,card,7\n4,gift,1\n",
    "macros/pivot.sql": """\
{% macro sums_by(column, values) -%}
  {%- set parts = [] -%}
  {%- for value in values -%}
    {%- do parts.append('sum(case when ' ~ column ~ ' = ' ~ (value | sql_literal) ~ ' then amount end) as '
                        ~ (value ~ '_amount') | sql_identifier) -%}
  {%- endfor -%}
  {%- do log('sums_by ' ~ column ~ ': ' ~ parts | length ~ ' columns') -%}
  {{ parts | join(',\\n  ') }}
{%- endmacro %}
""",
    "models/by_method.sql": """\
{% set seen = {} %}
{% do seen.update({'first': var('methods')[0]}) %}
{{ log('building by_method for ' ~ seen['first'] ~ ' with token ' ~ var('api_token'), info=True) }}
select
  {{ sums_by('method', ['card', 'cash', 'gift']) }},
  {{ seen['first'] | sql_literal }} as first_method
from {{ ref('payments') }}
""",
}


@pytest.fixture
def dolog(project: Path) -> Path:
    folder = project / "dolog"
    for name, text in PROJECT.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def test_a_model_and_a_macro_build_with_do_and_log_to_the_level_asked_for(
    dolog: Path, cli: Callable[..., Result]
) -> None:
    done = cli("run", dolog, "--no-progress", "--log-format", "json", "--log-level", "DEBUG")
    assert done.exit_code == 0, done.output
    with duckdb.connect(str(dolog / "out" / "dolog.duckdb"), read_only=True) as db:
        row = db.sql("select * from by_method").fetchall()
        columns = [c[0] for c in db.sql("select * from by_method").description]
    assert columns == ["card_amount", "cash_amount", "gift_amount", "first_method"]
    assert row == [(17, 5, 1, "card")]
    lines = [line for line in done.stderr.splitlines() if line.startswith("{")]
    records = [json.loads(line)["record"] for line in lines]
    said = {(r["level"]["name"], r["message"]) for r in records}
    assert ("INFO", "building by_method for card with token ***") in said
    assert ("DEBUG", "sums_by method: 3 columns") in said
    assert all("tok-9f8e7d6c5b" not in r["message"] for r in records)
    logged = [r for r in records if r["message"].startswith("building by_method")]
    assert logged[0]["extra"]["task_id"] == "by_method"


def test_a_debug_log_is_not_shown_at_info(dolog: Path, cli: Callable[..., Result]) -> None:
    done = cli("run", dolog, "--no-progress", "--log-level", "INFO")
    assert done.exit_code == 0, done.output
    assert "building by_method for card with token ***" in done.stderr
    assert "sums_by method" not in done.stderr
    assert "tok-9f8e7d6c5b" not in done.stderr


def test_a_parameter_put_into_a_list_by_do_is_printed_only_through_a_filter(
    write: WritePipeline,
) -> None:
    """`{% do cols.append(params.region) %}` makes `cols` hold the parameter: printing it raw
    is the injection validation refuses, as `{% set %}` would be."""
    assert unfiltered_sql_params(
        "{% set cols = [] %}{% do cols.append(params.region) %}{{ cols | join(',') }}"
    ) == {"region"}
    path = write(
        "p.yaml",
        """
        pipeline: p
        params: {region: north}
        tasks:
          - id: t
            sql: |
              {% set cols = [] %}{% do cols.append(params.region) %}
              select {{ cols | join(',') }} as region_list
        """,
    )
    problems = [p for p in problems_of(path) if p.severity == "error"]
    assert any("region" in p.message for p in problems), [p.format() for p in problems]


def test_what_a_template_changes_with_do_is_its_own(write: WritePipeline, project: Path) -> None:
    """A task that appends to a list parameter does not change what the next task reads."""
    path = write(
        "p.yaml",
        """
        pipeline: p
        params: {regions: [north, south]}
        tasks:
          - id: first
            sql: |
              {% do params.regions.append('west') %}
              select {{ params.regions | length | sql_literal }} as n
          - id: second
            sql: select {{ params.regions | length | sql_literal }} as n, n as first_n from first
          - id: publish
            load: {input: second, to: duckdb, path: out/p.duckdb, table: t, mode: replace}
        """,
    )
    assert run(path).ok
    with duckdb.connect(str(project / "out" / "p.duckdb"), read_only=True) as db:
        assert db.sql("select n, first_n from t").fetchall() == [(2, 3)]


def test_do_cannot_reach_past_the_sandbox() -> None:
    from datetime import UTC, datetime

    context = RenderContext("p", {"n": 1}, "r", datetime(2024, 1, 1, tzinfo=UTC))
    with pytest.raises(ParameterError):
        render("{% do params.__class__.__init__.__globals__.clear() %}", context)
    assert render("{% do params.update({'n': 2}) %}{{ params.n }}", context) == "2"
    assert context.params == {"n": 1}

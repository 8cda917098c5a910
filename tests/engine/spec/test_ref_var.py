"""dbt's `ref()` and `var()` in arrowline templates: what they render, the dependencies and
cache fingerprints they make, and how a wrong one, or a value trying to change the statement, is
refused (the same rules as `params.NAME`)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from engine.api.pipeline import plan, run
from engine.core.errors import ParameterError
from engine.spec.templates import referenced_params, referenced_tasks, unfiltered_sql_params
from tests.conftest import WritePipeline, problems_of

SHOP = """
    pipeline: shop
    params: {min_amount: 10, region: north}
    tasks:
      - id: orders
        sql: |
          select range as id, range * 5 as amount,
                 case when range % 2 = 0 then 'north' else 'south' end as region
          from range(10)
      - id: big_orders
        sql: |
          select id, amount from {{ ref('orders') }}
          where amount >= {{ var('min_amount') }}
            and region = {{ var('region') | sql_literal }}
            and id < {{ var('max_id', 100) }}
      - id: publish
        load: {input: big_orders, to: duckdb, path: out/shop.duckdb, table: big, mode: replace}
"""


def _loaded(project: Path) -> list[tuple[int, int]]:
    with duckdb.connect(str(project / "out" / "shop.duckdb"), read_only=True) as db:
        return db.sql("select id, amount from big order by id").fetchall()


def test_ref_names_the_upstream_task_and_var_its_parameter(
    write: WritePipeline, project: Path
) -> None:
    path = write("p.yaml", SHOP)
    assert problems_of(path) == []
    the_plan = plan(path)
    assert the_plan.task("big_orders").inputs == ("orders",)  # the dependency ref() makes
    assert "from orders" in (the_plan.task("big_orders").sql or "")
    assert run(path).ok
    assert _loaded(project) == [(2, 10), (4, 20), (6, 30), (8, 40)]
    assert run(path, params={"min_amount": "25", "region": "south"}).ok
    assert _loaded(project) == [(5, 25), (7, 35), (9, 45)]


def test_a_parameter_read_through_var_is_part_of_the_cache_fingerprint(
    write: WritePipeline,
) -> None:
    path = write("p.yaml", SHOP.replace("pipeline: shop", "pipeline: shop\n    cache: true"))
    assert run(path).ok
    planned = plan(path, params={"min_amount": "20"}).tasks
    reasons = {t.id: t.cache.reason for t in planned if t.cache is not None}
    assert reasons["big_orders"] == "parameter changed"
    assert reasons["orders"].startswith("cached")


def test_the_template_analyses_see_through_var_and_ref() -> None:
    text = "select * from {{ ref('a') }} where x > {{ var('n') }} and y = {{ var('m', 2) }}"
    assert referenced_params(text) == {"n", "m"}
    assert referenced_params(text, required=True) == {"n"}
    assert referenced_tasks(text) == {"a"}
    assert unfiltered_sql_params(text) == {"n", "m"}
    assert unfiltered_sql_params("{{ var('s') | sql_literal }}") == set()
    assert unfiltered_sql_params("{% set v = var('s') %}{{ v }}") == {"s"}
    assert "*" in unfiltered_sql_params("{{ var(params.which) }}")  # which one: unknown


@pytest.mark.parametrize(
    ("edit", "code", "said"),
    [
        ("ref('orders')", "unknown-ref", "ref('ordres') names no task. Did you mean 'orders'"),
        ("var('min_amount')", "undefined-parameter", "var('min_amont'). Did you mean 'min_amount'"),
        ("var('region') | sql_literal", "unquoted-parameter", "'params.region' (str) is printed"),
    ],
)
def test_a_wrong_ref_or_var_is_refused_at_its_line(
    write: WritePipeline, edit: str, code: str, said: str
) -> None:
    broken = {
        "ref('orders')": "ref('ordres')",
        "var('min_amount')": "var('min_amont')",
        "var('region') | sql_literal": "var('region')",
    }[edit]
    path = write("p.yaml", SHOP.replace(edit, broken))
    found = [p for p in problems_of(path) if p.code == code]
    assert len(found) == 1, [p.format() for p in problems_of(path)]
    assert said in found[0].message
    assert found[0].line == 10  # the big_orders task's `sql:`
    assert found[0].task_id == "big_orders"


def test_a_value_cannot_change_the_statement_through_var(
    write: WritePipeline, project: Path
) -> None:
    path = write("p.yaml", SHOP)
    attack = "north' or 1=1 --"
    assert run(path, params={"region": attack}).ok
    assert _loaded(project) == []  # the whole text was compared as one value: no row has it
    with pytest.raises(ParameterError, match="min_amount"):
        run(path, params={"min_amount": "1 or 1=1"})  # not an integer: refused before SQL


def test_var_without_a_default_for_no_parameter_fails_the_render() -> None:
    from datetime import UTC, datetime

    from engine.spec.params import RenderContext, render

    context = RenderContext("p", {"n": 1}, "r", datetime(2024, 1, 1, tzinfo=UTC))
    assert render("{{ var('n') }} {{ var('k', 'd') }} {{ ref('t') }}", context) == "1 d t"
    with pytest.raises(ParameterError, match="var\\('k'\\) names no parameter"):
        render("{{ var('k') }}", context)
    with pytest.raises(ParameterError, match="a task id is letters"):
        render("{{ ref('a; drop table x') }}", context)


@pytest.mark.parametrize(
    "printed",
    [
        "{% set f = var %}{{ f('region') }}",
        "{% with f = var %}{{ f('region') }}{% endwith %}",
        "{% for f in [var] %}{{ f('region') }}{% endfor %}",
        "{% set ns = namespace(f=var) %}{{ ns.f('region') }}",
        "{{ [var][0]('region') }}",
        "{{ (var if true else none)('region') }}",
        "{{ {'f': var}.f('region') }}",
        "{% macro m(f) %}{{ f('region') }}{% endmacro %}{{ m(var) }}",
        "{% macro m(f=var) %}{{ f('region') }}{% endmacro %}{{ m() }}",
        "{% macro m(p=params) %}{{ p.region }}{% endmacro %}{{ m() }}",
        "{% macro m(x) %}{{ x }}{% endmacro %}{% call m(params.region) %}{% endcall %}",
        "{% macro m(x) %}{{ caller(x) }}{% endmacro %}"
        "{% call(v) m(var) %}{{ v('region') }}{% endcall %}",
        "{{ var.args[0].region }}",
    ],
)
def test_a_text_parameter_handed_around_before_it_is_printed_is_still_refused(
    write: WritePipeline, printed: str
) -> None:
    """Every way found by a review to print a text parameter raw into SQL through `var` (or
    `params`) without saying `var('x')` or `params.x` where it prints: refused at validation."""
    path = write(
        "p.yaml",
        f"""
        pipeline: p
        params: {{region: north}}
        tasks:
          - id: m
            sql: "select 1 as x where 'north' = {printed.replace('"', "'")}"
        """,
    )
    codes = [p.code for p in problems_of(path)]
    assert "unquoted-parameter" in codes, [p.format() for p in problems_of(path)]


def test_var_hands_a_template_no_way_into_the_parameters() -> None:
    from datetime import UTC, datetime

    from engine.spec.params import RenderContext, render

    context = RenderContext("p", {"region": "x"}, "r", datetime(2024, 1, 1, tzinfo=UTC))
    with pytest.raises(ParameterError):
        render("{{ var.args[0].region }}", context)
    with pytest.raises(ParameterError):
        render("{{ var.__closure__ }}", context)


def test_dbts_quoted_var_is_one_string_a_value_cannot_end(
    write: WritePipeline, project: Path
) -> None:
    """dbt's models write a text var inside quotes, `'{{ var("region") }}'`: it runs as they
    wrote it, and is printed as one SQL string whatever it holds (its quotes doubled)."""
    path = write(
        "p.yaml",
        SHOP.replace(
            "and region = {{ var('region') | sql_literal }}",
            "and region = '{{ var(\"region\") }}' and '{{ var('region') }}' <> ''",
        ),
    )
    assert problems_of(path) == []
    assert run(path).ok
    assert _loaded(project) == [(2, 10), (4, 20), (6, 30), (8, 40)]
    assert run(path, params={"region": "north' or 1=1 --"}).ok
    assert _loaded(project) == []  # compared as one value: no row has it
    rendered = plan(path, params={"region": "o'brien"}).task("big_orders").sql or ""
    assert "region = 'o''brien'" in rendered


@pytest.mark.parametrize(
    "statement",
    [
        "select E'{{ params.region }}' as v",  # an escape string: a backslash escapes there
        "select 1 as v -- by '{{ params.region }}'",  # a comment: a newline would end it
        "select 1 as v /* '{{ params.region }}' */",
        "select 1 as \"'{{ params.region }}'\"",  # a quoted identifier
    ],
)
def test_a_quoted_print_anywhere_but_a_plain_string_stays_refused(
    write: WritePipeline, statement: str
) -> None:
    """Only a plain SQL string is made one literal; elsewhere a text parameter printed raw is
    refused as before, so a value cannot end what it is printed in."""
    path = write(
        "p.yaml",
        f"""
        pipeline: p
        params: {{region: north}}
        tasks:
          - id: t
            sql: |
              {statement}
        """,
    )
    codes = [p.code for p in problems_of(path) if p.severity == "error"]
    assert codes == ["unquoted-parameter"], codes


def test_literal_prints_leaves_what_is_not_a_plain_strings_print_as_it_is() -> None:
    from engine.spec.quoted import literal_prints

    kept = [
        "{% raw %}select '{{ not a template }}' as v{% endraw %}",
        "select $$'{{ x }}'$$",
        "select '%{{ var('x') }}%' as a",
        "'{{\n x\n}}'",
    ]
    assert [literal_prints(text) for text in kept] == kept
    assert literal_prints("select 'it''s', '{{ x }}' || '{{ y }}'") == (
        "select 'it''s', {{ (x) | string | sql_literal }} || {{ (y) | string | sql_literal }}"
    )

"""dbt's `{% do ... %}` and `log(...)` in models and macros: a project run through the command
line builds what the statements say, the messages reach the log at the level asked for with
secrets masked, and no template changes a list or mapping in place (a parameter hidden in one
would get past validation's check of what reaches SQL, and an imported macro module is shared
by every render)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from click.testing import Result

from engine.api.pipeline import run
from engine.core.errors import ParameterError, PipelineInvalid
from engine.spec.params import RenderContext, render
from engine.spec.templates import unfiltered_sql_params
from tests.conftest import WritePipeline

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
  {%- set ns = namespace(parts=[]) -%}
  {%- for value in values -%}
    {%- set ns.parts = ns.parts + ['sum(case when ' ~ column ~ ' = ' ~ (value | sql_literal)
                                   ~ ' then amount end) as ' ~ (value ~ '_amount') | sql_identifier] -%}
  {%- endfor -%}
  {%- do log('sums_by ' ~ column ~ ': ' ~ ns.parts | length ~ ' columns') -%}
  {{ ns.parts | join(',\\n  ') }}
{%- endmacro %}
""",
    "models/by_method.sql": """\
{% set seen = {'first': var('methods')[0]} %}
{% do log('building by_method for ' ~ seen['first'] ~ ' with token ' ~ var('api_token'), info=True) %}
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
    assert done.stderr.count("building by_method for card with token ***") == 1  # not validation's
    assert "sums_by method" not in done.stderr
    assert "tok-9f8e7d6c5b" not in done.stderr


@pytest.mark.parametrize(
    "text",
    [
        "{% do params.regions.append('west') %}",
        "{% set o = {'l': []} %}{% do o.l.append(params.region) %}{{ o.l[0] }}",
        "{% set l = [] %}{% set l2 = l %}{% do l2.append(params.region) %}{{ l | join(',') }}",
        "{% set d = {} %}{% do d.update({'k': params.region}) %}{{ d.k }}",
        "{% set d = {} %}{% do d.setdefault('k', []).append(params.region) %}{{ d.k[0] }}",
        "{% macro add(l, x) %}{% do l.append(x) %}{% endmacro %}{% set l = [] %}"
        "{{ add(l, params.region) }}{{ l[0] }}",
        "{% do params.__class__.__init__.__globals__.clear() %}",
    ],
)
def test_a_template_changes_no_list_or_mapping_in_place(text: str) -> None:
    """What the template was given stays as it was, and a parameter cannot be hidden in a
    container where validation would not follow it into SQL."""
    from datetime import UTC, datetime

    params = {"region": "x' or 1=1 --", "regions": ["north"]}
    context = RenderContext("p", params, "r", datetime(2024, 1, 1, tzinfo=UTC))
    with pytest.raises(ParameterError) as raised:
        render(text, context, sql=True)
    assert raised.value.hint is not None
    assert "{% set cols = cols + [c] %}" in raised.value.hint
    assert params == {"region": "x' or 1=1 --", "regions": ["north"]}


def test_an_imported_macro_module_is_not_changed_by_one_render_for_the_next(
    write: WritePipeline, project: Path
) -> None:
    (project / "macros").mkdir()
    (project / "macros" / "reg.sql").write_text("{% set seen = [] %}")
    path = write(
        "p.yaml",
        """
        pipeline: p
        macros: [macros/reg.sql]
        params: {n: 1}
        tasks:
          - id: a
            sql: |
              {% import 'macros/reg.sql' as m %}{% do m.seen.append(params.n) %}
              select {{ m.seen | length }} as seen_count
        """,
    )
    with pytest.raises(PipelineInvalid) as raised:  # refused before a run: nothing shared
        run(path)
    assert f"{path}:6" in str(raised.value)
    assert "access to attribute 'append' of 'list' object is unsafe" in str(raised.value)


def test_values_built_without_changing_in_place_are_still_followed_into_sql() -> None:
    """The ways that work (a new list with `+`, a namespace) keep what they hold visible to
    validation: printed raw, the parameter is refused; through a filter, it is fine."""
    made = "{% set ns = namespace(l=[]) %}{% set ns.l = ns.l + [params.region] %}"
    assert unfiltered_sql_params(made + "{{ ns.l | join(',') }}") == {"region"}
    assert unfiltered_sql_params("{% set l = [] + [params.region] %}{{ l[0] }}") == {"region"}
    assert unfiltered_sql_params(made + "{{ ns.l[0] | sql_literal }}") == set()
    assert unfiltered_sql_params("{{ log(params.region) }}") == {"region"}  # prints: counted
    assert unfiltered_sql_params("{% do log(params.region) %}select 1") == set()


def test_log_masks_secrets_inside_list_and_mapping_parameters() -> None:
    from datetime import UTC, datetime

    from loguru import logger

    params = {
        "api_keys": ["key-AAAA1111", "key-BBBB2222"],
        "creds": {"user": "bob", "password": "hunter2hunter2"},
        "db_password": 'pa\\ss"w0rd',
    }
    context = RenderContext("p", params, "r", datetime(2024, 1, 1, tzinfo=UTC))
    said: list[str] = []
    sink = logger.add(lambda message: said.append(str(message)), level="INFO")
    logger.enable("engine")  # a library's log is off until an application turns it on
    try:
        render(
            "{% do log('keys ' ~ params.api_keys[0] ~ ' as ' ~ params.creds.user ~ ' with '"
            " ~ params.creds.password ~ ' all ' ~ params, info=True) %}",
            context,
        )
    finally:
        logger.remove(sink)
        logger.disable("engine")
    text = "".join(said)
    assert "keys *** as bob with ***" in text
    for secret in ("key-AAAA1111", "key-BBBB2222", "hunter2hunter2", "w0rd"):
        assert secret not in text

from datetime import UTC, date, datetime

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from engine.core.errors import ParameterError
from engine.core.sqltext import sql_identifier, sql_literal
from engine.spec.params import (
    Param,
    ParamType,
    RenderContext,
    coerce_value,
    infer_param,
    parse_assignments,
    render,
    resolve_params,
)
from engine.spec.templates import ANY_PARAM, referenced_params, unfiltered_sql_params

CONTEXT = RenderContext(
    "orders", {"region": "north", "limit": 10}, "r1", datetime(2024, 3, 5, 2, tzinfo=UTC)
)


def test_precedence_defaults_then_environment_then_overrides() -> None:
    defaults = {"region": "north", "limit": 10, "day": date(2024, 1, 1)}
    environ = {"ARROWLINE_PARAM_REGION": "south", "ARROWLINE_PARAM_LIMIT": "20", "OTHER": "x"}
    assert resolve_params(defaults, environ=environ) == {
        "region": "south",
        "limit": 20,
        "day": date(2024, 1, 1),
    }
    resolved = resolve_params(defaults, {"limit": "30", "day": "2024-02-01"}, environ)
    assert resolved == {"region": "south", "limit": 30, "day": date(2024, 2, 1)}


def test_unknown_override_is_an_error_with_a_suggestion() -> None:
    with pytest.raises(
        ParameterError, match=r"unknown parameter 'regoin'. Did you mean 'region'\?"
    ):
        resolve_params({"region": "north"}, {"regoin": "x"}, {})


def test_environment_values_for_other_pipelines_are_ignored() -> None:
    assert resolve_params({"a": 1}, environ={"ARROWLINE_PARAM_B": "2"}) == {"a": 1}


@pytest.mark.parametrize(
    ("text", "default", "expected"),
    [
        ("true", False, True),
        ("0", True, False),
        ("7", 1, 7),
        ("2.5", 1.0, 2.5),
        ("[1, 2]", [0], [1, 2]),
        ("x", "y", "x"),
        ("2024-05-01", date(2024, 1, 1), date(2024, 5, 1)),
    ],
)
def test_text_values_take_the_type_of_the_default(
    text: str, default: object, expected: object
) -> None:
    assert coerce_value("p", text, default, "--param") == expected


def test_uncoercible_value_names_parameter_and_source() -> None:
    with pytest.raises(
        ParameterError, match=r"parameter 'limit' from --param: cannot read 'ten' as int"
    ):
        coerce_value("limit", "ten", 10, "--param")


def test_parse_assignments() -> None:
    assert parse_assignments(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(ParameterError, match="name=value"):
        parse_assignments(["novalue"])


def test_builtins_are_available() -> None:
    text = "{{ pipeline }} {{ run_id }} {{ ds }} {{ ds_nodash }} {{ logical_date.year }} {{ task }}"
    assert render(text, CONTEXT, "t") == "orders r1 2024-03-05 20240305 2024 t"


def test_undefined_parameter_fails_with_the_defined_ones_listed() -> None:
    with pytest.raises(ParameterError, match="defined parameters: limit, region"):
        render("{{ params.nope }}", CONTEXT)


def test_template_syntax_error_names_the_line() -> None:
    with pytest.raises(ParameterError, match="line 2"):
        render("select 1\n{{ params.region ", CONTEXT)


def test_templates_are_sandboxed() -> None:
    with pytest.raises(ParameterError):
        render("{{ params.__class__.__mro__[1].__subclasses__() }}", CONTEXT)


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        (None, "NULL"),
        (True, "TRUE"),
        (3, "3"),
        (2.5, "2.5"),
        (-3, "(-3)"),  # after a minus, -3 would start a comment: 10--3
        (-0.0, "(-0.0)"),
        ("it's", "'it''s'"),
        (date(2024, 1, 2), "DATE '2024-01-02'"),
        (["a", 1], "('a', 1)"),
    ],
)
def test_sql_literal(value: object, literal: str) -> None:
    assert sql_literal(value) == literal


def test_sql_literal_keeps_an_injection_attempt_as_data() -> None:
    attack = "x'; drop table t; --"
    sql = render(
        "select * from t where name = {{ params.name | sql_literal }}",
        RenderContext("p", {"name": attack}, "r", datetime.now(UTC)),
    )
    statements = sqlglot.parse(sql, read="duckdb")
    assert len(statements) == 1
    literals = [lit.this for lit in statements[0].find_all(exp.Literal) if lit.is_string]
    assert literals == [attack]
    connection = duckdb.connect()
    connection.execute("create table t (name varchar)")
    connection.execute("insert into t values ('x'), (?)", [attack])
    assert connection.execute(sql).fetchall() == [(attack,)]
    assert connection.execute("select count(*) from t").fetchone() == (2,)  # t still exists
    connection.close()


def test_sql_identifier_quotes_and_escapes() -> None:
    assert sql_identifier('we"ird') == '"we""ird"'
    with pytest.raises(ParameterError):
        sql_identifier("")


def test_finds_referenced_and_unfiltered_parameters() -> None:
    text = "select {{ params.a }}, {{ params.b | sql_literal }} from {{ params['c'] | sql_identifier }}"
    assert referenced_params(text) == {"a", "b", "c"}
    assert unfiltered_sql_params(text) == {"a"}


ATTACK = "'] as n union all select [content] from read_text($$/etc/hostname$$) --\""


@pytest.mark.parametrize(
    ("default", "value", "expected"),
    [
        (1, [ATTACK], "int"),
        (1, {"n": 1}, "int"),
        (1, True, "int"),
        (1, 1.5, "int"),
        (1, None, "int"),
        (1.0, float("nan"), "float"),
        (1.0, "inf", "float"),
        (True, 1, "bool"),
        ("north", 5, "str"),
        ("north", ["a"], "str"),
        (date(2024, 1, 1), datetime(2024, 1, 1), "date"),
        (date(2024, 1, 1), 20240101, "date"),
        ([1], [[1]], "list"),
        ([1], [{"a": 1}], "list"),
        ([1], "x", "list"),
        ({"a": 1}, {"a": [1]}, "dict"),
    ],
)
def test_a_value_not_of_the_parameters_type_is_refused_wherever_it_comes_from(
    default: object, value: object, expected: str
) -> None:
    with pytest.raises(ParameterError, match=r"^parameter 'p' from the http request: ") as info:
        resolve_params({"p": default}, {"p": value}, {}, source="the http request")
    assert (info.value.parameter, info.value.expected) == ("p", expected)
    assert info.value.received is not None


def test_the_value_shown_in_an_error_is_shortened() -> None:
    with pytest.raises(ParameterError) as info:
        resolve_params({"n": 1}, {"n": ["x" * 10_000]}, {})
    assert info.value.received is not None
    assert len(info.value.received) <= 80
    assert len(info.value.message) < 300


@pytest.mark.parametrize(
    ("default", "value", "expected"),
    [
        (1, "5", 5),  # text, as a JSON body or the command line sends it
        (1.0, 3, 3.0),
        (False, "yes", True),
        (date(2024, 1, 1), "2024-02-01", date(2024, 2, 1)),
        (date(2024, 1, 1), date(2024, 3, 1), date(2024, 3, 1)),
        (["a"], ["b", 1, None], ["b", 1, None]),
        (["a"], '["b", 2]', ["b", 2]),
        ({"a": 1}, {"b": "x"}, {"b": "x"}),
        (None, "text", "text"),
        (None, None, None),
    ],
)
def test_a_value_of_the_parameters_type_is_taken(
    default: object, value: object, expected: object
) -> None:
    assert resolve_params({"p": default}, {"p": value}, {}) == {"p": expected}


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ParameterError, match=r"from \$ARROWLINE_PARAM_N: cannot read '\[1\]'"):
        resolve_params({"n": 1}, environ={"ARROWLINE_PARAM_N": "[1]"})


def test_a_declared_parameter_takes_its_type_not_its_defaults() -> None:
    declared = {
        "limit": Param("limit", ParamType.INT, None),
        "day": Param("day", ParamType.DATE, None),
    }
    assert resolve_params(declared, {}, {}) == {"limit": None, "day": None}
    assert resolve_params(declared, {"limit": "7", "day": "2024-05-01"}, {}) == {
        "limit": 7,
        "day": date(2024, 5, 1),
    }
    with pytest.raises(ParameterError, match=r"expected int, got a list \[1\]") as info:
        resolve_params(declared, {"limit": [1]}, {})
    assert info.value.expected == "int or null"


def test_only_numbers_and_booleans_print_into_sql_as_they_are() -> None:
    assert infer_param("n", 3).prints_as_sql
    assert infer_param("x", 2.5).prints_as_sql
    assert infer_param("b", False).prints_as_sql
    for default in ("north", date(2024, 1, 1), datetime(2024, 1, 1), [1], {"a": 1}, None):
        assert not infer_param("p", default).prints_as_sql
    assert not Param("n", ParamType.INT, None).prints_as_sql  # null is not a number


@pytest.mark.parametrize(
    ("template", "found"),
    [
        ("select {{ params['a'] }}", {"a"}),
        ("{% set x = params.a %}select {{ x }}", {"a"}),
        ("{% set x = params.a %}{% set y = x %}select {{ y }}", {"a"}),
        ("{% for v in params.a %}{{ v }}{% endfor %}", {"a"}),
        ("{% set ns = namespace(v=params.a) %}{{ ns.v }}", {"a"}),
        ("{% with v = params.a %}{{ v }}{% endwith %}", {"a"}),
        ("select {{ params.a ~ '' }}", {"a"}),
        ("select {{ params.a | sql_literal | replace(\"'\", '') }}", {"a"}),
        ("select {{ params[params.k] }}", {"k", ANY_PARAM}),
        ("select {{ params | attr('a') }}", {ANY_PARAM}),
        ("select {{ params }}", {ANY_PARAM}),
        ("{% set x = params.a %}select {{ x | sql_literal }}", set()),
        ("{% for i in range(3) %}{{ i }}{% endfor %}", set()),
        ("select {{ ds }}, {{ params.a | sql_identifier }}", set()),
    ],
)
def test_unfiltered_parameters_are_found_however_they_are_printed(
    template: str, found: set[str]
) -> None:
    assert unfiltered_sql_params(template) == found

"""Every kind of problem validation reports, with its message and location."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import pytest

from connectors.registry import source_models
from engine.tasks.checks import check_file
from tests.conftest import WritePipeline, only, problems_of


def test_valid_pipeline_has_no_problems(write: WritePipeline) -> None:
    path = write(
        "p.yaml",
        """
        pipeline: p
        tasks:
          - id: a
            sql: select 1 as x
          - id: b
            sql: select x from a
    """,
    )
    definition, problems = check_file(path)
    assert problems == []
    assert definition is not None
    assert [t.id for t in definition.spec.tasks] == ["a", "b"]


def test_malformed_yaml(write: WritePipeline) -> None:
    problem = only(problems_of(write("p.yaml", "pipeline: p\ntasks: [\n")), "yaml-syntax")
    assert problem.file
    assert problem.file.endswith("p.yaml")
    assert problem.line == 3


def test_top_level_must_be_a_mapping(write: WritePipeline) -> None:
    only(problems_of(write("p.yaml", "- a\n- b\n")), "not-a-mapping")


def test_unknown_key_lists_the_valid_ones(write: WritePipeline) -> None:
    problem = only(
        problems_of(
            write(
                "p.yaml",
                """
        pipeline: p
        tasks:
          - id: a
            extract: {from: files, path: x.csv, fromat: csv}
    """,
            )
        ),
        "unknown-key",
    )
    assert problem.message == "unknown key 'fromat' in extract. Did you mean 'format'?"
    assert problem.hint is not None
    assert "batch_size" in problem.hint
    assert "path" in problem.hint
    assert (problem.line, problem.task_id) == (4, "a")


def test_unknown_top_level_key(write: WritePipeline) -> None:
    problem = only(
        problems_of(
            write("p.yaml", "pipeline: p\nshedule: '* * * * *'\ntasks: [{id: a, sql: select 1}]\n")
        ),
        "unknown-key",
    )
    assert "Did you mean 'schedule'?" in problem.message
    assert problem.line == 2


def test_wrong_type_quotes_the_value(write: WritePipeline) -> None:
    problem = only(
        problems_of(
            write(
                "p.yaml",
                """
        pipeline: p
        tasks:
          - id: a
            retry: {attempts: many}
            sql: select 1
    """,
            )
        ),
        "invalid-value",
    )
    assert "retry.attempts" in problem.message
    assert "'many'" in problem.message
    assert problem.line == 4


def test_missing_required_key(write: WritePipeline) -> None:
    problem = only(
        problems_of(
            write(
                "p.yaml",
                """
        pipeline: p
        tasks:
          - id: a
            extract: {from: files}
    """,
            )
        ),
        "missing-key",
    )
    assert "'path'" in problem.message
    assert problem.line == 4


def test_unknown_connector_suggests_the_right_one(write: WritePipeline) -> None:
    problem = only(
        problems_of(
            write(
                "p.yaml",
                """
        pipeline: p
        tasks:
          - id: a
            extract: {from: filez, path: x}
    """,
            )
        ),
        "unknown-connector",
    )
    assert "unknown 'from' value 'filez'. Did you mean 'files'?" in problem.message
    # every registered source, in registry order (a new connector joins the list by itself)
    sources = [model.model_fields["from_"].annotation.__args__[0] for model in source_models()]
    assert sources[:3] == ["files", "duckdb", "postgres"]
    assert problem.hint == f"valid values of 'from': {', '.join(sources)}"


def test_duplicate_task_ids_name_both_lines(write: WritePipeline) -> None:
    problem = only(
        problems_of(
            write(
                "p.yaml",
                """
        pipeline: p
        tasks:
          - id: a
            sql: select 1
          - id: a
            sql: select 2
    """,
            )
        ),
        "duplicate-id",
    )
    assert problem.line == 5
    assert "first at line 3" in problem.message


def test_duplicate_is_found_even_when_one_copy_is_invalid(write: WritePipeline) -> None:
    problems = problems_of(
        write(
            "p.yaml",
            """
        pipeline: p
        tasks:
          - id: a
            sql: select 1
          - id: a
            sql: {query: select 2, bogus: 1}
    """,
        )
    )
    assert {p.code for p in problems} == {"duplicate-id", "unknown-key"}


def test_unknown_dependency_with_did_you_mean(write: WritePipeline) -> None:
    problem = only(
        problems_of(
            write(
                "p.yaml",
                """
        pipeline: p
        tasks:
          - id: raw_orders
            sql: select 1
          - id: b
            depends_on: [raw_order]
            sql: select 2
    """,
            )
        ),
        "unknown-dependency",
    )
    assert problem.message == "depends on unknown task 'raw_order'. Did you mean 'raw_orders'?"
    assert (problem.line, problem.task_id) == (6, "b")


def test_unknown_input_with_did_you_mean(write: WritePipeline) -> None:
    problem = only(
        problems_of(
            write(
                "p.yaml",
                """
        pipeline: p
        tasks:
          - id: orders
            sql: select 1 as x
          - id: out
            load: {input: order, to: parquet, path: out.parquet}
    """,
            )
        ),
        "unknown-input",
    )
    assert "Did you mean 'orders'?" in problem.message
    assert problem.line == 6


def test_self_dependency(write: WritePipeline) -> None:
    problems = problems_of(
        write(
            "p.yaml",
            """
        pipeline: p
        tasks:
          - id: a
            depends_on: [a]
            sql: select 1
    """,
        )
    )
    problem = only(problems, "self-dependency")
    assert problem.line == 4
    assert not [p for p in problems if p.code == "cycle"]


def test_cycle_reports_its_full_path(write: WritePipeline) -> None:
    problem = only(
        problems_of(
            write(
                "p.yaml",
                """
        pipeline: p
        tasks:
          - id: a
            sql: select * from c
          - id: b
            sql: select * from a
          - id: c
            sql: select * from b
          - id: d
            sql: select 1
    """,
            )
        ),
        "cycle",
    )
    assert problem.message == "dependency cycle: a -> b -> c -> a"
    assert (problem.line, problem.task_id) == (3, "a")


def test_unknown_task_kind(write: WritePipeline) -> None:
    problem = only(
        problems_of(
            write(
                "p.yaml",
                """
        pipeline: p
        tasks:
          - id: a
            transfrom: {input: b}
    """,
            )
        ),
        "unknown-kind",
    )
    assert problem.message == "unknown task kind 'transfrom'."
    assert problem.hint == "valid kinds: extract, sql, udf, validate, load"
    assert problem.line == 4


def test_task_without_a_kind(write: WritePipeline) -> None:
    only(problems_of(write("p.yaml", "pipeline: p\ntasks:\n  - id: a\n")), "missing-kind")


def test_invalid_cron_and_time_zone(write: WritePipeline) -> None:
    problems = problems_of(
        write(
            "p.yaml",
            """
        pipeline: p
        schedule: "0 25 * * *"
        timezone: Mars/Olympus
        tasks: [{id: a, sql: select 1}]
    """,
        )
    )
    assert only(problems, "invalid-cron").line == 2
    assert only(problems, "invalid-timezone").line == 3


def test_a_cron_expression_that_never_fires_is_invalid(write: WritePipeline) -> None:
    problems = problems_of(
        write("p.yaml", 'pipeline: p\nschedule: "0 0 30 2 *"\ntasks: [{id: a, sql: select 1}]\n')
    )
    problem = only(problems, "invalid-cron")
    assert problem.line == 2
    assert "never fires" in problem.message


def test_undefined_parameter(write: WritePipeline) -> None:
    problem = only(
        problems_of(
            write(
                "p.yaml",
                """
        pipeline: p
        params: {region: north}
        tasks:
          - id: a
            sql: select {{ params.regoin | sql_literal }} as r
    """,
            )
        ),
        "undefined-parameter",
    )
    assert (
        problem.message
        == "template uses undefined parameter 'params.regoin'. Did you mean 'region'?"
    )
    assert (problem.line, problem.task_id) == (5, "a")


def test_undefined_template_variable(write: WritePipeline) -> None:
    problem = only(
        problems_of(
            write(
                "p.yaml",
                """
        pipeline: p
        tasks:
          - id: a
            sql: select '{{ dss }}' as d
    """,
            )
        ),
        "undefined-variable",
    )
    assert "Did you mean 'ds'?" in problem.message


def test_a_missing_key_is_reported_under_its_parent(write: WritePipeline) -> None:
    problem = only(
        problems_of(
            write(
                "p.yaml",
                """
        pipeline: p
        tasks:
          - id: t
            sql: select 1 as x
          - id: u
            load: {input: t, to: duckdb, table: x}
    """,
            )
        ),
        "missing-key",
    )
    assert (problem.message, problem.line) == ("load: missing required key 'path'", 6)


def test_raw_number_and_boolean_parameters_are_not_problems(write: WritePipeline) -> None:
    _, problems = check_file(
        write(
            "p.yaml",
            """
        pipeline: p
        params: {n: 10, ratio: 0.5, flag: true, m: {type: int, default: 2}}
        tasks:
          - id: a
            sql: select * from range({{ params.n }}) where {{ params.flag }} and {{ params.m }} > {{ params.ratio }}
    """,
        )
    )
    assert problems == []


def test_raw_text_parameter_in_sql_is_an_error(write: WritePipeline) -> None:
    definition, problems = check_file(
        write(
            "p.yaml",
            """
        pipeline: p
        params: {region: north}
        tasks:
          - id: a
            sql: select 1 as r where region = '{{ params.region }}' or {{ params.region }}
    """,
        )
    )
    # a value sent for a run could rewrite the statement; the quoted print is one string
    # (dbt's way, printed through sql_literal), the bare one is the error
    assert definition is None
    problem = only(problems, "unquoted-parameter")
    assert (problem.severity, problem.line, problem.task_id) == ("error", 5, "a")
    assert "'params.region' (str)" in problem.message
    assert problem.hint is not None
    assert "{{ params.region | sql_literal }}" in problem.hint


@pytest.mark.parametrize(
    "declaration",
    [
        "day: 2024-01-01",
        "day: [1, 2]",
        "day: {a: 1}",
        "day: null",
        "day: {type: int, default: null}",
        "day: {type: datetime, default: '2024-01-01T00:00:00'}",
    ],
)
def test_raw_parameters_that_are_not_numbers_or_booleans_are_errors(
    write: WritePipeline, declaration: str
) -> None:
    problems = problems_of(
        write(
            "p.yaml",
            f"""
        pipeline: p
        params: {{{declaration}}}
        tasks:
          - id: a
            sql: "{{% set d = params.day %}}select {{{{ d }}}} as d"
    """,
        )
    )
    assert only(problems, "unquoted-parameter").severity == "error"


def test_a_raw_parameter_in_a_sources_query_is_an_error(write: WritePipeline) -> None:
    problem = only(
        problems_of(
            write(
                "p.yaml",
                """
        pipeline: p
        params: {region: north}
        tasks:
          - id: a
            extract:
              from: duckdb
              path: w.duckdb
              query: "select * from t where region = {{ params.region }} or '{{ params.region }}' = ''"
    """,
            )
        ),
        "unquoted-parameter",  # the bare print; the quoted one is one string (sql_literal)
    )
    assert (problem.severity, problem.line) == ("error", 8)


def test_typed_parameter_declarations(write: WritePipeline) -> None:
    definition, problems = check_file(
        write(
            "p.yaml",
            """
        pipeline: p
        params:
          n: 3
          day: {type: date, default: "2024-01-01", description: first day}
          limit: {type: int, default: null}
          ratio: {type: float, default: 1}
        tasks:
          - id: a
            sql: select {{ params.day | sql_literal }} as d, {{ params.ratio }} as r
    """,
        )
    )
    assert problems == []
    assert definition is not None
    params = definition.spec.parameters
    assert {name: p.expected for name, p in params.items()} == {
        "n": "int",
        "day": "date",
        "limit": "int or null",
        "ratio": "float",
    }
    assert definition.spec.param_defaults == {
        "n": 3,
        "day": date(2024, 1, 1),
        "limit": None,
        "ratio": 1.0,
    }


def test_bad_parameter_declarations_point_at_their_lines(write: WritePipeline) -> None:
    problems = problems_of(
        write(
            "p.yaml",
            """
        pipeline: p
        params:
          a: {type: integer, default: 3}
          b: {type: int, default: "x"}
          c: {type: int}
          d: {type: int, default: 1, descripton: x}
          e: [[1]]
        tasks:
          - id: t
            sql: select 1 as x
    """,
        )
    )
    shown = {p.line: p.message for p in problems}
    assert set(shown) == {3, 4, 5, 6, 7}, [p.format() for p in problems]
    assert "params.a.type" in shown[3]
    assert "'int'" in shown[3]
    assert shown[4].startswith("params.b.default: cannot read 'x' as int")
    assert shown[5] == "params.c: missing required key 'default'"
    assert "Did you mean 'description'?" in shown[6]
    assert shown[7].startswith("params.e: expected list, got a list [[1]] (item 0 is a list")


def test_sql_that_does_not_parse_points_at_the_file_line(write: WritePipeline) -> None:
    problem = only(
        problems_of(
            write(
                "p.yaml",
                """
        pipeline: p
        tasks:
          - id: a
            sql: select 1 as x
          - id: b
            sql: |
              select x,
              from a where
    """,
            )
        ),
        "sql-parse",
    )
    assert problem.task_id == "b"
    assert problem.line == 8
    assert "incomplete WHERE clause" in problem.message


def test_sql_table_that_matches_no_task(write: WritePipeline) -> None:
    problem = only(
        problems_of(
            write(
                "p.yaml",
                """
        pipeline: p
        tasks:
          - id: customers
            sql: select 1 as id
          - id: joined
            sql: |
              select *
              from customers c
              join custmers d using (id)
    """,
            )
        ),
        "unknown-table",
    )
    assert "reads table 'custmers'" in problem.message
    assert "Did you mean 'customers'?" in problem.message
    assert problem.line == 9


def test_a_table_named_by_a_parameter_that_names_no_task_names_the_parameter(
    write: WritePipeline,
) -> None:
    problem = only(
        problems_of(
            write(
                "p.yaml",
                """
        pipeline: p
        params: {source: ordrs}
        tasks:
          - id: orders
            sql: select 1 as x
          - id: b
            sql: |
              select *
              from {{ params.source | sql_identifier }}
    """,
            )
        ),
        "unknown-table",
    )
    assert problem.task_id == "b"
    assert "reads table 'ordrs' (the value of parameter 'source')" in problem.message
    assert "Did you mean 'orders'?" in problem.message
    assert problem.line == 9


def test_cte_named_like_a_task_is_not_a_dependency(write: WritePipeline) -> None:
    definition, problems = check_file(
        write(
            "p.yaml",
            """
        pipeline: p
        tasks:
          - id: a
            sql: with b as (select 1 as x) select * from b
    """,
        )
    )
    assert problems == []
    assert definition is not None


def test_tables_are_still_checked_when_a_parameter_is_undefined(write: WritePipeline) -> None:
    problems = problems_of(
        write(
            "p.yaml",
            """
        pipeline: p
        tasks:
          - id: a
            sql: select * from nothere where x = {{ params.missing | sql_literal }}
    """,
        )
    )
    assert {p.code for p in problems} == {"undefined-parameter", "unknown-table"}


def test_reading_a_load_task_is_an_error(write: WritePipeline) -> None:
    problem = only(
        problems_of(
            write(
                "p.yaml",
                """
        pipeline: p
        tasks:
          - id: a
            sql: select 1 as x
          - id: l
            load: {input: a, to: parquet, path: out.parquet}
          - id: b
            sql: select * from l
    """,
            )
        ),
        "load-has-no-output",
    )
    assert problem.task_id == "b"


def test_udf_that_cannot_be_imported(write: WritePipeline) -> None:
    write("udfs.py", "import polars as pl\ndef score():\n    return pl.col('x')\n")
    write("broken.py", "def oops(:\n")
    problems = problems_of(
        write(
            "p.yaml",
            """
        pipeline: p
        tasks:
          - id: a
            sql: select 1 as x
          - id: b
            udf: {input: a, function: "udfs.py:scroe"}
          - id: c
            udf: {input: a, function: "broken.py:oops"}
          - id: d
            udf: {input: a, function: "no_such_module:f"}
    """,
        )
    )
    by_task = {p.task_id: p for p in problems if p.code == "udf-import"}
    assert "has no attribute 'scroe'. Did you mean 'score'?" in by_task["b"].message
    assert by_task["b"].line == 6
    assert "syntax error in" in by_task["c"].message
    assert "broken.py:1" in by_task["c"].message
    assert "no module named 'no_such_module'" in by_task["d"].message


def test_schema_problems(write: WritePipeline) -> None:
    problems = problems_of(
        write(
            "p.yaml",
            """
        pipeline: p
        tasks:
          - id: a
            sql: select 1 as x
          - id: b
            validate: {input: a, schema: {columns: {x: {type: int65}}}}
          - id: c
            validate: {input: a, schema: missing.yaml}
          - id: d
            validate: {input: a, schema: {columns: {x: {checks: {gee: 1}}}}}
    """,
        )
    )
    by_task = {p.task_id: p.message for p in problems if p.code == "schema"}
    assert "unknown type 'int65'" in by_task["b"]
    assert "does not exist" in by_task["c"]
    assert "unknown check 'gee'. Did you mean 'ge'?" in by_task["d"]


def test_every_problem_is_reported_at_once(write: WritePipeline) -> None:
    problems = problems_of(
        write(
            "p.yaml",
            """
        pipeline: p
        schedule: "not cron"
        tasks:
          - id: a
            depends_on: [zz]
            sql: select * from nothere
          - id: a
            sql: select 1
          - id: c
            load: {input: a, to: duckdb, path: w.duckdb, table: t, mode: merge}
    """,
        )
    )
    assert {p.code for p in problems} >= {
        "invalid-cron",
        "unknown-dependency",
        "unknown-table",
        "duplicate-id",
        "invalid-value",
    }
    assert all(p.line is not None for p in problems)


def test_a_thousand_task_pipeline_validates_quickly(write: WritePipeline) -> None:
    lines = ["pipeline: big", "tasks:", "  - {id: t0, sql: select 1 as x}"]
    lines += [f"  - {{id: t{i}, sql: select x from t{i - 1}}}" for i in range(1, 1000)]
    path = write("big.yaml", "\n".join(lines) + "\n")
    started = time.perf_counter()
    definition, problems = check_file(path)
    elapsed = time.perf_counter() - started
    assert problems == []
    assert definition is not None
    # Not a benchmark (those live in benchmarks/): a guard against accidental quadratic work.
    assert elapsed < 5, f"validating 1,000 tasks took {elapsed:.2f}s"


def test_connection_references(write: WritePipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_URI_VAR", raising=False)
    problems = problems_of(
        write(
            "p.yaml",
            """
        pipeline: p
        connections:
          warehouse: {kind: postgres, uri: "${env:NO_SUCH_URI_VAR}"}
        tasks:
          - id: a
            extract: {from: postgres, connection: warehous, table: public.t}
          - id: b
            load: {input: a, to: postgres, connection: warehouse, table: t}
    """,
        )
    )
    unknown = only(problems, "unknown-connection")
    assert unknown.message == "connection 'warehous' is not declared. Did you mean 'warehouse'?"
    assert (unknown.task_id, unknown.line) == ("a", 6)
    unset = only(problems, "unset-secret")
    assert unset.severity == "warning"
    assert unset.line == 3
    assert "${env:NO_SUCH_URI_VAR}" in unset.message


def test_a_postgres_table_with_capitals_is_taken_exactly_and_said_so(
    write: WritePipeline,
) -> None:
    problems = problems_of(
        write(
            "p.yaml",
            """
        pipeline: p
        connections:
          wh: {kind: postgres, uri: "postgresql://u@localhost/db"}
        tasks:
          - id: a
            extract: {from: postgres, connection: wh, table: Sales.orders}
          - id: b
            load:
              input: a
              to: postgres
              connection: wh
              table: analytics.Orders
    """,
        )
    )
    cases = [p for p in problems if p.code == "table-case"]
    assert [(p.severity, p.task_id, p.line) for p in cases] == [
        ("warning", "a", 6),
        ("warning", "b", 12),
    ]
    case = cases[0]
    assert "'Sales.orders' is used exactly as written" in case.message
    assert '"Sales"."orders"' in case.message


def test_scheduling_settings_are_checked(write: WritePipeline) -> None:
    problems = problems_of(
        write(
            "p.yaml",
            """
        pipeline: p
        schedule: "0 * * * *"
        overlap: allow
        freshness: {b: 1h}
        trigger: {after: p}
        connections:
          wh: {kind: postgres, uri: "postgresql://u@h/d"}
        tasks:
          - id: a
            extract: {from: postgres, connection: wh, table: t, incremental: {cursor: at}}
          - id: b
            sql: select * from a
        """,
        )
    )
    overlap = only(problems, "overlap-allow-incremental")
    assert "incremental extracts (a) keep one watermark" in overlap.message
    assert overlap.line == 3
    assert only(problems, "freshness-not-incremental").line == 4
    assert only(problems, "trigger-self").line == 5


def test_a_trigger_names_one_kind(write: WritePipeline) -> None:
    problems = problems_of(
        write(
            "p.yaml",
            """
        pipeline: p
        trigger: [{files: "in/*.csv", after: q}]
        tasks: [{id: a, sql: select 1}]
        """,
        )
    )
    problem = only(problems, "invalid-value")
    assert "a trigger has exactly one of 'files' or 'after'" in problem.message
    assert problem.line == 2


def test_a_template_that_does_not_parse_is_a_problem_at_its_line(write: WritePipeline) -> None:
    # found by the fuzz test: the parameter checks parsed the template and raised
    problem = only(
        problems_of(
            write(
                "p.yaml",
                """
        pipeline: p
        tasks:
          - id: a
            sql: "select {{ 1"
    """,
            )
        ),
        "template",
    )
    assert problem.message.startswith("template syntax error on line 1: unexpected")
    assert (problem.line, problem.task_id) == (4, "a")


@pytest.mark.parametrize(
    ("statement", "code", "line"),
    [
        ("select x\nfrom a\nwhere x = {{ params.zz }}\n", "undefined-parameter", 3),
        ("select x\nfrom a\njoin {{ ref('b') }} using (x)\n", "unknown-ref", 3),
        ("select x\nfrom a\nwhere )\n", "sql-parse", 3),
        ("select x\nfrom a\njoin nothere using (x)\n", "unknown-table", 3),
        ("select x\nfrom a {% if %}\n", "template", 2),
        ("select x\nfrom a\nwhere r = {{ params.region }}\n", "unquoted-parameter", 3),
        ("select x\nfrom a\nwhere r = {{ var('nope') }}\n", "undefined-parameter", 3),
    ],
)
def test_a_problem_in_a_sql_file_is_named_at_that_files_line(
    write: WritePipeline, statement: str, code: str, line: int
) -> None:
    path = write(
        "p.yaml",
        """
        pipeline: p
        params: {region: north}
        tasks:
          - id: a
            sql: select 1 as x
          - id: m
            sql: {file: models/m.sql}
        """,
    )
    (path.parent / "models").mkdir()
    (path.parent / "models" / "m.sql").write_text(statement)
    problem = only(problems_of(path), code)
    assert problem.file is not None
    assert Path(problem.file).resolve() == (path.parent / "models" / "m.sql").resolve()
    assert (problem.line, problem.task_id) == (line, "m")


def test_loads_writing_one_table_with_nothing_ordering_them_are_warned_of(
    write: WritePipeline, project: Path
) -> None:
    text = """
        pipeline: p
        tasks:
          - id: src
            sql: select 1 as id
          - id: app
            load: {input: src, to: duckdb, path: out.duckdb, table: events, mode: append}
          - id: rep
            load: {input: src, to: duckdb, path: out.duckdb, table: events}
          - id: other
            load: {input: src, to: duckdb, path: out.duckdb, table: elsewhere}
        """
    (said,) = [p for p in check_file(write("p.yaml", text))[1] if p.code == "unordered-writers"]
    assert said.severity == "warning"
    assert (said.task_id, said.line) == ("rep", 7)
    assert "'app' and 'rep' both write" in said.message
    assert said.hint == "add depends_on: [app] to 'rep'"
    ordered = text.replace(
        "load: {input: src, to: duckdb, path: out.duckdb, table: events}",
        "load: {input: src, to: duckdb, path: out.duckdb, table: events}\n            depends_on: [app]",
    )
    problems = check_file(write("q.yaml", ordered))[1]
    assert not [p for p in problems if p.code == "unordered-writers"]

"""Incremental sql tasks (dbt's incremental models): the first run makes the whole table, each
later run adds what its statement returns to the kept output (merged by unique_key, or
appended), `{{ this }}` reads that output and `{{ is_incremental() }}` says whether there is
one; --full-refresh makes the whole table again. Three runs with rows that change and rows that
arrive late, each compared with the table the same rows make from scratch."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import duckdb
import polars as pl
import pytest
from click.testing import Result
from polars.testing import assert_frame_equal

import engine
from engine.api.pipeline import plan, run
from tests.conftest import WritePipeline, only, problems_of

LATEST = """\
{{ config(materialized='incremental', unique_key='event_id') }}
-- each event's newest row; rows up to 2 days older than the newest kept one are read again,
-- so a row that arrives late is merged too
select event_id, status, cast(updated_at as timestamp) as updated_at
from {{ source('app', 'events') }}
{% if is_incremental() %}
where cast(updated_at as timestamp) >= (select max(updated_at) from {{ this }}) - interval 2 day
{% endif %}
qualify row_number() over (partition by event_id order by updated_at desc) = 1
"""
HEADER = "event_id,status,updated_at\n"
BATCHES = [
    "1,new,2024-01-01 00:00:00\n2,new,2024-01-02 00:00:00\n3,new,2024-01-03 00:00:00\n",
    "4,new,2024-01-04 00:00:00\n2,paid,2024-01-05 00:00:00\n",  # a new event, a change
    "5,late,2024-01-04 12:00:00\n3,shipped,2024-01-05 06:00:00\n",  # one late, one changed
]


@pytest.fixture
def events(project: Path) -> Path:
    folder = project / "events"
    (folder / "models").mkdir(parents=True)
    (folder / "data").mkdir()
    (folder / "arrowline_project.yml").write_text(
        "name: events\nsources:\n  - name: app\n    tables:\n"
        "      - {name: events, extract: {from: files, path: data/events.csv}}\n"
    )
    (folder / "models" / "events_latest.sql").write_text(LATEST)
    (folder / "models" / "schema.yml").write_text(
        "version: 2\nmodels:\n  - name: events_latest\n    columns:\n"
        "      - name: event_id\n        tests: [unique, not_null]\n"
    )
    return folder


def _table(project: Path) -> pl.DataFrame:
    with engine.open(project) as opened:
        return opened.table("events_latest").sort("event_id").collect()


def _from_scratch(csv: Path) -> pl.DataFrame:
    """The newest row of each event among every row the file holds."""
    return duckdb.sql(
        "select event_id, status, cast(updated_at as timestamp) as updated_at "
        f"from read_csv('{csv}') "
        "qualify row_number() over (partition by event_id order by updated_at desc) = 1 "
        "order by event_id"
    ).pl()


def test_three_runs_add_changed_and_late_rows_as_a_fresh_build_would(
    events: Path, project: Path
) -> None:
    csv = events / "data" / "events.csv"
    csv.write_text(HEADER)
    assert list(plan(events, select=["config.materialized:incremental"]).selected or ()) == [
        "events_latest"
    ]
    for number, batch in enumerate(BATCHES):
        csv.write_text(csv.read_text() + batch)
        the_plan = plan(events)
        adds_to = the_plan.task("events_latest").adds_to
        assert (adds_to is None) == (number == 0)
        result = run(events)
        assert result.ok, result
        assert_frame_equal(_table(project), _from_scratch(csv), check_dtypes=False)
    # the third run read only rows from 2024-01-03 on: five kept, two changed or new
    assert result.tasks["events_latest"].rows_out == 5
    assert _table(project).filter(pl.col("event_id") == 3)["status"].item() == "shipped"

    # a row far older than what is kept is not read again; --full-refresh builds from scratch
    csv.write_text(csv.read_text() + "6,ancient,2023-12-01 00:00:00\n")
    assert run(events).ok
    assert 6 not in _table(project)["event_id"].to_list()
    fresh = run(events, full_refresh=True)
    assert fresh.ok
    assert_frame_equal(_table(project), _from_scratch(csv), check_dtypes=False)
    with engine.open(project) as opened:  # `this` is its own earlier rows: no edge of its own
        tree = opened.lineage(events, "events_latest.status")["tree"]
    assert set(tree) == {
        "app__events.status (value)",
        "app__events.event_id (filter)",
        "app__events.updated_at (filter)",
    }, tree


def test_the_models_tests_judge_the_whole_table(events: Path) -> None:
    """A changed row that the statement returns twice would break the key: the unique test
    runs over the kept rows and the new ones together and keeps the output back."""
    model = events / "models" / "events_latest.sql"
    model.write_text(LATEST.replace("qualify", "-- qualify"))
    csv = events / "data" / "events.csv"
    csv.write_text(HEADER + BATCHES[0])
    assert run(events).ok
    csv.write_text(csv.read_text() + BATCHES[1])
    failed = run(events)
    assert "unique(event_id): 1 value held twice or more" in (
        failed.tasks["events_latest"].error or ""
    )


def test_a_pipeline_task_appends_without_a_unique_key(write: WritePipeline) -> None:
    path = write(
        "log.yaml",
        """
        pipeline: log
        params: {day: 1}
        tasks:
          - id: daily
            sql:
              incremental: {}
              query: |
                select {{ params.day }} as day, {{ is_incremental() }} as adding
                {% if is_incremental() %}
                where {{ params.day }} > (select max(day) from {{ this }})
                {% endif %}
        """,
    )
    for day in (1, 2, 2, 3):
        assert run(path, params={"day": day}).ok
    with engine.open(path.parent) as opened:
        rows = opened.table("daily", pipeline="log").sort("day").collect()
    assert rows.rows() == [(1, False), (2, True), (3, True)]  # day 2 again added nothing


@pytest.mark.parametrize(
    ("task", "code", "says"),
    [
        (
            "sql: {query: 'select * from {{ this }}'}",
            "unknown-table",
            "only an incremental sql task has",
        ),
        (
            "sql: {query: 'select 1 as x', incremental: {strategy: merge}}",
            "invalid-value",
            "strategy merge needs unique_key",
        ),
        (
            "sql: {query: 'select 1 as x', incremental: {}}\n    materialize: ephemeral",
            "invalid-value",
            "cannot be ephemeral",
        ),
        (
            "sql:\n      incremental: {unique_key: x}\n      query: |\n        select 1 as x\n"
            "        {% if is_incremental() %} union all select x from {{ thsi }} {% endif %}",
            "undefined-variable",
            "'thsi'",
        ),
    ],
)
def test_incremental_settings_written_wrong_are_refused_at_their_line(
    write: WritePipeline, task: str, code: str, says: str
) -> None:
    path = write(
        "wrong.yaml",
        "pipeline: wrong\ntasks:\n  - id: t\n    " + textwrap.indent(task, "").lstrip() + "\n",
    )
    problem = only(problems_of(path), code)
    assert says in problem.message, problem.format()
    assert problem.line is not None
    assert problem.line >= 3


def test_the_later_runs_statement_is_checked_before_the_first_run(events: Path) -> None:
    """Validation renders an incremental statement both ways: a wrong table inside
    `{% if is_incremental() %}` is found before any run would take that branch."""
    model = events / "models" / "events_latest.sql"
    model.write_text(LATEST.replace("from {{ this }}", "from app__evnts"))
    problem = only(problems_of(events), "unknown-table")
    lines = model.read_text().splitlines()
    assert problem.line == 1 + next(i for i, t in enumerate(lines) if "app__evnts" in t)
    assert "Did you mean 'app__events'" in problem.message


def test_a_resumed_run_adds_to_the_output_before_it_not_to_nothing(
    write: WritePipeline, project: Path
) -> None:
    """A run that failed before its incremental task, resumed: the task adds to the output
    of the run before, as the run itself would have (it made the whole table afresh)."""
    data = project / "data"
    data.mkdir()
    (data / "batch.csv").write_text("id,v\n1,a\n2,b\n")
    (data / "gate.csv").write_text("ok\n1\n")
    path = write(
        "acc.yaml",
        """
        pipeline: acc
        tasks:
          - {id: src, extract: {from: files, path: data/batch.csv}}
          - {id: gate, extract: {from: files, path: data/gate.csv}}
          - id: acc
            sql:
              incremental: {}
              query: select id, v from src where (select count(*) from gate) >= 0
        """,
    )
    assert run(path).ok
    (data / "batch.csv").write_text("id,v\n3,c\n4,d\n")
    (data / "gate.csv").unlink()
    failed = run(path)
    assert not failed.ok
    (data / "gate.csv").write_text("ok\n1\n")
    from engine.api.pipeline import resume

    resumed = resume(path, failed.run_id)
    assert resumed.ok, resumed
    with engine.open(project) as opened:
        ids = opened.table("acc", pipeline="acc").sort("id").collect()["id"].to_list()
    assert ids == [1, 2, 3, 4]


def test_keys_that_are_null_are_merged_not_kept_twice(write: WritePipeline) -> None:
    path = write(
        "nulls.yaml",
        """
        pipeline: nulls
        tasks:
          - id: t
            sql:
              incremental: {unique_key: [id]}
              query: select * from (values (1, 'a'), (null, 'b')) as v(id, name)
        """,
    )
    for _ in range(3):
        assert run(path).ok
    with engine.open(path.parent) as opened:
        assert opened.table("t", pipeline="nulls").collect().height == 2


def test_this_read_outside_is_incremental_is_refused_at_its_line(events: Path) -> None:
    model = events / "models" / "events_latest.sql"
    model.write_text(
        "{{ config(materialized='incremental', unique_key='event_id') }}\n"
        "select event_id, status from {{ source('app', 'events') }}\n"
        "where event_id > (select coalesce(max(event_id), 0) from {{ this }})\n"
    )
    problem = only(problems_of(events), "unknown-table")
    assert (Path(problem.file or "").name, problem.line) == ("events_latest.sql", 3)
    assert "first run" in problem.message


def test_a_wrong_table_after_an_incremental_block_is_said_once(events: Path) -> None:
    model = events / "models" / "events_latest.sql"
    model.write_text(
        LATEST.replace("qualify", "union all select 1, 'x', null from nosuch\nqualify")
    )
    problems = [p for p in problems_of(events) if p.code == "unknown-table"]
    assert len(problems) == 1, [p.format() for p in problems]


def test_backfills_in_parallel_are_refused_for_an_incremental_sql_task(
    write: WritePipeline, cli: Callable[..., Result]
) -> None:
    path = write(
        "daily.yaml",
        """
        pipeline: daily
        schedule: "0 1 * * *"
        tasks:
          - id: acc
            sql: {incremental: {}, query: "select '{{ ds }}' as day"}
        """,
    )
    result = cli("backfill", path, "--from", "2024-01-01", "--to", "2024-01-04", "--parallel", "2")
    assert result.exit_code != 0
    assert "incremental tasks (acc)" in result.output


@pytest.mark.parametrize(
    ("policy", "columns", "after"),
    [
        ("ignore", ["id", "a", "b"], [(1, "a1", "b1"), (2, "a2", None)]),
        (
            "append_new_columns",
            ["id", "a", "b", "c"],
            [(1, "a1", "b1", None), (2, "a2", None, "c2")],
        ),
        ("sync_all_columns", ["id", "a", "c"], [(1, "a1", None), (2, "a2", "c2")]),
    ],
)
def test_on_schema_change_decides_the_columns_when_the_statement_changes_them(
    write: WritePipeline, policy: str, columns: list[str], after: list[tuple[object, ...]]
) -> None:
    """Run 1 makes (id, a, b); run 2's statement returns (id, a, c): b dropped, c added."""
    text = """
        pipeline: evolve
        tasks:
          - id: t
            sql:
              incremental: {unique_key: [id], on_schema_change: POLICY}
              query: |
                {% if is_incremental() %} select 2 as id, 'a2' as a, 'c2' as c
                {% else %} select 1 as id, 'a1' as a, 'b1' as b {% endif %}
        """.replace("POLICY", policy)
    path = write("evolve.yaml", text)
    assert run(path).ok
    assert run(path).ok
    with engine.open(path.parent) as opened:
        table = opened.table("t", pipeline="evolve").sort("id").collect()
    assert table.columns == columns
    assert table.rows() == after


def test_on_schema_change_fail_fails_the_task_and_keeps_the_output(write: WritePipeline) -> None:
    path = write(
        "strict.yaml",
        """
        pipeline: strict
        tasks:
          - id: t
            sql:
              incremental: {unique_key: [id], on_schema_change: fail}
              query: |
                {% if is_incremental() %} select 2 as id, 'c2' as c
                {% else %} select 1 as id, 'b1' as b {% endif %}
        """,
    )
    assert run(path).ok
    failed = run(path)
    assert "differ from the kept output's (id, b) and on_schema_change is fail" in (
        failed.tasks["t"].error or ""
    )
    with engine.open(path.parent) as opened:
        assert opened.table("t", pipeline="strict").collect().rows() == [(1, "b1")]


def test_a_pipelines_incremental_task_keeps_new_columns_and_ignores_their_order(
    write: WritePipeline,
) -> None:
    """Without on_schema_change, a YAML pipeline's task adds a new column (append_new_columns,
    as before the setting existed); a SQL project's model takes dbt's ignore. Columns in
    another order are the same columns, even for fail."""
    path = write(
        "order.yaml",
        """
        pipeline: order
        tasks:
          - id: t
            sql:
              incremental: {unique_key: [id], on_schema_change: fail}
              query: |
                {% if is_incremental() %} select 'b' as v, 2 as id
                {% else %} select 1 as id, 'a' as v {% endif %}
          - id: grows
            sql:
              incremental: {unique_key: [id]}
              query: |
                {% if is_incremental() %} select 2 as id, 'new' as extra
                {% else %} select 1 as id {% endif %}
        """,
    )
    assert run(path).ok
    assert run(path).ok
    with engine.open(path.parent) as opened:
        assert opened.table("t", pipeline="order").sort("id").collect().rows() == [
            (1, "a"),
            (2, "b"),
        ]
        grows = opened.table("grows", pipeline="order").sort("id").collect()
    assert grows.columns == ["id", "extra"]


def test_a_project_model_takes_dbts_default_on_schema_change(events: Path) -> None:
    incremental = plan(events).task("events_latest").spec.sql.incremental  # type: ignore[union-attr]
    assert incremental is not None
    assert incremental.on_schema_change == "ignore"


def test_an_output_retention_removed_is_said_before_the_whole_table_is_made_again(
    events: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    """dev's kept rows are not prod's: after a prod run, retention may remove dev's output
    (only each task's latest success is always kept). The next dev run makes its whole table
    again, as on a first run, and says why instead of doing it silently."""
    settings = events / "arrowline_project.yml"
    settings.write_text(
        settings.read_text()
        + "target: dev\ntargets:\n  dev: {database: out/dev.duckdb, schema: dev}\n"
        + "  prod: {database: out/prod.duckdb, schema: prod}\n"
    )
    (events / "data" / "events.csv").write_text(HEADER + BATCHES[0])
    monkeypatch.chdir(events)
    assert cli("run", ".").exit_code == 0
    assert cli("run", ".", "--target", "prod").exit_code == 0
    assert cli("gc", "--keep-runs", "0").exit_code == 0
    again = cli("run", ".")
    assert again.exit_code == 0, again.output
    assert "is no longer in the workspace (retention removed it)" in again.stderr
    assert "makes its whole table again" in again.stderr
    assert_frame_equal(_table(events), _from_scratch(events / "data" / "events.csv"))

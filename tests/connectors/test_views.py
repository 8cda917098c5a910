"""`materialize: view` on loads: the target becomes a view of the input, in DuckDB over the
workspace's files (no row copied, the files kept while the view reads them), in PostgreSQL
over a table of the run's own switched in on commit."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.api.pipeline import run, validate
from engine.core.errors import PipelineInvalid
from engine.state.catalog import CatalogReader
from tests.conftest import PgSchema, WritePipeline


def orders(project: Path, ids: range) -> None:
    (project / "in").mkdir(exist_ok=True)
    table = pa.table({"id": list(ids), "region": ["nesw"[i % 4] for i in ids]})
    pq.write_table(table, project / "in" / "orders.parquet")


DUCKDB = """
pipeline: views
retention: {{keep_runs: 1}}
tasks:
  - id: src
    extract: {{from: files, path: in/orders.parquet}}
  - id: by_region
    sql: select region, count(*) as n, sum(id) as total from src group by region
  - id: publish
    load: {{input: by_region, to: duckdb, path: out/w.duckdb, table: {table}, mode: replace}}
    materialize: {materialize}
"""


def duck_rows(project: Path, sql: str) -> list[tuple[object, ...]]:
    with duckdb.connect(str(project / "out" / "w.duckdb"), read_only=True) as connection:
        return connection.execute(sql).fetchall()


def duck_kind(project: Path, table: str) -> str:
    found = duck_rows(
        project, f"select table_type from information_schema.tables where table_name = '{table}'"
    )
    return str(found[0][0])


def test_a_duckdb_view_reads_the_workspace_and_follows_each_run(
    write: WritePipeline, project: Path
) -> None:
    orders(project, range(8))
    path = write("p.yaml", DUCKDB.format(table="by_region", materialize="view"))
    first = run(path)
    assert first.ok, {k: t.error for k, t in first.tasks.items()}
    assert duck_kind(project, "by_region") == "VIEW"
    assert duck_rows(project, "select sum(n), sum(total) from by_region") == [(8, 28)]
    output = first.tasks["by_region"].output
    assert output is not None
    definition = duck_rows(project, "select sql from duckdb_views() where view_name = 'by_region'")
    assert str(output.files[0].resolve()) in str(definition[0][0])  # no row copied

    orders(project, range(100, 104))
    second = run(path)
    assert second.ok
    assert duck_rows(project, "select sum(n), sum(total) from by_region") == [(4, 406)]


HOLD = "import duckdb, sys, time\nc = duckdb.connect(sys.argv[1])\nprint('holding', flush=True)\ntime.sleep(60)\n"


def test_retention_keeps_the_files_a_duckdb_view_reads(write: WritePipeline, project: Path) -> None:
    """keep_runs: 1 would remove the first run's output once a second run made a newer one;
    the view still reads it when the second run's load failed, so it stays."""
    orders(project, range(8))
    path = write("p.yaml", DUCKDB.format(table="by_region", materialize="view"))
    assert run(path).ok
    # Another program holds the warehouse open for writing: the next loads cannot.
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(project / "out" / "w.duckdb")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        orders(project, range(100, 104))
        for _ in range(2):  # two newer outputs of the input, and retention after each run
            later = run(path)
            assert not later.ok
            assert "lock" in (later.tasks["publish"].error or "").lower()
            assert later.tasks["by_region"].output is not None
    finally:
        holder.kill()
        holder.communicate()
    assert duck_rows(project, "select sum(n), sum(total) from by_region") == [(8, 28)]


def test_a_duckdb_target_turns_from_table_to_view_and_back(
    write: WritePipeline, project: Path
) -> None:
    orders(project, range(8))
    as_table = write("t.yaml", DUCKDB.format(table="main.by_region", materialize="table"))
    as_view = write("v.yaml", DUCKDB.format(table="main.by_region", materialize="view"))
    for path, kind in ((as_table, "BASE TABLE"), (as_view, "VIEW"), (as_table, "BASE TABLE")):
        result = run(path)
        assert result.ok, {k: t.error for k, t in result.tasks.items()}
        assert duck_kind(project, "by_region") == kind
        assert duck_rows(project, "select sum(n) from by_region") == [(8,)]


def test_appending_into_a_view_says_what_it_is(write: WritePipeline, project: Path) -> None:
    orders(project, range(8))
    assert run(write("v.yaml", DUCKDB.format(table="by_region", materialize="view"))).ok
    appending = DUCKDB.format(table="by_region", materialize="table").replace(
        "mode: replace", "mode: append"
    )
    result = run(write("a.yaml", appending))
    assert not result.ok
    assert "by_region in w.duckdb is a view, and mode: append cannot write into it" in (
        result.tasks["publish"].error or ""
    )


@pytest.mark.parametrize(
    ("task", "code", "line"),
    [
        (
            "  - id: out\n    load: {input: src, to: parquet, path: out/o.parquet}\n"
            "    materialize: view\n",
            "view-sink",
            8,
        ),
        (
            "  - id: out\n    load: {input: src, to: duckdb, path: w.duckdb, table: t}\n"
            "    materialize: view\n",
            "view-mode",
            7,
        ),
        ("  - id: out\n    sql: select * from src\n    materialize: view\n", "view-kind", 8),
        (
            "  - id: out\n    load: {input: src, to: postgres, connection: wh, table: t,\n"
            "           mode: replace, truncate: true}\n    materialize: view\n",
            "view-truncate",
            8,
        ),
        (
            "  - id: out\n    load: {input: src, to: duckdb, path: w.duckdb, table: t, "
            "mode: replace}\n    materialize: view\n",
            None,
            0,
        ),
    ],
)
def test_validation_refuses_a_view_that_cannot_work(
    write: WritePipeline, project: Path, task: str, code: str | None, line: int
) -> None:
    orders(project, range(3))
    path = write(
        "p.yaml",
        "pipeline: v\ntasks:\n  - id: src\n    extract: {from: files, path: in/orders.parquet}\n"
        "    materialize: table\n" + task + "connections:\n  wh: {kind: postgres, uri: x}\n",
    )
    if code is None:
        validate(path)  # raises on an error
        return
    with pytest.raises(PipelineInvalid) as refused:
        validate(path)
    problems = [p for p in refused.value.problems if p.severity == "error"]
    assert [p.code for p in problems] == [code]
    assert f"p.yaml:{line}" in problems[0].format()
    if code == "view-mode":  # the user wrote no mode: the message says it is the default
        assert "a load's mode is append unless it says so" in problems[0].format()


def test_a_view_of_an_ephemeral_extract_is_refused(write: WritePipeline, project: Path) -> None:
    orders(project, range(3))
    path = write(
        "p.yaml",
        "pipeline: v\ntasks:\n  - id: src\n    extract: {from: files, path: in/orders.parquet}\n"
        "    materialize: ephemeral\n"
        "  - id: out\n    load: {input: src, to: duckdb, path: w.duckdb, table: t, "
        "mode: replace}\n    materialize: view\n",
    )
    with pytest.raises(PipelineInvalid) as refused:
        validate(path)
    (problem,) = [p for p in refused.value.problems if p.severity == "error"]
    assert problem.code == "ephemeral-input"
    assert "a load with materialize: view reads kept files, so it cannot" in problem.format()


POSTGRES = """
pipeline: {pipeline}
connections:
  wh: {{kind: postgres, uri: "${{env:TEST_PG_URI}}"}}
tasks:
  - id: src
    extract: {{from: files, path: in/orders.parquet}}
  - id: publish
    load: {{input: src, to: postgres, connection: wh, table: {table}, mode: replace}}
    materialize: {materialize}
"""


def pg_kind(pg: PgSchema, table: str) -> str | None:
    found = pg.rows(f"select relkind::text from pg_class where oid = to_regclass('{table}')")
    return str(found[0][0]) if found else None


def versions(pg: PgSchema) -> list[str]:
    found = pg.rows(
        "select table_name from information_schema.tables where table_schema = "
        f"'{pg.schema}' and table_name like 'orders\\_\\_arrowline\\_%' order by 1"
    )
    return [str(row[0]) for row in found]


def viewed_once(write: WritePipeline, project: Path, pg: PgSchema) -> tuple[str, Path]:
    """`orders` made a view of five rows by a first run; its table and pipeline file."""
    table = pg.table("orders")
    path = write("p.yaml", POSTGRES.format(pipeline=pg.schema, table=table, materialize="view"))
    orders(project, range(5))
    assert run(path).ok
    return table, path


def test_a_postgres_view_switches_to_each_runs_table_and_drops_the_last(
    write: WritePipeline, project: Path, pg: PgSchema
) -> None:
    table = pg.table("orders")
    path = write("p.yaml", POSTGRES.format(pipeline=pg.schema, table=table, materialize="view"))
    orders(project, range(5))
    first = run(path)
    assert first.ok, {k: t.error for k, t in first.tasks.items()}
    assert pg_kind(pg, table) == "v"
    assert pg.rows(f"select count(*), sum(id)::int from {table}") == [(5, 10)]
    (one,) = versions(pg)
    assert first.run_id.lower().replace("-", "_") in one

    orders(project, range(10, 13))
    second = run(path)
    assert second.ok
    assert pg.rows(f"select count(*), sum(id)::int from {table}") == [(3, 33)]
    (two,) = versions(pg)  # the first run's table is gone
    assert two != one
    with CatalogReader(project / ".arrowline" / "catalog.db") as catalog:
        row = catalog.task_run(second.run_id, "publish")
    assert row is not None
    assert row.details is not None
    assert row.details["view"]["dropped"] == [f"{pg.schema}.{one}"]


def test_a_postgres_target_turns_from_table_to_view_and_back(
    write: WritePipeline, project: Path, pg: PgSchema
) -> None:
    table = pg.table("orders")
    orders(project, range(5))
    as_table = write(
        "t.yaml", POSTGRES.format(pipeline=pg.schema, table=table, materialize="table")
    )
    as_view = write("v.yaml", POSTGRES.format(pipeline=pg.schema, table=table, materialize="view"))
    for path, kind in ((as_table, "r"), (as_view, "v"), (as_table, "r"), (as_view, "v")):
        result = run(path)
        assert result.ok, {k: t.error for k, t in result.tasks.items()}
        assert pg_kind(pg, table) == kind
        assert pg.rows(f"select count(*) from {table}") == [(5,)]
        assert len(versions(pg)) == (1 if kind == "v" else 0)  # none left behind


def test_a_long_table_name_gets_distinct_run_tables_within_postgres_limit() -> None:
    from connectors.postgres.views import version_table

    name = "s." + "x" * 60
    first = version_table(name, "20261206T023933Z-b8fd40")
    second = version_table(name, "20261206T023934Z-c9e051")
    assert first != second
    for version in (first, second):
        assert len(version.split(".")[1].encode()) <= 63


def test_the_python_builder_makes_a_view_load(project: Path) -> None:
    from engine import Pipeline

    orders(project, range(6))
    p = Pipeline("built", base_dir=project)
    p.extract("src", path="in/orders.parquet")
    p.load(
        "pub",
        input="src",
        to="duckdb",
        path="out/w.duckdb",
        table="o",
        mode="replace",
        materialize="view",
    )
    result = p.run(project_dir=project)
    assert result.ok, {k: t.error for k, t in result.tasks.items()}
    assert duck_kind(project, "o") == "VIEW"
    assert duck_rows(project, "select count(*) from o") == [(6,)]


def test_a_view_load_never_replaces_a_view_it_did_not_make(
    write: WritePipeline, project: Path
) -> None:
    orders(project, range(8))
    (project / "out").mkdir()
    with duckdb.connect(str(project / "out" / "w.duckdb")) as connection:
        connection.execute("create view by_region as select 42 as answer")
    for materialize in ("view", "table"):
        result = run(write("p.yaml", DUCKDB.format(table="by_region", materialize=materialize)))
        assert not result.ok
        assert "by_region is a view that materialize: view did not make" in (
            result.tasks["publish"].error or ""
        )
    assert duck_rows(project, "select * from by_region") == [(42,)]


def test_a_retried_view_load_that_had_committed_still_names_what_its_view_reads(
    tmp_path: Path,
) -> None:
    """The process died after the commit: the retry finds its load committed and returns
    at once, and must still say which output the view reads, or retention loses it."""
    from connectors.base import ConnectorContext
    from connectors.duckdb.config import DuckDBSink
    from connectors.duckdb.sink import write_duckdb
    from engine.core.tables import InputTable

    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [1, 2]}), path)
    source = InputTable("src", "run-1", (path,), pq.read_schema(path), 2)
    sink = DuckDBSink.model_validate(
        {"input": "src", "to": "duckdb", "path": "w.duckdb", "table": "t", "mode": "replace"}
    )
    context = ConnectorContext(tmp_path, "p", "run-2", "publish")
    first = write_duckdb(source, sink, context, view=True)
    again = write_duckdb(source, sink, context, view=True)
    assert again.details["already_committed"] is True
    assert first.details["view_of"] == again.details["view_of"] == {"task": "src", "run": "run-1"}


@contextmanager
def reader_role(pg: PgSchema) -> Iterator[str]:
    """A role of the test's own (roles outlive schemas), dropped with what it was granted."""
    role = f"{pg.schema}_reader"
    pg.execute(f"drop role if exists {role}", f"create role {role}")
    try:
        yield role
    finally:
        pg.execute(
            f"drop schema {pg.schema} cascade",
            f"create schema {pg.schema}",
            f"drop role if exists {role}",
        )


def reader_grants(pg: PgSchema, role: str) -> list[tuple[object, ...]]:
    return pg.rows(
        "select privilege_type from information_schema.role_table_grants "
        f"where grantee = '{role}' and table_name = 'orders'"
    )


def test_a_postgres_view_keeps_its_grants_and_dependent_views_while_columns_stay(
    write: WritePipeline, project: Path, pg: PgSchema
) -> None:
    table, path = viewed_once(write, project, pg)
    with reader_role(pg) as role:
        pg.execute(
            f"grant usage on schema {pg.schema} to {role}",
            f"grant select on {table} to {role}",
            f"create view {pg.table('report')} as select count(*) as n from {table}",
        )
        orders(project, range(10, 17))
        second = run(path)
        assert second.ok, {k: t.error for k, t in second.tasks.items()}
        assert pg.rows(f"select n from {pg.table('report')}") == [(7,)]
        assert reader_grants(pg, role) == [("SELECT",)]
        assert len(versions(pg)) == 1


def test_a_postgres_view_whose_columns_change_is_made_again(
    write: WritePipeline, project: Path, pg: PgSchema
) -> None:
    table, path = viewed_once(write, project, pg)
    pq.write_table(pa.table({"region": ["n", "s"]}), project / "in" / "orders.parquet")
    second = run(path)
    assert second.ok, {k: t.error for k, t in second.tasks.items()}
    assert pg.rows(f"select * from {table} order by 1") == [("n",), ("s",)]
    assert len(versions(pg)) == 1


def test_a_postgres_view_load_never_replaces_a_view_it_did_not_make(
    write: WritePipeline, project: Path, pg: PgSchema
) -> None:
    table = pg.table("orders")
    pg.execute(f"create view {table} as select 42 as answer")
    orders(project, range(5))
    for materialize in ("view", "table"):
        path = write(
            "p.yaml", POSTGRES.format(pipeline=pg.schema, table=table, materialize=materialize)
        )
        result = run(path)
        assert not result.ok
        assert "is a view that materialize: view did not make" in (
            result.tasks["publish"].error or ""
        )
    assert pg.rows(f"select * from {table}") == [(42,)]


def test_a_postgres_table_name_past_the_limit_is_refused_by_name() -> None:
    from connectors.postgres.views import version_table
    from engine.core.errors import DataError

    with pytest.raises(DataError, match="longer than PostgreSQL's 63 bytes"):
        version_table("s." + "x" * 64, "20261206T023933Z-b8fd40")


def test_a_postgres_view_made_again_for_new_columns_keeps_its_grants(
    write: WritePipeline, project: Path, pg: PgSchema
) -> None:
    table, path = viewed_once(write, project, pg)
    with reader_role(pg) as role:
        pg.execute(f"grant select on {table} to {role}")
        pq.write_table(pa.table({"region": ["n", "s"]}), project / "in" / "orders.parquet")
        assert run(path).ok  # a column fewer: the view is made again
        assert reader_grants(pg, role) == [("SELECT",)]


def test_the_rows_a_dropped_view_left_behind_go_with_the_next_view_load(
    write: WritePipeline, project: Path, pg: PgSchema
) -> None:
    table, path = viewed_once(write, project, pg)
    (left,) = versions(pg)
    pg.execute(f"drop view {table}")  # as the hint of a refused append says
    assert run(path).ok
    (now,) = versions(pg)
    assert now != left


def test_plan_says_a_load_makes_a_view(write: WritePipeline, project: Path) -> None:
    from engine.api.pipeline import plan

    orders(project, range(3))
    path = write("p.yaml", DUCKDB.format(table="by_region", materialize="view"))
    planned = {task.id: task for task in plan(path).tasks}
    assert planned["publish"].describe_output().endswith("#by_region (view)")

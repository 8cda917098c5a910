"""Loads of one incremental extract that committed different watermarks: the extract reads
from the least advanced, and an append load that is ahead gets only the rows past its own, so
it stores no row twice (a load that failed the run before held the extract back). What each
sink held is kept with the extract's output, so a resume sends the same rows; other modes get
every row the extract read."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest

import engine
from engine.api.pipeline import resume, run
from tests.conftest import PgSchema, WritePipeline

T0 = "2024-01-01 10:00:00+00"


def pipeline(pg: PgSchema, materialize: str, lookback: str = "", files_mode: str = "append") -> str:
    extra = f", lookback: {lookback}" if lookback else ""
    return f"""
        pipeline: {pg.schema}
        connections:
          wh: {{kind: postgres, uri: "${{env:TEST_PG_URI}}"}}
        tasks:
          - id: changes
            extract:
              from: postgres
              connection: wh
              table: {pg.table("source")}
              incremental: {{cursor: updated_at, key: [id]{extra}}}
            materialize: {materialize}
          - id: to_pg
            load: {{input: changes, to: postgres, connection: wh, table: {pg.table("target")}, mode: append}}
            retry: {{attempts: 1}}
          - id: to_files
            load: {{input: changes, to: parquet, path: out/changes, mode: {files_mode}}}
    """ + (
        ""
        if materialize == "ephemeral"  # DuckDB reads files, so not from a stream
        else """
          - id: to_duckdb
            load: {input: changes, to: duckdb, path: out/w.duckdb, table: changes, mode: append}
    """
    )


def insert(pg: PgSchema, first: int, last: int) -> None:
    pg.execute(
        f"insert into {pg.table('source')} select g, 'v' || g, "
        f"timestamptz '{T0}' + (g / 2) * interval '1 minute' from generate_series({first}, {last}) g"
    )


def files_ids(project: Path) -> list[int]:
    return sorted(pl.read_parquet(str(project / "out" / "changes" / "*.parquet"))["id"].to_list())


def duckdb_ids(project: Path) -> list[int]:
    with duckdb.connect(str(project / "out" / "w.duckdb"), read_only=True) as connection:
        return [
            row[0] for row in connection.execute("select id from changes order by id").fetchall()
        ]


@pytest.mark.parametrize("materialize", ["table", "ephemeral"])
def test_a_load_that_is_ahead_is_not_sent_what_it_committed(
    write: WritePipeline, pg: PgSchema, project: Path, materialize: str
) -> None:
    """Run 1: the PostgreSQL load fails (its table has a NOT NULL column the rows lack) while
    the Parquet and DuckDB loads commit rows 1-6. Run 2, the table fixed, with rows 7-9 new:
    the extract reads 1-9 for the PostgreSQL load, and the others get 7-9 only. Cursor values
    are shared by pairs of rows, so the key decides ties."""
    pg.execute(f"create table {pg.table('source')} (id int, v text, updated_at timestamptz)")
    pg.execute(
        f"create table {pg.table('target')} (id int, v text, updated_at timestamptz, "
        "blocker int not null)"
    )
    insert(pg, 1, 6)
    path = write("p.yaml", pipeline(pg, materialize))
    first = run(path)
    assert not first.ok
    assert first.tasks["to_files"].rows_out == 6
    assert files_ids(project) == [1, 2, 3, 4, 5, 6]
    if materialize == "table":
        assert duckdb_ids(project) == [1, 2, 3, 4, 5, 6]

    pg.execute(f"alter table {pg.table('target')} drop column blocker")
    insert(pg, 7, 9)
    second = run(path)
    assert second.ok, {k: t.error for k, t in second.tasks.items() if t.error}
    assert second.tasks["changes"].rows_out == 9  # from the failed load's watermark
    assert files_ids(project) == list(range(1, 10))  # nothing twice
    if materialize == "table":
        assert duckdb_ids(project) == list(range(1, 10))
    assert sorted(r[0] for r in pg.rows(f"select id from {pg.table('target')}")) == list(
        range(1, 10)
    )


def test_with_a_lookback_the_rows_are_sent_again(
    write: WritePipeline, pg: PgSchema, project: Path
) -> None:
    """A lookback re-reads rows behind the watermark on purpose (late commits), for loads that
    merge: nothing is held back from any load."""
    pg.execute(f"create table {pg.table('source')} (id int, v text, updated_at timestamptz)")
    pg.execute(
        f"create table {pg.table('target')} (id int, v text, updated_at timestamptz, "
        "blocker int not null)"
    )
    insert(pg, 1, 6)
    path = write("p.yaml", pipeline(pg, "table", lookback="1h"))
    assert not run(path).ok
    pg.execute(f"alter table {pg.table('target')} drop column blocker")
    assert run(path).ok
    assert files_ids(project) == sorted([*range(1, 7), *range(1, 7)])


def blocked_target(pg: PgSchema) -> None:
    """The PostgreSQL target has a NOT NULL column the rows lack: its load fails."""
    pg.execute(f"create table {pg.table('source')} (id int, v text, updated_at timestamptz)")
    pg.execute(
        f"create table {pg.table('target')} (id int, v text, updated_at timestamptz, "
        "blocker int not null)"
    )


def test_a_replace_load_that_is_ahead_gets_every_row_the_extract_read(
    write: WritePipeline, pg: PgSchema, project: Path
) -> None:
    """Replace makes the target exactly this run's rows: none is held back from it."""
    blocked_target(pg)
    insert(pg, 1, 6)
    path = write("p.yaml", pipeline(pg, "table", files_mode="replace"))
    assert not run(path).ok
    pg.execute(f"alter table {pg.table('target')} drop column blocker")
    insert(pg, 7, 9)
    second = run(path)
    assert second.ok
    assert files_ids(project) == list(range(1, 10))
    assert second.tasks["to_files"].rows_out == 9


def test_a_resume_sends_an_ahead_load_what_the_first_attempt_would_have(
    write: WritePipeline, pg: PgSchema, project: Path
) -> None:
    """Run 2 fails at the DuckDB load (its table was made a view the user owns) after the
    extract read rows 1-9 for the PostgreSQL load; the resume reuses that output and must
    still hold back rows 1-6 from DuckDB, which committed them in run 1, by what DuckDB held
    when the extract started (kept in the extract's task details), not by asking again."""
    blocked_target(pg)
    insert(pg, 1, 6)
    path = write("p.yaml", pipeline(pg, "table"))
    assert not run(path).ok
    assert duckdb_ids(project) == [1, 2, 3, 4, 5, 6]
    pg.execute(f"alter table {pg.table('target')} drop column blocker")
    insert(pg, 7, 9)
    database = str(project / "out" / "w.duckdb")
    with duckdb.connect(database) as connection:
        connection.execute("alter table changes rename to kept")
        connection.execute("create view changes as select * from kept")
    second = run(path)
    assert not second.ok
    assert second.tasks["to_duckdb"].error
    assert files_ids(project) == list(range(1, 10))
    with duckdb.connect(database) as connection:
        connection.execute("drop view changes")
        connection.execute("alter table kept rename to changes")
    third = resume(path)
    assert third.ok, {k: t.error for k, t in third.tasks.items() if t.error}
    assert third.tasks["changes"].reused_from == second.run_id
    assert duckdb_ids(project) == list(range(1, 10))
    assert third.tasks["to_duckdb"].rows_in == 9
    assert third.tasks["to_duckdb"].rows_out == 3


def test_a_full_refresh_holds_nothing_back(
    write: WritePipeline, pg: PgSchema, project: Path
) -> None:
    """--full-refresh reads everything and records no sink's watermark: every load gets every
    row (append stores them again, which is what a full refresh into append asks for)."""
    blocked_target(pg)
    insert(pg, 1, 6)
    path = write("p.yaml", pipeline(pg, "table"))
    assert not run(path).ok
    pg.execute(f"alter table {pg.table('target')} drop column blocker")
    third = run(path, full_refresh=True)
    assert third.ok
    assert third.tasks["to_files"].rows_out == 6
    assert files_ids(project) == sorted([*range(1, 7), *range(1, 7)])


def test_a_resume_that_extracts_again_sends_each_load_what_this_run_had_written(
    write: WritePipeline, pg: PgSchema, project: Path
) -> None:
    """Run 2 writes rows 7-9 to Parquet (and DuckDB) and fails at PostgreSQL; the extract is
    then changed, so the resume (--force) runs it and its loads again. The Parquet load of the same run replaces its own parts, so
    it must be sent 7-9 again: what it held before this run (6), not what this run wrote (9),
    decides. DuckDB, which committed them in this run, says so and writes nothing twice."""
    blocked_target(pg)
    insert(pg, 1, 6)
    path = write("p.yaml", pipeline(pg, "table"))
    assert not run(path).ok
    insert(pg, 7, 9)
    assert not run(path).ok
    assert files_ids(project) == list(range(1, 10))
    pg.execute(f"alter table {pg.table('target')} drop column blocker")
    changed = pipeline(pg, "table").replace(
        "incremental:", "columns: [id, v, updated_at]\n              incremental:"
    )
    write("p.yaml", changed)  # the extract changed: the resume runs it, and its loads, again
    third = resume(path, force=True)
    assert third.tasks["changes"].reused_from is None
    assert third.ok, {k: t.error for k, t in third.tasks.items() if t.error}
    assert files_ids(project) == list(range(1, 10))
    assert duckdb_ids(project) == list(range(1, 10))
    assert sorted(r[0] for r in pg.rows(f"select id from {pg.table('target')}")) == list(
        range(1, 10)
    )


def test_a_state_reset_before_a_resume_is_honoured(
    write: WritePipeline, pg: PgSchema, project: Path
) -> None:
    """The extract's output of the failed run recorded DuckDB at 6; the user then emptied the
    table and reset the watermarks to load everything again: the resume must not hold rows
    1-6 back from it."""
    from engine.api.project import Project

    blocked_target(pg)
    insert(pg, 1, 6)
    path = write("p.yaml", pipeline(pg, "table"))
    assert not run(path).ok
    pg.execute(f"alter table {pg.table('target')} drop column blocker")
    insert(pg, 7, 9)
    database = str(project / "out" / "w.duckdb")
    with duckdb.connect(database) as connection:
        connection.execute("alter table changes rename to kept")
        connection.execute("create view changes as select * from kept")
    assert not run(path).ok
    with duckdb.connect(database) as connection:
        connection.execute("drop view changes")
        connection.execute("alter table kept rename to changes")
        connection.execute("delete from changes")
    with Project.find(project) as opened:
        opened.reset_watermarks(path, "changes")
    assert resume(path).ok
    assert duckdb_ids(project) == list(range(1, 10))


def test_a_cursor_arrow_only_approximates_is_not_compared(
    write: WritePipeline, pg: PgSchema, project: Path
) -> None:
    """numeric read as float64: 3.00000000000000001 is past 3 in PostgreSQL and equal to it
    in Arrow, so the Parquet load that is ahead is sent every row again rather than lose it."""
    pg.execute(f"create table {pg.table('source')} (id int, c numeric)")
    pg.execute(f"create table {pg.table('target')} (id int, c float8, blocker int not null)")
    pg.execute(f"insert into {pg.table('source')} values (1, 1), (2, 2), (3, 3)")
    path = write(
        "p.yaml",
        f"""
        pipeline: {pg.schema}
        connections:
          wh: {{kind: postgres, uri: "${{env:TEST_PG_URI}}"}}
        tasks:
          - id: changes
            extract:
              from: postgres
              connection: wh
              table: {pg.table("source")}
              unconstrained_numeric: float64
              incremental: {{cursor: c}}
          - id: to_pg
            load: {{input: changes, to: postgres, connection: wh, table: {pg.table("target")}, mode: append}}
            retry: {{attempts: 1}}
          - id: to_files
            load: {{input: changes, to: parquet, path: out/changes, mode: append}}
        """,
    )
    assert not run(path).ok
    pg.execute(f"alter table {pg.table('target')} drop column blocker")
    pg.execute(f"insert into {pg.table('source')} values (4, 3.00000000000000001), (5, 4)")
    second = run(path)
    assert second.ok
    assert 4 in files_ids(project)
    with engine.open(project) as opened:
        rows = {r.task_id: r for r in opened.catalog.task_runs(second.run_id)}
    assert "numeric in the source" in rows["to_files"].details["rows_sent_again"]

"""Several tables captured through one replication slot (`cdc: {tables: [...]}`), against a
real cluster with wal_level = logical (the fixtures of test_postgres_cdc).

The task becomes one task per table; each table's change log and the copy its changes are
applied to are compared with the source table row for row after every run, and the slot is
checked never to move past a position some table's loads have not committed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import Result

from tests.connectors.test_postgres_cdc import (
    Source,
    logical,
    ok,
    replay,
    run_killed,
    source,
)

__all__ = ["logical", "source"]  # the fixtures, for pytest

Run = Callable[..., Result]

PIPELINE = """
pipeline: shop
connections:
  src: {{kind: postgres, uri: "${{env:CDC_URI}}"}}
tasks:
  - id: shop
    extract: {{from: postgres, connection: src, cdc: {{tables: [{tables}]}}}}
{loads}"""

LOAD = """  - id: {name}_log
    load: {{input: shop__{name}, to: duckdb, path: out.duckdb, table: {name}_log, mode: append}}
  - id: {name}_copy
    load: {{input: shop__{name}, to: duckdb, path: out.duckdb, table: {name}, mode: apply,
           keys: [id]}}
"""

SLOT = "arrowline_shop_shop"


def write(project: Path, *tables: str) -> None:
    loads = "".join(LOAD.format(name=table) for table in tables)
    text = PIPELINE.format(tables=", ".join(f"public.{t}" for t in tables), loads=loads)
    (project / "pipeline.yaml").write_text(text)


def logged(project: Path, table: str) -> list[dict[str, Any]]:
    with duckdb.connect(str(project / "out.duckdb"), read_only=True) as connection:
        relation = connection.sql(f"select * from {table}_log order by _lsn, _seq, _op <> 'delete'")
        return [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]


def held(project: Path, table: str) -> dict[Any, Any]:
    """The copy the apply load keeps, and the replayed log, which must agree: id -> name."""
    with duckdb.connect(str(project / "out.duckdb"), read_only=True) as connection:
        copy = dict(connection.sql(f"select id, name from {table}").fetchall())
    assert {k: v["name"] for k, v in replay(logged(project, table)).items()} == copy
    return copy


def same(source: Source, project: Path, *tables: str) -> None:
    for table in tables:
        assert held(project, table) == dict(source.rows(f"select id, name from {table}")), table


def lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def slots(source: Source) -> list[str]:
    return [
        name
        for (name,) in source.rows(
            f"select slot_name from pg_replication_slots where database = '{source.name}'"
        )
    ]


def make(source: Source, *tables: str, rows: int = 50) -> None:
    for table in tables:
        source.execute(
            f"create table {table} (id bigint primary key, name text)",
            f"insert into {table} select g, '{table}' || g from generate_series(1, {rows}) g",
        )


def change(source: Source, table: str, step: int) -> None:
    source.execute(
        f"update {table} set name = name || '+{step}' where id % 3 = {step % 3}",
        f"delete from {table} where id % 11 = {step % 11}",
        f"insert into {table} values ({100_000 + step}, 'new{step}')",
    )


def test_tables_share_one_slot_and_publication_each_a_task_of_its_own(
    source: Source, project: Path, cli: Run
) -> None:
    make(source, "orders", "customers")
    write(project, "orders", "customers")
    planned = cli("plan", "pipeline.yaml")
    ok(planned)
    assert "shop__orders" in planned.output
    assert "shop__customers" in planned.output
    ok(cli("run", "pipeline.yaml"))
    assert slots(source) == [SLOT]  # one slot, not one per table; no temporary one left
    published = source.rows(
        f"select tablename from pg_publication_tables where pubname = '{SLOT}' order by 1"
    )
    assert published == [("customers",), ("orders",)]
    same(source, project, "orders", "customers")
    assert [c["_op"] for c in logged(project, "orders")] == ["truncate"] + ["snapshot"] * 50
    for step in range(1, 4):
        change(source, "orders", step)
        change(source, "customers", step + 5)
        source.execute(  # one transaction across both tables
            "begin; update orders set name = 'both' where id = 1; "
            "update customers set name = 'both' where id = 1; commit"
        )
        ok(cli("run", "pipeline.yaml"))
        same(source, project, "orders", "customers")
    for table in ("orders", "customers"):  # each table's log holds its own changes only, once
        keys = [(c["_lsn"], c["_seq"]) for c in logged(project, table) if c["_op"] != "snapshot"]
        assert len(keys) == len(set(keys))
    ((confirmed, at_run_end),) = source.rows(
        "select (confirmed_flush_lsn - '0/0'::pg_lsn)::int8, "
        "(pg_current_wal_lsn() - '0/0'::pg_lsn)::int8 from pg_replication_slots"
    )
    last = max(c["_lsn"] for t in ("orders", "customers") for c in logged(project, t))
    assert last < confirmed <= at_run_end  # moved past every committed change


def test_the_slot_waits_for_the_table_whose_loads_have_not_committed(
    source: Source, project: Path, cli: Run
) -> None:
    make(source, "orders", "customers")
    write(project, "orders", "customers")
    ok(cli("run", "pipeline.yaml"))
    change(source, "customers", 1)  # read only by a later run
    change(source, "orders", 2)
    ok(cli("run", "pipeline.yaml", "--select", "shop__orders+"))
    assert held(project, "orders") == dict(source.rows("select id, name from orders"))
    assert held(project, "customers") != dict(source.rows("select id, name from customers"))
    change(source, "orders", 3)
    ok(cli("run", "pipeline.yaml", "--select", "shop__orders+"))
    ok(cli("run", "pipeline.yaml"))  # the customers' changes were kept for it
    same(source, project, "orders", "customers")


def test_a_table_added_to_the_list_starts_from_its_own_snapshot(
    source: Source, project: Path, cli: Run
) -> None:
    make(source, "orders", "customers")
    write(project, "orders")
    ok(cli("run", "pipeline.yaml"))
    change(source, "orders", 1)
    change(source, "customers", 2)  # before the table is captured: in its snapshot
    ok(cli("run", "pipeline.yaml"))
    write(project, "orders", "customers")
    change(source, "orders", 4)
    ok(cli("run", "pipeline.yaml"))  # customers: added to the publication, a snapshot
    assert slots(source) == [SLOT]
    same(source, project, "orders", "customers")
    change(source, "orders", 5)
    change(source, "customers", 6)
    ok(cli("run", "pipeline.yaml"))
    same(source, project, "orders", "customers")
    ok(cli("state", "reset", "shop", "shop__customers", "--yes"))  # one table over again
    change(source, "orders", 7)
    change(source, "customers", 8)
    ok(cli("run", "pipeline.yaml"))
    assert slots(source) == [SLOT]  # the shared slot kept: orders read on from it
    same(source, project, "orders", "customers")
    ok(cli("state", "reset", "shop", "shop", "--yes"))  # the task as written: every table
    change(source, "customers", 9)
    ok(cli("run", "pipeline.yaml"))
    assert [c["_op"] for c in logged(project, "orders")[-3:]] == ["snapshot"] * 3
    same(source, project, "orders", "customers")


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault", ["cdc.before_release", "cdc.changes_read", "cdc.snapshot_read", "duckdb.after_commit"]
)
def test_kill_9_in_a_run_of_several_tables_then_runs_lose_and_duplicate_nothing(
    source: Source, project: Path, fault: str
) -> None:
    make(source, "orders", "customers", rows=5000)
    write(project, "orders", "customers")

    def run(with_fault: str | None) -> None:
        run_killed(project, with_fault)

    if fault == "cdc.snapshot_read":
        run(fault)
    else:
        run(None)
        change(source, "orders", 1)
        change(source, "customers", 2)
        run(fault)
    change(source, "orders", 3)
    change(source, "customers", 4)
    run(None)
    run(None)
    same(source, project, "orders", "customers")
    for table in ("orders", "customers"):
        keys = [(c["_lsn"], c["_seq"]) for c in logged(project, table) if c["_op"] != "snapshot"]
        assert len(keys) == len(set(keys)), table


@pytest.mark.parametrize(
    ("extract", "said"),
    [
        (
            "{from: postgres, connection: src, query: 'select 1', cdc: {tables: [a]}}",
            "takes no 'query'",
        ),
        (
            "{from: postgres, connection: src, columns: [id], cdc: {tables: [a]}}",
            "'columns' belongs to one table",
        ),
        ("{from: postgres, connection: src, cdc: {tables: [a, a]}}", "names 'a' twice"),
        (
            "{from: postgres, connection: src, cdc: {tables: [x.a, y.a]}}",
            "would both be <task>__a",
        ),
        ("{from: postgres, connection: src, cdc: {tables: ['x.a-b']}}", "letters"),
        ("{from: postgres, connection: src, cdc: {tables: []}}", "at least 1"),
        (
            "{from: postgres, connection: src, table: b, cdc: {tables: [a]}}",
            "is not one of cdc.tables",
        ),
    ],
)
def test_a_tables_list_that_cannot_work_is_refused_where_it_is_written(
    project: Path, cli: Run, extract: str, said: str
) -> None:
    (project / "pipeline.yaml").write_text(
        "pipeline: bad\nconnections:\n  src: {kind: postgres, uri: 'postgresql://h/d'}\n"
        f"tasks:\n  - id: cap\n    extract: {extract}\n"
    )
    result = cli("validate", "pipeline.yaml")
    assert result.exit_code != 0
    assert said in result.output
    assert "pipeline.yaml:6" in result.output


def test_a_task_a_table_would_become_must_not_take_an_existing_id(project: Path, cli: Run) -> None:
    (project / "pipeline.yaml").write_text(
        "pipeline: bad\nconnections:\n  src: {kind: postgres, uri: 'postgresql://h/d'}\n"
        "tasks:\n"
        "  - id: shop__orders\n    extract: {from: postgres, connection: src, table: orders}\n"
        "  - id: shop\n    extract: {from: postgres, connection: src,\n"
        "              cdc: {tables: [orders, customers]}}\n"
    )
    result = cli("validate", "pipeline.yaml")
    assert result.exit_code != 0
    line = next(x for x in result.output.splitlines() if "'shop__orders'" in x)
    assert "pipeline.yaml:7" in line  # the task as written
    assert "is taken" in line
    assert "shop__customers" not in result.output  # no clash there


def test_each_table_becomes_a_task_named_by_it_whatever_else_the_list_holds(
    tmp_path: Path,
) -> None:
    from engine.tasks.checks import load_definition

    (tmp_path / "pipeline.yaml").write_text(
        "pipeline: p\nconnections:\n  src: {kind: postgres, uri: 'postgresql://h/d'}\n"
        "tasks:\n  - id: cap\n    retry: {attempts: 5}\n"
        "    extract: {from: postgres, connection: src, batch_bytes: 1048576,\n"
        "              cdc: {tables: [public.orders, sales.items, Customers], "
        "max_changes: 10}}\n"
    )
    definition = load_definition(tmp_path / "pipeline.yaml")
    tasks = definition.spec.tasks
    assert [t.id for t in tasks] == ["cap__orders", "cap__items", "cap__Customers"]
    for task, table in zip(tasks, ["public.orders", "sales.items", "Customers"], strict=True):
        config = task.extract
        assert config is not None
        assert config.table == table  # type: ignore[union-attr]
        assert config.cdc.slot == "arrowline_p_cap"  # type: ignore[union-attr]
        assert config.cdc.publication == "arrowline_p_cap"  # type: ignore[union-attr]
        assert config.cdc.max_changes == 10  # type: ignore[union-attr]
        assert config.batch_bytes == 1 << 20  # type: ignore[union-attr]
        assert task.retry is not None
        assert task.retry.attempts == 5
        assert definition.task_line(task.id) == 5  # said at the task as written


def test_the_example_keeps_copies_of_two_tables_and_status_shows_their_one_slot(
    source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Run
) -> None:
    example = Path(__file__).parents[2] / "examples" / "cdc" / "several_tables.yaml"
    (tmp_path / "pipeline.yaml").write_text(example.read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOURCE_URI", source.uri)
    source.execute(
        "create table orders (id int primary key, customer int, note text)",
        "create table customers (id int primary key, name text)",
        "insert into customers select g, 'c' || g from generate_series(1, 20) g",
        "insert into orders select g, g % 20 + 1, repeat('n', 5000) from generate_series(1, 99) g",
    )
    ok(cli("run", "pipeline.yaml"))
    source.execute(
        "update orders set customer = 1 where id <= 50",  # note: TOASTed, unchanged
        "delete from customers where id > 15",
        "insert into customers values (500, 'late')",
    )
    ok(cli("run", "pipeline.yaml"))
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as connection:
        orders = sorted(connection.sql("select id, customer, note from orders").fetchall())
        customers = sorted(connection.sql("select id, name from customers").fetchall())
    assert orders == sorted(source.rows("select id, customer, note from orders"))
    assert customers == sorted(source.rows("select id, name from customers"))
    status = cli("cdc", "status", "pipeline.yaml", "shop_changes", "--json")  # as written
    ok(status)
    rows = {row["task"]: row for row in json.loads(status.stdout)}
    assert set(rows) == {"shop_changes__orders", "shop_changes__customers"}
    (slot,) = {row["slot"] for row in rows.values()}  # one, named after the task as written
    assert slot.startswith("arrowline_cdc_shop_shop_changes_")
    assert all(row["state"] == "idle" for row in rows.values())
    committed = [lsn(row["committed"]) for row in rows.values()]
    assert {lsn(row["confirmed"]) for row in rows.values()} == {min(committed) + 1}
    traced = cli("lineage", "pipeline.yaml", "customers.name", "--upstream")
    assert "postgres:source#public.customers::name" in traced.stdout
    assert "public.orders" not in traced.stdout


def test_the_task_as_written_selects_every_table_it_stands_for(project: Path, cli: Run) -> None:
    write(project, "orders", "customers")
    (project / "pipeline.yaml").write_text(
        (project / "pipeline.yaml").read_text().replace("${env:CDC_URI}", "postgresql://h/d")
    )
    planned = cli("plan", "pipeline.yaml", "--select", "shop+", "--exclude", "orders_log")
    ok(planned)
    for task in ("shop__orders", "shop__customers", "orders_copy", "customers_log"):
        assert task in planned.stdout
    assert "orders_log" not in planned.stdout
    one = cli("plan", "pipeline.yaml", "--select", "shop__customers+")
    ok(one)
    assert "shop__orders" not in one.stdout


def test_a_resume_loads_a_snapshot_whose_loads_failed_though_another_table_moved_on(
    source: Source, project: Path, cli: Run
) -> None:
    make(source, "orders", "customers")
    loads = LOAD.format(name="orders") + LOAD.format(name="customers").replace(
        "path: out.duckdb", "path: bad/c.duckdb"
    )
    text = PIPELINE.format(tables="public.customers, public.orders", loads=loads)
    (project / "pipeline.yaml").write_text(text)
    (project / "bad").write_text("not a folder")  # the customers' loads fail
    change(source, "orders", 10)
    # One task at a time, customers first: orders reads up to a position past the customers'
    # snapshot, and its loads commit it.
    assert cli("run", "pipeline.yaml", "--max-parallel", "1").exit_code == 1
    (project / "bad").unlink()
    (project / "bad").mkdir()
    change(source, "customers", 2)
    ok(cli("run", "pipeline.yaml", "--resume"))  # loads the snapshot it read
    change(source, "customers", 3)
    change(source, "orders", 4)
    ok(cli("run", "pipeline.yaml"))  # the slot still held the customers' changes since
    same(source, project, "orders")
    with duckdb.connect(str(project / "bad" / "c.duckdb"), read_only=True) as connection:
        copy = dict(connection.sql("select id, name from customers").fetchall())
    assert copy == dict(source.rows("select id, name from customers"))


def test_a_failed_runs_snapshots_stay_resumable_though_later_runs_fail_too(
    source: Source, project: Path, cli: Run
) -> None:
    make(source, "orders", "customers")
    write(project, "orders", "customers")
    with duckdb.connect(str(project / "out.duckdb")) as db:  # every load fails: views
        for table in ("orders_log", "orders", "customers_log", "customers"):
            db.execute(f"create view {table} as select 1 as blocked")
    first = cli("run", "pipeline.yaml")
    assert first.exit_code == 1
    run_id = first.output.split("--resume ")[1].split()[0]
    after_first, _ = source.slot(SLOT) or (0, 0)
    change(source, "orders", 1)
    change(source, "customers", 2)
    source.execute("alter table customers rename to customers_gone")  # its extract fails
    assert cli("run", "pipeline.yaml", "--select", "shop__customers").exit_code == 1
    assert cli("run", "pipeline.yaml").exit_code == 1  # orders reads a new snapshot
    source.execute("alter table customers_gone rename to customers")
    confirmed, _ = source.slot(SLOT) or (0, 0)
    assert confirmed <= after_first  # the first run's snapshots may still be loaded
    with duckdb.connect(str(project / "out.duckdb")) as db:
        for table in ("orders_log", "orders", "customers_log", "customers"):
            db.execute(f"drop view {table}")
    ok(cli("run", "pipeline.yaml", "--resume", run_id))  # loads the first snapshots
    change(source, "orders", 3)
    ok(cli("run", "pipeline.yaml"))  # reads on from them: the slot kept what they need
    same(source, project, "orders", "customers")
    ok(cli("run", "pipeline.yaml"))
    moved, _ = source.slot(SLOT) or (0, 0)
    assert moved > after_first  # all committed: the slot moves on


def test_each_tables_snapshot_reads_in_ranges_when_partitioned(
    source: Source, project: Path, cli: Run
) -> None:
    make(source, "orders", "customers", rows=3000)
    write(project, "orders", "customers")
    text = (project / "pipeline.yaml").read_text()
    (project / "pipeline.yaml").write_text(
        text.replace("cdc: {tables:", "partition: {column: id, count: 3}, cdc: {tables:")
    )
    ok(cli("run", "pipeline.yaml"))
    same(source, project, "orders", "customers")
    from engine.state.reader import CatalogReader

    with CatalogReader(project / ".arrowline" / "catalog.db") as catalog:
        run_id = catalog.run("last").run_id
        streams = [catalog.task_run(run_id, f"shop__{t}") for t in ("orders", "customers")]
    assert [(row.details or {}).get("streams") for row in streams if row] == [3, 3]
    for table in ("orders", "customers"):
        snapshot = [r for r in logged(project, table) if r["_op"] == "snapshot"]
        assert len(snapshot) == 3000  # every row once, from its three ranges
    change(source, "orders", 1)
    change(source, "customers", 2)
    ok(cli("run", "pipeline.yaml"))
    same(source, project, "orders", "customers")


def test_a_slot_no_table_needs_forgets_all_it_holds(source: Source, project: Path) -> None:
    from connectors.base import ConnectorContext
    from connectors.postgres.cdc.source import release
    from connectors.postgres.config import PostgresConnection, PostgresSource
    from connectors.postgres.connection import resolve

    make(source, "orders")
    source.execute(f"select pg_create_logical_replication_slot('{SLOT}', 'pgoutput')")
    change(source, "orders", 1)
    confirmed, current = source.slot(SLOT) or (0, 0)
    assert current > confirmed
    config = PostgresSource.model_validate(
        {
            "from": "postgres",
            "connection": "src",
            "table": "public.orders",
            "cdc": {"tables": ["public.orders"], "slot": SLOT},
        }
    )
    server = resolve("src", PostgresConnection(kind="postgres", uri=source.uri), project)
    ctx = ConnectorContext(project, "shop", "r1", "shop__orders", connections={"src": server})
    release(config, ctx, None)  # none of its tables committed or has output to load
    after, _ = source.slot(SLOT) or (0, 0)
    assert after >= current


def test_max_changes_counts_a_tables_own_changes_so_one_ahead_still_moves(
    source: Source, project: Path, cli: Run
) -> None:
    make(source, "orders", "customers")
    write(project, "orders", "customers")
    ok(cli("run", "pipeline.yaml"))
    for i in range(60):  # the slot stays behind these while only orders is read
        source.execute(f"insert into customers values ({1000 + i}, 'c')")
    ok(cli("run", "pipeline.yaml", "--select", "shop__orders+"))
    (project / "pipeline.yaml").write_text(
        (project / "pipeline.yaml")
        .read_text()
        .replace("cdc: {tables:", "cdc: {max_changes: 20, tables:")
    )
    source.execute("insert into orders values (99999, 'late')")
    first = cli("run", "pipeline.yaml")
    ok(first)
    assert 99999 in held(project, "orders")  # not starved by the customers' backlog
    assert "shop__customers: stopped at max_changes (20)" in first.stderr
    assert len(held(project, "customers")) == 50 + 20  # bounded, at a transaction's end
    for _ in range(3):
        ok(cli("run", "pipeline.yaml"))
    same(source, project, "orders", "customers")


def test_a_load_that_reads_the_task_as_written_is_told_which_tasks_it_became(
    project: Path, cli: Run
) -> None:
    write(project, "orders", "customers")
    text = (project / "pipeline.yaml").read_text().replace("${env:CDC_URI}", "postgresql://h/d")
    text += "  - id: all\n    load: {input: shop, to: duckdb, path: o.duckdb, table: x}\n"
    (project / "pipeline.yaml").write_text(text)
    result = cli("validate", "pipeline.yaml")
    assert result.exit_code != 0
    said = " ".join(result.output.split())
    assert "Did you mean one of 'shop__customers', 'shop__orders'?" in said


def test_a_table_missing_at_the_source_fails_its_own_task_alone(
    source: Source, project: Path, cli: Run
) -> None:
    make(source, "orders")
    write(project, "orders", "customers")
    result = cli("run", "pipeline.yaml")
    assert result.exit_code == 1
    assert "✗ shop__customers" in result.output
    assert "table 'public.customers' does not exist" in result.output
    assert "✗ shop__orders" not in result.output
    same(source, project, "orders")
    make(source, "customers")
    ok(cli("run", "pipeline.yaml"))
    same(source, project, "orders", "customers")


def test_two_tasks_that_name_one_slot_are_refused_unless_they_are_one_tasks_tables(
    project: Path, cli: Run
) -> None:
    head = "pipeline: p\nconnections:\n  src: {kind: postgres, uri: 'postgresql://h/d'}\ntasks:\n"
    single = (
        "  - id: one\n    extract: {from: postgres, connection: src, table: a, cdc: {slot: s}}\n"
    )
    group = "  - id: many\n    extract: {from: postgres, connection: src, cdc: {slot: s, tables: [b, c]}}\n"
    (project / "pipeline.yaml").write_text(head + single + group)
    result = cli("validate", "pipeline.yaml")
    assert result.exit_code != 0
    said = " ".join(result.output.split())
    assert "replication slot 's' of connection 'src' is read by task" in said
    assert "pipeline.yaml:6" in said  # the single task's extract
    (project / "pipeline.yaml").write_text(head + group)  # the tables of one task share it
    ok(cli("validate", "pipeline.yaml"))

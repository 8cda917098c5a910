"""Loading into PostgreSQL: append, replace, merge, table creation and schema evolution."""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from connectors.base import ConnectorContext, SinkResult
from connectors.postgres.config import PostgresConnection, PostgresSink
from connectors.postgres.connection import resolve
from connectors.postgres.sink import write_postgres
from engine.core.errors import DataError
from engine.core.tables import InputTable
from tests.conftest import PgSchema, at_once


def table_input(tmp_path: Path, data: pa.Table, name: str = "in") -> InputTable:
    path = tmp_path / f"{name}.parquet"
    pq.write_table(data, path)
    return InputTable("t", "r", (path,), pq.read_schema(path), data.num_rows)


def load(
    pg: PgSchema,
    tmp_path: Path,
    data: pa.Table,
    name: str = "in",
    run_id: str | None = None,
    view: bool = False,
    **config: object,
) -> SinkResult:
    """One load (with `view`, materialize: view); each call is a new run unless `run_id` says
    otherwise."""
    server = resolve("wh", PostgresConnection(kind="postgres", uri=pg.uri), tmp_path)
    sink = PostgresSink.model_validate(
        {"input": "t", "to": "postgres", "connection": "wh", **config}
    )
    run = run_id or uuid.uuid4().hex
    ctx = ConnectorContext(tmp_path, pg.schema, run, "load", connections={"wh": server})
    return write_postgres(table_input(tmp_path, data, name), sink, ctx, view=view)


def columns(pg: PgSchema, table: str) -> list[tuple[object, ...]]:
    return pg.rows(
        "select a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull from pg_attribute a "
        f"where a.attrelid = '{table}'::regclass and a.attnum > 0 and not a.attisdropped order by a.attnum"
    )


ROWS = pa.table(
    {
        "id": pa.array([1, 2, 3], pa.int64()),
        "amount": pa.array([Decimal("1.50"), Decimal("2.25"), None], pa.decimal128(12, 2)),
        "name": ["a", "b", None],
        "tags": pa.array([["x"], [], None], pa.list_(pa.string())),
        "uid": pa.array([uuid.uuid4().bytes for _ in range(3)], pa.uuid()),
        "doc": pa.array(['{"k": 1}', "[]", None], pa.json_()),
    }
)


def test_append_creates_the_table_with_mapped_types_and_key(pg: PgSchema, tmp_path: Path) -> None:
    table = pg.table("orders")
    result = load(pg, tmp_path, ROWS, table=table, keys=["id"])
    assert result.rows == 3
    assert result.details["created"] is True
    assert columns(pg, table) == [
        ("id", "bigint", True),
        ("amount", "numeric(12,2)", False),
        ("name", "text", False),
        ("tags", "text[]", False),
        ("uid", "uuid", False),
        ("doc", "jsonb", False),
    ]
    assert pg.rows(f"select id, amount, doc->>'k' from {table} order by id") == [
        (1, "1.50", "1"),
        (2, "2.25", None),
        (3, None, None),
    ]
    keys = pg.rows(
        f"select count(*) from pg_index where indrelid = '{table}'::regclass and indisprimary"
    )
    assert keys == [(1,)]


def test_append_converts_to_the_columns_wire_types(pg: PgSchema, tmp_path: Path) -> None:
    table = pg.table("typed")
    pg.execute(
        f"create table {table} (n bigint, r double precision, t varchar(10), at timestamptz)"
    )
    data = pa.table(
        {
            "n": pa.array([1], pa.int32()),
            "r": pa.array([1.5], pa.float32()),
            "t": pa.array(["x"], pa.large_string()),
            "at": pa.array([0], pa.timestamp("us")),
        }
    )
    result = load(pg, tmp_path, data, table=table)
    assert "staged" not in result.details  # straight COPY, no stage
    assert pg.rows(f"select n, r, t, extract(epoch from at)::int from {table}") == [
        (1, 1.5, "x", 0)
    ]


def test_append_stages_what_copy_cannot_send_and_casts_in_sql(pg: PgSchema, tmp_path: Path) -> None:
    table = pg.table("cast")
    pg.execute(f"create table {table} (u uuid, j jsonb)")
    data = pa.table({"u": ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"], "j": ['{"a": 1}']})
    result = load(pg, tmp_path, data, table=table)
    assert result.details["staged"] is True
    assert pg.rows(f"select u::text, j->>'a' from {table}") == [
        ("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "1")
    ]


def _watch_replace(
    pg: PgSchema, tmp_path: Path, old: str, new: pa.Table
) -> tuple[list[int], SinkResult]:
    """Replace `swap` with `new` while another connection counts its rows in a loop."""
    table = pg.table("swap")
    pg.execute(f"create table {table} as {old}")
    seen: list[int] = []
    stop, watching = threading.Event(), threading.Event()

    def watch() -> None:
        import adbc_driver_postgresql.dbapi as pgdb

        with pgdb.connect(pg.uri, autocommit=True) as connection, connection.cursor() as cursor:
            while not stop.is_set():
                cursor.execute(f"select count(*) from {table}")
                seen.append(cursor.fetchone()[0])
                watching.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert watching.wait(30)  # the reader saw the old table before the load starts
    result = load(pg, tmp_path, new, table=table, mode="replace")
    time.sleep(0.2)
    stop.set()
    watcher.join()
    return seen, result


def test_replace_with_the_same_columns_is_atomic_for_readers(pg: PgSchema, tmp_path: Path) -> None:
    big = pa.table({"id": pa.array(range(50_000), pa.int64())})
    seen, result = _watch_replace(
        pg, tmp_path, "select g::bigint as id from generate_series(1, 1000) g", big
    )
    assert result.details["replace"] == "in_place"
    assert set(seen) <= {1000, 50_000}, "a reader saw a table that was neither old nor new"
    assert seen[0] == 1000
    assert seen[-1] == 50_000


def test_replace_with_new_columns_swaps_in_a_new_table(pg: PgSchema, tmp_path: Path) -> None:
    big = pa.table({"id": pa.array(range(50_000), pa.int64()), "extra": ["x"] * 50_000})
    seen, result = _watch_replace(
        pg, tmp_path, "select g as id from generate_series(1, 1000) g", big
    )
    assert result.details["replace"] == "swap"
    # Never a partial table. A query that waited on the swap's lock may read the new table with
    # its older snapshot and count nothing (PostgreSQL DDL is not MVCC-safe; documented).
    assert set(seen) <= {1000, 0, 50_000}
    assert seen[0] == 1000
    assert seen[-1] == 50_000
    assert [c[0] for c in columns(pg, pg.table("swap"))] == ["id", "extra"]
    assert pg.rows("select count(*) from pg_class where relname like 'swap__arrowline%'") == [(0,)]


def test_replace_twice_with_keys_keeps_one_primary_key(pg: PgSchema, tmp_path: Path) -> None:
    table = pg.table("keyed")
    for round_number in range(3):
        data = pa.table({"id": [1, 2, 3], "v": [f"r{round_number}"] * 3})
        load(pg, tmp_path, data, f"in{round_number}", table=table, mode="replace", keys=["id"])
    assert pg.rows(f"select distinct v from {table}") == [("r2",)]
    keys = pg.rows(
        f"select count(*) from pg_index where indrelid = '{table}'::regclass and indisprimary"
    )
    assert keys == [(1,)]


def test_merge_updates_inserts_and_can_delete_missing(pg: PgSchema, tmp_path: Path) -> None:
    table = pg.table("m")
    first = pa.table({"id": [1, 2, 3], "v": ["a", "b", "c"]})
    load(pg, tmp_path, first, table=table, mode="merge", keys=["id"])
    second = pa.table({"id": [2, 3, 4], "v": ["B", "C", "D"]})
    load(pg, tmp_path, second, "in2", table=table, mode="merge", keys=["id"])
    assert pg.rows(f"select id, v from {table} order by id") == [
        (1, "a"),
        (2, "B"),
        (3, "C"),
        (4, "D"),
    ]
    result = load(
        pg,
        tmp_path,
        pa.table({"id": [4], "v": ["d"]}),
        "in3",
        table=table,
        mode="merge",
        keys=["id"],
        delete_missing=True,
    )
    assert result.details["deleted"] == 3
    assert pg.rows(f"select id, v from {table}") == [(4, "d")]


def test_merge_without_a_unique_index_uses_merge(pg: PgSchema, tmp_path: Path) -> None:
    table = pg.table("nokey")
    pg.execute(f"create table {table} (id int, v text)", f"insert into {table} values (1, 'a')")
    load(
        pg,
        tmp_path,
        pa.table({"id": pa.array([1, 2], pa.int32()), "v": ["A", "b"]}),
        table=table,
        mode="merge",
        keys=["id"],
    )
    assert pg.rows(f"select id, v from {table} order by id") == [(1, "A"), (2, "b")]


def test_merge_refuses_duplicate_and_null_keys_and_changes_nothing(
    pg: PgSchema, tmp_path: Path
) -> None:
    table = pg.table("dup")
    load(pg, tmp_path, pa.table({"id": [1], "v": ["a"]}), table=table, mode="merge", keys=["id"])
    with pytest.raises(
        DataError, match=r"1 merge keys appear more than once in the input, e.g. id=2 \(2 rows\)"
    ):
        load(
            pg,
            tmp_path,
            pa.table({"id": [1, 2, 2], "v": ["x", "y", "z"]}),
            "in2",
            table=table,
            mode="merge",
            keys=["id"],
        )
    with pytest.raises(
        DataError, match=r"merge keys must not be NULL, but some are \(id: 1 rows\)"
    ):
        load(
            pg,
            tmp_path,
            pa.table({"id": pa.array([None, 5], pa.int64()), "v": ["x", "y"]}),
            "in3",
            table=table,
            mode="merge",
            keys=["id"],
        )
    assert pg.rows(f"select id, v from {table}") == [(1, "a")]


def test_schema_change_policies(pg: PgSchema, tmp_path: Path) -> None:
    table = pg.table("evolving")
    pg.execute(f"create table {table} (id integer not null, name text, note text)")
    wider = pa.table(
        {"id": pa.array([1], pa.int64()), "name": ["a"], "note": ["n"], "score": [1.5]}
    )
    with pytest.raises(DataError, match="does not fit table") as refused:
        load(pg, tmp_path, wider, table=table, schema_change="freeze")
    assert "column 'id' integer -> bigint" in refused.value.message
    assert "new column 'score' (double precision)" in refused.value.message
    result = load(pg, tmp_path, wider, table=table)  # fail_on_breaking: additive changes go in
    assert {c["change"] for c in result.details["schema_changes"]} == {"added", "widened"}
    assert ("id", "bigint", True) in columns(pg, table)
    assert ("score", "double precision", False) in columns(pg, table)

    fewer = pa.table({"id": pa.array([2], pa.int64()), "name": ["b"]})
    with pytest.raises(DataError, match="column 'note' \\(text\\) is not in the input") as info:
        load(pg, tmp_path, fewer, "in2", table=table, schema_change="fail")
    assert "schema_change: evolve" in (info.value.hint or "")
    load(pg, tmp_path, fewer, "in3", table=table, schema_change="evolve")
    assert pg.rows(f"select id, note from {table} order by id") == [(1, "n"), (2, None)]

    without_id = pa.table({"name": ["c"]})
    with pytest.raises(DataError, match="evolve cannot fill NOT NULL columns"):
        load(pg, tmp_path, without_id, "in4", table=table, schema_change="evolve")
    wrong = pa.table({"id": ["not a number"], "name": ["d"], "note": ["x"], "score": [0.0]})
    with pytest.raises(DataError, match="column 'id' is bigint, the input has text"):
        load(pg, tmp_path, wrong, "in5", table=table, schema_change="evolve")
    assert pg.rows(f"select count(*) from {table}") == [(2,)]


def test_loading_the_same_run_twice_does_not_duplicate_rows(pg: PgSchema, tmp_path: Path) -> None:
    """The ledger row committed with the data makes a repeated load of one run a no-op: what a
    resumed run does when the process died after the commit and before the catalog knew."""
    table = pg.table("ledgered")
    first = load(pg, tmp_path, ROWS, run_id="run-a", table=table)
    again = load(pg, tmp_path, ROWS, run_id="run-a", table=table)
    assert first.rows == again.rows == 3
    assert again.details["already_committed"] is True
    assert pg.rows(f"select count(*) from {table}") == [(3,)]
    other = load(pg, tmp_path, ROWS, run_id="run-b", table=table)  # a new run appends
    assert "already_committed" not in other.details
    assert pg.rows(f"select count(*) from {table}") == [(6,)]
    assert pg.rows(
        "select run_id, rows from arrowline_state.loads "
        f"where pipeline = '{pg.schema}' order by run_id"
    ) == [("run-a", 3), ("run-b", 3)]


def test_replace_in_place_can_truncate_and_leave_no_dead_rows(pg: PgSchema, tmp_path: Path) -> None:
    data = pa.table({"id": pa.array(range(20_000), pa.int64())})
    sizes = {}
    for truncate in (False, True):
        table = pg.table(f"t_{truncate}".lower())
        for round_number in range(3):
            result = load(
                pg,
                tmp_path,
                data,
                f"in{round_number}",
                table=table,
                mode="replace",
                truncate=truncate,
            )
        assert result.details["replace"] == "in_place"
        assert pg.rows(f"select count(*), sum(id)::bigint from {table}") == [
            (20_000, sum(range(20_000)))
        ]
        sizes[truncate] = int(pg.rows(f"select pg_relation_size('{table}')")[0][0])  # type: ignore[call-overload]
    # DELETE keeps the two earlier rounds' rows in the heap until vacuum; TRUNCATE keeps none
    assert sizes[True] * 1.5 < sizes[False]  # 3x here; 2x even if autovacuum ran between rounds


def test_truncate_is_refused_outside_replace(pg: PgSchema, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="truncate applies to mode: replace"):
        load(pg, tmp_path, ROWS, table=pg.table("x"), mode="append", truncate=True)


@pytest.fixture
def fresh_database(pg_uri: str) -> Iterator[Callable[[], str]]:
    """new() -> the URI of a database created just now: no arrowline_state, no schemas."""
    import adbc_driver_postgresql.dbapi as pgdb

    created: list[str] = []

    def admin(statement: str) -> None:
        with pgdb.connect(pg_uri, autocommit=True) as connection, connection.cursor() as cursor:
            cursor.execute(statement)

    def new() -> str:
        name = f"fresh_{uuid.uuid4().hex[:12]}"
        admin(f"create database {name}")
        created.append(name)
        return pg_uri.rsplit("/", 1)[0] + "/" + name

    yield new
    for name in created:
        admin(f"drop database if exists {name} with (force)")


def test_parallel_first_loads_into_a_new_database_both_commit(
    fresh_database: Callable[[], str], tmp_path: Path
) -> None:
    data = pa.table({"id": [1, 2, 3]})
    for round_ in range(10):
        uri = fresh_database()
        server = resolve("wh", PostgresConnection(kind="postgres", uri=uri), tmp_path)
        a, b = (
            functools.partial(
                write_postgres,
                table_input(tmp_path, data, f"{task}-{round_}"),
                PostgresSink.model_validate(
                    {"input": "t", "to": "postgres", "connection": "wh", "table": f"new.{task}"}
                ),
                ConnectorContext(tmp_path, "p", "r", task, connections={"wh": server}),
            )
            for task in ("a", "b")
        )
        outcomes = at_once(a, b)
        assert not [o for o in outcomes if isinstance(o, BaseException)], (round_, outcomes)
        loads = PgSchema(uri, "new").rows("select task, rows from arrowline_state.loads order by 1")
        assert loads == [("a", 3), ("b", 3)]


@pytest.mark.parametrize("materialize", ["table", "view"])
def test_a_replace_enforces_only_a_schema_change_policy_the_task_sets(
    pg: PgSchema, tmp_path: Path, materialize: str
) -> None:
    """Replace makes the table exactly the input, whatever its shape, unless the task writes a
    policy down: then what the policy refuses fails the load and the table stays as it was."""
    table = pg.table("shaped")
    first = pa.table({"id": pa.array([1], pa.int64()), "note": ["n"]})
    load(pg, tmp_path, first, table=table, mode="replace")
    fewer = pa.table({"id": pa.array([2], pa.int64())})
    view = materialize == "view"
    with pytest.raises(DataError, match="column 'note' \\(text\\) is not in the input"):
        load(
            pg, tmp_path, fewer, "in2", view=view, table=table, mode="replace", schema_change="fail"
        )
    assert pg.rows(f"select id, note from {table}") == [(1, "n")]
    result = load(pg, tmp_path, fewer, "in3", view=view, table=table, mode="replace")  # unsaid
    assert pg.rows(f"select * from {table}") == [(2,)]
    assert "schema_changes" not in result.details

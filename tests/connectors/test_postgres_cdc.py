"""Change data capture from PostgreSQL against a real cluster with wal_level = logical.

The server the other tests use runs with wal_level = replica, so this module starts its own
cluster; each test gets a database of its own (slots and publications live in one). A change
log loaded into DuckDB is replayed (`replay`) and compared with the source table row for row:
that is what "lost nothing, duplicated nothing" means for a change stream.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import Result

from tests.conftest import PgSchema
from tests.pg import Cluster, throwaway_server

Run = Callable[..., Result]


@pytest.fixture(scope="module")
def logical() -> Iterator[Cluster]:
    with throwaway_server(settings={"wal_level": "logical", "max_wal_senders": "20"}) as cluster:
        yield cluster


class Source:
    """A database of its own on the logical cluster."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.uri = cluster.uri.rsplit("/", 1)[0] + "/" + name

    def execute(self, *statements: str, uri: str | None = None) -> None:
        import psycopg

        with psycopg.connect(uri or self.uri, autocommit=True) as connection:
            for statement in statements:
                connection.execute(statement)  # type: ignore[arg-type]

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.uri, autocommit=True) as connection:
            return list(connection.execute(sql).fetchall())  # type: ignore[arg-type]

    def slot(self, name: str) -> tuple[int, int] | None:
        """(confirmed position, current WAL position) of a slot, as integers."""
        found = self.rows(
            "select (confirmed_flush_lsn - '0/0'::pg_lsn)::int8, "
            "(pg_current_wal_lsn() - '0/0'::pg_lsn)::int8 "
            f"from pg_replication_slots where slot_name = '{name}'"
        )
        return (int(found[0][0]), int(found[0][1])) if found else None


@pytest.fixture
def source(
    logical: Cluster, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Source]:
    name = "d_" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]
    made = Source(logical, name)
    admin = logical.uri
    made.execute(
        f"drop database if exists {name} with (force)", f"create database {name}", uri=admin
    )
    monkeypatch.setenv("CDC_URI", made.uri)
    yield made
    made.execute(
        "select pg_drop_replication_slot(slot_name) from pg_replication_slots "
        f"where database = '{name}' and not active",
        f"drop database if exists {name} with (force)",
        uri=admin,
    )


PIPELINE = """
pipeline: {name}
connections:
  src: {{kind: postgres, uri: "${{env:CDC_URI}}"}}
tasks:
  - id: changes
    extract: {{from: postgres, connection: src, table: {table}, cdc: {cdc}}}
  - id: store
    load: {{input: changes, to: duckdb, path: out.duckdb, table: log, mode: append}}
  - id: mirror
    load: {{input: changes, to: duckdb, path: out.duckdb, table: mirror, mode: apply, keys: [id]}}
"""


def write_pipeline(
    project: Path, name: str, table: str = "items", cdc: str = "{}", *, apply: bool = True
) -> Path:
    """The change log (`log`, appended) and, with `apply`, the table kept by applying the
    changes (`mirror`), both in out.duckdb."""
    text = PIPELINE.format(name=name, table=table, cdc=cdc)
    if not apply:
        text = text[: text.index("  - id: mirror")]
    path = project / "pipeline.yaml"
    path.write_text(text)
    return path


def log(project: Path, where: str = "true") -> list[dict[str, Any]]:
    with duckdb.connect(str(project / "out.duckdb"), read_only=True) as connection:
        relation = connection.sql(  # a key-changing update: the old key's delete first
            f"select * from log where {where} order by _lsn, _seq, _op <> 'delete'"
        )
        names = relation.columns
        return [dict(zip(names, row, strict=True)) for row in relation.fetchall()]


def ok(result: Result) -> None:
    assert result.exit_code == 0, result.output + result.stderr


def mirror(project: Path, columns: str) -> dict[Any, tuple[Any, ...]]:
    """The table the apply load keeps: id -> the other columns named."""
    with duckdb.connect(str(project / "out.duckdb"), read_only=True) as connection:
        rows = connection.sql(f"select id, {columns} from mirror").fetchall()
    return {row[0]: row[1:] for row in rows}


def same_as_source(source: Source, project: Path, column: str) -> dict[Any, Any]:
    """The change log replayed and the table the apply load keeps both hold the source
    table's rows (id -> `column`); those rows."""
    current = dict(source.rows(f"select id, {column} from items"))
    assert {k: v[column] for k, v in replay(log(project)).items()} == current
    assert {k: v[0] for k, v in mirror(project, column).items()} == current
    return current


def replay(changes: list[dict[str, Any]], key: str = "id") -> dict[Any, dict[str, Any]]:
    """The table a change log describes: each change applied in order, an unchanged TOASTed
    value kept from the row before."""
    table: dict[Any, dict[str, Any]] = {}
    for change in changes:
        if change["_op"] == "truncate":
            table.clear()
        elif change["_op"] == "delete":
            table.pop(change[key], None)
        else:
            row = {k: v for k, v in change.items() if not k.startswith("_")}
            for column in change["_unchanged_toast"] or []:
                row[column] = table[change[key]][column]
            table[change[key]] = row
    return table


def test_the_first_run_reads_a_snapshot_typed_as_the_extract_then_each_change_in_order(
    source: Source, project: Path, cli: Run
) -> None:
    source.execute(
        "create type mood as enum ('calm', 'busy')",
        "create table items (id bigint primary key, qty int, small smallint, price "
        "numeric(12,2), wide numeric(30,10), loose numeric, ratio float8, real4 real, ts "
        "timestamptz, local timestamp, d date, t time, span interval, name text, code "
        "varchar(8), flag bool, tags text[], nums int[], doc jsonb, js json, raw bytea, u uuid, "
        "m mood, big text)",
        "insert into items select g, g, g, g / 3.0, g / 7.0, g / 8.0, g / 11.0, g / 13.0, "
        "'2024-03-01 10:00:00+02'::timestamptz + g * interval '1 hour', "
        "'2024-03-01 10:00:00'::timestamp, date '2024-02-29' + g, time '12:34:56.5', "
        "interval '1 day 2 hours 3.5 seconds' * g, 'n' || g, 'c' || g, g % 2 = 0, "
        "array['a', 'b,c', null, 'q\"z'], array[g, null], jsonb_build_object('k', g), "
        "'[1, 2]', '\\x0102ff', gen_random_uuid(), 'busy', 'small' from generate_series(1, 4) g",
    )
    write_pipeline(project, "types")
    (project / "pipeline.yaml").write_text(
        (project / "pipeline.yaml").read_text()
        + "  - id: plain\n    extract: {from: postgres, connection: src, table: items}\n"
        "  - id: keep\n    load: {input: plain, to: duckdb, path: out.duckdb, table: plain}\n"
    )
    ok(cli("run", "pipeline.yaml"))
    with duckdb.connect(str(project / "out.duckdb"), read_only=True) as connection:
        described = connection.sql("describe log").fetchall()
        plain = connection.sql("describe plain").fetchall()
        assert described[: len(plain)] == plain  # the same columns, the same types
        assert [row[0] for row in described[len(plain) :]] == [
            "_op", "_lsn", "_seq", "_xid", "_commit_ts", "_unchanged_toast",
        ]  # fmt: skip
        columns = ", ".join(row[0] for row in plain)
        assert (
            connection.sql(
                f"(select {columns} from log where _op = 'snapshot' except all "
                f"select * from plain) union all (select * from plain except all "
                f"select {columns} from log where _op = 'snapshot')"
            ).fetchall()
            == []
        )
    snapshot = log(project)
    assert [row["_op"] for row in snapshot] == ["truncate"] + ["snapshot"] * 4  # replaces
    # Each kind of change, a TOASTed value an update leaves alone, a transaction of several.
    source.execute(
        "update items set big = repeat(md5('x'), 20000) where id = 1",
        "insert into items (id, qty, price, ts, tags, nums, doc, raw, u, span, t) values "
        "(9, 9, 1.25, '2024-01-01 00:00:00+05', '{}', '{7}', 'null', '\\x', "
        "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '-1 mon 2 days', '23:59:59.999999')",
        "begin; update items set qty = 100 where id = 1; delete from items where id = 2; "
        "update items set name = 'first' where id = 3; update items set name = 'second' "
        "where id = 3; commit",
    )
    ok(cli("run", "pipeline.yaml"))
    changes = log(project, "_op <> 'snapshot'")[1:]  # after the snapshot's truncate
    assert [(c["_op"], c["id"]) for c in changes] == [
        ("update", 1), ("insert", 9), ("update", 1), ("delete", 2), ("update", 3),
        ("update", 3),
    ]  # fmt: skip
    assert changes[2]["_unchanged_toast"] == ["big"]
    assert changes[2]["big"] is None
    assert changes[2]["qty"] == 100
    assert len({c["_xid"] for c in changes[2:]}) == 1  # one transaction, in order
    assert [c["_seq"] for c in changes[2:]] == [0, 1, 2, 3]
    assert changes[3]["qty"] is None  # a delete carries the key
    inserted = changes[1]
    assert str(inserted["price"]) == "1.25"
    assert inserted["nums"] == [7]
    assert inserted["ts"].isoformat() == "2023-12-31T19:00:00+00:00"
    assert str(inserted["u"]) == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert inserted["raw"] == b""
    assert inserted["tags"] == []
    assert str(inserted["t"]) == "23:59:59.999999"
    assert inserted["span"] == -28 * 86_400_000_000  # -1 month (30 days) + 2 days, in µs
    # Replayed, the log is the table; and a truncate empties it.
    current = {row[0]: row[1:] for row in source.rows("select id, qty, name, big from items")}
    replayed = replay(log(project))
    assert {k: (v["qty"], v["name"], v["big"]) for k, v in replayed.items()} == current
    assert mirror(project, "qty, name, big") == current  # the TOASTed value kept, not NULL
    source.execute("truncate items", "insert into items (id, qty) values (5, 5)")
    ok(cli("run", "pipeline.yaml"))
    assert log(project)[-2]["_op"] == "truncate"
    assert list(replay(log(project))) == [5]
    assert mirror(project, "qty") == {5: (5,)}


def test_a_snapshot_taken_while_writers_commit_meets_the_change_stream_exactly(
    source: Source, project: Path, cli: Run
) -> None:
    source.execute(
        "create table items (id bigint primary key, qty int)",
        "insert into items select g, 0 from generate_series(1, 20000) g",
    )
    write_pipeline(project, "racing")
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        import psycopg

        with psycopg.connect(source.uri, autocommit=True) as connection:
            step = 0
            while not stop.is_set():
                step += 1
                connection.execute(
                    "update items set qty = qty + 1 where id = %s", ((step * 7919) % 20000 + 1,)
                )
                connection.execute(
                    "insert into items values (%s, %s) on conflict (id) do update set qty = 0",
                    (20000 + step, step),
                )
                if step % 3 == 0:
                    connection.execute("delete from items where id = %s", (step * 13 % 20000 + 1,))
                written[0] = step

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        ok(cli("run", "pipeline.yaml"))
        ok(cli("run", "pipeline.yaml"))
    finally:
        stop.set()
        thread.join()
    assert written[0] > 50  # the writer ran during the runs
    ok(cli("run", "pipeline.yaml"))
    same_as_source(source, project, "qty")
    keys = [(c["_lsn"], c["_seq"]) for c in log(project, "_op <> 'snapshot'")]
    assert len(keys) == len(set(keys))


def test_each_run_reads_to_a_fixed_position_and_the_slot_follows_the_committed_one(
    source: Source, project: Path, cli: Run
) -> None:
    source.execute("create table items (id bigint primary key, v text)")
    write_pipeline(project, "bounded", cdc="{slot: bounded_slot, max_changes: 30}")
    ok(cli("run", "pipeline.yaml"))
    for i in range(10):  # ten transactions of 10 rows: 12 messages each with begin and commit
        source.execute(
            f"insert into items select g, 'v' from generate_series({i * 10}, {i * 10 + 9}) g"
        )
    counts = []
    for _ in range(5):
        ok(cli("run", "pipeline.yaml"))
        counts.append(len(log(project, "_op = 'insert'")))
        confirmed, _ = source.slot("bounded_slot") or (0, 0)
        with duckdb.connect(str(project / "out.duckdb"), read_only=True) as connection:
            ((position,),) = connection.sql(
                "select value from arrowline_state.watermarks where sink = 'store'"
            ).fetchall()
        assert str(confirmed - 1) in position  # the slot sits just past the committed position
    assert counts[0] < 100
    assert counts[-1] == 100
    assert counts == sorted(counts)
    # With nothing new, the slot still moves to where the run read (it pins no old WAL).
    source.execute(
        "create table other (x int)", "insert into other select generate_series(1, 1000)"
    )
    ok(cli("run", "pipeline.yaml"))
    confirmed, current = source.slot("bounded_slot") or (0, 0)
    assert current - confirmed < 1024
    # A slot that keeps more WAL than max_retained_wal is said so, at the run and in status.
    write_pipeline(project, "bounded", cdc="{slot: bounded_slot, max_retained_wal: 1B}")
    source.execute("insert into items values (1000, 'x')")
    result = cli("run", "pipeline.yaml")
    ok(result)
    assert "more than max_retained_wal (1 B)" in result.stderr
    status = cli("cdc", "status", "pipeline.yaml")
    assert status.exit_code == 1
    assert "retains more than max_retained_wal" in status.stdout


def test_clear_errors_for_a_server_table_or_slot_that_cannot_serve_changes(
    source: Source, project: Path, cli: Run, pg_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    source.execute("create table keyless (v text)", "create table items (id int primary key)")
    write_pipeline(project, "errs", table="keyless")
    result = cli("run", "pipeline.yaml")
    assert result.exit_code == 1
    assert "has no primary key and no replica identity" in result.stderr
    assert "REPLICA IDENTITY FULL" in result.stderr
    write_pipeline(project, "errs")
    ok(cli("run", "pipeline.yaml"))
    status = cli("cdc", "status", "pipeline.yaml", "--json")
    assert status.exit_code == 0
    (row,) = json.loads(status.stdout)
    assert row["state"] == "idle"
    assert row["slot"] == "arrowline_errs_changes"
    high, low = (int(part, 16) for part in row["confirmed"].split("/"))
    assert row["committed"] == f"{high:X}/{low - 1:X}"  # the slot sits just past it
    source.execute("select pg_drop_replication_slot('arrowline_errs_changes')")
    status = cli("cdc", "status", "pipeline.yaml")
    assert status.exit_code == 1
    assert "missing" in status.stdout
    result = cli("run", "pipeline.yaml")
    assert result.exit_code == 1
    assert "replication slot 'arrowline_errs_changes' is gone" in result.stderr
    assert "arrowline state reset" in result.stderr
    # The server the other tests use runs with wal_level = replica.
    monkeypatch.setenv("CDC_URI", pg_uri)
    result = cli("run", "pipeline.yaml", "--full-refresh")
    assert result.exit_code == 1
    assert "change capture needs wal_level = logical" in result.stderr
    assert "runs with wal_level = replica" in result.stderr
    checked = cli("check", "pipeline.yaml")  # said before a run too
    assert checked.exit_code != 0
    assert "change capture needs wal_level = logical" in checked.output, checked.output
    monkeypatch.setenv("CDC_URI", source.uri)
    ok(cli("check", "pipeline.yaml"))


def test_a_slot_moved_past_the_committed_position_is_refused_and_a_reset_starts_over(
    source: Source, project: Path, cli: Run
) -> None:
    source.execute("create table items (id int primary key, v int)")
    write_pipeline(project, "ahead")
    ok(cli("run", "pipeline.yaml"))
    source.execute("insert into items values (1, 1)")
    source.execute(  # someone else consumes the slot
        "select count(*) from pg_logical_slot_get_binary_changes('arrowline_ahead_changes', "
        "null, null, 'proto_version', '1', 'publication_names', 'arrowline_ahead_changes')"
    )
    result = cli("run", "pipeline.yaml")
    assert result.exit_code == 1
    assert "past the position the loads committed" in result.stderr
    refused = cli("state", "reset", "pipeline.yaml", "changes")
    assert refused.exit_code == 2
    assert "pass --yes" in refused.stderr
    ok(cli("state", "reset", "pipeline.yaml", "changes", "--yes"))
    ok(cli("run", "pipeline.yaml"))
    assert [(c["_op"], c["id"]) for c in log(project)][-1] == ("snapshot", 1)


def test_columns_added_and_dropped_at_the_source_reach_the_load_by_its_policy(
    source: Source, project: Path, cli: Run
) -> None:
    source.execute("create table items (id int primary key, a text, b text)")
    write_pipeline(project, "ddl")
    ok(cli("run", "pipeline.yaml"))
    source.execute(
        "insert into items values (1, 'a1', 'b1')",
        "alter table items add column c int",
        "insert into items values (2, 'a2', 'b2', 2)",
    )
    ok(cli("run", "pipeline.yaml"))  # a new column is added to the target
    rows = [(c["id"], c["c"]) for c in log(project, "_op <> 'truncate'")]
    assert rows == [(1, None), (2, 2)]
    source.execute("alter table items drop column b", "insert into items values (3, 'a3', 3)")
    result = cli("run", "pipeline.yaml")
    assert result.exit_code == 1
    assert "'b'" in result.stderr  # named: the target has it, the changes no longer do


FAULTS = [
    ("cdc.snapshot_read", True),
    ("duckdb.after_commit", True),  # the first run: one load committed its snapshot
    ("cdc.changes_read", False),
    ("duckdb.before_commit", False),
    ("duckdb.after_commit", False),
    ("cdc.before_release", False),
    ("postgres.before_commit", False),
    ("postgres.after_commit", False),
    ("postgres.after_commit", True),
]


def run_killed(project: Path, fault: str | None) -> None:
    """`arrowline run pipeline.yaml` in its own process, killed with SIGKILL where it reaches
    the fault point `fault` (None: run to the end, which must succeed)."""
    env = {**os.environ, "ARROWLINE_PROJECT_DIR": str(project)}
    env |= {"ARROWLINE_FAULT": fault} if fault else {}
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "run", "pipeline.yaml"], cwd=project, env=env,
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    if fault is None:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        return
    assert process.stderr is not None
    for line in process.stderr:
        if f"ARROWLINE_FAULT reached {fault}" in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL, f"{fault} was never reached"


@pytest.mark.slow
@pytest.mark.parametrize(("fault", "first"), FAULTS)
def test_kill_9_anywhere_then_runs_lose_and_duplicate_no_change(
    source: Source, project: Path, fault: str, first: bool, request: pytest.FixtureRequest
) -> None:
    source.execute(
        "create table items (id bigint primary key, qty int)",
        "insert into items select g, 0 from generate_series(1, 30000) g",
    )
    write_pipeline(project, "killed", cdc="{}")
    copy: PgSchema | None = None
    if fault.startswith("postgres."):  # a third load, into PostgreSQL, whose commit is killed
        copy = request.getfixturevalue("pg")
        text = (
            (project / "pipeline.yaml")
            .read_text()
            .replace("pipeline: killed", f"pipeline: {copy.schema}")
        )
        text = text.replace(
            "connections:\n", 'connections:\n  wh: {kind: postgres, uri: "${env:TEST_PG_URI}"}\n'
        )
        text += (
            "  - id: pgcopy\n    load: {input: changes, to: postgres, connection: wh, "
            f"table: {copy.table('copy')}, mode: apply, keys: [id]}}\n"
        )
        (project / "pipeline.yaml").write_text(text)

    def run(with_fault: str | None) -> None:
        run_killed(project, with_fault)

    if first:
        run(fault)
    else:
        run(None)
    source.execute(
        "update items set qty = qty + 1 where id % 3 = 0",
        "delete from items where id % 10 = 0",
        "insert into items select g, 1 from generate_series(30001, 31000) g",
    )
    if not first:
        run(fault)
    source.execute("update items set qty = qty + 5 where id % 7 = 0")
    run(None)
    run(None)
    current = same_as_source(source, project, "qty")
    if copy is not None:
        assert dict(copy.rows(f"select id, qty from {copy.table('copy')}")) == current
    keys = [(c["_lsn"], c["_seq"]) for c in log(project, "_op not in ('snapshot', 'truncate')")]
    assert len(keys) == len(set(keys))


_PEAK_OF_RUN = """
import atexit, os, re, runpy, sys

def _report():
    status = open("/proc/self/status").read()
    kb = re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)
    open(os.environ["PEAK_REPORT"], "w").write(kb)

atexit.register(_report)
sys.argv = ["arrowline", *sys.argv[1:]]
runpy.run_module("engine", run_name="__main__")
"""


@pytest.mark.slow
def test_a_million_row_transaction_streams_through_in_bounded_memory(
    source: Source, project: Path, cli: Run
) -> None:
    source.execute("create table items (id bigint primary key, name text, amount numeric(12,2))")
    write_pipeline(project, "giant", apply=False)  # the extract's memory, not DuckDB's
    ok(cli("run", "pipeline.yaml"))
    source.execute(
        "insert into items select g, 'name ' || g, g / 100.0 from generate_series(1, 1000000) g"
    )
    # The run's own peak, read by itself (VmHWM) as it exits: a child's ru_maxrss from wait4
    # starts at its parent's RSS when it was forked, which a pytest worker many tests old puts
    # at ~700 MB whatever the child does.
    report = project / "peak.txt"
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_OF_RUN, "run", "pipeline.yaml"],
        cwd=project,
        env={**os.environ, "ARROWLINE_PROJECT_DIR": str(project), "PEAK_REPORT": str(report)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    peak_mb = int(report.read_text()) / 1024
    assert len(log(project, "_op = 'insert'")) == 1_000_000
    # 388 MB measured (imports ~150 MB, 16 MB batches in flight, the DuckDB load); a
    # transaction held whole would take several times that.
    assert peak_mb < 500, f"peak RSS {peak_mb:.0f} MB for a 1M-row transaction"


def test_cdc_settings_are_checked_where_they_are_written(
    write: Callable[..., Path], cli: Run
) -> None:
    path = write(
        "p.yaml",
        textwrap.dedent(
            """
            pipeline: p
            connections:
              src: {kind: postgres, uri: "postgresql://x@localhost/db"}
            tasks:
              - id: a
                extract: {from: postgres, connection: src, query: "select 1", cdc: {}}
              - id: b
                extract: {from: postgres, connection: src, table: t, cdc: {slot: "Bad-Name"}}
              - id: c
                extract:
                  from: postgres
                  connection: src
                  table: t
                  cdc: {}
                  incremental: {cursor: updated_at}
            """
        ),
    )
    result = cli("validate", str(path))
    assert result.exit_code == 2
    assert "'cdc' reads the changes of a 'table', not of a query" in result.output
    assert "p.yaml:8" in result.output
    assert "Bad-Name" in result.output
    assert "'cdc' and 'incremental' exclude each other" in result.output


def test_apply_into_postgresql_keeps_a_copy_equal_to_the_source(
    source: Source, project: Path, cli: Run, pg: PgSchema
) -> None:
    source.execute(
        "create table items (id int primary key, qty int, price numeric(10,2), big text)",
        "insert into items select g, g, g / 4.0, repeat('s', 10) from generate_series(1, 50) g",
    )
    target = pg.table("copy")
    (project / "pipeline.yaml").write_text(
        textwrap.dedent(
            f"""
            pipeline: {pg.schema}
            connections:
              src: {{kind: postgres, uri: "${{env:CDC_URI}}"}}
              wh: {{kind: postgres, uri: "${{env:TEST_PG_URI}}"}}
            tasks:
              - id: changes
                extract: {{from: postgres, connection: src, table: items, cdc: {{}}}}
              - id: copy
                load: {{input: changes, to: postgres, connection: wh, table: {target},
                        mode: apply, keys: [id]}}
            """
        )
    )

    def same() -> None:
        expected = sorted(source.rows("select id, qty, price::text, big from items"))
        assert sorted(pg.rows(f"select id, qty, price::text, big from {target}")) == expected

    ok(cli("run", "pipeline.yaml"))
    same()
    assert [r[0] for r in pg.rows(
        "select column_name from information_schema.columns where table_schema = "
        f"'{pg.schema}' and table_name = 'copy' order by ordinal_position"
    )] == ["id", "qty", "price", "big"]  # fmt: skip
    source.execute(
        "update items set big = repeat(md5('y'), 30000) where id = 1",
        "update items set qty = -1 where id = 1",  # big left as it was: not sent
        "delete from items where id between 10 and 20",
        "insert into items values (100, 100, 1.5, 'new')",
        "update items set price = price * 2 where id % 7 = 0",
    )
    ok(cli("run", "pipeline.yaml"))
    same()
    source.execute("truncate items", "insert into items values (7, 7, 7, 'seven')")
    ok(cli("run", "pipeline.yaml"))
    same()
    # A target without a unique index on the keys: UPDATE, then INSERT what is missing.
    pg.execute(f"alter table {target} drop constraint copy_pkey")
    source.execute(
        "insert into items select g, g, 1, 'x' from generate_series(200, 210) g",
        "update items set qty = 70 where id = 7",
        "update items set big = repeat(md5('z'), 30000) where id = 200",
        "update items set qty = 0 where id = 200",
    )
    ok(cli("run", "pipeline.yaml"))
    same()


def test_the_example_keeps_a_history_and_a_copy_of_the_source_table(
    source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Run
) -> None:
    example = Path(__file__).parents[2] / "examples" / "cdc" / "pipeline.yaml"
    (tmp_path / "pipeline.yaml").write_text(example.read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOURCE_URI", source.uri)
    source.execute(
        "create table orders (id int primary key, status text, note text)",
        "insert into orders select g, 'new', repeat('n', 5000) from generate_series(1, 100) g",
    )
    ok(cli("run", "pipeline.yaml"))
    source.execute(
        "update orders set status = 'paid' where id <= 50",  # note: TOASTed, unchanged
        "delete from orders where id > 90",
        "insert into orders values (500, 'new', 'short')",
    )
    ok(cli("run", "pipeline.yaml"))
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as connection:
        copy = sorted(connection.sql("select id, status, note from orders").fetchall())
        (history,) = connection.sql("select count(*) from order_history").fetchall()[0]
    assert copy == sorted(source.rows("select id, status, note from orders"))
    assert history == 1 + 100 + 50 + 10 + 1  # the snapshot's truncate, rows, changes
    ok(cli("cdc", "status", "pipeline.yaml"))
    traced = cli("lineage", "pipeline.yaml", "orders.status", "--upstream")
    assert "postgres:source#public.orders::status" in traced.stdout
    made = cli("lineage", "pipeline.yaml", "order_history._op", "--upstream")
    assert "order_changes._op" in made.stdout
    assert "::_op" not in made.stdout  # the change stream's own column, not the table's


def test_a_slot_the_server_invalidated_fails_the_run_and_says_how_to_start_over(
    source: Source, project: Path, cli: Run, logical: Cluster
) -> None:
    source.execute("create table items (id int primary key, v text)")
    write_pipeline(project, "lost", apply=False)
    ok(cli("run", "pipeline.yaml"))
    admin = logical.uri
    source.execute(
        "alter system set max_slot_wal_keep_size = '1MB'", "select pg_reload_conf()", uri=admin
    )
    try:
        for _ in range(4):  # WAL past the limit, in segments the checkpoint may remove
            source.execute(
                "insert into items select g, repeat('x', 500) from generate_series(1, 20000) g "
                "on conflict (id) do update set v = excluded.v",
                "select pg_switch_wal()",
            )
        source.execute("checkpoint", uri=admin)
        assert source.rows(
            "select wal_status from pg_replication_slots where slot_name = 'arrowline_lost_changes'"
        ) == [("lost",)]
        result = cli("run", "pipeline.yaml")
        assert result.exit_code == 1
        assert "was invalidated" in result.stderr
        assert "arrowline state reset" in result.stderr
        status = cli("cdc", "status", "pipeline.yaml")
        assert status.exit_code == 1
        assert "lost" in status.stdout
    finally:
        source.execute(
            "alter system reset max_slot_wal_keep_size", "select pg_reload_conf()", uri=admin
        )
    refused = cli("state", "reset", "pipeline.yaml", "changes")
    assert refused.exit_code == 2
    assert "pass --yes" in refused.stderr
    ok(cli("state", "reset", "pipeline.yaml", "changes", "--yes"))
    ok(cli("run", "pipeline.yaml"))  # a new slot, a new snapshot
    assert len(log(project, "_op = 'snapshot'")) == 20000


def test_a_full_refresh_replaces_what_the_sinks_held_deleted_rows_included(
    source: Source, project: Path, cli: Run
) -> None:
    source.execute(
        "create table items (id int primary key, qty int)",
        "insert into items values (1, 1), (2, 2)",
    )
    write_pipeline(project, "again")
    ok(cli("run", "pipeline.yaml"))
    source.execute("delete from items where id = 2", "insert into items values (3, 3)")
    ok(cli("run", "pipeline.yaml", "--full-refresh"))  # a new slot: the delete is not a change
    same_as_source(source, project, "qty")


def test_a_publication_that_would_drop_changes_or_a_slot_name_that_cannot_be_is_refused(
    source: Source, project: Path, cli: Run
) -> None:
    source.execute(
        "create table items (id int primary key, a text, b text)",
        "create publication narrow for table items (id, a)",
        "create publication filtered for table items where (id > 10)",
        "create publication no_truncate for table items with (publish = 'insert, update, delete')",
    )
    for publication, said in [
        ("narrow", "with no column 'b'"),
        ("filtered", "with a row filter"),
        ("no_truncate", "does not publish every insert, update, delete and truncate"),
    ]:
        write_pipeline(project, "pubs", cdc=f"{{publication: {publication}}}")
        result = cli("run", "pipeline.yaml")
        assert result.exit_code == 1
        assert said in result.stderr
    write_pipeline(project, "pubs", cdc="{slot: 1st}")
    result = cli("validate", "pipeline.yaml")
    assert result.exit_code == 2
    assert "1st" in result.output


def test_a_database_whose_name_needs_quoting_in_the_uri_keeps_its_slot(
    logical: Cluster, project: Path, cli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "cdc my db"
    admin = Source(logical, "postgres")
    admin.execute(f'drop database if exists "{name}" with (force)', f'create database "{name}"')
    spaced = Source(logical, name)
    spaced.uri = logical.uri.rsplit("/", 1)[0] + "/cdc%20my%20db"
    try:
        spaced.execute("create table items (id int primary key)", "insert into items values (1)")
        monkeypatch.setenv("CDC_URI", spaced.uri)
        write_pipeline(project, "spaced", apply=False)
        ok(cli("run", "pipeline.yaml"))
        spaced.execute("insert into items values (2)")
        ok(cli("run", "pipeline.yaml"))  # the slot's database is the connection's
        assert [c["id"] for c in log(project, "_op = 'insert'")] == [2]
    finally:
        admin.execute(
            "select pg_drop_replication_slot(slot_name) from pg_replication_slots "
            f"where database = '{name}'",
            f'drop database if exists "{name}" with (force)',
        )


@pytest.mark.parametrize("identity", ["default", "full"])
def test_an_update_that_changes_the_key_deletes_the_old_one(
    source: Source, project: Path, cli: Run, identity: str
) -> None:
    source.execute(
        "create table items (id int primary key, v text)",
        f"alter table items replica identity {identity}",
        "insert into items values (1, 'a'), (2, 'b'), (3, 'c')",
    )
    write_pipeline(project, f"moved_{identity}")
    ok(cli("run", "pipeline.yaml"))
    source.execute(
        "update items set id = 100 where id = 1",
        "update items set v = 'b2' where id = 2",  # the key stays: no delete
        "begin; update items set id = 300 where id = 3; update items set id = 3 where id = 300; "
        "commit",
    )
    ok(cli("run", "pipeline.yaml"))
    changes = [(c["_op"], c["id"]) for c in log(project, "_op in ('insert', 'update', 'delete')")]
    assert changes == [
        ("delete", 1), ("update", 100), ("update", 2), ("delete", 3), ("update", 300),
        ("delete", 300), ("update", 3),
    ]  # fmt: skip
    same_as_source(source, project, "v")


def test_a_value_change_capture_cannot_type_stops_the_runs_until_its_column_is_left_out(
    source: Source, project: Path, cli: Run
) -> None:
    source.execute("create table items (id int primary key, d date, v text)")
    write_pipeline(project, "special", apply=False)
    ok(cli("run", "pipeline.yaml"))
    source.execute("insert into items values (1, 'infinity', 'a'), (2, '2024-01-01', 'b')")
    for _ in range(2):  # the change stays in the slot: every run stops at it
        result = cli("run", "pipeline.yaml")
        assert result.exit_code == 1
        assert "column 'd': the change holds 'infinity'" in result.stderr
        assert "`columns:`" in result.stderr
    text = (project / "pipeline.yaml").read_text()
    (project / "pipeline.yaml").write_text(
        text.replace("table: items,", "table: items, columns: [id, v],").replace(
            "mode: append}", "mode: append, schema_change: evolve}"
        )
    )
    ok(cli("run", "pipeline.yaml"))
    assert [(c["id"], c["v"]) for c in log(project, "_op = 'insert'")] == [(1, "a"), (2, "b")]


LAKE_LOADS = {
    "delta": "{input: changes, to: delta, path: lake/items, mode: apply, keys: [id]}",
    "iceberg": "{input: changes, to: iceberg, table: lake.items, mode: apply, keys: [id]}",
}


def lake_rows(project: Path, fmt: str) -> list[dict[str, Any]]:
    """The rows of the table a lakehouse apply load keeps, by id."""
    if fmt == "delta":
        from deltalake import DeltaTable

        data = DeltaTable(str(project / "lake" / "items")).to_pyarrow_table()
    else:
        from tests.connectors.test_iceberg import catalog

        opened = catalog(project)
        try:
            data = opened.load_table("lake.items").scan().to_arrow()
        finally:
            opened.engine.dispose()
    return sorted(data.to_pylist(), key=lambda row: row["id"])


@pytest.mark.parametrize("fmt", list(LAKE_LOADS))
def test_apply_into_a_lakehouse_table_keeps_a_copy_of_the_source(
    source: Source, project: Path, cli: Run, fmt: str
) -> None:
    source.execute(
        "create table items (id int primary key, qty int, big text)",
        "insert into items select g, g, 'small' from generate_series(1, 30) g",
    )
    (project / "pipeline.yaml").write_text(
        textwrap.dedent(
            f"""
            pipeline: to_{fmt}
            connections:
              src: {{kind: postgres, uri: "${{env:CDC_URI}}"}}
            tasks:
              - id: changes
                extract: {{from: postgres, connection: src, table: items, cdc: {{}}}}
              - id: lake
                load: {LAKE_LOADS[fmt]}
            """
        )
    )

    def same() -> None:
        rows = lake_rows(project, fmt)
        assert [(r["id"], r["qty"], r["big"]) for r in rows] == sorted(
            source.rows("select id, qty, big from items")
        )
        assert list(rows[0]) == ["id", "qty", "big"]  # no change columns in the table

    ok(cli("run", "pipeline.yaml"))
    same()
    source.execute(
        "update items set big = repeat(md5('d'), 30000) where id = 1",
        "update items set qty = -1 where id = 1",  # big not sent: kept
        "delete from items where id > 25",
        "update items set id = 100 where id = 2",
        "insert into items values (200, 200, 'new')",
    )
    ok(cli("run", "pipeline.yaml"))
    same()
    source.execute("update items set qty = 5 where id = 5")  # no TOASTed value in the batch
    ok(cli("run", "pipeline.yaml"))
    same()
    if fmt == "delta":
        from deltalake import DeltaTable

        versions = len(DeltaTable(str(project / "lake" / "items")).history())
    source.execute("alter table items add column note text", "truncate items")
    source.execute("insert into items values (7, 7, 'seven', 'added')")
    ok(cli("run", "pipeline.yaml"))
    assert lake_rows(project, fmt) == [{"id": 7, "qty": 7, "big": "seven", "note": "added"}]
    if fmt == "delta":  # the new column, then the changes: one commit each
        assert len(DeltaTable(str(project / "lake" / "items")).history()) - versions <= 2


def test_the_scheduler_alerts_when_a_slot_keeps_more_wal_than_allowed(
    source: Source, project: Path
) -> None:
    from engine.scheduling.scheduler import Scheduler, SchedulerSettings
    from engine.tasks import run_task
    from tests.engine.scheduling.test_scheduler import T0, Clock, settle

    source.execute("create table items (id int primary key)")
    write_pipeline(project, "watched", cdc="{max_retained_wal: 1B}", apply=False)
    text = (project / "pipeline.yaml").read_text()
    (project / "pipeline.yaml").write_text(text.replace("tasks:", "alerts: {log: true}\ntasks:", 1))
    scheduler = Scheduler(project, SchedulerSettings(runner=run_task, file_scan_every=0), Clock(T0))
    try:
        assert scheduler.try_lead()
        for _ in range(2):  # the second run finds the slot its first run made
            source.execute("insert into items select coalesce(max(id), 0) + 1 from items")
            scheduler.store.request_run("watched", str(project / "pipeline.yaml"), {}, "manual")
            settle(scheduler)
        (alert,) = [a for a in scheduler.alerts.sent if a.kind == "source"]
        assert alert.subject == "changes"
        assert "more than max_retained_wal (1 B)" in alert.message
    finally:
        scheduler.close()


def test_default_slot_names_of_different_tasks_never_collide() -> None:
    from benchmarks.workloads.pg_cdc import PIPELINE, TASK_SLOT
    from connectors.postgres.cdc.source import default_slot

    assert default_slot("errs", "changes") == "arrowline_errs_changes"
    assert default_slot("x", "y_z") != default_slot("x_y", "z")
    assert default_slot("Orders-2", "a") != default_slot("orders_2", "a")
    long = default_slot("p" * 60, "t" * 60)
    assert len(long) <= 63
    assert long != default_slot("p" * 60, "t" * 59)
    assert default_slot(PIPELINE, "changes") == TASK_SLOT


def test_a_first_run_whose_snapshot_cannot_start_leaves_no_slot_behind(
    source: Source, project: Path, cli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    import connectors.postgres.source as plain
    from engine.core.errors import DataError

    def refuse(*args: object, **kwargs: object) -> None:
        raise DataError("the snapshot read could not start")  # after the slot was made

    source.execute("create table items (id int primary key)")
    write_pipeline(project, "nostart", apply=False)
    monkeypatch.setattr(plain, "open_postgres", refuse)
    result = cli("run", "pipeline.yaml")
    assert result.exit_code == 1
    assert "the snapshot read could not start" in result.stderr
    assert source.slot("arrowline_nostart_changes") is None  # no WAL kept for nobody


def test_status_says_how_far_behind_in_time_and_a_bounded_run_where_it_stopped(
    source: Source, project: Path, cli: Run
) -> None:
    """`cdc status` tells lag in time as well as bytes, without touching the slot (a peek
    would take it from a run starting then): the loads hold every change committed before
    `complete_as_of`, the committed run's start or, for a run bounded by max_changes, the
    last transaction it read; the lag is at most the time since. A run that stops at
    max_changes says so in its log and records how much WAL it left."""
    import time
    from datetime import UTC, datetime

    from engine.state.catalog import CatalogReader

    def status() -> dict[str, Any]:
        done = cli("cdc", "status", "pipeline.yaml", "--json")
        assert done.exit_code == 0, done.output
        (row,) = json.loads(done.stdout)
        return dict(row)

    def now() -> datetime:
        ((at,),) = source.rows("select now()")
        return at  # type: ignore[no-any-return]

    source.execute("create table items (id bigint primary key, v text)")
    write_pipeline(project, "lagging", cdc="{slot: lag_slot, max_changes: 30}")
    before = now()
    ok(cli("run", "pipeline.yaml"))  # the snapshot
    snapshot = datetime.fromisoformat(status()["complete_as_of"])
    assert before <= snapshot <= now()
    commits = []
    for i in range(10):  # ten transactions of 10 rows, 12 messages each
        source.execute(
            f"insert into items select g, 'v' from generate_series({i * 10}, {i * 10 + 9}) g"
        )
        commits.append(now())
    time.sleep(1.5)
    waiting = status()
    assert datetime.fromisoformat(waiting["complete_as_of"]) == snapshot  # nothing loaded since
    assert waiting["lag_seconds"] >= 1.5
    assert "at most" in cli("cdc", "status", "pipeline.yaml").stdout  # the table says it too
    result = cli("run", "pipeline.yaml")
    ok(result)
    assert "stopped at max_changes (30)" in result.stderr
    assert "may hold more changes" in result.stderr
    with CatalogReader(project / ".arrowline" / "catalog.db") as catalog:
        row = catalog.task_run(catalog.run("last").run_id, "changes")
    assert row is not None
    assert row.details is not None
    assert row.details["behind_bytes"] > 0
    bounded = datetime.fromisoformat(status()["complete_as_of"])
    loaded = len(log(project, "_op = 'insert'")) // 10  # whole transactions
    assert 0 < loaded < 10
    assert commits[loaded - 1] - timedelta(seconds=1) <= bounded <= commits[loaded]
    for _ in range(4):
        started = now()
        ok(cli("run", "pipeline.yaml"))
    caught_up = status()
    assert len(log(project, "_op = 'insert'")) == 100
    assert started <= datetime.fromisoformat(caught_up["complete_as_of"]) <= now()
    assert caught_up["lag_seconds"] < 60
    assert datetime.now(UTC) - datetime.fromisoformat(caught_up["complete_as_of"]) < timedelta(
        seconds=60
    )


def test_openlineage_names_the_captured_table_as_a_postgres_dataset(
    source: Source, project: Path, cli: Run
) -> None:
    """The change stream's events name its source as the normal extract's do (postgres://
    host:port, database.schema.table), with the captured columns feeding the loads'."""
    source.execute("create table items (id bigint primary key, v text)")
    path = write_pipeline(project, "traced", apply=False)
    path.write_text(path.read_text() + "openlineage: {file: events.jsonl}\n")
    ok(cli("run", "pipeline.yaml"))
    source.execute("insert into items values (1, 'a')", "update items set v = 'b'")
    ok(cli("run", "pipeline.yaml"))
    events = [json.loads(line) for line in (project / "events.jsonl").read_text().splitlines()]
    host, port = source.uri.split("@", 1)[-1].split("/", 1)[0].rsplit(":", 1)
    dataset = (f"postgres://{host}:{port}", f"{source.name}.public.items")
    finals = [e for e in events if e["job"]["name"] == "traced" and e["eventType"] == "COMPLETE"]
    assert len(finals) == 2
    for final in finals:
        assert dataset in {(d["namespace"], d["name"]) for d in final["inputs"]}
        (log_table,) = [d for d in final["outputs"] if d["name"].endswith("log")]
        fields = log_table["facets"]["columnLineage"]["fields"]
        sources = {(f["namespace"], f["name"], f["field"]) for f in fields["v"]["inputFields"]}
        assert (*dataset, "v") in sources

import functools
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.base import ConnectorContext, SinkResult
from connectors.duckdb.config import DuckDBSink, DuckDBSource
from connectors.duckdb.sink import write_duckdb as _write_duckdb
from connectors.duckdb.source import open_duckdb as _open_duckdb
from engine.core.errors import DataError, TransientTaskError
from engine.core.tables import InputTable
from tests.conftest import at_once


def input_table(tmp_path: Path, table: pa.Table, name: str = "in") -> InputTable:
    path = tmp_path / f"{name}.parquet"
    pq.write_table(table, path)
    return InputTable("t", "r", (path,), table.schema, table.num_rows)


def write_duckdb(
    source: InputTable, config: DuckDBSink, base: Path, run_id: str, *, view: bool = False
) -> SinkResult:
    return _write_duckdb(source, config, ConnectorContext(base, "p", run_id, "load"), view=view)


def open_duckdb(config: DuckDBSource, base: Path) -> pa.RecordBatchReader:
    (reader,) = _open_duckdb(config, ConnectorContext(base, "p", "r", "extract"))
    return reader


def sink(**config: object) -> DuckDBSink:
    return DuckDBSink.model_validate({"input": "t", "to": "duckdb", "path": "w.duckdb", **config})


def rows(tmp_path: Path, sql: str) -> list[tuple[object, ...]]:
    connection = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def test_append_creates_then_inserts_by_name(tmp_path: Path) -> None:
    write_duckdb(
        input_table(tmp_path, pa.table({"id": [1], "v": ["a"]})),
        sink(table="main.t"),
        tmp_path,
        "r1",
    )
    reordered = pa.table({"v": ["b"], "id": [2]})
    result = write_duckdb(
        input_table(tmp_path, reordered, "in2"), sink(table="main.t"), tmp_path, "r2"
    )
    assert result.rows == 1
    assert result.target.endswith("w.duckdb#main.t")
    assert rows(tmp_path, "select id, v from t order by id") == [(1, "a"), (2, "b")]


def test_loading_the_same_run_twice_does_not_duplicate_rows(tmp_path: Path) -> None:
    data = input_table(tmp_path, pa.table({"id": [1, 2], "v": ["a", "b"]}))
    first = write_duckdb(data, sink(table="t"), tmp_path, "r1")
    again = write_duckdb(data, sink(table="t"), tmp_path, "r1")
    assert (first.rows, again.rows) == (2, 2)
    assert again.details["already_committed"] is True
    assert rows(tmp_path, "select count(*) from t") == [(2,)]
    write_duckdb(data, sink(table="t"), tmp_path, "r2")
    assert rows(tmp_path, "select count(*) from t") == [(4,)]
    assert rows(tmp_path, "select run_id, rows from arrowline_state.loads order by 1") == [
        ("r1", 2),
        ("r2", 2),
    ]


def test_an_existing_table_follows_schema_change(tmp_path: Path) -> None:
    first = pa.table({"id": pa.array([1], pa.int32()), "v": ["a"], "gone": [1.5]})
    write_duckdb(input_table(tmp_path, first), sink(table="t"), tmp_path, "r1")
    wider = pa.table({"id": pa.array([2], pa.int64()), "v": ["b"], "gone": [2.5], "extra": [7]})
    result = write_duckdb(input_table(tmp_path, wider, "in2"), sink(table="t"), tmp_path, "r2")
    assert result.details["schema_changes"] == [
        {
            "column": "id",
            "change": "widened",
            "before": "integer",
            "after": "bigint",
            "breaking": False,
        },
        {
            "column": "extra",
            "change": "added",
            "before": None,
            "after": "bigint",
            "breaking": False,
        },
    ]
    assert rows(tmp_path, "select id, v, gone, extra from t order by id") == [
        (1, "a", 1.5, None),
        (2, "b", 2.5, 7),
    ]
    assert rows(
        tmp_path, "select data_type from information_schema.columns where column_name = 'id'"
    ) == [("BIGINT",)]
    # fail_on_breaking (the default): a missing column and a type that does not fit are refused,
    # and nothing of the load is kept.
    dropped = pa.table({"id": [3], "v": ["c"], "extra": [8]})
    with pytest.raises(DataError, match=r"column 'gone' \(double precision\) is not in the input"):
        write_duckdb(input_table(tmp_path, dropped, "in3"), sink(table="t"), tmp_path, "r3")
    retyped = pa.table({"id": ["x"], "v": ["c"], "gone": [1.0], "extra": [8]})
    with pytest.raises(DataError, match=r"column 'id' is bigint, the input has text"):
        write_duckdb(input_table(tmp_path, retyped, "in4"), sink(table="t"), tmp_path, "r4")
    assert rows(tmp_path, "select count(*) from t") == [(2,)]
    # evolve fills the missing nullable column with NULL; freeze refuses even an added column
    evolved = write_duckdb(
        input_table(tmp_path, dropped, "in5"),
        sink(table="t", schema_change="evolve"),
        tmp_path,
        "r5",
    )
    assert evolved.details["schema_changes"] == [
        {
            "column": "gone",
            "change": "dropped",
            "before": "double precision",
            "after": None,
            "breaking": True,
        }
    ]
    assert rows(tmp_path, "select gone from t where id = 3") == [(None,)]
    more = pa.table({"id": [4], "v": ["d"], "gone": [1.0], "extra": [9], "new": [True]})
    with pytest.raises(DataError, match=r"new column 'new' \(boolean\)"):
        write_duckdb(
            input_table(tmp_path, more, "in6"),
            sink(table="t", schema_change="freeze"),
            tmp_path,
            "r6",
        )


def test_replace_makes_the_table_exactly_the_input(tmp_path: Path) -> None:
    write_duckdb(input_table(tmp_path, pa.table({"id": [1, 2]})), sink(table="t"), tmp_path, "r1")
    write_duckdb(
        input_table(tmp_path, pa.table({"other": ["x"]}), "in2"),
        sink(table="t", mode="replace"),
        tmp_path,
        "r2",
    )
    assert rows(tmp_path, "select * from t") == [("x",)]


def test_merge_updates_matches_and_inserts_the_rest(tmp_path: Path) -> None:
    config = sink(table="analytics.t", mode="merge", keys=["k1", "k2"])
    first = pa.table({"k1": [1, 2], "k2": [1, 2], "v": [10, 20]})
    write_duckdb(input_table(tmp_path, first), config, tmp_path, "r1")
    second = pa.table({"k1": [1, 3], "k2": [1, 3], "v": [11, 30]})
    result = write_duckdb(input_table(tmp_path, second, "in2"), config, tmp_path, "r2")
    assert result.rows == 2
    assert rows(tmp_path, "select k1, k2, v from analytics.t order by k1") == [
        (1, 1, 11),
        (2, 2, 20),
        (3, 3, 30),
    ]
    # created with a primary key on the merge keys
    constraints = rows(
        tmp_path, "select constraint_type from duckdb_constraints() where table_name = 't'"
    )
    assert ("PRIMARY KEY",) in constraints


def test_merge_refuses_null_keys(tmp_path: Path) -> None:
    config = sink(table="t", mode="merge", keys=["k1", "k2"])
    with pytest.raises(
        DataError, match=r"merge keys must not be NULL, but some are \(k2: 1 rows\)"
    ):
        write_duckdb(
            input_table(tmp_path, pa.table({"k1": [1, 2], "k2": [None, 2]})), config, tmp_path, "r1"
        )


def test_merge_refuses_duplicate_keys_and_leaves_the_table_unchanged(tmp_path: Path) -> None:
    config = sink(table="t", mode="merge", keys=["k"])
    write_duckdb(input_table(tmp_path, pa.table({"k": [1], "v": [1]})), config, tmp_path, "r1")
    duplicated = pa.table({"k": [1, 1, 2], "v": [5, 6, 7]})
    with pytest.raises(
        DataError, match=r"1 merge keys appear more than once in the input, e.g. k=1 \(2 rows\)"
    ):
        write_duckdb(input_table(tmp_path, duplicated, "in2"), config, tmp_path, "r2")
    assert rows(tmp_path, "select k, v from t") == [(1, 1)]


def test_failed_load_rolls_back(tmp_path: Path) -> None:
    write_duckdb(input_table(tmp_path, pa.table({"n": [1]})), sink(table="t"), tmp_path, "r1")
    bad = pa.table({"n": ["not a number"]})
    with pytest.raises(DataError):
        write_duckdb(input_table(tmp_path, bad, "in2"), sink(table="t"), tmp_path, "r2")
    assert rows(tmp_path, "select n from t") == [(1,)]


def test_a_file_locked_by_another_process_is_transient(tmp_path: Path) -> None:
    import subprocess
    import sys

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, sys, time; c = duckdb.connect({str(tmp_path / 'w.duckdb')!r}); "
            "print('ready', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(TransientTaskError, match="locked by another process"):
            write_duckdb(
                input_table(tmp_path, pa.table({"n": [1]})), sink(table="t"), tmp_path, "r1"
            )
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_source_streams_a_table_or_a_query(tmp_path: Path) -> None:
    connection = duckdb.connect(str(tmp_path / "w.duckdb"))
    connection.execute("create schema s; create table s.t as select range as x from range(10)")
    connection.close()
    table_config = DuckDBSource.model_validate(
        {"from": "duckdb", "path": "w.duckdb", "table": "s.t", "batch_size": 3}
    )
    batches = list(open_duckdb(table_config, tmp_path))
    assert sum(b.num_rows for b in batches) == 10
    query_config = DuckDBSource.model_validate(
        {"from": "duckdb", "path": "w.duckdb", "query": "select sum(x) as s from s.t"}
    )
    assert open_duckdb(query_config, tmp_path).read_all().column("s").to_pylist() == [45]


def test_source_labels_instants_utc_whatever_the_machine_zone(tmp_path: Path) -> None:
    connection = duckdb.connect(str(tmp_path / "w.duckdb"))
    connection.execute("create table t as select timestamptz '2024-01-01 12:00:00+02' as at")
    connection.close()
    config = DuckDBSource.model_validate({"from": "duckdb", "path": "w.duckdb", "table": "t"})
    table = open_duckdb(config, tmp_path).read_all()
    assert table.schema.field("at").type == pa.timestamp("us", "UTC")
    assert table.column("at")[0].as_py().isoformat() == "2024-01-01T10:00:00+00:00"


def test_source_needs_exactly_one_of_table_and_query() -> None:
    with pytest.raises(ValueError, match="exactly one of 'table' or 'query'"):
        DuckDBSource.model_validate({"from": "duckdb", "path": "w.duckdb"})


def test_parallel_first_loads_into_a_new_file_both_commit(tmp_path: Path) -> None:
    data = pa.table({"id": [1, 2, 3]})
    for round_ in range(10):
        path = f"w{round_}.duckdb"
        a, b = (
            functools.partial(
                _write_duckdb,
                input_table(tmp_path, data, f"{task}-{round_}"),
                sink(table=f"analytics.{task}", path=path),
                ConnectorContext(tmp_path, "p", "r", task),
            )
            for task in ("a", "b")
        )
        outcomes = at_once(a, b)
        assert not [o for o in outcomes if isinstance(o, BaseException)], (round_, outcomes)
        with duckdb.connect(str(tmp_path / path), read_only=True) as connection:
            loads = connection.execute(
                "select task, rows from arrowline_state.loads order by task"
            ).fetchall()
        assert loads == [("a", 3), ("b", 3)]


@pytest.mark.parametrize("view", [False, True])
def test_a_replace_enforces_only_a_schema_change_policy_the_task_sets(
    tmp_path: Path, view: bool
) -> None:
    """Replace makes the table exactly the input, whatever its shape, unless the task writes a
    policy down: then what the policy refuses fails the load and the table stays as it was."""
    first = input_table(tmp_path, pa.table({"id": [1], "note": ["n"]}))
    write_duckdb(first, sink(table="t", mode="replace"), tmp_path, "r1")
    fewer = input_table(tmp_path, pa.table({"id": [2]}), "in2")
    refusing = sink(table="t", mode="replace", schema_change="fail")
    with pytest.raises(DataError, match=r"column 'note' .* is not in the input"):
        write_duckdb(fewer, refusing, tmp_path, "r2", view=view)
    assert rows(tmp_path, "select id, note from t") == [(1, "n")]
    result = write_duckdb(fewer, sink(table="t", mode="replace"), tmp_path, "r3", view=view)
    assert rows(tmp_path, "select * from t") == [(2,)]
    assert "schema_changes" not in result.details


def changes(*rows: tuple[object, ...]) -> pa.Table:
    """A change stream of (id, v, big, _op, _lsn, _seq, _unchanged_toast) rows."""
    names = ["id", "v", "big", "_op", "_lsn", "_seq", "_unchanged_toast"]
    types = [pa.int64(), pa.string(), pa.string(), pa.string(), pa.int64(), pa.int64()]
    columns = list(zip(*rows, strict=True))
    arrays = [pa.array(c, t) for c, t in zip(columns, types, strict=False)]
    arrays.append(pa.array(columns[6], pa.list_(pa.string())))
    return pa.table(arrays, names=names)


def test_apply_plays_a_change_stream_keeping_unsent_toasted_values(tmp_path: Path) -> None:
    config = sink(table="t", mode="apply", keys=["id"])
    first = changes(
        (1, "a", "BIG1", "snapshot", 10, 0, None),
        (2, "b", "BIG2", "snapshot", 10, 0, None),
        (3, "c", "BIG3", "snapshot", 10, 0, None),
    )
    write_duckdb(input_table(tmp_path, first, "c1"), config, tmp_path, "r1")
    second = changes(
        (1, "a2", None, "update", 20, 0, ["big"]),  # big not sent: kept
        (2, None, None, "delete", 20, 1, None),
        (2, "b3", "NEW2", "insert", 30, 0, None),  # deleted, then inserted again
        (3, "c2", "BIG3b", "update", 30, 1, None),
        (3, "c3", None, "update", 40, 0, ["big"]),  # the last sent value wins: BIG3b
        (4, "d", "BIG4", "insert", 40, 1, None),
        (4, None, None, "delete", 50, 0, None),  # inserted and deleted within the batch
    )
    result = write_duckdb(input_table(tmp_path, second, "c2"), config, tmp_path, "r2")
    assert rows(tmp_path, "select id, v, big from t order by id") == [
        (1, "a2", "BIG1"),
        (2, "b3", "NEW2"),
        (3, "c3", "BIG3b"),
    ]
    assert result.rows == 4  # net changes: one per key
    third = changes(
        (1, "x", "X", "update", 60, 0, None),
        (None, None, None, "truncate", 70, 0, None),
        (5, "e", "E", "insert", 80, 0, None),
    )
    write_duckdb(input_table(tmp_path, third, "c3"), config, tmp_path, "r3")
    assert rows(tmp_path, "select id, v, big from t order by id") == [(5, "e", "E")]
    only_truncate = changes((None, None, None, "truncate", 90, 0, None))
    write_duckdb(input_table(tmp_path, only_truncate, "c4"), config, tmp_path, "r4")
    assert rows(tmp_path, "select count(*) from t") == [(0,)]


def test_apply_refuses_rows_that_are_not_a_change_stream(tmp_path: Path) -> None:
    plain = pa.table({"id": [1], "v": ["a"]})
    with pytest.raises(DataError, match=r"mode: apply needs a change stream.*\['_op', '_lsn'"):
        write_duckdb(
            input_table(tmp_path, plain), sink(table="t", mode="apply", keys=["id"]), tmp_path, "r"
        )
    with pytest.raises(ValueError, match="mode: apply needs 'keys'"):
        sink(table="t", mode="apply")


def test_watermarks_are_read_while_a_load_has_the_file_open(tmp_path: Path) -> None:
    """An extract reads its sink's watermark while another load of this process writes the
    same file: DuckDB refuses a second configuration (read-only) of an open database."""
    from connectors.duckdb import state

    write_duckdb(input_table(tmp_path, pa.table({"id": [1]})), sink(table="t"), tmp_path, "r1")
    loading = duckdb.connect(str(tmp_path / "w.duckdb"))  # as a running load holds it
    try:
        assert state.read(sink(table="t"), ConnectorContext(tmp_path, "p", "r2", "x")) == {}
        result = write_duckdb(
            input_table(tmp_path, pa.table({"id": [2]}), "b"), sink(table="u"), tmp_path, "r2"
        )
        assert result.rows == 1
    finally:
        loading.close()

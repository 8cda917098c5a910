"""Iceberg tables through pyiceberg on a real SQL catalog (SQLite, and PostgreSQL for a shared
one): the sink's modes, the merge's file pruning, schema change, the ledger and conflicts; the
source's projection, filter, time travel and incremental reads; maintenance; every type both
ways; whole pipelines through the CLI. Tables are read back with pyiceberg itself."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import Result
from hypothesis import HealthCheck, given, settings
from polars.testing import assert_frame_equal
from polars.testing.parametric import dataframes
from pyiceberg.catalog.sql import SqlCatalog

import engine
from connectors.base import ConnectorContext, SinkResult
from connectors.evolution import arrow_type_name
from connectors.iceberg import files, state
from connectors.iceberg.catalog import ResolvedIceberg, embedded, storable_schema
from connectors.iceberg.config import IcebergSink, IcebergSource
from connectors.iceberg.sink import write_iceberg
from connectors.iceberg.source import open_iceberg
from engine.core.errors import DataError, StateError, TaskError, TransientTaskError
from engine.core.tables import InputTable
from engine.core.watermark import Watermark, WatermarkUpdate
from tests.conftest import PgSchema, WritePipeline, at_once

Cli = Callable[..., Result]


def staged(folder: Path, table: pa.Table, name: str) -> InputTable:
    path = folder / f"{name}.parquet"
    pq.write_table(table, path)
    return InputTable("t", "r", (path,), table.schema, table.num_rows)


def sink(**config: object) -> IcebergSink:
    return IcebergSink.model_validate({"input": "t", "to": "iceberg", "table": "ns.t", **config})


def context(folder: Path, run_id: str, **extra: Any) -> ConnectorContext:
    return ConnectorContext(folder, "p", run_id, "load", **extra)


def load(
    folder: Path,
    data: pa.Table,
    config: IcebergSink,
    run_id: str,
    watermarks: tuple[WatermarkUpdate, ...] = (),
) -> SinkResult:
    ctx = context(folder, run_id, pending_watermarks=watermarks)
    return write_iceberg(staged(folder, data, f"in-{run_id}"), config, ctx)


def catalog(folder: Path) -> SqlCatalog:
    properties = embedded(folder).properties
    opened = SqlCatalog("arrowline", uri=properties["uri"], warehouse=properties["warehouse"])
    opened.engine.dispose()  # no pooled connection outlives a check (it reconnects when asked)
    return opened


def rows(folder: Path, sort: str = "id", table: str = "ns.t") -> list[dict[str, Any]]:
    opened = catalog(folder)
    found = opened.load_table(table).scan().to_arrow().sort_by(sort).to_pylist()
    opened.engine.dispose()
    return found


def read(folder: Path, watermark: Watermark | None = None, **config: object) -> pa.Table:
    source = IcebergSource.model_validate({"from": "iceberg", "table": "ns.t", **config})
    (reader,) = open_iceberg(source, ConnectorContext(folder, "p", "r", "x", watermark=watermark))
    return reader.read_all()


# -- the sink ---------------------------------------------------------------------------------


def test_append_creates_the_table_with_its_first_rows_then_adds(tmp_path: Path) -> None:
    first = load(tmp_path, pa.table({"id": [1, 2], "v": ["a", "b"]}), sink(), "r1")
    assert (first.rows, first.target) == (2, "iceberg:embedded#ns.t")
    load(tmp_path, pa.table({"v": ["c"], "id": [3]}), sink(), "r2")  # by name, any order
    assert [r["v"] for r in rows(tmp_path)] == ["a", "b", "c"]
    table = catalog(tmp_path).load_table("ns.t")
    entry = json.loads(table.properties["arrowline.load.p.load"])
    assert (entry["run_id"], entry["rows"], entry["sequence"]) == ("r2", 1, 2)
    assert len(table.snapshots()) == 2  # the creation commits with the first rows
    assert (tmp_path / ".arrowline/iceberg/catalog.db").exists()


def test_a_run_whose_load_committed_writes_nothing_again(tmp_path: Path) -> None:
    data = pa.table({"id": [1, 2]})
    load(tmp_path, data, sink(), "r1")
    again = load(tmp_path, data, sink(), "r1")
    assert again.details["already_committed"] is True
    assert len(rows(tmp_path)) == 2
    load(tmp_path, data, sink(), "r2")
    assert len(rows(tmp_path)) == 4


def test_watermarks_commit_with_the_rows_and_state_commands_keep_the_last_load(
    tmp_path: Path,
) -> None:
    update = WatermarkUpdate("orders", Watermark(datetime(2026, 12, 1, tzinfo=UTC), (7,)))
    ctx = context(tmp_path, "manual")
    with pytest.raises(StateError, match="does not exist yet"):
        state.put(sink(), ctx, [update])
    load(tmp_path, pa.table({"id": [1]}), sink(), "r1", (update,))
    load(tmp_path, pa.table({"id": [2]}), sink(), "r2")
    assert state.read(sink(), ctx) == {"orders": (update.watermark, "r1")}
    state.put(sink(), ctx, [WatermarkUpdate("orders", Watermark(5))])
    assert state.read(sink(), ctx) == {"orders": (Watermark(5), "manual")}
    assert load(tmp_path, pa.table({"id": [2]}), sink(), "r2").details["already_committed"]
    state.delete(sink(), ctx, "orders")
    assert state.read(sink(), ctx) == {}
    assert len(rows(tmp_path)) == 2


def test_replace_makes_the_table_the_input_or_only_the_predicates_rows(tmp_path: Path) -> None:
    days = pa.table({"id": [1, 2, 3], "day": ["d1", "d1", "d2"]})
    load(tmp_path, days, sink(partition_by=["day"]), "r1")
    load(
        tmp_path,
        pa.table({"id": [4], "day": ["d1"]}),
        sink(mode="replace", predicate="day = 'd1'"),
        "r2",
    )
    assert [(r["id"], r["day"]) for r in rows(tmp_path)] == [(3, "d2"), (4, "d1")]
    load(tmp_path, pa.table({"id": [9], "w": [1.5]}), sink(mode="replace"), "r3")
    assert rows(tmp_path) == [{"id": 9, "w": 1.5}]
    assert catalog(tmp_path).load_table("ns.t").spec().fields == ()


def test_replace_of_a_partition_the_table_lacks_adds_it_quietly(tmp_path: Path) -> None:
    config = sink(mode="replace", predicate="day = 'd2'", partition_by=["day"])
    load(tmp_path, pa.table({"id": [1], "day": ["d1"]}), sink(partition_by=["day"]), "r1")
    load(tmp_path, pa.table({"id": [2], "day": ["d2"]}), config, "r2")  # nothing to delete
    assert [(r["id"], r["day"]) for r in rows(tmp_path)] == [(1, "d1"), (2, "d2")]


def test_a_file_whose_row_group_has_no_bounds_is_never_pruned_by_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parquet keeps no min and max of a row group past 4 KB of a string; the file's bounds
    must then be none, not the other row groups' (a scan or delete would skip the row)."""
    from pyiceberg.expressions import EqualTo

    from connectors.iceberg import files

    monkeypatch.setattr(files, "GROUP_BYTES", 1)  # a row group per batch
    big = "z" * 5000
    data = pa.table({"id": [1, 2, 3], "s": ["m", big, "b"]})
    paths = tuple(tmp_path / f"in{i}.parquet" for i in range(3))
    for i, path in enumerate(paths):  # three files: three batches
        pq.write_table(data.slice(i, 1), path)
    write_iceberg(InputTable("t", "r", paths, data.schema, 3), sink(), context(tmp_path, "r1"))
    table = catalog(tmp_path).load_table("ns.t")
    (written,) = table.inspect.files().to_pylist()
    assert pq.ParquetFile(written["file_path"].removeprefix("file://")).num_row_groups == 3
    assert written["readable_metrics"]["s"]["lower_bound"] is None
    assert table.scan(row_filter=EqualTo("s", big)).to_arrow().num_rows == 1
    replace = sink(mode="replace", predicate="s >= 'y'")
    load(tmp_path, pa.table({"id": [9], "s": ["zz"]}), replace, "r2")
    assert [(r["id"], r["s"]) for r in rows(tmp_path)] == [(1, "m"), (3, "b"), (9, "zz")]


def test_a_partitioned_file_of_several_row_groups_keeps_only_bounds_they_all_tell(
    tmp_path: Path,
) -> None:
    """The same through pyiceberg's own writer (a partitioned table), whose files have a
    row group each `write.parquet.row-group-limit` rows."""
    from pyiceberg.expressions import EqualTo

    load(tmp_path, pa.table({"id": [0], "s": ["a"], "day": [1]}), sink(partition_by=["day"]), "r1")
    with catalog(tmp_path).load_table("ns.t").transaction() as tx:
        tx.set_properties({"write.parquet.row-group-limit": "1"})
    big = "z" * 5000
    data = pa.table({"id": [1, 2, 3], "s": ["m", big, "b"], "day": [2, 2, 2]})
    load(tmp_path, data, sink(partition_by=["day"]), "r2")
    table = catalog(tmp_path).load_table("ns.t")
    (written,) = [f for f in table.inspect.files().to_pylist() if f["record_count"] == 3]
    assert pq.ParquetFile(written["file_path"].removeprefix("file://")).num_row_groups == 3
    assert written["readable_metrics"]["s"]["lower_bound"] is None
    assert written["readable_metrics"]["id"]["lower_bound"] == 1  # every row group tells it
    assert table.scan(row_filter=EqualTo("s", big)).to_arrow().num_rows == 1


def test_a_load_that_fails_while_writing_leaves_no_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connectors.iceberg import files

    monkeypatch.setattr(files, "GROUP_BYTES", 1)  # the first batch is in a file when the next fails
    load(tmp_path, pa.table({"id": [1], "day": [1]}), sink(), "r1")
    data = pa.table({"id": [2, 3], "day": [2, 3]})
    paths = tuple(tmp_path / f"bad{i}.parquet" for i in range(2))
    for i, path in enumerate(paths):
        pq.write_table(data.slice(i, 1), path)
    replace = sink(mode="replace", predicate="day = 2")  # the second row is outside it
    with pytest.raises(DataError, match="do not match the predicate"):
        write_iceberg(InputTable("t", "r", paths, data.schema, 2), replace, context(tmp_path, "r2"))
    folder = tmp_path / ".arrowline/iceberg/warehouse/ns/t/data"
    (kept,) = catalog(tmp_path).load_table("ns.t").inspect.files().to_pylist()
    assert [p.as_uri() for p in folder.glob("*.parquet")] == [kept["file_path"]]


def test_merge_updates_and_inserts_and_rewrites_only_files_holding_the_keys(
    tmp_path: Path,
) -> None:
    config = sink(mode="merge", keys=["id"])
    for run, start in (("r1", 0), ("r2", 100), ("r3", 200)):  # three files of 100 keys
        load(
            tmp_path,
            pa.table({"id": list(range(start, start + 100)), "v": ["a"] * 100}),
            config,
            run,
        )
    result = load(tmp_path, pa.table({"id": [150, 151, 999], "v": ["B", "B", "new"]}), config, "r4")
    assert result.details["files_rewritten"] == 1  # the file of keys 100-199 only
    assert result.details["rows_kept"] == 98
    assert result.details["rows_replaced"] == 2
    found = {r["id"]: r["v"] for r in rows(tmp_path)}
    assert len(found) == 301
    assert (found[150], found[151], found[999], found[152]) == ("B", "B", "new", "a")


def test_a_merge_prunes_files_by_string_keys_as_the_table_holds_them() -> None:
    from pyiceberg.expressions import AlwaysTrue

    from connectors.iceberg.merge import key_range

    keys = pa.table({"code": ["b2", "b7"]})
    for stored in (pa.string(), pa.large_string()):  # an Iceberg string reads as large_string
        condition = key_range(
            sink(mode="merge", keys=["code"]), keys, pa.schema([("code", stored)])
        )
        assert condition != AlwaysTrue()
        assert "b2" in repr(condition)
        assert "b7" in repr(condition)


def test_merge_with_delete_missing_keeps_exactly_the_inputs_keys_within_the_predicate(
    tmp_path: Path,
) -> None:
    config = sink(mode="merge", keys=["id"], delete_missing=True)
    load(tmp_path, pa.table({"id": [1, 2, 3], "g": ["x", "x", "y"]}), config, "r1")
    load(tmp_path, pa.table({"id": [2, 4], "g": ["x", "x"]}), config, "r2")
    assert [r["id"] for r in rows(tmp_path)] == [2, 4]
    scoped = sink(mode="merge", keys=["id"], delete_missing=True, predicate="g = 'x'")
    load(tmp_path, pa.table({"id": [5], "g": ["y"]}), sink(), "r3")
    load(tmp_path, pa.table({"id": [4], "g": ["x"]}), scoped, "r4")
    assert [r["id"] for r in rows(tmp_path)] == [4, 5]  # 5 is outside g = 'x': kept


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (pa.table({"id": [1, 1], "v": ["a", "b"]}), r"1 merge keys appear more than once"),
        (pa.table({"id": [1, None], "v": ["a", "b"]}), r"must not be NULL"),
        (pa.table({"key": [1], "v": ["a"]}), r"merge keys \['id'\] are not columns"),
    ],
)
def test_merge_refuses_keys_it_cannot_match(tmp_path: Path, data: pa.Table, message: str) -> None:
    load(tmp_path, pa.table({"id": [7], "v": ["x"]}), sink(), "r0")
    with pytest.raises(DataError, match=message):
        load(tmp_path, data, sink(mode="merge", keys=["id"]), "r1")
    assert rows(tmp_path) == [{"id": 7, "v": "x"}]


def test_schema_change_adds_promotes_fills_and_refuses_per_policy(tmp_path: Path) -> None:
    narrow = pa.table({"id": pa.array([1], pa.int32()), "v": ["a"]})
    load(tmp_path, narrow, sink(), "r1")
    wider = pa.table({"id": pa.array([2**40], pa.int64()), "v": ["b"], "n": [2.5]})
    result = load(tmp_path, wider, sink(), "r2")
    assert [c["change"] for c in result.details["schema_changes"]] == ["widened", "added"]
    table = catalog(tmp_path).load_table("ns.t")
    assert str(table.schema().find_field("id").field_type) == "long"
    with pytest.raises(DataError, match=r"column 'v' \(text\) is not in the input"):
        load(tmp_path, pa.table({"id": [3], "n": [3.5]}), sink(), "r3")
    load(tmp_path, pa.table({"id": [3], "n": [3.5]}), sink(schema_change="evolve"), "r4")
    with pytest.raises(DataError, match="new column 'z'"):
        load(
            tmp_path,
            pa.table({"id": [4], "v": ["d"], "n": [1.0], "z": [1]}),
            sink(schema_change="freeze"),
            "r5",
        )
    with pytest.raises(DataError, match="column 'v' is text, the input has bigint"):
        load(tmp_path, pa.table({"id": [4], "v": [5], "n": [1.0]}), sink(), "r6")
    assert [(r["id"], r["v"], r["n"]) for r in rows(tmp_path)] == [
        (1, "a", None),
        (3, None, 3.5),
        (2**40, "b", 2.5),
    ]


def test_types_iceberg_cannot_hold_are_refused_and_small_integers_kept(tmp_path: Path) -> None:
    load(tmp_path, pa.table({"id": pa.array([200, 7], pa.uint8())}), sink(), "r1")
    assert [r["id"] for r in rows(tmp_path)] == [7, 200]
    with pytest.raises(DataError, match="column 'd' is duration"):
        load(
            tmp_path,
            pa.table({"id": [1], "d": pa.array([1], pa.duration("us"))}),
            sink(table="ns.u"),
            "r2",
        )
    with pytest.raises(DataError, match="column 'id'"):
        load(
            tmp_path, pa.table({"id": pa.array([2**63 + 5], pa.uint64())}), sink(table="ns.v"), "r3"
        )
    assert catalog(tmp_path).table_exists("ns.v") is False


def test_config_refuses_bad_tables_partitions_and_flags() -> None:
    with pytest.raises(ValueError, match=r"must be namespace\.name"):
        sink(table="orders")
    with pytest.raises(ValueError, match=r"must be namespace\.name"):
        sink(table="ns.t; drop")
    with pytest.raises(ValueError, match=r"partition 'days\(at\)' is not a column or a transform"):
        sink(partition_by=["days(at)"])
    with pytest.raises(ValueError, match="delete_missing applies to mode: merge"):
        sink(delete_missing=True)


def test_two_merges_at_once_one_commits_and_the_other_is_told_to_retry(tmp_path: Path) -> None:
    config = sink(mode="merge", keys=["id"])
    load(tmp_path, pa.table({"id": list(range(100)), "v": ["a"] * 100}), config, "r0")
    a = staged(tmp_path, pa.table({"id": [1, 200], "v": ["A", "new"]}), "a")
    b = staged(tmp_path, pa.table({"id": [1, 300], "v": ["B", "new"]}), "b")
    outcomes = at_once(
        lambda: write_iceberg(a, config, context(tmp_path, "ra")),
        lambda: write_iceberg(b, config, context(tmp_path, "rb")),
    )
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failures) <= 1
    for failure in failures:
        assert isinstance(failure, TransientTaskError), failure
    ids = [r["id"] for r in rows(tmp_path)]
    assert len(ids) == len(set(ids)) == 100 + (2 - len(failures))  # no key twice, none lost
    assert {r["id"]: r["v"] for r in rows(tmp_path)}[1] in {"A", "B"}


def test_a_shared_catalog_in_postgresql(
    tmp_path: Path, pg: PgSchema, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connectors.iceberg.catalog import resolve
    from connectors.iceberg.config import IcebergConnection

    # a password with `@`, `/` and `:` (the server trusts loopback, and ignores it)
    monkeypatch.setenv("CATALOG_PW", "Zq9Sec@ret/Pw:x")
    server = pg.uri.split("://", 1)[1].split("@", 1)[-1]
    spec = IcebergConnection(
        kind="iceberg", uri=f"postgresql://postgres:${{env:CATALOG_PW}}@{server}", warehouse="wh"
    )
    resolved = resolve("lake", spec, tmp_path)
    assert resolved.properties["uri"].startswith("postgresql+psycopg://")
    config = sink(connection="lake", table=f"{pg.schema}.t")
    ctx = ConnectorContext(tmp_path, "p", "r1", "load", connections={"lake": resolved})
    write_iceberg(staged(tmp_path, pa.table({"id": [1, 2]}), "x"), config, ctx)
    names = pg.rows(f"select table_name from iceberg_tables where table_namespace = '{pg.schema}'")
    assert names == [("t",)]
    assert (tmp_path / "wh").is_dir()
    pg.execute(f"delete from iceberg_tables where table_namespace = '{pg.schema}'")
    assert isinstance(resolved, ResolvedIceberg)
    assert "Zq9Sec" not in resolved.describe()
    assert "ret/Pw" not in resolved.describe()


def test_a_resume_of_an_older_run_finds_its_load_committed(tmp_path: Path) -> None:
    load(tmp_path, pa.table({"id": [1]}), sink(), "r1")
    load(tmp_path, pa.table({"id": [2]}), sink(), "r2")
    assert load(tmp_path, pa.table({"id": [1]}), sink(), "r1").details["already_committed"]
    assert [r["id"] for r in rows(tmp_path)] == [1, 2]


def test_a_merge_sets_only_the_inputs_columns_and_matches_keys_outside_its_predicate(
    tmp_path: Path,
) -> None:
    first = pa.table({"id": [1, 2, 3], "g": ["x", "x", "y"], "email": ["a@x", "b@x", "c@x"]})
    load(tmp_path, first, sink(), "r1")
    evolve = sink(mode="merge", keys=["id"], schema_change="evolve")
    load(tmp_path, pa.table({"id": [1, 4], "g": ["X", "x"]}), evolve, "r2")
    found = {r["id"]: (r["g"], r["email"]) for r in rows(tmp_path)}
    assert found == {1: ("X", "a@x"), 2: ("x", "b@x"), 3: ("y", "c@x"), 4: ("x", None)}
    scoped = sink(mode="merge", keys=["id"], delete_missing=True, predicate="g = 'x'")
    load(tmp_path, pa.table({"id": [3, 4], "g": ["y", "x"], "email": ["C", "D"]}), scoped, "r3")
    assert [(r["id"], r["email"]) for r in rows(tmp_path)] == [(1, "a@x"), (3, "C"), (4, "D")]


def test_replace_refuses_rows_outside_its_predicate(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="1 input rows do not match the predicate"):
        load(
            tmp_path,
            pa.table({"id": [1], "day": ["d2"]}),
            sink(mode="replace", predicate="day = 'd1'"),
            "r0",
        )
    load(tmp_path, pa.table({"id": [1], "day": ["d1"]}), sink(), "r1")
    with pytest.raises(DataError, match="do not match the predicate"):
        load(
            tmp_path,
            pa.table({"id": [2], "day": ["d2"]}),
            sink(mode="replace", predicate="day = 'd1'"),
            "r2",
        )
    assert rows(tmp_path) == [{"id": 1, "day": "d1"}]


def test_maps_and_fixed_size_lists_keep_their_values(tmp_path: Path) -> None:
    data = pa.table(
        {
            "id": [1],
            "m": pa.array([[("k", 200)]], pa.map_(pa.string(), pa.uint8())),
            "f": pa.array([[200, 7]], pa.list_(pa.uint8(), 2)),
        }
    )
    load(tmp_path, data, sink(), "r1")
    (row,) = rows(tmp_path)
    assert (row["m"], row["f"]) == ([("k", 200)], [200, 7])


def test_a_null_predicate_is_no_match_for_deletes_and_replaces(tmp_path: Path) -> None:
    load(tmp_path, pa.table({"id": [1, 2, 3], "g": ["x", None, "y"]}), sink(), "r1")
    scoped = sink(mode="merge", keys=["id"], delete_missing=True, predicate="g = 'x'")
    load(tmp_path, pa.table({"id": [1], "g": ["x"]}), scoped, "r2")
    assert [r["id"] for r in rows(tmp_path)] == [1, 2, 3]  # 2 is outside g = 'x': kept
    replacing = sink(mode="replace", predicate="g = 'x'")
    with pytest.raises(DataError, match="1 input rows do not match"):
        load(tmp_path, pa.table({"id": [4, 5], "g": ["x", None]}), replacing, "r3")


def test_struct_and_map_columns_load_again(tmp_path: Path) -> None:
    data = pa.table(
        {
            "id": [1],
            "s": pa.array([{"y": "a", "n": 1}]),
            "m": pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64())),
            "ls": pa.array([[{"y": "b"}]]),
        }
    )
    load(tmp_path, data, sink(), "r1")
    load(tmp_path, data, sink(), "r2")
    load(tmp_path, data, sink(mode="merge", keys=["id"]), "r3")
    assert [r["s"] for r in rows(tmp_path)] == [{"y": "a", "n": 1}]


def test_replace_keeps_what_it_can_of_an_identity_partitioned_table(tmp_path: Path) -> None:
    load(tmp_path, pa.table({"id": [1], "region": ["EU"]}), sink(partition_by=["region"]), "r1")
    wider = pa.table({"id": [2], "region": ["US"], "n": [1.5]})
    load(tmp_path, wider, sink(mode="replace"), "r2")
    assert rows(tmp_path) == [{"id": 2, "region": "US", "n": 1.5}]
    table = catalog(tmp_path).load_table("ns.t")
    assert [f.name for f in table.spec().fields] == ["region"]
    required = pa.table(
        {"id": pa.array([3], pa.int64()), "day": ["d"]},
        schema=pa.schema(
            [pa.field("id", pa.int64(), nullable=False), pa.field("day", pa.string())]
        ),
    )
    load(tmp_path, required, sink(mode="replace", partition_by=["day"]), "r3")
    table = catalog(tmp_path).load_table("ns.t")
    assert [f.name for f in table.spec().fields] == ["day"]
    assert rows(tmp_path) == [{"id": 3, "day": "d"}]


def test_a_merge_leaves_a_key_the_table_held_twice_once(tmp_path: Path) -> None:
    twice = pa.table({"id": [1, 1, 2], "v": ["a", "a", "b"], "e": ["x", "x", "y"]})
    load(tmp_path, twice, sink(), "r1")
    lacking = sink(mode="merge", keys=["id"], schema_change="evolve")
    load(tmp_path, pa.table({"id": [1], "v": ["A"]}), lacking, "r2")
    assert [(r["id"], r["v"], r["e"]) for r in rows(tmp_path)] == [(1, "A", "x"), (2, "b", "y")]


def test_a_merge_on_two_keys_rewrites_the_files_holding_them_and_carries_lacking_columns(
    tmp_path: Path,
) -> None:
    """Two keys go through DuckDB's joins, not the one-key lookup: the same result."""
    config = sink(mode="merge", keys=["a", "b"])
    for run, start in (("r1", 0), ("r2", 10)):  # two files
        n = list(range(start, start + 10))
        load(tmp_path, pa.table({"a": n, "b": ["k"] * 10, "v": ["old"] * 10, "e": n}), config, run)
    lacking = sink(mode="merge", keys=["a", "b"], schema_change="evolve")
    changes = pa.table({"a": [12, 12, 30], "b": ["k", "other", "k"], "v": ["new"] * 3})
    result = load(tmp_path, changes, lacking, "r3")
    assert (result.details["files_rewritten"], result.details["rows_replaced"]) == (1, 1)
    found = {(r["a"], r["b"]): (r["v"], r["e"]) for r in rows(tmp_path, sort="a")}
    assert len(found) == 22
    assert found[(12, "k")] == ("new", 12)  # updated; its e carried from the table
    assert found[(12, "other")] == found[(30, "k")] == ("new", None)  # inserted
    assert found[(11, "k")] == ("old", 11)


def test_rows_are_written_a_row_group_at_a_time_into_files_of_the_target_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "GROUP_BYTES", 1)  # a row group each batch read (65,536 rows)
    load(tmp_path, pa.table({"id": [-1], "v": ["x"]}), sink(), "r0")
    opened = catalog(tmp_path)
    opened.load_table("ns.t").transaction().set_properties(
        {"write.target-file-size-bytes": str(3 * 1024 * 1024)}
    ).commit_transaction()
    n = 300_000  # 1.4 MB of Arrow a batch
    load(tmp_path, pa.table({"id": range(n), "v": [f"value {i}" for i in range(n)]}), sink(), "r1")
    table = opened.load_table("ns.t")
    written = [t.file for t in table.scan().plan_files() if t.file.record_count > 1]
    groups = [pq.ParquetFile(f.file_path.removeprefix("file://")).num_row_groups for f in written]
    assert sorted(groups) == [1, 2, 2]  # a new file once 3 MB are written: 2 + 2 + 1 batches
    assert sum(f.record_count for f in written) == n
    assert [r["id"] for r in rows(tmp_path)] == list(range(-1, n))
    opened.engine.dispose()


def test_merge_keys_the_table_lacks_are_a_clear_error(tmp_path: Path) -> None:
    load(tmp_path, pa.table({"id": [1], "at": [datetime(2026, 1, 1)]}), sink(), "r1")
    later = pa.table({"id": [1], "at": [datetime(2026, 1, 1)], "k2": [datetime(2026, 1, 2)]})
    with pytest.raises(DataError, match=r"merge keys \['k2'\] are not columns of the table"):
        load(tmp_path, later, sink(mode="merge", keys=["k2"]), "r2")


def test_loads_commit_with_pyicebergs_own_retry_off(tmp_path: Path) -> None:
    """pyiceberg's retry replays a transaction's properties over a concurrent commit's: the
    ledger entry must come from a fresh attempt instead."""
    load(tmp_path, pa.table({"id": [1]}), sink(), "r1")
    assert catalog(tmp_path).load_table("ns.t").properties["commit.retry.num-retries"] == "0"


def test_the_first_load_into_a_table_made_elsewhere_does_not_retry_inside_pyiceberg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table another tool made has pyiceberg's default of 4 retries, which would replay
    the load's transaction (its ledger entry, computed from the table it read) over another
    writer's commit; the attempt fails instead, and the task's retry computes it anew."""
    from connectors.iceberg import sink as sink_module

    (tmp_path / ".arrowline" / "iceberg").mkdir(parents=True)
    made = catalog(tmp_path)
    made.create_namespace("ns")
    made.create_table("ns.t", schema=pa.schema([("id", pa.int64())])).append(pa.table({"id": [0]}))

    def concurrent(name: str) -> None:  # another writer commits while the load is writing
        if name == "iceberg.before_commit":
            catalog(tmp_path).load_table("ns.t").append(pa.table({"id": [100]}))

    monkeypatch.setattr(sink_module, "fault_point", concurrent)
    with pytest.raises(TransientTaskError, match="another writer committed"):
        load(tmp_path, pa.table({"id": [1]}), sink(), "r1")
    assert [r["id"] for r in rows(tmp_path)] == [0, 100]  # the attempt committed nothing
    monkeypatch.undo()
    load(tmp_path, pa.table({"id": [1]}), sink(), "r1")  # the task's retry
    assert [r["id"] for r in rows(tmp_path)] == [0, 1, 100]


def test_bad_partitions_tables_and_conditions_fail_validation() -> None:
    with pytest.raises(ValueError, match="takes a size of 1 or more"):
        sink(partition_by=["bucket(0, id)"])
    with pytest.raises(ValueError, match=r"names identity\(id\) twice"):
        sink(partition_by=["id", "id"])
    with pytest.raises(ValueError, match="embedded catalog keeps one level of namespace"):
        sink(table="a.b.t")
    assert sink(table="a.b.t", connection="rest").table == "a.b.t"
    from connectors.registry import connector

    problems = connector("iceberg").check(sink(mode="replace", predicate="g = = 'x'"), Path())
    assert [p.key for p in problems] == [("predicate",)]


# -- the source -------------------------------------------------------------------------------


def test_a_table_streams_with_its_columns_a_filter_and_time_travel(tmp_path: Path) -> None:
    data = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int32()),
            "amount": pa.array([Decimal("1.50"), Decimal("2.25"), None], pa.decimal128(12, 2)),
            "region": ["EU", "US", "EU"],
        }
    )
    load(tmp_path, data, sink(partition_by=["region"]), "r1")
    first = catalog(tmp_path).load_table("ns.t").current_snapshot()
    assert first is not None
    more = pa.table(
        {
            "id": pa.array([4], pa.int32()),
            "amount": pa.array([None], pa.decimal128(12, 2)),
            "region": ["EU"],
        }
    )
    load(tmp_path, more, sink(), "r2")
    assert sorted(read(tmp_path).column("id").to_pylist()) == [1, 2, 3, 4]
    some = read(tmp_path, columns=["id", "amount"], filter="region = 'EU' and id > 1")
    assert some.schema.names == ["id", "amount"]
    assert some.schema.field("amount").type == pa.decimal128(12, 2)
    assert sorted(some.column("id").to_pylist()) == [3, 4]
    old = read(tmp_path, snapshot_id=first.snapshot_id)
    assert sorted(old.column("id").to_pylist()) == [1, 2, 3]
    moment = datetime.fromtimestamp(first.timestamp_ms / 1000, UTC).replace(tzinfo=None)
    naive = read(tmp_path, as_of=moment.isoformat())  # no zone: UTC, whatever the machine's
    assert sorted(naive.column("id").to_pylist()) == [1, 2, 3]
    with pytest.raises(DataError, match=r"columns \['nope'\] are not in the Iceberg table"):
        read(tmp_path, columns=["nope"])
    with pytest.raises(DataError, match=r"no Iceberg table ns\.missing"):
        read(tmp_path, table="ns.missing")


def test_incremental_skips_a_compaction_and_refuses_a_version_1_table(
    write: WritePipeline, project: Path, cli: Cli
) -> None:
    for i in range(3):
        load(project, pa.table({"id": [i]}), sink(), f"r{i}")
    (sequence,) = set(read(project, incremental=True).column("_iceberg_sequence").to_pylist())
    write(
        "p.yaml",
        """
        pipeline: p
        tasks:
          - id: n
            sql: select 1 as id
          - id: t
            load: {input: n, to: iceberg, table: ns.t, mode: append}
        """,
    )
    result = cli("table", "optimize", "p.yaml", "t")
    assert result.exit_code == 0, result.output
    assert "files removed: 3, files added: 1" in result.output
    assert read(project, Watermark(sequence), incremental=True).num_rows == 0
    opened = catalog(project)
    opened.create_table(
        "ns.old", schema=pa.schema([("id", pa.int64())]), properties={"format-version": "1"}
    )
    with pytest.raises(DataError, match="format version 1"):
        read(project, incremental=True, table="ns.old")


def test_incremental_reads_rows_written_since_the_watermark_snapshot(tmp_path: Path) -> None:
    load(tmp_path, pa.table({"id": [1, 2], "v": ["a", "b"]}), sink(), "r1")
    first = read(tmp_path, incremental=True)
    (sequence,) = set(first.column("_iceberg_sequence").to_pylist())
    assert read(tmp_path, Watermark(sequence), incremental=True).num_rows == 0
    with pytest.raises(TaskError, match="it was made anew since"):
        read(tmp_path, Watermark(sequence + 5), incremental=True)
    load(tmp_path, pa.table({"id": [3], "v": ["c"]}), sink(), "r2")
    appended = read(tmp_path, Watermark(sequence), incremental=True)
    assert appended.select(["id", "v"]).to_pylist() == [{"id": 3, "v": "c"}]
    merged = load(
        tmp_path, pa.table({"id": [1, 9], "v": ["A", "i"]}), sink(mode="merge", keys=["id"]), "r3"
    )
    assert merged.details["files_rewritten"] == 1
    (after,) = set(appended.column("_iceberg_sequence").to_pylist())
    changed = read(tmp_path, Watermark(after), incremental=True)
    found = {r["id"]: r["v"] for r in changed.to_pylist()}
    assert (found[1], found[9]) == ("A", "i")  # updated and inserted by the merge: read
    assert 3 not in found  # in a file the merge did not touch


# -- maintenance, notebooks, pipelines ----------------------------------------------------------


def test_maintenance_compacts_vacuums_and_expires_keeping_the_ledger(
    write: WritePipeline, project: Path, cli: Cli
) -> None:
    write(
        "p.yaml",
        """
        pipeline: small
        tasks:
          - id: n
            sql: select 1 as id
          - id: keep
            load: {input: n, to: iceberg, table: lake.kept, mode: append}
        """,
    )
    for _ in range(4):
        assert cli("run", "p.yaml", "--no-progress").exit_code == 0
    table = catalog(project).load_table("lake.kept")
    assert len(list(table.scan().plan_files())) == 4
    result = cli("table", "optimize", "p.yaml", "keep")
    assert result.exit_code == 0, result.output
    assert "files removed: 4, files added: 1" in result.output
    assert len(rows(project, table="lake.kept")) == 4
    orphan = project / ".arrowline/iceberg/warehouse/lake/kept/data/orphan.parquet"
    orphan.write_bytes(b"left by a killed load")
    refused = cli("table", "vacuum", "p.yaml", "keep", "--retention", "0s")
    assert refused.exit_code != 0
    assert "--unsafe-retention" in refused.output
    result = cli("table", "vacuum", "p.yaml", "keep", "--retention", "0s", "--unsafe-retention")
    assert result.exit_code == 0, result.output
    assert not orphan.exists()
    assert len(rows(project, table="lake.kept")) == 4  # the compacted file is referenced
    refused = cli("table", "expire-snapshots", "p.yaml", "keep", "--retention", "0s")
    assert refused.exit_code != 0  # an incremental reader's snapshot may be among them
    assert "--unsafe-retention" in refused.output
    planned = cli("table", "expire-snapshots", "p.yaml", "keep", "--retention", "1h", "--dry-run")
    assert planned.exit_code == 0, planned.output
    assert "would forget: 0" in planned.output  # none is an hour old
    planned = cli(
        "table",
        "expire-snapshots",
        "p.yaml",
        "keep",
        "--retention",
        "0s",
        "--dry-run",
        "--unsafe-retention",
    )
    assert "would forget: 4, snapshots kept: 1" in planned.output, planned.output
    assert len(catalog(project).load_table("lake.kept").snapshots()) == 5  # a dry run
    result = cli(
        "table", "expire-snapshots", "p.yaml", "keep", "--retention", "0s", "--unsafe-retention"
    )
    assert result.exit_code == 0, result.output
    table = catalog(project).load_table("lake.kept")
    assert len(table.snapshots()) == 1
    assert json.loads(table.properties["arrowline.load.small.keep"])["sequence"] == 4


def test_a_pipeline_into_iceberg_and_back_with_a_notebook_view_of_each_run(
    write: WritePipeline, project: Path, cli: Cli
) -> None:
    write(
        "p.yaml",
        """
        pipeline: ice
        tasks:
          - id: orders
            extract:
              from: generate
              rows: 1000
              columns: {order_id: {type: int64, sequence: true}, region: {type: string, values: [EU, US]}}
          - id: lake
            load: {input: orders, to: iceberg, table: sales.orders, mode: merge, keys: [order_id],
                   partition_by: [region, "bucket(4, order_id)"]}
        """,
    )
    write(
        "back.yaml",
        """
        pipeline: back
        tasks:
          - id: orders
            extract: {from: iceberg, table: sales.orders, filter: "region = 'EU'", incremental: true}
          - id: eu
            load: {input: orders, to: parquet, path: out/eu.parquet}
        """,
    )
    assert cli("run", "p.yaml", "--no-progress").exit_code == 0
    planned = cli("plan", "back.yaml", "--format", "json")
    assert planned.exit_code == 0, planned.output
    schema = json.loads(planned.stdout)["schemas"]["schemas"]["orders"]
    assert [c["name"] for c in schema] == ["order_id", "region", "_iceberg_sequence"]
    result = cli("run", "back.yaml", "--no-progress")
    assert result.exit_code == 0, result.output
    regions = [r["region"] for r in rows(project, "order_id", "sales.orders")]
    assert pq.read_table(project / "out/eu.parquet").num_rows == regions.count("EU") > 400
    write(
        "more.yaml",
        """
        pipeline: more
        tasks:
          - id: extra
            sql: select 5000 as order_id, 'EU' as region
          - id: lake2
            load: {input: extra, to: iceberg, table: sales.orders, mode: append}
        """,
    )
    assert cli("run", "more.yaml", "--no-progress").exit_code == 0
    with engine.open(project) as notebook:
        assert notebook.table("lake2").collect().height == 1001  # as that load left it
        assert notebook.table("lake").collect().height == 1000  # before the append


# -- every type, both ways --------------------------------------------------------------------

ICEBERG_DTYPES = [
    pl.Int8,
    pl.Int16,
    pl.Int32,
    pl.Int64,
    pl.UInt8,
    pl.UInt16,
    pl.UInt32,
    pl.Float32,
    pl.Float64,
    pl.Boolean,
    pl.String,
    pl.Binary,
    pl.Date,
    pl.Time,
    pl.Datetime("us"),
    pl.Datetime("us", "UTC"),
    pl.Decimal(12, 2),
    pl.Decimal(38, 0),
    pl.List(pl.Int64),
    pl.List(pl.String),
]


@pytest.mark.slow
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    frame=dataframes(
        min_cols=1, max_cols=6, allowed_dtypes=ICEBERG_DTYPES, allow_null=True, max_size=30
    )
)
def test_every_type_iceberg_holds_comes_back_as_it_went_in(
    tmp_path: Path, frame: pl.DataFrame
) -> None:
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    data = frame.to_arrow()
    load(folder, data, sink(), "r1")
    load(folder, data, sink(), "r2")
    back = pl.from_arrow(read(folder))
    assert isinstance(back, pl.DataFrame)
    assert_frame_equal(back, pl.concat([frame, frame]), check_dtypes=False, check_row_order=False)
    for field in read(folder).schema:
        went_in = storable_schema(pa.schema([data.schema.field(field.name)])).field(0).type
        assert arrow_type_name(field.type) == arrow_type_name(went_in)


def test_lineage_names_tables_in_the_formats_conventions(tmp_path: Path) -> None:
    from connectors.base import NamingContext
    from connectors.delta.config import DeltaSink
    from connectors.iceberg.catalog import resolve
    from connectors.iceberg.config import IcebergConnection
    from connectors.registry import connector

    delta = connector("delta")
    local = DeltaSink.model_validate({"input": "t", "to": "delta", "path": "lake/t"})
    assert delta.place(local, NamingContext(tmp_path)).datasets() == [
        ("file", str(tmp_path.resolve() / "lake/t"))
    ]
    remote = DeltaSink.model_validate({"input": "t", "to": "delta", "path": "s3://bucket/lake/t"})
    assert delta.place(remote, NamingContext(tmp_path)).datasets() == [("s3://bucket", "lake/t")]

    iceberg = connector("iceberg")
    assert iceberg.place(sink(), NamingContext(tmp_path)).datasets() == [
        ((tmp_path.resolve() / ".arrowline/iceberg/catalog.db").as_uri(), "ns.t")
    ]
    spec = IcebergConnection(kind="iceberg", uri="postgresql://etl:s3cret@db.internal:5433/meta")
    resolved = resolve("lake", spec, tmp_path)
    place = iceberg.place(sink(connection="lake"), NamingContext(tmp_path, {"lake": resolved}))
    assert place.datasets() == [("postgresql://db.internal:5433/meta", "ns.t")]


def test_plan_before_a_run_says_a_connections_table_is_known_once_reached(tmp_path: Path) -> None:
    from connectors.base import Unknown
    from connectors.registry import connector

    source = IcebergSource.model_validate(
        {"from": "iceberg", "table": "ns.t", "connection": "lake"}
    )
    found = connector("iceberg").schema(source, ConnectorContext(tmp_path, "p", "plan", "x"))
    assert isinstance(found, Unknown)
    assert "connection 'lake'" in found.reason

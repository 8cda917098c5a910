"""Delta Lake tables through delta-rs: the sink's modes, schema change, ledger and conflicts,
and the source's projection, filter, time travel and incremental reads. Real tables in
tmp_path, read back with deltalake itself."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import CommitProperties, DeltaTable, write_deltalake
from hypothesis import HealthCheck, given, settings
from polars.testing import assert_frame_equal
from polars.testing.parametric import dataframes

from connectors.base import ConnectorContext, SinkResult
from connectors.delta import state
from connectors.delta.config import DeltaSink, DeltaSource
from connectors.delta.sink import storable_schema, write_delta
from connectors.delta.source import open_delta
from connectors.evolution import arrow_type_name
from connectors.registry import connector
from engine.core.errors import DataError, StateError, TaskError, TransientTaskError
from engine.core.tables import InputTable
from engine.core.watermark import Watermark, WatermarkUpdate
from tests.conftest import at_once


def staged(tmp_path: Path, table: pa.Table, name: str = "in") -> InputTable:
    path = tmp_path / f"{name}.parquet"
    pq.write_table(table, path)
    return InputTable("t", "r", (path,), table.schema, table.num_rows)


def sink(**config: object) -> DeltaSink:
    return DeltaSink.model_validate({"input": "t", "to": "delta", "path": "lake/t", **config})


def load(
    tmp_path: Path,
    data: pa.Table,
    config: DeltaSink,
    run_id: str,
    watermarks: tuple[WatermarkUpdate, ...] = (),
) -> SinkResult:
    ctx = ConnectorContext(tmp_path, "p", run_id, "load", pending_watermarks=watermarks)
    return write_delta(staged(tmp_path, data, f"in-{run_id}"), config, ctx)


def table_rows(tmp_path: Path, sort: str = "id", path: str = "lake/t") -> list[dict[str, Any]]:
    return DeltaTable(str(tmp_path / path)).to_pyarrow_table().sort_by(sort).to_pylist()


def read(tmp_path: Path, watermark: Watermark | None = None, **config: object) -> pa.Table:
    source = DeltaSource.model_validate({"from": "delta", "path": "lake/t", **config})
    ctx = ConnectorContext(tmp_path, "p", "r", "extract", watermark=watermark)
    (reader,) = open_delta(source, ctx)
    return reader.read_all()


def ledger(tmp_path: Path) -> list[dict[str, Any]]:
    history = DeltaTable(str(tmp_path / "lake/t")).history()
    return [json.loads(c["arrowline"]) for c in history if "arrowline" in c]


# -- the sink ---------------------------------------------------------------------------------


def test_append_creates_the_table_then_adds_rows_with_a_ledger_entry_per_load(
    tmp_path: Path,
) -> None:
    first = load(tmp_path, pa.table({"id": [1, 2], "v": ["a", "b"]}), sink(), "r1")
    assert first.rows == 2
    assert first.target == f"delta:{tmp_path / 'lake/t'}"
    assert first.details == {"mode": "append", "version": 0}
    load(tmp_path, pa.table({"v": ["c"], "id": [3]}), sink(), "r2")  # by name, any order
    assert [r["v"] for r in table_rows(tmp_path)] == ["a", "b", "c"]
    newest, oldest = ledger(tmp_path)
    assert (newest["run_id"], newest["rows"], newest["sequence"]) == ("r2", 1, 2)
    assert (oldest["pipeline"], oldest["task"], oldest["run_id"]) == ("p", "load", "r1")
    assert DeltaTable(str(tmp_path / "lake/t")).transaction_version("arrowline:p:load") == 2


def test_a_run_whose_load_committed_writes_nothing_again(tmp_path: Path) -> None:
    data = pa.table({"id": [1, 2], "v": ["a", "b"]})
    load(tmp_path, data, sink(), "r1")
    again = load(tmp_path, data, sink(), "r1")
    assert again.details["already_committed"] is True
    assert again.rows == 2
    assert len(table_rows(tmp_path)) == 2
    assert DeltaTable(str(tmp_path / "lake/t")).version() == 0
    load(tmp_path, data, sink(), "r2")
    assert len(table_rows(tmp_path)) == 4


def test_watermarks_are_committed_with_the_rows_and_carried_by_later_loads(
    tmp_path: Path,
) -> None:
    update = WatermarkUpdate("orders", Watermark(datetime(2026, 12, 1, tzinfo=UTC), (7,)))
    load(tmp_path, pa.table({"id": [1]}), sink(), "r1", (update,))
    load(tmp_path, pa.table({"id": [2]}), sink(), "r2")  # an extract that is not incremental
    ctx = ConnectorContext(tmp_path, "p", "r3", "load")
    assert state.read(sink(), ctx) == {"orders": (update.watermark, "r1")}
    other = ConnectorContext(tmp_path, "other", "r3", "load")
    assert state.read(sink(), other) == {}


def test_state_set_and_reset_are_commits_of_no_rows(tmp_path: Path) -> None:
    ctx = ConnectorContext(tmp_path, "p", "manual", "load")
    with pytest.raises(StateError, match="does not exist yet"):
        state.put(sink(), ctx, [WatermarkUpdate("orders", Watermark(5))])
    load(tmp_path, pa.table({"id": [1]}), sink(), "r1")
    state.put(sink(), ctx, [WatermarkUpdate("orders", Watermark(5))])
    assert state.read(sink(), ctx) == {"orders": (Watermark(5), "manual")}
    assert len(table_rows(tmp_path)) == 1
    assert ledger(tmp_path)[0]["run_id"] == "r1"  # the last load is still r1's
    again = load(tmp_path, pa.table({"id": [1]}), sink(), "r1")
    assert again.details["already_committed"] is True
    state.delete(sink(), ctx, "orders")
    assert state.read(sink(), ctx) == {}


def test_replace_makes_the_table_the_input_whatever_its_shape(tmp_path: Path) -> None:
    load(tmp_path, pa.table({"id": [1, 2], "v": ["a", "b"]}), sink(), "r1")
    load(tmp_path, pa.table({"id": [9], "w": [1.5]}), sink(mode="replace"), "r2")
    assert table_rows(tmp_path) == [{"id": 9, "w": 1.5}]


def test_replace_with_a_predicate_overwrites_only_the_matching_partition(tmp_path: Path) -> None:
    days = pa.table({"id": [1, 2, 3], "day": ["d1", "d1", "d2"]})
    load(tmp_path, days, sink(partition_by=["day"]), "r1")
    fresh = pa.table({"id": [4], "day": ["d1"]})
    load(tmp_path, fresh, sink(mode="replace", predicate="day = 'd1'"), "r2")
    assert [(r["id"], r["day"]) for r in table_rows(tmp_path)] == [(3, "d2"), (4, "d1")]
    assert DeltaTable(str(tmp_path / "lake/t")).metadata().partition_columns == ["day"]
    stray = pa.table({"id": [5], "day": ["d2"]})
    with pytest.raises(DataError, match="predicate"):
        load(tmp_path, stray, sink(mode="replace", predicate="day = 'd1'"), "r3")
    assert len(table_rows(tmp_path)) == 2


def test_merge_updates_matching_keys_and_inserts_the_rest(tmp_path: Path) -> None:
    load(tmp_path, pa.table({"id": [1, 2], "v": ["a", "b"]}), sink(mode="merge", keys=["id"]), "r1")
    result = load(
        tmp_path, pa.table({"id": [2, 3], "v": ["B", "c"]}), sink(mode="merge", keys=["id"]), "r2"
    )
    assert (result.details["inserted"], result.details["updated"]) == (1, 1)
    assert [(r["id"], r["v"]) for r in table_rows(tmp_path)] == [(1, "a"), (2, "B"), (3, "c")]


def test_merge_with_delete_missing_leaves_exactly_the_inputs_keys(tmp_path: Path) -> None:
    config = sink(mode="merge", keys=["id"], delete_missing=True)
    load(tmp_path, pa.table({"id": [1, 2, 3], "v": ["a", "b", "c"]}), config, "r1")
    result = load(tmp_path, pa.table({"id": [2, 4], "v": ["B", "d"]}), config, "r2")
    assert result.details["deleted"] == 2
    assert [(r["id"], r["v"]) for r in table_rows(tmp_path)] == [(2, "B"), (4, "d")]


def test_merge_keys_with_mixed_case_names_are_quoted(tmp_path: Path) -> None:
    config = sink(mode="merge", keys=["OrderId"])
    load(tmp_path, pa.table({"OrderId": [1, 2], "v": ["a", "b"]}), config, "r1")
    load(tmp_path, pa.table({"OrderId": [2], "v": ["B"]}), config, "r2")
    assert [r["v"] for r in table_rows(tmp_path, "OrderId")] == ["a", "B"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (pa.table({"id": [1, 1], "v": ["a", "b"]}), r"1 merge keys appear more than once.*id=1"),
        (pa.table({"id": [1, None], "v": ["a", "b"]}), r"must not be NULL.*id: 1 rows"),
        (pa.table({"key": [1], "v": ["a"]}), r"merge keys \['id'\] are not columns"),
    ],
)
def test_merge_refuses_keys_it_cannot_match(tmp_path: Path, data: pa.Table, message: str) -> None:
    load(tmp_path, pa.table({"id": [7], "v": ["x"]}), sink(), "r0")
    with pytest.raises(DataError, match=message):
        load(tmp_path, data, sink(mode="merge", keys=["id"]), "r1")
    assert table_rows(tmp_path) == [{"id": 7, "v": "x"}]


def test_config_refuses_flags_of_other_modes() -> None:
    with pytest.raises(ValueError, match="delete_missing applies to mode: merge"):
        sink(delete_missing=True)
    with pytest.raises(ValueError, match="needs 'keys'"):
        sink(mode="merge")
    with pytest.raises(ValueError, match="predicate applies to mode: replace or merge"):
        sink(predicate="id = 1")


def test_new_columns_are_added_and_missing_nullable_ones_filled_under_evolve(
    tmp_path: Path,
) -> None:
    load(tmp_path, pa.table({"id": [1], "v": ["a"]}), sink(), "r1")
    result = load(tmp_path, pa.table({"id": [2], "v": ["b"], "n": [2.5]}), sink(), "r2")
    assert result.details["schema_changes"] == [
        {
            "change": "added",
            "column": "n",
            "before": None,
            "after": "double precision",
            "breaking": False,
        }
    ]
    with pytest.raises(DataError, match=r"column 'v' \(text\) is not in the input"):
        load(tmp_path, pa.table({"id": [3], "n": [3.5]}), sink(), "r3")
    load(tmp_path, pa.table({"id": [3], "n": [3.5]}), sink(schema_change="evolve"), "r4")
    assert table_rows(tmp_path) == [
        {"id": 1, "v": "a", "n": None},
        {"id": 2, "v": "b", "n": 2.5},
        {"id": 3, "v": None, "n": 3.5},
    ]


def test_a_widened_column_rewrites_the_table_first_and_keeps_every_row(tmp_path: Path) -> None:
    narrow = pa.table({"id": pa.array([1, 2], pa.int32()), "p": ["x", "y"]})
    load(tmp_path, narrow, sink(partition_by=["p"]), "r1")
    wide = pa.table({"id": pa.array([2**40], pa.int64()), "p": ["x"]})
    result = load(tmp_path, wide, sink(), "r2")
    assert result.details["schema_changes"][0]["change"] == "widened"
    table = DeltaTable(str(tmp_path / "lake/t"))
    assert table.schema().to_arrow().field("id").type == pa.int64()
    assert [r["id"] for r in table_rows(tmp_path)] == [1, 2, 2**40]
    assert table.metadata().partition_columns == ["p"]
    assert table.version() == 2  # the first load, the widening, the second load


def test_freeze_refuses_any_difference_and_changed_types_fail_every_policy(
    tmp_path: Path,
) -> None:
    load(tmp_path, pa.table({"id": [1], "v": ["a"]}), sink(), "r1")
    with pytest.raises(DataError, match="new column 'n'"):
        load(
            tmp_path,
            pa.table({"id": [2], "v": ["b"], "n": [1]}),
            sink(schema_change="freeze"),
            "r2",
        )
    with pytest.raises(DataError, match="column 'v' is text, the input has bigint"):
        load(tmp_path, pa.table({"id": [2], "v": [5]}), sink(schema_change="evolve"), "r3")
    assert len(table_rows(tmp_path)) == 1


def test_types_delta_cannot_hold_are_refused_and_unsigned_values_kept(tmp_path: Path) -> None:
    load(tmp_path, pa.table({"id": pa.array([200, 7], pa.uint8())}), sink(), "r1")
    assert [r["id"] for r in table_rows(tmp_path)] == [7, 200]  # not wrapped to -56
    assert DeltaTable(str(tmp_path / "lake/t")).schema().to_arrow().field("id").type == pa.int16()
    times = pa.table({"id": [1], "at": pa.array([1], pa.time64("us"))})
    with pytest.raises(DataError, match="column 'at' is time64"):
        load(tmp_path, times, sink(path="lake/u"), "r2")
    huge = pa.table({"id": pa.array([2**63 + 5], pa.uint64())})
    with pytest.raises(DataError, match="column 'id'"):
        load(tmp_path, huge, sink(path="lake/v"), "r3")
    assert (
        not (tmp_path / "lake/v/_delta_log").exists()
        or DeltaTable(str(tmp_path / "lake/v")).version() == -1
    )


def test_two_merges_at_once_one_commits_and_the_other_is_told_to_retry(tmp_path: Path) -> None:
    config = sink(mode="merge", keys=["id"])
    load(tmp_path, pa.table({"id": list(range(100)), "v": ["a"] * 100}), config, "r0")
    a = staged(tmp_path, pa.table({"id": [1, 200], "v": ["A", "new"]}), "a")
    b = staged(tmp_path, pa.table({"id": [1, 300], "v": ["B", "new"]}), "b")
    outcomes = at_once(
        lambda: write_delta(a, config, ConnectorContext(tmp_path, "p", "ra", "load")),
        lambda: write_delta(b, config, ConnectorContext(tmp_path, "p", "rb", "load")),
    )
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failures) <= 1
    for failure in failures:
        assert isinstance(failure, TransientTaskError), failure
        assert "another writer committed" in str(failure)
    rows = {r["id"]: r["v"] for r in table_rows(tmp_path)}
    committed = [o for o in outcomes if isinstance(o, SinkResult)]
    assert len(rows) == 100 + len(committed)
    assert rows[1] in {"A", "B"}


# -- the source -------------------------------------------------------------------------------


def test_a_table_streams_with_its_columns_and_a_filter_keeps_its_types(tmp_path: Path) -> None:
    data = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int32()),
            "amount": pa.array([Decimal("1.50"), Decimal("2.25"), None], pa.decimal128(12, 2)),
            "at": pa.array([datetime(2026, 1, d, tzinfo=UTC) for d in (1, 2, 3)]),
            "region": ["EU", "US", "EU"],
        }
    )
    write_deltalake(str(tmp_path / "lake/t"), data, partition_by=["region"])
    whole = read(tmp_path)
    assert whole.sort_by("id").to_pylist() == data.sort_by("id").to_pylist()
    some = read(tmp_path, columns=["id", "amount"], filter="region = 'EU' and id > 1")
    assert some.schema == pa.schema(
        [pa.field("id", pa.int32()), pa.field("amount", pa.decimal128(12, 2))]
    )
    assert some.to_pylist() == [{"id": 3, "amount": None}]
    with pytest.raises(DataError, match=r"columns \['nope'\] are not in the Delta table"):
        read(tmp_path, columns=["nope"])
    with pytest.raises(DataError, match="the filter of the Delta source failed"):
        read(tmp_path, filter="no_such_column = 1")


def test_time_travel_reads_an_older_version_by_number_or_time(tmp_path: Path) -> None:
    path = str(tmp_path / "lake/t")
    write_deltalake(path, pa.table({"id": [1]}))
    between = datetime.now(UTC)
    write_deltalake(path, pa.table({"id": [2]}), mode="overwrite")
    assert read(tmp_path).column("id").to_pylist() == [2]
    assert read(tmp_path, version=0).column("id").to_pylist() == [1]
    assert read(tmp_path, as_of=between.isoformat()).column("id").to_pylist() == [1]
    with pytest.raises(ValueError, match="at most one of 'version' or 'as_of'"):
        read(tmp_path, version=0, as_of=between.isoformat())


def test_incremental_reads_only_rows_written_since_the_watermark_version(tmp_path: Path) -> None:
    path = str(tmp_path / "lake/t")
    write_deltalake(path, pa.table({"id": [1, 2], "v": ["a", "b"]}))
    write_deltalake(path, pa.table({"id": [3], "v": ["c"]}), mode="append")
    first = read(tmp_path, incremental=True)
    assert first.column("_delta_version").to_pylist() == [1, 1, 1]
    DeltaTable(path).optimize.compact()  # version 2 moves rows already read: none read again
    assert read(tmp_path, Watermark(1), incremental=True).num_rows == 0
    write_deltalake(path, pa.table({"id": [4], "v": ["d"]}), mode="append")
    after_append = read(tmp_path, Watermark(2), incremental=True)
    assert after_append.to_pylist() == [{"id": 4, "v": "d", "_delta_version": 3}]
    DeltaTable(path).update({"v": "'B'"}, predicate="id = 2")  # rewrites the file holding id 2
    changed = read(tmp_path, Watermark(3), incremental=True)
    assert {"id": 2, "v": "B", "_delta_version": 4} in changed.to_pylist()
    assert 4 not in changed.column("id").to_pylist()


def test_a_compaction_of_new_rows_is_read_again_whole_rather_than_missed(tmp_path: Path) -> None:
    path = str(tmp_path / "lake/t")
    write_deltalake(path, pa.table({"id": [1]}))
    write_deltalake(path, pa.table({"id": [2]}), mode="append")
    DeltaTable(path).optimize.compact()  # merges version 1's new row with version 0's
    assert sorted(read(tmp_path, Watermark(0), incremental=True).column("id").to_pylist()) == [
        1,
        2,
    ]


def test_incremental_after_the_log_was_cleaned_compares_snapshots(tmp_path: Path) -> None:
    path = str(tmp_path / "lake/t")
    write_deltalake(path, pa.table({"id": [1]}))
    write_deltalake(path, pa.table({"id": [2]}), mode="append")
    DeltaTable(path).create_checkpoint()
    (tmp_path / "lake/t/_delta_log" / f"{1:020d}.json").unlink()
    assert read(tmp_path, Watermark(0), incremental=True).column("id").to_pylist() == [2]


def test_the_descriptor_knows_the_schema_and_version_before_reading(tmp_path: Path) -> None:
    delta = connector("delta")
    source = DeltaSource.model_validate({"from": "delta", "path": "lake/t", "incremental": True})
    ctx = ConnectorContext(tmp_path, "p", "plan", "extract")
    assert "no Delta table" in delta.schema(source, ctx).reason  # type: ignore[union-attr]
    write_deltalake(str(tmp_path / "lake/t"), pa.table({"id": pa.array([1], pa.int16())}))
    assert delta.schema(source, ctx) == pa.schema(
        [pa.field("id", pa.int16()), pa.field("_delta_version", pa.int64(), nullable=False)]
    )
    assert delta.observe(source, tmp_path) == ((str(tmp_path / "lake/t"), 0, 0),)
    assert delta.incremental(source).cursor == "_delta_version"  # type: ignore[union-attr]


# -- every type, both ways --------------------------------------------------------------------

DELTA_DTYPES = [
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
    pl.Datetime("us"),
    pl.Datetime("us", "UTC"),
    pl.Decimal(12, 2),
    pl.Decimal(38, 0),
    pl.List(pl.Int64),
    pl.List(pl.String),
]


@pytest.mark.slow
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    frame=dataframes(
        min_cols=1, max_cols=6, allowed_dtypes=DELTA_DTYPES, allow_null=True, max_size=30
    )
)
def test_every_type_delta_holds_comes_back_as_it_went_in(
    tmp_path: Path, frame: pl.DataFrame
) -> None:
    """Through the sink (a new table, then an append) and the source: the same values, in the
    type Delta holds them as (unsigned integers in the next wider signed type)."""
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    data = frame.to_arrow()
    load(folder, data, sink(), "r1")
    load(folder, data, sink(), "r2")
    back = pl.from_arrow(read(folder))
    assert isinstance(back, pl.DataFrame)
    assert_frame_equal(back, pl.concat([frame, frame]), check_dtypes=False, check_row_order=False)
    for field in read(folder).schema:
        went_in = frame.to_arrow().schema.field(field.name).type
        assert arrow_type_name(field.type) == arrow_type_name(
            storable_schema(pa.schema([pa.field("x", went_in)])).field("x").type
        )


# -- what a review found (each failed before its fix) -------------------------------------------


def test_a_resume_of_an_older_run_finds_its_load_committed(tmp_path: Path) -> None:
    """r1 committed and died; r2 ran since; resuming r1 must not load its rows again."""
    load(tmp_path, pa.table({"id": [1]}), sink(), "r1")
    load(tmp_path, pa.table({"id": [2]}), sink(), "r2")
    again = load(tmp_path, pa.table({"id": [1]}), sink(), "r1")
    assert again.details["already_committed"] is True
    assert [r["id"] for r in table_rows(tmp_path)] == [1, 2]


def test_a_maintenance_commit_carrying_an_older_entry_does_not_shadow_a_newer_load(
    tmp_path: Path,
) -> None:
    from connectors.delta.table import CARRIED_KEY, ledger

    load(tmp_path, pa.table({"id": [1]}), sink(), "r1", (WatermarkUpdate("e", Watermark(1)),))
    stale = ledger(DeltaTable(str(tmp_path / "lake/t")))  # what a long optimize read first
    load(tmp_path, pa.table({"id": [2]}), sink(), "r2", (WatermarkUpdate("e", Watermark(2)),))
    write_deltalake(  # the optimize commits after r2, carrying r1's entry
        str(tmp_path / "lake/t"),
        pa.table({"id": pa.array([], pa.int64())}),
        mode="append",
        commit_properties=CommitProperties(custom_metadata={CARRIED_KEY: json.dumps(stale)}),
    )
    ctx = ConnectorContext(tmp_path, "p", "r3", "load")
    assert state.read(sink(), ctx) == {"e": (Watermark(2), "r2")}
    assert load(tmp_path, pa.table({"id": [2]}), sink(), "r2").details["already_committed"]


def test_a_merge_sets_only_the_inputs_columns(tmp_path: Path) -> None:
    """Under evolve a table column the input lacks keeps its value in updated rows."""
    first = pa.table({"id": [1, 2], "v": ["a", "b"], "email": ["a@x", "b@x"]})
    load(tmp_path, first, sink(mode="merge", keys=["id"]), "r1")
    config = sink(mode="merge", keys=["id"], schema_change="evolve")
    load(tmp_path, pa.table({"id": [1, 3], "v": ["A", "c"]}), config, "r2")
    assert [(r["id"], r["v"], r["email"]) for r in table_rows(tmp_path)] == [
        (1, "A", "a@x"),
        (2, "b", "b@x"),
        (3, "c", None),
    ]


def test_a_merge_predicate_limits_deletes_and_never_inserts_a_key_twice(tmp_path: Path) -> None:
    rows_ = pa.table({"id": [1, 2, 3], "g": ["x", "x", "y"], "v": ["a", "b", "c"]})
    load(tmp_path, rows_, sink(), "r1")
    config = sink(mode="merge", keys=["id"], predicate="t.g = 'x'", delete_missing=True)
    load(tmp_path, pa.table({"id": [2, 3], "g": ["x", "y"], "v": ["B", "C"]}), config, "r2")
    assert [(r["id"], r["v"]) for r in table_rows(tmp_path)] == [(2, "B"), (3, "C")]


def test_keys_the_table_lacks_and_decimals_past_38_digits_are_clear_errors(
    tmp_path: Path,
) -> None:
    load(
        tmp_path,
        pa.table({"id": [1], "d": pa.array([Decimal("1")], pa.decimal128(38, 0))}),
        sink(),
        "r1",
    )
    with pytest.raises(DataError, match=r"merge keys \['k2'\] are not columns of the table"):
        load(tmp_path, pa.table({"id": [1], "k2": [1]}), sink(mode="merge", keys=["k2"]), "r2")
    wider = pa.table({"id": [2], "d": pa.array([Decimal("1.5")], pa.decimal128(38, 10))})
    with pytest.raises(DataError, match="38 digits"):
        load(tmp_path, wider, sink(), "r3")


def test_maps_and_fixed_size_lists_of_unsigned_values_keep_their_values(tmp_path: Path) -> None:
    data = pa.table(
        {
            "id": [1],
            "m": pa.array([[("k", 200)]], pa.map_(pa.string(), pa.uint8())),
            "f": pa.array([[200, 7]], pa.list_(pa.uint8(), 2)),
        }
    )
    load(tmp_path, data, sink(), "r1")
    (row,) = table_rows(tmp_path)
    assert (row["m"], row["f"]) == ([("k", 200)], [200, 7])


def test_replace_with_a_predicate_takes_new_columns_and_the_first_load_checks_it(
    tmp_path: Path,
) -> None:
    stray = pa.table({"id": [1], "day": ["d2"]})
    with pytest.raises(DataError, match="predicate"):
        load(tmp_path, stray, sink(mode="replace", predicate="day = 'd1'"), "r0")
    load(tmp_path, pa.table({"id": [1, 2], "day": ["d1", "d2"]}), sink(partition_by=["day"]), "r1")
    fresh = pa.table({"id": [3], "day": ["d1"], "n": [1.5]})
    load(tmp_path, fresh, sink(mode="replace", predicate="day = 'd1'"), "r2")
    assert [(r["id"], r["n"]) for r in table_rows(tmp_path)] == [(2, None), (3, 1.5)]
    load(tmp_path, pa.table({"id": [9]}), sink(mode="replace"), "r3")  # no partition column
    assert table_rows(tmp_path) == [{"id": 9}]
    assert DeltaTable(str(tmp_path / "lake/t")).metadata().partition_columns == []


def test_a_widened_column_is_not_read_again_by_an_incremental_reader(tmp_path: Path) -> None:
    load(tmp_path, pa.table({"id": pa.array([1, 2], pa.int32())}), sink(), "r1")
    (version,) = set(read(tmp_path, incremental=True).column("_delta_version").to_pylist())
    load(tmp_path, pa.table({"id": pa.array([2**40], pa.int64())}), sink(), "r2")
    assert DeltaTable(str(tmp_path / "lake/t")).version() == 2  # the widening, then the load
    assert read(tmp_path, Watermark(version), incremental=True).column("id").to_pylist() == [2**40]


def test_versions_and_times_the_table_does_not_have_are_refused(tmp_path: Path) -> None:
    before = datetime.now(UTC)
    write_deltalake(str(tmp_path / "lake/t"), pa.table({"id": [1]}))
    with pytest.raises(DataError, match="has no version 99 \\(its newest is 0\\)"):
        read(tmp_path, version=99)
    with pytest.raises(DataError, match="its first commit came later"):
        read(tmp_path, as_of=before.isoformat())
    with pytest.raises(TaskError, match="it was made anew since"):
        read(tmp_path, Watermark(5), incremental=True)


@pytest.mark.parametrize(
    "condition",
    [
        "1 = 1; copy (select 1) to '/tmp/pwned.csv'",
        "id in (select 1)",
        "length(read_text('/etc/passwd')) > 0",
    ],
)
def test_a_filter_is_one_condition_and_reads_no_file(tmp_path: Path, condition: str) -> None:
    write_deltalake(str(tmp_path / "lake/t"), pa.table({"id": [1]}))
    with pytest.raises(DataError, match="filter"):
        read(tmp_path, filter=condition)


def test_nanosecond_timestamps_load_when_whole_microseconds_and_fail_otherwise(
    tmp_path: Path,
) -> None:
    whole = pa.table({"at": pa.array([1_000, 2_000], pa.timestamp("ns"))})
    load(tmp_path, whole, sink(), "r1")
    assert DeltaTable(str(tmp_path / "lake/t")).to_pyarrow_table().num_rows == 2
    finer = pa.table({"at": pa.array([1_001], pa.timestamp("ns"))})
    with pytest.raises(DataError, match="column 'at'"):
        load(tmp_path, finer, sink(), "r2")

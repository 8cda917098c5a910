import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.base import ConnectorContext, SinkResult
from connectors.files.config import ParquetSink
from connectors.files.sink import write_parquet as _write_parquet
from engine.core.errors import DataError
from engine.core.files import publish_directory
from engine.core.tables import InputTable


def input_table(tmp_path: Path, table: pa.Table, name: str = "in") -> InputTable:
    path = tmp_path / f"{name}.parquet"
    pq.write_table(table, path)
    return InputTable("t", "r", (path,), table.schema, table.num_rows)


def write_parquet(source: InputTable, config: ParquetSink, base: Path, run_id: str) -> SinkResult:
    return _write_parquet(source, config, ConnectorContext(base, "p", run_id, "load"))


def sink(**config: object) -> ParquetSink:
    return ParquetSink.model_validate({"input": "t", "to": "parquet", **config})


ROWS = pa.table({"id": [1, 2, 3], "country": ["DE", "US", "DE"]})


def test_single_file_replace_is_atomic_and_leaves_no_temporary(tmp_path: Path) -> None:
    result = write_parquet(input_table(tmp_path, ROWS), sink(path="out/x.parquet"), tmp_path, "r1")
    assert result.rows == 3
    assert pq.read_table(tmp_path / "out" / "x.parquet").equals(ROWS)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["x.parquet"]


def test_directory_replace_swaps_in_the_new_version(tmp_path: Path) -> None:
    config = sink(path="out/orders", partition_by=["country"])
    write_parquet(input_table(tmp_path, ROWS), config, tmp_path, "r1")
    smaller = pa.table({"id": [9], "country": ["FR"]})
    write_parquet(input_table(tmp_path, smaller, "in2"), config, tmp_path, "r2")
    target = tmp_path / "out" / "orders"
    assert sorted(p.name for p in target.iterdir()) == ["country=FR"]
    assert pq.read_table(target).column("id").to_pylist() == [9]
    assert not list((tmp_path / "out").glob(".*"))  # no staging or previous copies left


def test_append_names_files_by_run_so_a_rerun_does_not_duplicate(tmp_path: Path) -> None:
    config = sink(path="out/events", mode="append")
    source = input_table(tmp_path, ROWS)
    write_parquet(source, config, tmp_path, "run1")
    write_parquet(source, config, tmp_path, "run2")
    write_parquet(source, config, tmp_path, "run2")  # the same run again
    target = tmp_path / "out" / "events"
    assert sorted(p.name for p in target.iterdir()) == [
        "part-run1-0.parquet",
        "part-run2-0.parquet",
    ]
    assert pq.read_table(target).num_rows == 6


def test_empty_input_still_publishes_its_schema(tmp_path: Path) -> None:
    empty = ROWS.slice(0, 0)
    write_parquet(input_table(tmp_path, empty), sink(path="out/empty"), tmp_path, "r1")
    table = pq.read_table(tmp_path / "out" / "empty")
    assert table.num_rows == 0
    assert table.schema.names == ["id", "country"]


def test_unknown_partition_column(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"partition_by names \['region'\]"):
        write_parquet(
            input_table(tmp_path, ROWS), sink(path="out/x", partition_by=["region"]), tmp_path, "r"
        )


def test_a_single_file_cannot_be_appended_to() -> None:
    with pytest.raises(ValueError, match="can only be replaced"):
        sink(path="x.parquet", mode="append")


def test_publish_directory_replaces_content_atomically(tmp_path: Path) -> None:
    target, staged = tmp_path / "target", tmp_path / "staged"
    target.mkdir()
    (target / "old").write_text("old")
    staged.mkdir()
    (staged / "new").write_text("new")
    assert publish_directory(staged, target) is True  # renameat2 exchange on Linux
    assert [p.name for p in target.iterdir()] == ["new"]
    assert not staged.exists()


class _Paced:
    """An input whose batches come when the test says: one batch, then `between()`, then
    either the rest or `error`."""

    def __init__(self, between: Callable[[], None], error: Exception | None = None) -> None:
        self.schema = ROWS.schema
        self.between, self.error = between, error

    def batches(self) -> Iterator[pa.RecordBatch]:
        first, *rest = ROWS.to_batches(max_chunksize=1)
        yield first
        self.between()
        if self.error is not None:
            raise self.error
        yield from rest


def test_an_attempt_winding_down_does_not_remove_the_next_attempts_staging(
    tmp_path: Path,
) -> None:
    """A load whose extract broke winds down while the retry's load already writes (the engine
    voids the first and starts the second at once): the first's cleanup must leave the
    second's file alone. (One file: a directory's staging is made by the dataset writer only
    when it writes, which this order of events does not reach.)"""
    path = "out/x.parquet"
    config = sink(path=path)
    second_started, first_gone = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    def first() -> None:
        source = _Paced(lambda: second_started.wait(10), RuntimeError("the stream broke"))
        ctx = ConnectorContext(tmp_path, "p", "r1", "load", attempt=1)
        try:
            _write_parquet(source, config, ctx)  # type: ignore[arg-type]
        except RuntimeError as exc:
            failed.append(exc)
        finally:
            first_gone.set()

    def second_between() -> None:
        second_started.set()
        assert first_gone.wait(10)

    winding = threading.Thread(target=first)
    winding.start()
    ctx = ConnectorContext(tmp_path, "p", "r1", "load", attempt=2)
    result = _write_parquet(_Paced(second_between), config, ctx)  # type: ignore[arg-type]
    winding.join(10)
    assert [str(e) for e in failed] == ["the stream broke"]
    assert result.rows == 3
    assert pq.read_table(tmp_path / path).sort_by("id").equals(ROWS)
    assert not list((tmp_path / "out").glob(".*"))


ODD = pa.table(
    {
        "s": ["a/b", "..", "x y", "ünï", None, "", "p%q", "a=b", "a/b"],
        "d": pa.array([19723, 19723, None, 19724, 19724, None, 19723, 19723, 19723], pa.date32()),
        "flag": [True, False, None, True, True, False, True, True, True],
        "amount": pa.array(["1.50"] * 9).cast(pa.decimal128(5, 2)),
        "id": list(range(9)),
    }
)


@pytest.mark.parametrize("columns", [["s"], ["d", "flag"], ["amount", "s", "d"]])
def test_partition_values_with_slashes_dots_and_nulls_stay_inside_the_target_and_read_back(
    tmp_path: Path, columns: list[str]
) -> None:
    """Values with `/`, `..`, `=`, `%`, spaces, non-ASCII letters, NULL and the empty string
    make one folder level per partition column, none outside the target, and pyarrow and
    DuckDB read every row back with its values."""
    import duckdb

    config = sink(path="out/odd", partition_by=columns)
    result = write_parquet(input_table(tmp_path, ODD), config, tmp_path, "r1")
    target = tmp_path / "out" / "odd"
    folders = {p.parent.relative_to(target) for p in target.rglob("*.parquet")}
    assert all(len(folder.parts) == len(columns) for folder in folders), folders
    first = {str(row[columns[0]]) for row in ODD.to_pylist()}
    assert len({folder.parts[0] for folder in folders}) == len(first)
    assert all(p.resolve().is_relative_to(target) for p in target.rglob("*"))
    assert result.rows == ODD.num_rows
    for path in target.rglob("*.parquet"):  # the partition columns live in the folder names
        assert set(pq.read_schema(path).names) == set(ODD.column_names) - set(columns)
    back = pq.read_table(target, partitioning="hive").to_pylist()
    got = sorted((row["id"], str(row["s"])) for row in back)
    assert got == sorted((row["id"], str(row["s"])) for row in ODD.to_pylist())
    with duckdb.connect() as database:
        count, ids = database.execute(
            f"select count(*), sum(id) from read_parquet('{target}/**/*.parquet', "
            "hive_partitioning = true)"
        ).fetchone()
    assert (count, ids) == (9, sum(range(9)))

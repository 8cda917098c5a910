"""Property: extract -> sql -> load returns exactly the rows that went in, for any frame, over
every hand-off: the workspace copy, a stream beside it, and an ephemeral stream alone."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from polars.testing import assert_frame_equal
from polars.testing.parametric import dataframes

from engine import Pipeline

# Every type that survives DuckDB SQL unchanged. Not here: Duration, which DuckDB reads from
# Parquet as BIGINT microseconds because Parquet has no duration type (docs/pipeline-reference.md).
DTYPES = [
    pl.Int8,
    pl.Int16,
    pl.Int32,
    pl.Int64,
    pl.UInt8,
    pl.UInt16,
    pl.UInt32,
    pl.UInt64,
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
    pl.List(pl.Int64),
    pl.List(pl.String),
]

frames = dataframes(
    min_cols=1,
    max_cols=6,
    allowed_dtypes=DTYPES,
    allow_null=True,
    min_size=0,
    max_size=40,
)


def run_roundtrip(frame: pl.DataFrame, workdir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    frame.write_parquet(workdir / "input.parquet")
    p = Pipeline("roundtrip", base_dir=workdir)
    p.extract("src", path="input.parquet", batch_size=7)  # several batches per frame
    p.sql("copied", "select * from src")
    p.load("to_parquet", input="copied", to="parquet", path="out/copied.parquet")
    p.load(
        "to_duckdb",
        input="copied",
        to="duckdb",
        path="out/w.duckdb",
        table="copied",
        mode="replace",
    )
    result = p.run(project_dir=workdir)
    assert result.ok, {k: t.error for k, t in result.tasks.items() if t.error}
    from_parquet = pl.read_parquet(workdir / "out" / "copied.parquet")
    connection = duckdb.connect(str(workdir / "out" / "w.duckdb"), read_only=True)
    try:
        from_duckdb = pl.from_arrow(connection.sql("select * from copied").to_arrow_table())
    finally:
        connection.close()
    assert isinstance(from_duckdb, pl.DataFrame)
    kept = result.tasks["copied"].output  # the sql task's own file, as a notebook opens it
    assert kept is not None
    assert_frame_equal(pl.read_parquet(kept.files[0]), frame, check_dtypes=True)
    return from_parquet, from_duckdb


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=frames)
def test_extract_sql_load_round_trip(frame: pl.DataFrame) -> None:
    with tempfile.TemporaryDirectory() as directory:
        from_parquet, from_duckdb = run_roundtrip(frame, Path(directory))
    assert_frame_equal(from_parquet, frame, check_dtypes=True)
    # Read back through DuckDB's own Arrow export, which labels instants with its session zone.
    assert_frame_equal(utc(from_duckdb), frame, check_dtypes=False)


def utc(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        pl.col(name).dt.convert_time_zone("UTC")
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None
    )


def run_streamed(frame: pl.DataFrame, workdir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """extract -> parquet load straight from the stream: once beside the workspace copy, once
    from an ephemeral extract that keeps none."""
    frame.write_parquet(workdir / "input.parquet")
    p = Pipeline("streamed", base_dir=workdir)
    p.extract("kept", path="input.parquet", batch_size=7)
    p.extract("passing", path="input.parquet", batch_size=7, materialize="ephemeral")
    p.load("from_kept", input="kept", to="parquet", path="out/kept.parquet")
    p.load("from_passing", input="passing", to="parquet", path="out/passing.parquet")
    result = p.run(project_dir=workdir)
    assert result.ok, {k: t.error for k, t in result.tasks.items() if t.error}
    assert result.tasks["passing"].output is None  # nothing kept
    out = workdir / "out"
    return pl.read_parquet(out / "kept.parquet"), pl.read_parquet(out / "passing.parquet")


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=frames)
def test_streamed_and_ephemeral_hand_offs_round_trip(frame: pl.DataFrame) -> None:
    with tempfile.TemporaryDirectory() as directory:
        kept, passing = run_streamed(frame, Path(directory))
    assert_frame_equal(kept, frame, check_dtypes=True)
    assert_frame_equal(passing, frame, check_dtypes=True)


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=frames)
def test_the_workspace_writer_keeps_every_value_across_row_groups_and_parts(
    frame: pl.DataFrame,
) -> None:
    """The writer encodes row groups on its own thread and a whole table in parallel parts:
    small groups and parts here, so a 40-row frame crosses many of both."""
    from engine.core.parquet import ParquetBatchWriter, write_parts
    from engine.core.tables import part_file

    table = frame.to_arrow()
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        with ParquetBatchWriter(folder / "streamed.parquet", table.schema, row_group_rows=5) as w:
            for batch in table.to_batches(max_chunksize=3):
                w.write(batch)
        assert_frame_equal(pl.read_parquet(folder / "streamed.parquet"), frame)
        (folder / "parts").mkdir()
        paths = write_parts(table, folder / "parts", part_file, part_rows=8)
        cores = min(os.cpu_count() or 1, 4)
        assert len(paths) == max(1, min(cores, table.num_rows // 8))
        assert_frame_equal(pl.read_parquet([str(p) for p in paths]), frame)


def test_the_workspace_writer_gives_dictionaries_to_text_only(tmp_path: Path) -> None:
    """Text repeats fold into a dictionary; keys and amounts would only pay for trying one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from engine.core.parquet import ParquetBatchWriter

    rows = 50_000
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "region": ["nesw"[i % 4] for i in range(rows)],
            "tags": [["a", "b"][: i % 3] for i in range(rows)],
        }
    )
    with ParquetBatchWriter(tmp_path / "o.parquet", table.schema) as writer:
        writer.write(table)
    group = pq.read_metadata(tmp_path / "o.parquet").row_group(0)
    encodings = {group.column(i).path_in_schema: group.column(i).encodings for i in range(3)}
    assert "RLE_DICTIONARY" not in encodings["id"]
    assert "RLE_DICTIONARY" in encodings["region"]
    assert "RLE_DICTIONARY" in encodings["tags.list.element"]

"""A files extract whose sources already are Parquet parts keeps them by copying their bytes;
everything that changes the rows (types, a file column, a second schema, a stream to a load)
reads them as before."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.api.pipeline import run
from tests.conftest import WritePipeline


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def orders(path: Path, start: int, rows: int, **options: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = list(range(start, start + rows))
    table = pa.table({"id": ids, "region": [None if i % 7 == 0 else "nesw"[i % 4] for i in ids]})
    pq.write_table(table, path, **options)  # type: ignore[arg-type]
    return path


def rewritten_part(path: Path, source: Path) -> Path:
    """Run the pipeline; its extract's one part, which must not be a copy of `source`."""
    result = run(path)
    assert result.ok, {k: t.error for k, t in result.tasks.items()}
    output = result.tasks["src"].output
    assert output is not None
    (part,) = output.files
    assert digest(part) != digest(source)
    return part


def test_parquet_sources_are_kept_byte_for_byte(write: WritePipeline, project: Path) -> None:
    first = orders(project / "in" / "a.parquet", 0, 3000)
    second = orders(project / "in" / "b.parquet", 3000, 500)
    path = write(
        "p.yaml",
        """
        pipeline: copy
        tasks:
          - id: src
            extract: {from: files, path: "in/*.parquet"}
          - id: total
            sql: select count(*) as n, sum(id) as s from src
        """,
    )
    result = run(path)
    assert result.ok, {k: t.error for k, t in result.tasks.items()}
    task = result.tasks["src"]
    assert task.rows_out == 3500
    assert task.output is not None
    assert [digest(p) for p in task.output.files] == [digest(first), digest(second)]
    total = result.tasks["total"].output
    assert total is not None
    assert pl.read_parquet(total.files[0]).row(0) == (3500, sum(range(3500)))


@pytest.mark.parametrize(
    ("extract", "column"),
    [
        ('{from: files, path: "in/*.parquet", columns: {id: int32}}', "id"),
        ('{from: files, path: "in/*.parquet", file_column: source_file}', "source_file"),
    ],
)
def test_a_config_that_changes_the_rows_reads_them(
    write: WritePipeline, project: Path, extract: str, column: str
) -> None:
    source = orders(project / "in" / "a.parquet", 0, 100)
    path = write("p.yaml", f"pipeline: copy\ntasks:\n  - id: src\n    extract: {extract}\n")
    part = rewritten_part(path, source)
    schema = pq.read_schema(part)
    assert column in schema.names
    if column == "id":
        assert schema.field("id").type == pa.int32()


def test_files_of_two_schemas_are_conformed_to_the_first(
    write: WritePipeline, project: Path
) -> None:
    orders(project / "in" / "a.parquet", 0, 10)
    later = pa.table({"region": ["n"], "id": pa.array([10], pa.int32())})  # reordered, narrower
    pq.write_table(later, project / "in" / "b.parquet")
    path = write(
        "p.yaml", 'pipeline: copy\ntasks:\n  - id: src\n    extract: {from: files, path: "in/*"}\n'
    )
    result = run(path)
    assert result.ok, {k: t.error for k, t in result.tasks.items()}
    output = result.tasks["src"].output
    assert output is not None
    frame = pl.read_parquet([str(p) for p in output.files])
    assert frame.columns == ["id", "region"]
    assert frame["id"].to_list() == list(range(11))


@pytest.mark.parametrize(
    "options",
    [
        {"row_group_size": 1000},  # copied, 3 row groups of 1000 rows would read slowly
        {"use_deprecated_int96_timestamps": True},  # INT96 reads as another type in DuckDB
    ],
)
def test_files_the_writer_would_change_are_read_and_written_again(
    write: WritePipeline, project: Path, options: dict[str, object]
) -> None:
    source = project / "in" / "a.parquet"
    source.parent.mkdir(parents=True)
    table = pa.table({"id": list(range(3000)), "at": pa.array([0] * 3000, pa.timestamp("ns"))})
    pq.write_table(table, source, **options)  # type: ignore[arg-type]
    path = write(
        "p.yaml", 'pipeline: copy\ntasks:\n  - id: src\n    extract: {from: files, path: "in/*"}\n'
    )
    part = rewritten_part(path, source)
    metadata = pq.read_metadata(part)
    assert metadata.num_row_groups == 1
    assert metadata.schema.column(1).physical_type == "INT64"


def test_a_corrupt_page_fails_the_extract_naming_the_source(
    write: WritePipeline, project: Path
) -> None:
    """The footer of a file whose data is damaged reads fine; the copy is decoded once, so
    the extract fails as a read would have, not a task downstream on a workspace part."""
    source = orders(project / "in" / "a.parquet", 0, 50_000)
    data = bytearray(source.read_bytes())
    middle = pq.read_metadata(source).row_group(0).column(0).data_page_offset + 64
    data[middle : middle + 200] = bytes(200)
    source.write_bytes(bytes(data))
    pq.read_metadata(source)  # still a valid footer
    path = write(
        "p.yaml", 'pipeline: copy\ntasks:\n  - id: src\n    extract: {from: files, path: "in/*"}\n'
    )
    result = run(path)
    assert not result.ok
    assert "cannot read in/a.parquet" in (result.tasks["src"].error or "")


def test_a_file_that_changes_while_it_is_copied_fails_the_task(
    write: WritePipeline, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file's size and time are compared before and after the copy: a writer replacing
    it meanwhile (here, during the copy) is caught."""
    source = orders(project / "in" / "a.parquet", 0, 3000)
    copy = shutil.copyfile

    def replaced_meanwhile(src: Path, dst: Path) -> Path:
        orders(source, 0, 10)  # another process rewrites the file
        return Path(copy(src, dst))

    monkeypatch.setattr(shutil, "copyfile", replaced_meanwhile)
    path = write(
        "p.yaml", 'pipeline: copy\ntasks:\n  - id: src\n    extract: {from: files, path: "in/*"}\n'
    )
    result = run(path)
    assert not result.ok
    error = result.tasks["src"].error or ""
    assert "in/a.parquet changed while it was copied" in error


def test_a_truncated_parquet_source_names_the_file(write: WritePipeline, project: Path) -> None:
    source = orders(project / "in" / "a.parquet", 0, 3000)
    source.write_bytes(source.read_bytes()[:-100])
    path = write(
        "p.yaml", 'pipeline: copy\ntasks:\n  - id: src\n    extract: {from: files, path: "in/*"}\n'
    )
    result = run(path)
    assert not result.ok
    assert "cannot read in/a.parquet" in (result.tasks["src"].error or "")

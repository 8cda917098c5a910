import gzip
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.base import ConnectorContext
from connectors.files.config import FilesSource
from connectors.files.source import open_files as _open_files
from engine.core.cancel import CancelToken
from engine.core.errors import Cancelled, DataError, DefinitionError


def open_files(
    config: FilesSource, base: Path, cancel: CancelToken | None = None
) -> pa.RecordBatchReader:
    (reader,) = _open_files(config, ConnectorContext(base, "p", "r", "t", cancel))
    return reader


def source(**config: object) -> FilesSource:
    return FilesSource.model_validate({"from": "files", **config})


def read(config: FilesSource, base: Path) -> pa.Table:
    return open_files(config, base).read_all()


def test_csv_glob_reads_every_file_in_order(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "b.csv").write_text("id,name\n3,c\n")
    (tmp_path / "in" / "a.csv").write_text("id,name\n1,a\n2,\n")
    table = read(source(path="in/*.csv"), tmp_path)
    assert table.column("id").to_pylist() == [1, 2, 3]
    assert table.column("name").to_pylist() == ["a", None, "c"]


def test_ndjson_and_parquet(tmp_path: Path) -> None:
    (tmp_path / "x.ndjson").write_text(
        "".join(json.dumps({"k": i, "v": f"s{i}"}) + "\n" for i in range(5))
    )
    assert read(source(path="x.ndjson"), tmp_path).num_rows == 5
    pq.write_table(pa.table({"a": [1, 2], "b": [1.5, None]}), tmp_path / "x.parquet")
    table = read(source(path="x.parquet"), tmp_path)
    assert table.column("b").to_pylist() == [1.5, None]


def test_compressed_csv_is_detected_from_its_extension(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "data.csv.gz", "wt") as handle:
        handle.write("a,b\n1,2\n3,4\n")
    assert read(source(path="data.csv.gz"), tmp_path).column("a").to_pylist() == [1, 3]


def test_explicit_types_win_over_inference(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("id,amount,day\n1,2.50,2024-01-02\n")
    config = source(path="x.csv", columns={"id": "string", "amount": "decimal(12,2)"})
    schema = open_files(config, tmp_path).schema
    assert schema.field("id").type == pa.string()
    assert schema.field("amount").type == pa.decimal128(12, 2)
    assert schema.field("day").type == pa.date32()


def test_a_later_file_must_match_the_first_files_columns(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,name\n1,a\n")
    (tmp_path / "b.csv").write_text("id,label\n2,b\n")
    with pytest.raises(
        DataError, match=r"b.csv has columns \['id', 'label'\], but the first file has"
    ):
        read(source(path="*.csv"), tmp_path)


def test_a_later_file_is_read_with_the_first_files_types(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,v\n1,2\n")
    (tmp_path / "b.csv").write_text("v,id\nx,2\n")  # other order; 'x' is not an integer
    with pytest.raises(DataError, match=r"b\.csv"):
        read(source(path="*.csv"), tmp_path)


def test_malformed_row_names_the_file_and_quotes_the_row(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(
        DataError,
        match=r"cannot read bad.csv: malformed row, line 3: expected 2 fields, found 3: '3,4,5'",
    ):
        read(source(path="bad.csv"), tmp_path)


def test_no_matching_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no file matches 'nothing/\*.csv'"):
        open_files(source(path="nothing/*.csv"), tmp_path)


def test_unknown_extension_needs_a_format(tmp_path: Path) -> None:
    (tmp_path / "x.dat").write_text("a\n1\n")
    with pytest.raises(DefinitionError, match="set `format:`"):
        open_files(source(path="x.dat"), tmp_path)
    assert read(source(path="x.dat", format="csv"), tmp_path).num_rows == 1


def test_file_column_names_each_rows_file(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x\n1\n")
    (tmp_path / "b.csv").write_text("x\n2\n")
    table = read(source(path="*.csv", file_column="src"), tmp_path)
    assert table.column("src").to_pylist() == ["a.csv", "b.csv"]


def test_batches_are_bounded_by_batch_size_not_file_size(tmp_path: Path) -> None:
    pq.write_table(
        pa.table({"x": list(range(100_000))}), tmp_path / "big.parquet", row_group_size=100_000
    )
    reader = open_files(source(path="big.parquet", batch_size=1000), tmp_path)
    sizes = [batch.num_rows for batch in reader]
    assert sum(sizes) == 100_000
    assert max(sizes) <= 1000


def test_cancellation_stops_between_batches(tmp_path: Path) -> None:
    pq.write_table(pa.table({"x": list(range(10_000))}), tmp_path / "x.parquet")
    token = CancelToken()
    reader = open_files(source(path="x.parquet", batch_size=100), tmp_path, token)
    next(iter(reader))
    token.cancel(Cancelled("stop"))
    with pytest.raises(Cancelled):
        reader.read_next_batch()


@pytest.mark.parametrize("name", ["long.ndjson", "long.csv"])
def test_a_line_longer_than_a_read_block_names_batch_size_and_the_value_that_reads_it(
    tmp_path: Path, name: str
) -> None:
    blob = "x" * 3_000_000  # one line of 3 MB; batch_size 1 reads in 1 MiB blocks
    if name.endswith(".ndjson"):
        (tmp_path / name).write_text(json.dumps({"id": 1, "blob": blob}) + "\n")
    else:
        (tmp_path / name).write_text(f"id,blob\n1,{blob}\n")
    with pytest.raises(DataError) as info:
        read(source(path=name, batch_size=1), tmp_path)
    message = str(info.value)
    assert name in message
    assert "block size" not in message
    found = re.search(r"set `batch_size: (\d+)`", message)
    assert found, message
    table = read(source(path=name, batch_size=int(found.group(1))), tmp_path)
    assert table.column("blob").to_pylist() == [blob]


def test_a_csv_header_naming_a_column_twice_fails_with_file_line_and_columns(
    tmp_path: Path,
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("id,id\n1,2\n")
    with pytest.raises(DataError) as raised:
        open_files(source(path="data/x.csv"), tmp_path)
    assert (
        raised.value.message == "data/x.csv:1: the header names column 'id' twice (columns 1 and 2)"
    )


def test_the_header_line_counts_the_skipped_rows(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("exported by a tool\n\nname,id,id\n")
    with pytest.raises(DataError, match=r"^x\.csv:3: the header names column 'id' twice"):
        open_files(source(path="x.csv", csv={"skip_rows": 2}), tmp_path)


def test_header_names_that_differ_only_in_ascii_case_are_one_name_to_duckdb(
    tmp_path: Path,
) -> None:
    (tmp_path / "x.csv").write_text("Id,name,ID\n1,a,2\n")
    with pytest.raises(
        DataError,
        match=r"^x\.csv:1: the header names columns 'Id' and 'ID' \(columns 1 and 3\), which "
        r"differ only in case",
    ):
        open_files(source(path="x.csv"), tmp_path)
    # DuckDB folds ASCII letters only: these stay two columns, downstream too.
    (tmp_path / "y.csv").write_text("É,é\n1,2\n")
    assert read(source(path="y.csv"), tmp_path).column_names == ["É", "é"]


def test_a_later_files_header_is_checked_too(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,name\n1,a\n")
    (tmp_path / "b.csv").write_text("id,name,name\n2,b,c\n")
    with pytest.raises(DataError, match=r"^b\.csv:1: the header names column 'name' twice"):
        read(source(path="*.csv"), tmp_path)


def test_a_parquet_schema_naming_a_column_twice_fails(tmp_path: Path) -> None:
    pq.write_table(pa.table([[1], [2]], names=["id", "id"]), tmp_path / "x.parquet")
    with pytest.raises(DataError) as raised:
        open_files(source(path="x.parquet"), tmp_path)
    assert raised.value.message == "x.parquet: the schema names column 'id' twice (columns 1 and 2)"


def test_ndjson_keys_that_differ_only_in_case_fail_with_the_line_of_the_second(
    tmp_path: Path,
) -> None:
    (tmp_path / "x.ndjson").write_text('{"id": 1}\n{"id": 2}\n{"ID": 3}\n')
    with pytest.raises(
        DataError,
        match=r"^x\.ndjson:3: the keys name columns 'id' and 'ID' \(columns 1 and 2\), which "
        r"differ only in case",
    ):
        open_files(source(path="x.ndjson"), tmp_path)


def test_an_ndjson_object_naming_a_key_twice_fails_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "x.ndjson").write_text('{"id": 1}\n{"id": 2, "id": 3}\n')
    with pytest.raises(DataError, match=r"x\.ndjson line 2: the object names key 'id' twice"):
        read(source(path="x.ndjson"), tmp_path)


def test_column_names_given_in_the_config_must_be_distinct() -> None:
    with pytest.raises(
        ValueError, match=r"column_names names columns 'id' and 'ID' \(columns 1 and 2\)"
    ):
        source(path="x.csv", csv={"header": False, "column_names": ["id", "ID"]})


def test_file_column_must_differ_from_the_data_columns_in_case_too(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("id,Source\n1,a\n")
    with pytest.raises(DefinitionError, match=r"file_column 'source' .*'Source'"):
        open_files(source(path="x.csv", file_column="source"), tmp_path)

"""Malformed CSV and NDJSON: quarantined with file, line and reason, or a failure that says
where; never a traceback, never a silently wrong table."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.base import ConnectorContext
from connectors.files.config import FilesSource
from connectors.files.source import open_files as _open_files
from connectors.rejects import Rejects
from engine.core.errors import DataError


def read(
    base: Path, policy: str = "quarantine", limit: int = 1000, **config: object
) -> tuple[pa.Table, Rejects]:
    source = FilesSource.model_validate(
        {"from": "files", "on_bad_row": policy, "max_bad_rows": limit, **config}
    )
    rejects = Rejects(policy, limit)
    (reader,) = _open_files(source, ConnectorContext(base, "p", "r", "t", rejects=rejects))
    return reader.read_all(), rejects


def rows_of(rejects: Rejects) -> list[tuple[str, int, str]]:
    return [(r.file, r.number, r.reason) for r in rejects.items]


def test_ragged_csv_rows_are_quarantined_with_their_lines(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,name\n1,x\n2,y,extra\n3,z\n4\n5,w\n")
    table, rejects = read(tmp_path, path="a.csv")
    assert table.column("id").to_pylist() == [1, 3, 5]
    assert rows_of(rejects) == [
        ("a.csv", 3, "expected 2 fields, found 3"),
        ("a.csv", 5, "expected 2 fields, found 1"),
    ]
    assert [r.text for r in rejects.items] == ["2,y,extra", "4"]
    quarantine = rejects.table()
    assert quarantine.column("_arrowline_row").to_pylist() == [3, 5]
    assert quarantine.column("_arrowline_file").to_pylist() == ["a.csv", "a.csv"]


def test_ragged_rows_fail_the_extract_with_file_and_line_by_default(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,name\n1,x\n2,y,extra\n")
    with pytest.raises(DataError, match=r"a\.csv: malformed row, line 3: expected 2 fields"):
        read(tmp_path, "fail", path="a.csv")


def test_values_that_do_not_convert_cost_one_row(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,amount\n1,10\n2,abc\n3,30\n4,\n")
    table, rejects = read(tmp_path, path="a.csv", columns={"amount": "int64"})
    assert table.to_pylist() == [
        {"id": 1, "amount": 10},
        {"id": 3, "amount": 30},
        {"id": 4, "amount": None},  # empty is NULL, not an error
    ]
    (bad,) = rejects.items
    assert (bad.file, bad.number, bad.unit, bad.column, bad.value) == (
        "a.csv",
        2,
        "row",
        "amount",
        "abc",
    )
    assert bad.reason == "cannot convert 'abc' to int64"
    with pytest.raises(
        DataError, match=r"a\.csv row 2, column 'amount': cannot convert 'abc' to int64"
    ):
        read(tmp_path, "fail", path="a.csv", columns={"amount": "int64"})


def test_a_later_file_with_a_bad_value_fails_naming_its_row(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,v\n1,2\n")
    (tmp_path / "b.csv").write_text("id,v\n2,3\n3,x\n")
    with pytest.raises(DataError, match=r"b\.csv row 2, column 'v': cannot convert 'x' to int64"):
        read(tmp_path, "fail", path="*.csv")
    table, rejects = read(tmp_path, path="*.csv")
    assert table.column("id").to_pylist() == [1, 2]
    assert rows_of(rejects) == [("b.csv", 2, "cannot convert 'x' to int64")]


def test_an_unterminated_quote_is_caught_not_swallowed(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text('id,name\n1,ok\n2,"broken\n3,lost\n4,lost\n')
    with pytest.raises(DataError, match=r"a\.csv line 3, column 'name': a quote is never closed"):
        read(tmp_path, "fail", path="a.csv")
    table, rejects = read(tmp_path, path="a.csv")
    assert table.column("id").to_pylist() == [1]
    assert rows_of(rejects)[0][1] == 3


def test_text_that_is_not_utf8_fails_with_the_line_and_a_hint(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(b"id,name\n1,plain\n2,caf\xe9 au lait\n")
    for policy in ("fail", "quarantine"):
        with pytest.raises(DataError, match=r"a\.csv is not UTF-8 text at line 3") as failed:
            read(tmp_path, policy, path="a.csv")
        assert failed.value.hint is not None
        assert "encoding: latin-1" in failed.value.hint
    table, _ = read(tmp_path, path="a.csv", csv={"encoding": "latin-1"})
    assert table.column("name").to_pylist() == ["plain", "café au lait"]


def test_broken_ndjson_lines_are_quarantined_with_their_lines(tmp_path: Path) -> None:
    (tmp_path / "a.ndjson").write_text(
        '{"id": 1}\n{"id": 2\n[3]\n\n{"id": 4}\n{"id": "five"}\n{"id": 6}\n'
    )
    table, rejects = read(tmp_path, path="a.ndjson")
    assert table.column("id").to_pylist() == [1, 4, 6]
    assert [(r.number, r.reason.split(":")[0]) for r in rejects.items] == [
        (2, "not valid JSON"),
        (3, "not a JSON object but a list"),
        (6, "JSON parse error"),  # valid JSON, but "five" is not the int64 the column holds
    ]
    with pytest.raises(DataError, match=r"a\.ndjson line 2: not valid JSON"):
        read(tmp_path, "fail", path="a.ndjson")


def test_a_broken_line_deep_in_a_big_ndjson_file_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    lines = [json.dumps({"id": i, "v": f"value-{i}"}) for i in range(200_000)]
    lines[150_000] = '{"id": 150000, "v": '  # cut short, several blocks into the file
    (tmp_path / "big.ndjson").write_text("\n".join(lines) + "\n")
    table, rejects = read(tmp_path, path="big.ndjson")
    ids = table.column("id").to_pylist()
    assert len(ids) == 199_999
    assert len(set(ids)) == 199_999
    assert 150_000 not in ids
    assert rows_of(rejects)[0][:2] == ("big.ndjson", 150_001)


def test_too_many_bad_rows_fail_the_extract(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,v\n" + "".join(f"{i},x,y\n" for i in range(10)))
    with pytest.raises(DataError, match=r"more than 3 malformed rows .*first was at a\.csv line 2"):
        read(tmp_path, limit=3, path="a.csv")


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.lists(
        st.lists(st.text(alphabet='ab1,"\n\\é\x00 ', max_size=6), min_size=0, max_size=4),
        max_size=12,
    ),
    raw=st.binary(max_size=40),
    policy=st.sampled_from(["fail", "quarantine"]),
)
def test_fuzzed_csv_is_read_or_refused_with_a_data_error(
    tmp_path: Path, body: list[list[str]], raw: bytes, policy: str
) -> None:
    """Any bytes: the extract returns a table (with its bad rows set aside) or a DataError
    naming the file; never another exception."""
    text = "id,name\n" + "\n".join(",".join(fields) for fields in body) + "\n"
    (tmp_path / "f.csv").write_bytes(text.encode("utf-8") + raw)
    try:
        table, rejects = read(tmp_path, policy, path="f.csv")
    except DataError as exc:
        refusal = str(exc)
    else:
        refusal = None
    if refusal is not None:
        assert "f.csv" in refusal
        return
    assert table.num_columns == 2
    if policy == "fail":
        assert not rejects.items

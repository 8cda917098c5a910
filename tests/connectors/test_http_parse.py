"""Pages parsed by Arrow's JSON reader give what orjson and `pa.array` give, or are left to
them: the parser is taught by the pages parsed the usual way and never guesses a type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

from connectors.http.pages import records_at
from connectors.http.parse import PageParser, nesting, records_table
from connectors.http.spill import read_page_file, write_page_file


def _usual(content: bytes, key: str | None = "data") -> tuple[dict[str, Any], pa.Table]:
    body = orjson.loads(content)
    records = records_at(body, key, "https://api.test/x")
    meta = {k: v for k, v in body.items() if not isinstance(v, list)}  # all but the records
    return meta, records_table(records, 1, "https://api.test/x")


def _taught(first: dict[str, Any], key: str | None = "data") -> PageParser:
    parser = PageParser(key)
    content = orjson.dumps(first)
    parser.learn(orjson.loads(content), _usual(content, key)[1])
    return parser


RECORD = {
    "id": 1,
    "amount": 79.19,
    "status": "shipped",
    "created_at": "2024-02-02T01:01:00+02:00",
    "day": "2024-02-02",
    "flag": False,
    "note": None,
    "customer": {"id": 7, "name": "Zoë 😀", "tags": ["a", "b"]},
    "items": [{"sku": "s-1", "qty": 2, "price": 9.99}],
}


def _page(n: int, **changes: Any) -> dict[str, Any]:
    records = [{**RECORD, "id": n * 10 + i, **changes} for i in range(10)]
    return {"data": records, "next_cursor": "2024-03-01T00:00:00Z", "total": 100}


def test_a_page_in_known_types_is_parsed_by_arrow_and_equals_the_usual_way() -> None:
    parser = _taught(_page(0))
    for content in (
        orjson.dumps(_page(1)),
        json.dumps(_page(2), indent=2, ensure_ascii=True).encode(),  # newlines, \\u escapes
    ):
        parsed = parser.parse(content)
        assert parsed is not None
        meta, table = parsed
        usual_meta, usual = _usual(content)
        assert meta == usual_meta  # a cursor that looks like a timestamp stays its text
        assert table.select(usual.column_names).equals(usual)
        assert table.schema.field("created_at").type == pa.string()  # never a guessed type
        assert table.schema.field("day").type == pa.string()
    assert parser.parsed == 2


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"id": 1.5}, "an integer field that holds a fraction"),
        ({"id": "one"}, "a number field that holds text"),
        ({"note": "now a text"}, "a field null until now"),
        ({"seen_on": "2024-01-01"}, "a new field Arrow would type as a date"),
        ({"flag": 0}, "a boolean field that holds a number"),
    ],
)
def test_a_page_that_does_not_fit_the_known_types_is_left_to_the_usual_way(
    change: dict[str, Any], why: str
) -> None:
    parser = _taught(_page(0))
    assert parser.parse(orjson.dumps(_page(1, **change))) is None, why


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"null", "not an object (the reader segfaults on it)"),
        (b'{"items": [], "next_cursor": null, "total": 1}', "no records where they should be"),
        (b'{"data": null, "next_cursor": null, "total": 1}', "records null"),
        (b'{"data": [{"id": 1}, null], "next_cursor": null, "total": 1}', "a record null"),
        (b'{"data": [1, 2], "next_cursor": null, "total": 1}', "records not objects"),
        (b'{"data": [{"id": 1, "id": 2}], "next_cursor": null, "total": 1}', "a key twice"),
        (b'{"data": [], "next_cursor": null, "total": 1} {"x": 1}', "two objects"),
        (b'{"data": [{"id": 1, "amount": NaN}], "total": 1}', "NaN, which JSON has not"),
        (b'{"data": [{"id": 1, "amount": -Infinity}], "total": 1}', "Infinity"),
        (b'\xef\xbb\xbf{"data": [{"id": 1}], "total": 1}', "a byte-order mark"),
        (b'{"data": [{"id": 1, "status": "a\xffb"}], "total": 1}', "invalid UTF-8"),
        (b'{"data": [{"id": 1, "x": ' + b"[" * 600 + b"]" * 600 + b"}]}", "nested too deep"),
        (b'{"data": [{"id": 9007199254740993}], "total": 1}', "an integer past 2^53 ..."),
        (b'{"data": [{"id": 1}], "total": 1, "as_of": "2024-01-01"}', "a new date-like field"),
        (b'{"data": [{"id": 1}], "next_cursor": 5, "total": 1}', "text that became a number"),
        (b"not json", "not JSON"),
    ],
)
def test_bodies_arrow_cannot_be_trusted_with_are_left_to_the_usual_way(
    body: bytes, why: str
) -> None:
    parser = _taught(_page(0))
    assert parser.parse(body) is None, why


def test_nesting_counts_brackets_outside_strings_only() -> None:
    assert nesting(b'{"a": [1, {"b": [2]}]}') == 4
    assert nesting(b'{"s": "]]]]", "x": [[[1]]]}') == 4  # a string cannot hide depth
    assert nesting(b'{"s": "' + b"]" * 5000 + b'", "x": ' + b"[" * 600 + b"]" * 600 + b"}") == 601
    assert nesting(b'{"s": "a\\"]]]", "x": [1]}') == 2  # an escaped quote opens nothing
    assert nesting(b'{"s": "\\\\", "x": [[1]]}') == 3  # an escaped backslash, then a quote
    assert nesting(b"{}") == 1


def test_a_new_field_goes_the_usual_way_once_and_is_read_after() -> None:
    parser = _taught(_page(0))
    content = orjson.dumps(_page(1, rank=3))
    assert parser.parse(content) is None  # never inferred by the reader
    body, usual = orjson.loads(content), _usual(content)[1]
    parser.learn(body, usual)  # the page kept the usual way teaches it
    parsed = parser.parse(orjson.dumps(_page(2, rank=4)))
    assert parsed is not None
    assert parsed[1].column("rank").to_pylist() == [4] * 10
    content = orjson.dumps(_page(3, id=2.5))  # the usual way, which teaches a float
    assert parser.parse(content) is None
    parser.learn(orjson.loads(content), _usual(content)[1])
    again = parser.parse(orjson.dumps(_page(4)))
    assert again is not None
    assert again[1].schema.field("id").type == pa.float64()


def _taught_by(*bodies: bytes) -> PageParser:
    parser = PageParser("data")
    for content in bodies:
        body = orjson.loads(content)
        parser.learn(body, records_table(body["data"], 0, "https://api.test/x"))
    return parser


@pytest.mark.parametrize(
    ("first", "later", "why"),
    [
        (
            b'{"data": [{"id": 1}], "next": "a", "x": []}',
            b'{"data": [{"id": 2}], "next": "b", "x": [' + b"null," * 15 + b"[1]]}",
            "a list among the other fields (the reader's inferred lists segfault)",
        ),
        (
            b'{"data": [{"id": 1}], "next": "a"}',
            b'{"data": [{"id": 2, "tags": [null, "x"]}], "next": null}',
            "a records field new to the page",
        ),
        (b'{"data": [{"v": 1.5}]}', b'{"data": [{"v": Inf}]}', "Inf"),
        (b'{"data": [{"v": 1.5}]}', b'{"data": [{"v": 1.8e308}]}', "past the double range"),
        (b'{"data": [{"v": 1.5}]}', b'{"data": [{"v": -0}]}', "-0, which orjson reads as 0"),
        (b'{"data": [{"v": 1.5}]}', b'{"data": [{"v": 9007199254740993}]}', "past 2^53"),
        (
            b'{"data": [{"id": 1, "e": [{"x": 1, "c": null}]}]}',
            b'{"data": [{"id": 2, "e": [null, {"x": 2}]}]}',
            "a null-typed field under a list (pyarrow 26 breaks it when cast)",
        ),
        (
            b'{"data": [{"id": 1}], "ids": {"a": 1.5}}',
            b'{"data": [{"id": 2}], "ids": {"a": 2}}',
            "a float among the other fields (an integer would come back a float)",
        ),
        (b'{"data": [{"id": 1}], "n": 1}', b'{"data": [{"id": 2}], "n": 1.5}', "int to float"),
    ],
)
def test_what_the_reader_would_give_otherwise_goes_the_usual_way(
    first: bytes, later: bytes, why: str
) -> None:
    assert _taught_by(first).parse(later) is None, why


def test_a_page_with_an_extra_list_is_left_to_say_so_without_data_path() -> None:
    parser = PageParser(None)
    first = {"data": [RECORD], "next": None}
    parser.learn(first, records_table([RECORD], 0, "https://api.test/x"))
    assert parser.key == "data"
    assert parser.parse(orjson.dumps({**first, "errors": []})) is None


def test_the_key_is_learnt_from_the_first_body_and_a_list_body_turns_the_parser_off() -> None:
    parser = _taught({"items": [RECORD], "next": None}, key=None)
    assert parser.key == "items"
    assert parser.parse(orjson.dumps({"items": [RECORD], "next": None})) is not None
    listed = PageParser(None)
    listed.learn([RECORD], records_table([RECORD], 0, "https://api.test/x"))
    assert listed.off
    assert listed.parse(orjson.dumps([RECORD])) is None


def test_a_kept_table_cut_short_at_any_byte_does_not_read(tmp_path: Path) -> None:
    """What `Checkpoint.fetched` keeps of a converted page: every cut fails to read (so the
    page is fetched again), none reads as fewer rows."""
    table = records_table([RECORD] * 3, 0, "https://api.test/x")
    whole = tmp_path / "raw-000001-x.arrow"
    write_page_file(whole, table)
    assert read_page_file(whole).equals(table)
    data = whole.read_bytes()
    cut = tmp_path / "cut.arrow"
    for length in range(len(data)):
        cut.write_bytes(data[:length])
        with pytest.raises((pa.ArrowInvalid, OSError)):
            read_page_file(cut)


def test_a_spilled_page_from_an_older_checkpoint_still_reads(tmp_path: Path) -> None:
    """Spill files were IPC streams before the file format: a resume across the upgrade
    reads them; one cut short is not readable and its page is fetched again."""
    from connectors.http.spill import _readable

    table = records_table([RECORD] * 3, 0, "https://api.test/x")
    old = tmp_path / "page-000000.arrow"
    with pa.OSFile(str(old), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as out:
        out.write_table(table)
    assert _readable(old)
    assert read_page_file(old).equals(table)
    old.write_bytes(old.read_bytes()[: old.stat().st_size // 2])
    assert not _readable(old)

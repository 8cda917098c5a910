"""A page as Arrow straight from its bytes, by Arrow's own JSON reader, where the pages before
have shown its shape; else the usual way: orjson, then `pa.array(records)`.

The usual way builds a Python object per value and holds the GIL throughout: ~7 ms of a
1,000-record page, during which neither the next request nor the previous page's spill can
move. Arrow's reader parses the same bytes in C++ with the GIL released in ~2 ms. But it is
not a judge of JSON, and it guesses types, so a body reaches it only when it passed checks
that cost a fraction of a parse, and its result is taken only in terms the usual way would
give:

- the body is one JSON object (Arrow's reader segfaults on a bare `null`), valid UTF-8, with
  no `NaN` or `Infinity` literal (it takes both) and nested at most 512 levels deep, counted
  outside strings (it overflows its stack past ~10,000; orjson refuses past 1,024);
- the records are given the types the earlier pages had, as `pa.array` inferred them, as an
  explicit schema: a value of another type fails the read, and the page goes the usual way and
  teaches the parser its types; a field new to the page that the reader typed as a date, time
  or float (an integer past int64, or past 2^53 beside fractions, which `pa.array` refuses) or
  a null record sends it the usual way too;
- the body's other fields (the paginator reads them) are typed by the reader from this page
  alone, but those that held text on the pages before are given as text; a date or time
  among the rest sends the page the usual way;
- while any field is float, a page holding a run of 16 digits outside a fraction goes the usual
  way: the reader would round an integer past 2^53 into the float where `pa.array` refuses it.

Only bodies that are one JSON object whose records are a list under one key are read this
way, and never when the paginator reads a path into the records; a fan-out's pages take the
usual way.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from engine.core.errors import DataError

__all__ = ["MAX_DEPTH", "PageParser", "nesting", "path_parts", "records_table"]

MAX_DEPTH = 512
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)
_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_LONG_INTEGER = b"0" * 16
"""Sixteen digits in a row once every digit is a 0: an integer that may be past 2^53 (or a long
mantissa, a long number in text: those only cost the fast way)."""
_WHITESPACE = b" \t\r\n"
_MARKS = bytes(
    1 if byte == ord('"') else 2 if byte in b"{[" else 3 if byte in b"}]" else 0
    for byte in range(256)
)
"""Each byte as what it marks for `nesting`: a quote 1, an opening bracket 2, a closing 3."""


def records_table(records: list[Any], number: int, shown: str) -> pa.Table:
    """The records of page `number` (from 0) of `shown` as a table: every record's keys (a
    struct array takes them all; `from_pylist` would take the first record's)."""
    if not all(isinstance(r, dict) for r in records):
        kinds = sorted({type(r).__name__ for r in records})
        raise DataError(f"page {number + 1} of {shown}: records are {kinds}, not objects")
    try:
        return pa.Table.from_struct_array(pa.array(records))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        field = _mixed(records)
        raise DataError(
            f"page {number + 1} of {shown}: field {field!r} holds values of more "
            f"than one type: {exc}",
            hint="declare the field's type in columns",
        ) from None


def _mixed(records: list[dict[str, Any]]) -> str | None:
    """The first field whose values Arrow cannot give one type."""
    for key in dict.fromkeys(k for record in records for k in record):
        try:
            pa.array([record.get(key) for record in records])
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return key
    return None


def path_parts(text: str) -> list[str]:
    """A body path's keys: `meta.next`, `$.data.items`, `items[0].id`, `data[*]`."""
    text = text.strip().removesuffix("[*]").removesuffix(".*")  # JSONPath's "every element"
    if text.startswith("$"):
        text = text[1:].lstrip(".")
    return [part for part in text.replace("[", ".").replace("]", "").split(".") if part]


def nesting(content: bytes) -> int:
    """How deep `content`'s objects and arrays nest, brackets inside strings not counted: the
    quotes that open and close strings are those not escaped by an odd run of backslashes.
    (On a body that is not JSON, as the tokenizer reading it would count until it fails.)
    More than 1,000 quotes after a backslash count as too deep: judging them is a loop."""
    marks = np.frombuffer(content.translate(_MARKS), np.uint8)
    where = np.flatnonzero(marks)  # every quote and bracket, in order
    kinds = marks[where]
    quote = kinds == 1
    after_backslash = np.flatnonzero(quote & _preceded(content, where))
    if len(after_backslash) > 1_000:
        return MAX_DEPTH + 1
    for index in after_backslash.tolist():  # how many backslashes: an odd run escapes it
        position, run = int(where[index]), 0
        while position - run - 1 >= 0 and content[position - run - 1] == 92:
            run += 1
        quote[index] = run % 2 == 0
    outside = np.cumsum(quote) % 2 == 0  # an even count of quotes up to here
    steps = np.where(kinds == 2, 1, np.where(kinds == 3, -1, 0))[outside & ~quote]
    if not len(steps):
        return 0
    return max(int(np.cumsum(steps).max()), 0)


def _preceded(content: bytes, where: np.ndarray) -> np.ndarray:
    """Whether the byte before each position in `where` is a backslash."""
    data = np.frombuffer(content, np.uint8)
    found: np.ndarray = (data[np.maximum(where - 1, 0)] == 92) & (where > 0)
    return found


class PageParser:
    """Parses pages of one resource with Arrow's JSON reader once earlier pages showed their
    types. `key`: the body's key that holds the records (None: the one list the first body
    holds, as `records_at` finds it); `paths`: the body paths the paginator reads (one that
    leads into the records turns the parser off: a page read this way has no records in its
    body)."""

    def __init__(self, key: str | None, paths: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        """Pages fetched ahead (`parallel`) are parsed on threads of their own."""
        self.key = key
        self.item: pa.StructType | None = None
        """The records' fields so far, typed as `pa.array` typed them."""
        self.texts: set[str] = set()
        """The body's other fields that held text: given as text, else a cursor that looks
        like a timestamp would be read as one."""
        self.off = False
        """Bodies of another shape, or a paginator that reads into the records."""
        self.parsed = 0
        """Pages parsed by Arrow's reader (the rest took the usual way)."""
        self._heads: set[str] = set()
        self.reads(paths)

    def reads(self, paths: Iterable[str]) -> None:
        """The paginator reads these body paths (a style detected later adds its own)."""
        with self._lock:
            self._heads |= {parts[0] for parts in map(path_parts, paths) if parts}
            if self.key is not None and self.key in self._heads:
                self.off = True

    def parse(self, content: bytes) -> tuple[dict[str, Any], pa.Table] | None:
        """The body's other fields and its records' table; None when this body must take
        the usual way."""
        with self._lock:
            key, item, texts = self.key, self.item, sorted(self.texts)
            if self.off or item is None or key is None:
                return None
        if not _plain(content):
            return None
        schema = pa.schema([(key, pa.list_(item)), *((name, pa.string()) for name in texts)])
        options = pj.ParseOptions(  # a value across lines (a pretty body) costs ~2x to read
            explicit_schema=schema,
            unexpected_field_behavior="infer",
            newlines_in_values=b"\n" in content or b"\r" in content,
        )
        try:
            body = pj.read_json(
                pa.py_buffer(content),
                read_options=pj.ReadOptions(block_size=max(1 << 20, len(content) + 1)),
                parse_options=options,
            )
        except _ARROW_ERRORS:
            return None
        if body.num_rows != 1 or body.schema.names[0] != key:
            return None
        column = body.column(0)
        found = column.type.value_type
        others = [body.schema.field(i).type for i in range(1, body.num_columns)]
        if any(_temporal(kind) for kind in others):
            return None  # text the reader took for a date or time
        if found != item:
            known = _leaves(item)
            new = [kind for path, kind in _leaves(found).items() if path not in known]
            if any(pa.types.is_temporal(t) or pa.types.is_floating(t) for t in new):
                return None  # a new field the reader typed as pa.array would not
        floats = _has_float(found) or any(_has_float(kind) for kind in others)
        if floats and _LONG_INTEGER in content.translate(_DIGITS):
            return None
        records = pc.list_flatten(column).combine_chunks()
        if column.null_count or records.null_count:
            return None  # records null or absent, or a record null: the usual way says so
        meta = body.drop_columns([key]).to_pylist()[0]
        with self._lock:
            if self.item == item:  # else another page taught it meanwhile: theirs stand
                self.item = found
            self.parsed += 1
        return meta, pa.Table.from_struct_array(records)

    def learn(self, body: Any, table: pa.Table) -> None:
        """The types of a page parsed the usual way: its body and its records' table."""
        with self._lock:
            if self.off:
                return
            if self.key is None:
                lists = [k for k, v in body.items() if isinstance(v, list)] if _dict(body) else []
                if len(lists) != 1 or lists[0] in self._heads:
                    self.off = True
                    return
                self.key = lists[0]
            if not _dict(body) or self.key not in body:
                self.off = True
                return
            for name, value in body.items():
                if name != self.key and isinstance(value, str):
                    self.texts.add(name)
                elif value is not None:
                    self.texts.discard(name)
            if self.item is None:
                self.item = pa.struct(list(table.schema))
                return
            try:
                merged = pa.unify_schemas(
                    [pa.schema(list(self.item)), table.schema], promote_options="permissive"
                )
            except _ARROW_ERRORS:
                self.item = None  # types that cannot meet: the next page teaches afresh
                return
            self.item = pa.struct(list(merged))


def _plain(content: bytes) -> bool:
    """One JSON object, valid UTF-8, without NaN or Infinity, nested at most MAX_DEPTH."""
    if content[:64].lstrip(_WHITESPACE)[:1] != b"{":
        return False
    if content[-64:].rstrip(_WHITESPACE)[-1:] != b"}":
        return False
    if not content.isascii():
        try:
            content.decode("utf-8")
        except UnicodeDecodeError:
            return False
    if b"NaN" in content or b"Infinity" in content:
        return False  # in text too: that costs only the fast way
    return nesting(content) <= MAX_DEPTH


def _dict(body: Any) -> bool:
    return isinstance(body, dict)


def _leaves(kind: pa.DataType) -> dict[str, pa.DataType]:
    """Every type nested in `kind` by its path (struct fields by name, list items as `[]`),
    without recursion."""
    found: dict[str, pa.DataType] = {}
    stack: list[tuple[str, pa.DataType]] = [("", kind)]
    while stack:
        path, current = stack.pop()
        found[path] = current
        if pa.types.is_struct(current):
            stack.extend(
                (f"{path}.{current.field(i).name}", current.field(i).type)
                for i in range(current.num_fields)
            )
        elif pa.types.is_list(current) or pa.types.is_large_list(current):
            stack.append((f"{path}[]", current.value_type))
    return found


def _temporal(kind: pa.DataType) -> bool:
    return any(pa.types.is_temporal(t) for t in _leaves(kind).values())


def _has_float(kind: pa.DataType) -> bool:
    return any(pa.types.is_floating(t) for t in _leaves(kind).values())

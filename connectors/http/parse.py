"""A page as Arrow straight from its bytes, by Arrow's own JSON reader, where the pages before
have shown its shape; else the usual way: orjson, then `pa.array(records)`.

The usual way builds a Python object per value and holds the GIL throughout: ~7 ms of a
1,000-record page, during which neither the next request nor the previous page's spill can
move. Arrow's reader parses the same bytes in C++ with the GIL released in ~2 ms. But it is
no judge of JSON, it guesses types, and pyarrow 26 has bugs on the way (a bare `null` or deep
nesting segfaults it; a list it infers that starts with nulls comes out invalid), so a body
reaches it only when the result cannot differ from the usual way's:

- the body is one JSON object under 1 GiB, valid UTF-8, with no `NaN` or `Inf` literal, and
  nested at most 512 levels deep counted outside strings;
- every field is given its type, never inferred: the records' fields and the body's other
  fields as `pa.array` typed them on the pages kept before; a field new to the page, or a value
  of another type, fails the read, and the page goes the usual way and teaches the parser;
- the body's other fields (the paginator reads them) are text, integers, booleans, nulls or
  objects of these (a float would take an integer's place, a list mixes them);
- no record field typed null sits under a list (pyarrow 26 breaks such arrays when cast);
- while a records field is float: no run of 16 digits (an integer past 2^53 rounds), no
  three-digit exponent (past the double range reads as infinity), no bare `-0` (-0.0 where
  orjson reads 0);
- the result validates fully, has one row, and no null or absent records.

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
_DIGITS = bytes.maketrans(b"123456789E}] \t\r\n", b"000000000e,,,,,,")
_EXPONENTS = (b"e000", b"e+000", b"e-000")
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
            if run > 64:
                return MAX_DEPTH + 1  # judging it costs more than the usual way
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
        self.meta: pa.Schema | None = None
        """The body's other fields, typed as `pa.array` typed them: given to the reader as
        they are (a cursor that looks like a timestamp stays text), never inferred."""
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
            key, item, meta = self.key, self.item, self.meta
            if self.off or item is None or key is None or meta is None:
                return None
        if not all(_plain_type(field.type) for field in meta) or _null_in_list(item):
            return None  # floats or lists among the other fields; a null-typed list item
        if not _plain(content):
            return None
        floats = _has_float(item)
        if floats and _inexact(content):
            return None
        options = pj.ParseOptions(  # a value across lines (a pretty body) costs ~2x to read
            explicit_schema=meta.insert(0, pa.field(key, pa.list_(item))),
            unexpected_field_behavior="error",  # never inferred: a new field, the usual way
            newlines_in_values=b"\n" in content or b"\r" in content,
        )
        try:
            body = pj.read_json(
                pa.py_buffer(content),
                read_options=pj.ReadOptions(block_size=max(1 << 20, len(content) + 1)),
                parse_options=options,
            )
            body.validate(full=True)
            if body.num_rows != 1:
                return None
            column = body.column(0)
            records = pc.list_flatten(column).combine_chunks()
            if column.null_count or records.null_count:
                return None  # records null or absent, or a record null: the usual way says so
            fields = body.drop_columns([key]).to_pylist()[0]
            table = pa.Table.from_struct_array(records)
        except (pa.ArrowException, OverflowError, ValueError):
            return None
        with self._lock:
            self.parsed += 1
        return fields, table

    def learn(self, body: Any, table: pa.Table) -> None:
        """The types of a page kept the usual way: its body and its records' table."""
        with self._lock:
            if self.off:
                return
            if self.key is None:
                held = body.items() if isinstance(body, dict) else ()
                lists = [k for k, v in held if isinstance(v, list)]
                if len(lists) != 1 or lists[0] in self._heads:
                    self.off = True
                    return
                self.key = lists[0]
            if not isinstance(body, dict) or self.key not in body:
                self.off = True
                return
            try:
                others = pa.array([{k: v for k, v in body.items() if k != self.key}]).type
                meta = pa.schema(list(others))
                item = table.schema
                if self.meta is not None:
                    meta = pa.unify_schemas([self.meta, meta], promote_options="permissive")
                if self.item is not None:
                    before = pa.schema(list(self.item))
                    item = pa.unify_schemas([before, item], promote_options="permissive")
            except (pa.ArrowException, OverflowError):
                self.meta = self.item = None  # types that cannot meet: the next page teaches
                return
            self.meta, self.item = meta, pa.struct(list(item))


def _plain_type(kind: pa.DataType) -> bool:
    """Text, integers, booleans, nulls and objects of these: what the reader gives back as
    orjson would (a float would take an integer's place, a list mixes them)."""
    return all(
        pa.types.is_string(t)
        or pa.types.is_int64(t)
        or pa.types.is_boolean(t)
        or pa.types.is_null(t)
        or pa.types.is_struct(t)
        for t in _leaves(kind).values()
    )


def _null_in_list(kind: pa.DataType) -> bool:
    """A null-typed field under a list: pyarrow 26 breaks such arrays when they are cast."""
    return any("[]" in path and pa.types.is_null(t) for path, t in _leaves(kind).items())


def _inexact(content: bytes) -> bool:
    """While a field is float, what the reader would put there otherwise than `pa.array`:
    an integer of 16 digits or more (past 2^53 it rounds where `pa.array` refuses), an
    exponent of three digits (past the double range it reads infinity where orjson refuses),
    a bare `-0` (-0.0 where orjson reads the integer 0). In text too: that costs only speed."""
    marked = content.translate(_DIGITS)
    return (
        _LONG_INTEGER in marked
        or any(exponent in marked for exponent in _EXPONENTS)
        or b"-0," in marked  # every digit a 0, every delimiter a comma: `-0` alone
    )


def _plain(content: bytes) -> bool:
    """One JSON object under 1 GiB, valid UTF-8, without NaN or Inf(inity), nested at most
    MAX_DEPTH."""
    if len(content) >= 1 << 30:
        return False
    if content[:64].lstrip(_WHITESPACE)[:1] != b"{":
        return False
    if content[-64:].rstrip(_WHITESPACE)[-1:] != b"}":
        return False
    if not content.isascii():
        try:
            content.decode("utf-8")
        except UnicodeDecodeError:
            return False
    if b"NaN" in content or b"Inf" in content:
        return False  # in text too: that costs only the fast way
    return nesting(content) <= MAX_DEPTH


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


def _has_float(kind: pa.DataType) -> bool:
    return any(pa.types.is_floating(t) for t in _leaves(kind).values())

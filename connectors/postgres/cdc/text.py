"""PostgreSQL's text output of a value -> the Arrow type the normal extract gives its column.

pgoutput sends values as text, written by the type's output function under the session's
settings; the change reader sets them (`SESSION_SETTINGS`) so the text is one fixed format:
ISO dates, timestamps with time zone in UTC (`+00`), ISO 8601 intervals, hex bytea, floats
that round-trip. Each target type is then one Arrow kernel over the whole column; arrays and
intervals, whose text needs parsing, go through Python per value.

The target types are the ones `connectors.postgres.types.SourceConversion` gives the table's
columns, so a change and a row of a normal extract of the same table have the same type.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.core.errors import DataError, DefinitionError

__all__ = ["SESSION_SETTINGS", "converter"]

SESSION_SETTINGS = (
    "set timezone = 'UTC'",
    "set datestyle = 'ISO, YMD'",
    "set intervalstyle = 'iso_8601'",
    "set extra_float_digits = 3",
    "set bytea_output = 'hex'",
)

Convert = Callable[[pa.Array], pa.Array]

_HEX = np.full(256, 255, np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i


def _fail(column: str, target: pa.DataType, values: pa.Array, cast: Convert) -> DataError:
    bad = None
    for value in values.to_pylist():
        if value is None:
            continue
        try:
            cast(pa.array([value], pa.string()))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, OverflowError):
            bad = value
            break
    return DataError(
        f"column {column!r}: the change holds {bad!r}, which is not a {target} value",
        hint="the change stays in the slot, and every run stops at it until the column is "
        "left out of the extract with `columns:` (then `arrowline state reset PIPELINE TASK --yes` "
        "brings it back from a new snapshot once the value is gone); change capture reads no "
        "infinity, BC or year-10000 dates, money, multi-dimensional arrays or NaN decimals",
    )


def _checked(column: str, target: pa.DataType, cast: Convert) -> Convert:
    def convert(values: pa.Array) -> pa.Array:
        try:
            return cast(values)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, OverflowError):
            raise _fail(column, target, values, cast) from None

    return convert


def _hex(values: pa.Array, skip: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(offsets, bytes) of hex text after `skip` leading characters (bytea's `\\x`)."""
    values = values.cast(pa.string())
    offsets = np.frombuffer(values.buffers()[1], np.int32)[
        values.offset : values.offset + len(values) + 1
    ].astype(np.int64)
    data = values.buffers()[2]
    raw = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    valid = np.asarray(values.is_valid())
    lengths = np.where(valid, offsets[1:] - offsets[:-1] - skip, 0)
    if (lengths < 0).any() or (lengths % 2).any():
        raise ValueError("not hex")
    starts = offsets[:-1] + skip
    out = np.zeros(len(values) + 1, np.int64)
    np.cumsum(lengths // 2, out=out[1:])
    total = int(lengths.sum())
    index = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    digits = _HEX[raw[index + np.arange(total)]] if total else np.zeros(0, np.uint8)
    if (digits == 255).any():
        raise ValueError("not hex")
    return out, (digits[0::2] << 4) | digits[1::2]


def _bytea(values: pa.Array) -> pa.Array:
    offsets, data = _hex(values, 2)
    bitmap = values.buffers()[0] if values.null_count else None
    if bitmap is not None and values.offset:
        bitmap = pa.py_buffer(np.packbits(np.asarray(values.is_valid()), bitorder="little"))
    kind = pa.binary() if offsets[-1] < 2**31 else pa.large_binary()
    width = np.int32 if kind == pa.binary() else np.int64
    array = pa.Array.from_buffers(
        kind,
        len(values),
        [bitmap, pa.py_buffer(offsets.astype(width)), pa.py_buffer(data.astype(np.uint8))],
    )
    return array.cast(pa.binary())


def _uuid(values: pa.Array) -> pa.Array:
    plain = pc.replace_substring(values, "-", "")
    _, data = _hex(plain, 0)
    valid = np.asarray(plain.is_valid())
    if (pc.utf8_length(plain).fill_null(32).to_numpy(zero_copy_only=False) != 32).any():
        raise ValueError("not a uuid")
    full = np.zeros((len(values), 16), np.uint8)
    full[valid] = data.reshape(-1, 16)
    storage = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16),
        len(values),
        [pa.py_buffer(np.packbits(valid, bitorder="little")), pa.py_buffer(full.tobytes())],
    )
    return pa.ExtensionArray.from_storage(pa.uuid(), storage)


def _time(values: pa.Array) -> pa.Array:
    stamped = pc.binary_join_element_wise("1970-01-01 ", values, "")
    return pc.cast(pc.cast(stamped, pa.timestamp("us")), pa.time64("us"))


_INTERVAL = re.compile(
    r"^P(?:(-?\d+)Y)?(?:(-?\d+)M)?(?:(-?\d+)D)?(?:T(?:(-?\d+)H)?(?:(-?\d+)M)?(?:(-?[\d.]+)S)?)?$"
)


def _interval_us(text: str) -> int:
    """An ISO 8601 interval in microseconds, months counted as 30 days (as the extract does)."""
    match = _INTERVAL.match(text)
    if match is None:
        raise ValueError(f"not an interval: {text}")
    years, months, days, hours, minutes = (int(g) if g else 0 for g in match.groups()[:5])
    seconds = Decimal(match.group(6) or 0)
    whole_days = (years * 12 + months) * 30 + days
    total = ((whole_days * 24 + hours) * 60 + minutes) * 60 * 10**6 + seconds * 10**6
    return int(total)


def _interval(values: pa.Array) -> pa.Array:
    return pa.array(
        [None if v is None else _interval_us(v) for v in values.to_pylist()], pa.duration("us")
    )


def _array_items(text: str) -> list[str | None]:
    """The elements of a one-dimensional array literal `{a,"b c",NULL}` as text."""
    if not (text.startswith("{") and text.endswith("}")):
        raise ValueError(f"not an array: {text}")
    body, at = text[1:-1], 0
    items: list[str | None] = []
    if not body:
        return []
    while at <= len(body):
        if body.startswith('"', at):
            at += 1
            chars: list[str] = []
            while body[at] != '"':
                if body[at] == "\\":
                    at += 1
                chars.append(body[at])
                at += 1
            items.append("".join(chars))
            at += 2  # the quote and the comma
        else:
            end = body.find(",", at)
            end = len(body) if end < 0 else end
            item = body[at:end]
            if item.startswith("{"):
                raise ValueError("multi-dimensional arrays are not read by change capture")
            items.append(None if item == "NULL" else item)
            at = end + 1
    return items


def _list(element: Convert, target: pa.DataType) -> Convert:
    def convert(values: pa.Array) -> pa.Array:
        lists = [None if v is None else _array_items(v) for v in values.to_pylist()]
        flat = pa.array([item for items in lists if items for item in items], pa.string())
        offsets, total = [0], 0
        for items in lists:
            total += len(items) if items else 0
            offsets.append(total)
        mask = pa.array([items is None for items in lists])
        return pa.ListArray.from_arrays(
            pa.array(offsets, pa.int32()), element(flat), type=pa.list_(target), mask=mask
        )

    return convert


def converter(name: str, target: pa.DataType) -> Convert:
    """How text values of the column `name` become `target`, or DefinitionError."""
    if isinstance(target, pa.BaseExtensionType):
        if target.extension_name == "arrow.json":
            return lambda v: pa.ExtensionArray.from_storage(target, v.cast(target.storage_type))
        if target.extension_name == "arrow.uuid":
            return _checked(name, target, _uuid)
    elif pa.types.is_string(target) or pa.types.is_large_string(target):
        return lambda v: v.cast(target)
    elif pa.types.is_boolean(target):
        return lambda v: pc.equal(v, "t")
    elif pa.types.is_binary(target) or pa.types.is_large_binary(target):
        return _checked(name, target, _bytea)
    elif pa.types.is_time(target):
        return _checked(name, target, lambda v: pc.cast(_time(v), target))
    elif pa.types.is_duration(target):
        return _checked(name, target, lambda v: pc.cast(_interval(v), target))
    elif pa.types.is_list(target):
        element = converter(name, target.value_type)
        return _checked(name, target, _list(element, target.value_type))
    elif (
        pa.types.is_integer(target)
        or pa.types.is_floating(target)
        or pa.types.is_decimal(target)
        or pa.types.is_date(target)
        or pa.types.is_timestamp(target)
    ):
        return _checked(name, target, lambda v: pc.cast(v, target))
    raise DefinitionError(
        f"column {name!r} has type {target}, which change capture cannot read yet",
        hint="leave the column out with `columns:`, or cast it to text in the table",
    )

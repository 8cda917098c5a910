"""Watermarks of incremental extracts: the largest (cursor, key...) committed so far.

A watermark is a tuple compared lexicographically: the cursor value first, then the tie-break
keys. It is tracked while batches stream (no second pass), serialized as typed JSON so a
timestamp comes back as a timestamp, and stored by sinks in a state table next to their data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["RowsAfter", "Watermark", "WatermarkTracker", "WatermarkUpdate"]


def _encode(value: Any) -> dict[str, Any]:
    if value is None:
        return {"t": "null"}
    if isinstance(value, bool):
        return {"t": "bool", "v": value}
    if isinstance(value, int):
        return {"t": "int", "v": value}
    if isinstance(value, float):
        return {"t": "float", "v": value}
    if isinstance(value, Decimal):
        return {"t": "decimal", "v": str(value)}
    if isinstance(value, datetime):
        return {"t": "datetime", "v": value.isoformat()}
    if isinstance(value, date):
        return {"t": "date", "v": value.isoformat()}
    if isinstance(value, time):
        return {"t": "time", "v": value.isoformat()}
    if isinstance(value, timedelta):
        return {"t": "timedelta", "v": value.total_seconds()}
    if isinstance(value, bytes):
        return {"t": "bytes", "v": value.hex()}
    return {"t": "str", "v": str(value)}


def _decode(item: dict[str, Any]) -> Any:
    kind, value = item["t"], item.get("v")
    decoders: dict[str, Any] = {
        "null": lambda v: None,
        "bool": bool,
        "int": int,
        "float": float,
        "decimal": Decimal,
        "datetime": datetime.fromisoformat,
        "date": date.fromisoformat,
        "time": time.fromisoformat,
        "timedelta": lambda v: timedelta(seconds=v),
        "bytes": bytes.fromhex,
        "str": str,
    }
    return decoders[kind](value)


@dataclass(frozen=True, order=True)
class Watermark:
    cursor: Any
    key: tuple[Any, ...] = ()

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.cursor, *self.key)

    def to_json(self) -> str:
        return json.dumps({"cursor": _encode(self.cursor), "key": [_encode(k) for k in self.key]})

    @classmethod
    def from_json(cls, text: str) -> Watermark:
        data = json.loads(text)
        return cls(_decode(data["cursor"]), tuple(_decode(k) for k in data.get("key", [])))

    def describe(self) -> str:
        key = f", key {self.key}" if self.key else ""
        return f"{self.cursor!s}{key}"

    @staticmethod
    def least(values: Sequence[Watermark | None]) -> Watermark | None:
        """The least advanced of several (None, meaning 'never loaded', is least of all)."""
        if not values or any(v is None for v in values):
            return None
        return min(v for v in values if v is not None)


@dataclass(frozen=True)
class WatermarkUpdate:
    """A candidate watermark of an extract, to be committed by a sink with its data."""

    task_id: str
    """The incremental extract task."""
    watermark: Watermark


class WatermarkTracker:
    """Follows the largest (cursor, key...) of the rows streaming past."""

    def __init__(self, cursor: str, key: tuple[str, ...]) -> None:
        self.cursor = cursor
        self.key = key
        self.best: Watermark | None = None

    def update(self, batch: pa.RecordBatch) -> None:
        column = batch.column(self.cursor)
        valid = pc.drop_null(column)
        if len(valid) == 0:
            return
        top = pc.max(valid)
        top_value = top.as_py()
        if self.best is not None and top_value < self.best.cursor:
            return
        key_value: tuple[Any, ...] = ()
        if self.key:
            rows = batch.filter(pc.equal(column, top))
            order = pc.sort_indices(rows, sort_keys=[(k, "descending") for k in self.key])
            first = rows.take(order.slice(0, 1))
            key_value = tuple(first.column(k)[0].as_py() for k in self.key)
        candidate = Watermark(top_value, key_value)
        if self.best is None or candidate.as_tuple() > self.best.as_tuple():
            self.best = candidate


_EXACT_ONLY_IN_THE_SOURCE = {"numeric", "decimal"}


def _declared_type(field: pa.Field) -> str:
    """The source's own type name of a column, where the driver recorded it (ADBC's
    PostgreSQL driver does, as `POSTGRESQL:type`)."""
    for key, value in (field.metadata or {}).items():
        if key.endswith(b":type"):
            return str(value.decode(errors="replace")).lower()
    return ""


_BY_COLLATION = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)


@dataclass(frozen=True)
class RowsAfter:
    """The rows of an incremental extract's output past one sink's own watermark, by the
    comparison the source reads with: `(cursor, key...) > (watermark)` as PostgreSQL compares
    rows, or the cursor alone when the watermark has no key.

    What an `append` load that is ahead of the extract's other loads gets, so it is not sent
    again what it committed in an earlier run. Rows the comparison cannot decide are kept:
    a NULL cursor (`nulls: include` reads those every run), a NULL key on the watermark's
    cursor, a NaN cursor (PostgreSQL orders NaN above every number). Sending a row twice is
    the lesser harm; `refusal` says when the comparison cannot be made exactly at all."""

    cursor: str
    key: tuple[str, ...]
    watermark: Watermark

    def _pairs(self) -> list[tuple[str, Any]]:
        if len(self.watermark.key) != len(self.key):  # the source compares the cursor alone
            return [(self.cursor, self.watermark.cursor)]
        return list(zip((self.cursor, *self.key), self.watermark.as_tuple(), strict=True))

    def refusal(self, schema: pa.Schema) -> str | None:
        """Why rows of `schema` cannot be compared with the watermark exactly as the source
        compared them (None: they can)."""
        for name, value in self._pairs():
            if name not in schema.names:
                return f"the column {name!r} is not in the extract's output"
            kind = schema.field(name).type
            declared = _declared_type(schema.field(name))
            if pa.types.is_floating(kind) and declared in _EXACT_ONLY_IN_THE_SOURCE:
                return f"{name!r} is {declared} in the source, approximated by {kind}"
            if any(test(kind) for test in _BY_COLLATION):
                return f"{name!r} is text, which the database orders by its collation"
            if pa.types.is_floating(kind) and (name != self.cursor or math.isnan(value)):
                return f"{name!r} is a floating-point key or a NaN watermark"
            aware = isinstance(value, datetime) and value.tzinfo is not None
            if pa.types.is_timestamp(kind) and (kind.tz is not None) != aware:
                return f"{name!r} and the watermark {value!r} disagree on a time zone"
            try:
                exact = pa.scalar(value, type=kind).as_py() == value
            except (pa.ArrowException, TypeError, ValueError, AttributeError):
                exact = False
            if not exact:
                return f"the watermark {value!r} is not a {kind} value of {name!r}"
        return None

    def mask(self, batch: pa.RecordBatch) -> pa.Array:
        """True for the rows to send (call `refusal` on the batch's schema first)."""
        result: Any = None
        for name, value in reversed(self._pairs()):  # (c, k1, k2) > (w, v1, v2), last first
            column = batch.column(name)
            scalar = pa.scalar(value, type=column.type)
            after = pc.fill_null(pc.greater(column, scalar), True)
            if result is None:
                result = after
            else:
                same = pc.fill_null(pc.equal(column, scalar), False)
                result = pc.or_(after, pc.and_(same, result))
        cursor = batch.column(self.cursor)
        undecided = pc.is_null(cursor)
        if pa.types.is_floating(cursor.type):
            undecided = pc.or_(undecided, pc.fill_null(pc.is_nan(cursor), False))
        return pc.or_(result, undecided)

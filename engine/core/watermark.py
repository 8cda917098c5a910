"""Watermarks of incremental extracts: the largest (cursor, key...) committed so far.

A watermark is a tuple compared lexicographically: the cursor value first, then the tie-break
keys. It is tracked while batches stream (no second pass), serialized as typed JSON so a
timestamp comes back as a timestamp, and stored by sinks in a state table next to their data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Watermark", "WatermarkTracker", "WatermarkUpdate"]


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
    def least(values: list[Watermark | None]) -> Watermark | None:
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

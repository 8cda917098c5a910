"""Durations as people write them in pipeline files: `500ms`, `30s`, `10m`, `1h30m`, `2d`."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

__all__ = ["DURATION_PATTERN", "Duration", "format_duration", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
DURATION_PATTERN = r"^\s*(\d+(\.\d+)?(ms|s|m|h|d|w)\s*)+$"


def parse_duration(value: object) -> timedelta:
    """`'1h30m'` -> 1:30:00. Plain numbers are seconds. Raises ValueError naming the bad text."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '30s' or '10m', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"durations cannot be negative, got {value!r}")
        return _seconds(float(value), value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as '30s' or '10m', got {value!r}")
    text = value.strip().replace(" ", "")
    position = 0
    total = 0.0
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if not text or position != len(text):
        raise ValueError(
            f"invalid duration {value!r}: write a number with a unit (ms, s, m, h, d, w), "
            "such as '500ms', '30s', '10m' or '1h30m'"
        )
    return _seconds(total, value)


_LONGEST = timedelta(days=365 * 100)


def _seconds(total: float, written: object) -> timedelta:
    """Seconds as a timedelta, refusing what no pipeline means (NaN, a century or more)."""
    if not total < _LONGEST.total_seconds():  # also catches NaN and infinity
        raise ValueError(f"duration {written!r} is out of range (at most 100 years)")
    return timedelta(seconds=total)


def format_duration(delta: timedelta | float) -> str:
    """Short human form: 0.123 s -> '123ms', 75 s -> '1m15s'."""
    seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(lambda d: f"{d.total_seconds():g}s", return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN, "examples": ["30s", "10m"]},
                {"type": "number", "minimum": 0, "description": "seconds"},
            ]
        }
    ),
]
"""A pydantic field type: `30s`, `10m`, `1h30m` or a number of seconds."""

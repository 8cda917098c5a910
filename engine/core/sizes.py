"""Sizes as people write them in pipeline files: `512MB`, `10GB`, `1.5 GiB`, or bytes."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, WithJsonSchema

__all__ = ["ByteSize", "format_bytes", "parse_bytes"]

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([a-z]*)$")
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([kKmMgGtT][iI]?)?[bB]?\s*$"


def parse_bytes(value: object) -> int:
    """`'10GB'` -> 10_000_000_000; plain numbers are bytes. Raises ValueError naming the text."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a size such as '512MB' or '10GB', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"sizes cannot be negative, got {value!r}")
        return int(value)
    match = _SIZE.match(value.strip().lower())
    unit = match.group(2) if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(
            f"invalid size {value!r}: write a number with a unit (B, KB, MB, GB, TB, or KiB, "
            "MiB, GiB, TiB), such as '512MB' or '10GB'"
        )
    return int(float(match.group(1)) * _UNITS[unit])


def format_bytes(count: float) -> str:
    """Short human form: 1_500_000 -> '1.5 MB'."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


ByteSize = Annotated[
    int,
    BeforeValidator(parse_bytes),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": SIZE_PATTERN, "examples": ["512MB", "10GB"]},
                {"type": "integer", "minimum": 0, "description": "bytes"},
            ]
        }
    ),
]

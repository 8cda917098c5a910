"""Run ids: how a new one is made and how a generated one is recognised.

Here rather than in `engine.spec.params` because the catalog (engine.state, which builds only on
`engine.core`) makes them too: a run request queued without an id gets one when it is recorded.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime

__all__ = ["check_run_id", "is_run_id", "new_run_id"]

_RUN_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$")
_GIVEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+=-]{0,127}")


def check_run_id(text: str) -> str:
    """A run id a caller chose, checked: it names folders and object keys, so letters, digits
    and `_.:+=-` only (not starting with a sign or a dot), never `..`. ValueError otherwise."""
    if not _GIVEN.fullmatch(text) or ".." in text:
        raise ValueError(
            f"run id {text!r} is not allowed: up to 128 letters, digits and _ . : + = - "
            "(starting with a letter or digit, no '..')"
        )
    return text


def new_run_id(now: datetime | None = None) -> str:
    """Sortable, readable and unique enough: `20241102T030000Z-a1b2c3`."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{os.urandom(3).hex()}"


def is_run_id(text: str) -> bool:
    """True for an id `new_run_id` made (a run may also be given an id of the caller's own)."""
    return bool(_RUN_ID.match(text))

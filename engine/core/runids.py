"""Run ids: how a new one is made and how a generated one is recognised.

Here rather than in `engine.spec.params` because the catalog (engine.state, which builds only on
`engine.core`) makes them too: a run request queued without an id gets one when it is recorded.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime

__all__ = ["is_run_id", "new_run_id"]

_RUN_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$")


def new_run_id(now: datetime | None = None) -> str:
    """Sortable, readable and unique enough: `20241102T030000Z-a1b2c3`."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{os.urandom(3).hex()}"


def is_run_id(text: str) -> bool:
    """True for an id `new_run_id` made (a run may also be given an id of the caller's own)."""
    return bool(_RUN_ID.match(text))

"""Named places where crash tests stop a real process.

With `ARROWLINE_FAULT=<name>` in the environment, the process announces on stderr that it reached
`<name>` and then waits there: to be killed (the test sends SIGKILL), or, with
`ARROWLINE_FAULT_HOLD=<seconds>`, for that long before it goes on, so a test can signal the
process at that moment and see what it does next. Without it, a fault point costs one dictionary
lookup. The points sit where a crash is most dangerous: half-way through an extract, after a
sink wrote its rows and before it committed, after it committed and before the catalog heard
about it.
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["FAULT_ENV", "FAULT_HOLD_ENV", "fault_point"]

FAULT_ENV = "ARROWLINE_FAULT"
FAULT_HOLD_ENV = "ARROWLINE_FAULT_HOLD"
_FOREVER = 3600.0


def fault_point(name: str) -> None:
    if os.environ.get(FAULT_ENV) == name:
        print(f"ARROWLINE_FAULT reached {name}", file=sys.stderr, flush=True)
        time.sleep(_hold())


def _hold() -> float:
    """Seconds to wait at the fault point: $ARROWLINE_FAULT_HOLD, else until killed."""
    text = os.environ.get(FAULT_HOLD_ENV)
    if not text:
        return _FOREVER
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= _FOREVER:
        print(
            f"{FAULT_HOLD_ENV}={text!r} is not a number of seconds (0 to {_FOREVER:g}); "
            "holding until killed",
            file=sys.stderr,
            flush=True,
        )
        return _FOREVER
    return seconds

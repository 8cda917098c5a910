"""Named places where crash tests stop a real process.

With `ARROWLINE_FAULT=<name>` in the environment, the process announces on stderr that it reached
`<name>` and then waits to be killed (the test sends SIGKILL). Without it, a fault point costs one
dictionary lookup. The points sit where a crash is most dangerous: half-way through an extract,
after a sink wrote its rows and before it committed, after it committed and before the catalog
heard about it.
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["FAULT_ENV", "fault_point"]

FAULT_ENV = "ARROWLINE_FAULT"


def fault_point(name: str) -> None:
    if os.environ.get(FAULT_ENV) == name:
        print(f"ARROWLINE_FAULT reached {name}", file=sys.stderr, flush=True)
        time.sleep(3600)

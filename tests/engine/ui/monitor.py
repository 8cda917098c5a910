"""The web monitor served for real (uvicorn on a free loopback port, in a thread of the test),
and a small project with what its pages show: a run with quarantined rows, a failed run with a
dead letter after a retry, a schedule."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from engine.ui.background import monitor_thread
from engine.ui.guard import Guard

__all__ = ["FLAKY", "RULES", "SHOP", "UDFS", "Monitor", "serve_monitor"]

SHOP = """
pipeline: shop
schedule: "0 3 * * *"
tasks:
  - id: orders
    sql: select range as id, (case when range % 10 = 0 then -1 else range * 1.5 end)::double as amount
         from range(100)
  - id: checked
    validate: {input: orders, schema: rules.yaml, on_fail: quarantine, max_rejected_fraction: 0.5}
  - id: slow
    udf: {input: checked, function: "udfs.py:slow", args: {seconds: 0.0}}
  - id: out
    load: {input: slow, to: duckdb, path: out/w.duckdb, table: t, mode: replace}
"""

RULES = """
columns:
  id: {type: int64}
  amount: {type: float64, checks: {gt: 0}}
"""

FLAKY = """
pipeline: flaky
tasks:
  - id: src
    sql: select range as id from range(5)
  - id: fussy
    udf: {input: src, function: "udfs.py:needs_flag"}
    retry: {attempts: 2, backoff: 0s}
"""

UDFS = """
import time
from pathlib import Path

def slow(frame, seconds: float = 0.0):
    time.sleep(seconds)
    return frame

def needs_flag(frame):
    if not Path("ready.flag").exists():
        raise ConnectionError("upstream <b>service</b> is not ready")
    return frame
"""


@dataclass
class Monitor:
    url: str
    guard: Guard
    client: httpx.Client

    def form_token(self) -> str:
        return self.guard.form_token()


@contextmanager
def serve_monitor(project: Path, token: str | None = None) -> Iterator[Monitor]:
    """The monitor on a free loopback port (engine.ui.background), with a client for it."""
    with (
        monitor_thread(project, token=token) as running,
        httpx.Client(base_url=running.url, timeout=30, follow_redirects=False) as client,
    ):
        yield Monitor(running.url, running.guard, client)

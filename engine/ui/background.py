"""The monitor on a thread of this process (a notebook that wants to look at the project it is
working on, the tests, the benchmarks): started on a free loopback port, stopped on exit.

    with monitor_thread(".") as running:
        print(running.url)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from engine.scheduling.serving import ThreadedServer, authority
from engine.ui.guard import Guard
from engine.ui.server import build_app

__all__ = ["MonitorServer", "RunningMonitor", "monitor_thread", "serve"]

REQUEST_TIMEOUT = 10.0
"""Seconds a client has to send a whole request head (and a form its body)."""


@dataclass(frozen=True)
class RunningMonitor:
    url: str
    guard: Guard


@contextmanager
def monitor_thread(
    project_dir: str | Path, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None
) -> Iterator[RunningMonitor]:
    """Serve the project's monitor until the block ends; port 0 takes a free one. The server
    is the scheduler API's (engine.scheduling.serving): a client that does not finish its
    request within REQUEST_TIMEOUT seconds is hung up on."""
    server = serve(project_dir, host=host, port=port, token=token)
    server.start()
    try:
        yield RunningMonitor(f"http://{authority(server.host, server.port)}", server.guard)
    finally:
        server.stop()


class MonitorServer(ThreadedServer):
    """The monitor's server, with the guard its app checks requests with."""

    def __init__(self, project_dir: str | Path, guard: Guard) -> None:
        app = build_app(Path(project_dir).resolve(), guard)
        super().__init__(app, guard.host, guard.port, name="monitor", timeout=REQUEST_TIMEOUT)
        guard.port = self.port  # the one chosen for port 0: the token's cookie is named by it
        self.guard = guard


def serve(project_dir: str | Path, *, host: str, port: int, token: str | None) -> MonitorServer:
    """The monitor bound to `host`:`port` (not started). Raises ValueError for a non-loopback
    host without a token, OSError when the address cannot be bound."""
    return MonitorServer(project_dir, Guard(host, port, token))

"""The monitor on a thread of this process (a notebook that wants to look at the project it is
working on, the tests, the benchmarks): started on a free loopback port, stopped on exit.

    with monitor_thread(".") as running:
        print(running.url)
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from engine.ui.guard import Guard
from engine.ui.server import build_app

__all__ = ["RunningMonitor", "monitor_thread"]

START_TIMEOUT = 10.0


@dataclass(frozen=True)
class RunningMonitor:
    url: str
    guard: Guard


@contextmanager
def monitor_thread(
    project_dir: str | Path, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None
) -> Iterator[RunningMonitor]:
    """Serve the project's monitor until the block ends; port 0 takes a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    guard = Guard(host, bound, token)
    app = build_app(Path(project_dir).resolve(), guard)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="arrowline-ui", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the monitor did not start on {host}:{bound}")
        time.sleep(0.02)
    shown = f"[{host}]" if ":" in host else host
    try:
        yield RunningMonitor(f"http://{shown}:{bound}", guard)
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT)
        sock.close()

"""Serving HTTP from a thread of the process, and the loopback rules the scheduler API and the
web monitor (engine.ui.guard) share.

`ThreadedServer` runs an ASGI application with uvicorn in a daemon thread, on a socket bound
before the thread starts: a busy port is an error of the constructor, and port 0 gets a free port
that `port` reports. Connections are served by asyncio, so a slow or silent client costs a
socket, never a thread; each still gets `timeout` seconds for every step of a request:

- the head: uvicorn closes a connection idle *between* requests, but would wait for ever for the
  first line of one; `_Protocol` closes a connection that has not sent a whole request head within
  `timeout` of connecting or of its last response, however slowly it trickles bytes;
- the body: the application reads it under its own deadline (engine.scheduling.http answers 408);
- framing: h11 answers a malformed or conflicting Content-Length, an unknown Transfer-Encoding or
  a head still unfinished after 16 KiB with 400, and hangs up before the application sees it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import time
from urllib.parse import urlsplit

import uvicorn
from loguru import logger
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

from engine.core.errors import ArrowlineError

__all__ = ["ThreadedServer", "authority", "host_of", "is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether a host name or address (`localhost`, `127.0.0.2`, `[::1]`) is this machine's
    loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_of(host_header: str) -> str:
    """The host of a Host header (`127.0.0.1:8080`, `[::1]:8080`), lowercase, or '' when the
    header is malformed."""
    try:
        return urlsplit(f"//{host_header}").hostname or ""
    except ValueError:  # `[::1`, a port that is not a number
        return ""


def authority(host: str, port: int) -> str:
    """`host:port`, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ThreadedServer:
    """`app` served by uvicorn in a daemon thread named `name`, on `host`:`port`.

    Raises OSError when the address cannot be bound (in use, not an address of this machine, a
    privileged port).
    """

    def __init__(self, app: ASGIApp, host: str, port: int, *, name: str, timeout: float) -> None:
        self.socket = _bind(host.strip("[]"), port)
        self.host: str = self.socket.getsockname()[0]
        self.port: int = self.socket.getsockname()[1]
        """Where it listens: the address bound, and the port given or (for 0) the one chosen."""
        self.name = name
        self.timeout = timeout
        config = uvicorn.Config(
            app,
            http=_Protocol,  # h11, whatever else is installed: the timeouts above rely on it
            ws="none",
            lifespan="off",
            log_config=None,  # the library configures no logging (uvicorn's would be global)
            access_log=False,
            server_header=False,
            timeout_keep_alive=max(1, round(timeout)),
            timeout_graceful_shutdown=max(1, round(timeout)),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True, name=name
        )

    def start(self, wait: float = 10.0) -> None:
        """Start serving; returns once uvicorn listens (the socket queues connections before)."""
        self.thread.start()
        deadline = time.monotonic() + wait
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ArrowlineError(
                    f"the {self.name} did not start on {authority(self.host, self.port)}"
                )
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop accepting, let requests in progress finish (at most `timeout` seconds), close."""
        if self.thread.is_alive():
            self.server.should_exit = True
            self.thread.join(2 * self.timeout + 5)
            if self.thread.is_alive():
                logger.warning("{}: still finishing requests; leaving them to exit", self.name)
        self.socket.close()


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket; OSError as the system says it (socket.create_server adds the
    address to the message, which the caller names already)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart on TIME_WAIT
        listening.bind((host, port))
        listening.listen(128)
    except OSError:
        listening.close()
        raise
    return listening


class _Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 over h11, with a deadline for each request's head (module docstring).

    The deadline is armed when the connection opens and after each response, for the request
    cycle current then; it is disarmed when a new cycle (a whole head) begins.
    """

    _head_deadline: asyncio.TimerHandle | None = None
    _waiting_after: RequestResponseCycle | None = None
    """The cycle that was current when the deadline was armed (None before the first)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not self._waiting_after:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start the next, pipelined request
        if not self.transport.is_closing() and self.cycle.response_complete:
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self._disarm()
        self._waiting_after = self.cycle
        self._head_deadline = self.loop.call_later(self.timeout_keep_alive, self._head_late)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_late(self) -> None:
        self._head_deadline = None
        if self.cycle is self._waiting_after and not self.transport.is_closing():
            self.transport.close()

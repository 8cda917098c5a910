"""A real HTTP server on loopback for the http connector's tests: routes are Python functions
of the request, every request is recorded, and the server runs in a thread of the test."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["Api", "Reply", "Request", "serve"]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    """Sent as it is instead of `body` as JSON (an HTML error page, broken JSON)."""
    delay: float = 0.0


Route = Callable[[Request], Reply | Any]


@dataclass
class Api:
    base_url: str
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def route(self, path: str) -> Callable[[Route], Route]:
        def register(handler: Route) -> Route:
            self.routes[path] = handler
            return handler

        return register

    def hits(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]


def serve() -> Iterator[Api]:
    """Start a server on a free loopback port; yields its Api until the caller is done."""
    api = Api("")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            content = self.headers.get("content-type", "")
            body: Any = raw.decode() if raw else None
            if raw and "json" in content:
                body = json.loads(raw)
            elif raw and "form" in content:
                body = dict(parse_qsl(raw.decode()))
            request = Request(
                self.command,
                parts.path,
                dict(parse_qsl(parts.query)),
                {k.lower(): v for k, v in self.headers.items()},
                body,
            )
            with lock:
                api.requests.append(request)
            route = api.routes.get(parts.path)
            reply = route(request) if route else Reply(404, {"message": f"no {parts.path}"})
            if not isinstance(reply, Reply):
                reply = Reply(200, reply)
            if reply.delay:
                threading.Event().wait(reply.delay)
            data = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            headers = {"content-type": "application/json", **reply.headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)

        do_GET = _handle
        do_POST = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    api.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()

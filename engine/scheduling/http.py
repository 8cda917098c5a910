"""The scheduler's small HTTP API, for other systems to trigger and poll runs.

    GET  /                                           -> 200 this index of endpoints, as JSON
    POST /pipelines/{name}/runs   {"params": {...}}  -> 202 {"run_id", "request_id", "status_url"}
    GET  /runs/{run_id}                              -> 200 the run and its tasks (or QUEUED)
    GET  /status                                     -> 200 every pipeline at a glance
    GET  /metrics                                    -> 200 Prometheus text format
    GET  /healthz                                    -> 200 {"leader": true|false}

It binds 127.0.0.1 by default. Bound anywhere else it needs a token, and every request but the
index and /healthz must carry `Authorization: Bearer <token>`. Each request opens its own
catalog connection.

Without a token, a web page open in a browser on the same machine is the attacker to keep out:
it can send requests to loopback but cannot choose their `Origin`, `Sec-Fetch-Site` or (after
rebinding its own name to 127.0.0.1) `Host`. So a request whose `Origin` is not the API's own, that
a browser marks cross-site, or that names a host other than loopback, is refused (403), and a
POST must be `application/json` (415), which a page cannot send across origins without asking
first. Bodies need a Content-Length of at most `MAX_BODY` (411, 400, 413), and a client that
stops sending loses its connection after `read_timeout` seconds (408) instead of holding a thread.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from loguru import logger

from engine.core.errors import ArrowlineError, DefinitionError, ParameterError

if TYPE_CHECKING:
    from engine.scheduling.scheduler import Scheduler

__all__ = ["ENDPOINTS", "MAX_BODY", "ApiServer", "Endpoint"]

MAX_BODY = 1 << 20
"""Bytes of request body read at most; a run request is a few hundred."""


@dataclass(frozen=True)
class Endpoint:
    """One endpoint, as `GET /` lists it and the reference documents it."""

    method: str
    path: str
    does: str
    token: bool
    """Whether it needs the bearer token, when the API has one."""


ENDPOINTS = (
    Endpoint("GET", "/", "This index of the endpoints.", token=False),
    Endpoint(
        "POST",
        "/pipelines/{name}/runs",
        'Queue a run of the pipeline; the body is `{"params": {...}}` as application/json, each '
        "value of its parameter's type. Answers 202 with `run_id`, `request_id` and "
        "`status_url`; 400 names a bad parameter, its type and what was sent.",
        token=True,
    ),
    Endpoint(
        "GET",
        "/runs/{run_id}",
        "The run's state and its tasks' (state, rows, error); QUEUED or STARTING until the "
        "scheduler starts it.",
        token=True,
    ),
    Endpoint(
        "GET",
        "/status",
        "Every pipeline at a glance: schedule, next run, running runs, last run, failing since.",
        token=True,
    ),
    Endpoint("GET", "/metrics", "The catalog's metrics in Prometheus text format.", token=True),
    Endpoint(
        "GET", "/healthz", 'Liveness: `{"leader": true}` when this scheduler leads.', token=False
    ),
)

_OPEN_PATHS = frozenset(e.path for e in ENDPOINTS if not e.token)
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
_CONTENT_LENGTH = re.compile(r"[0-9]{1,19}")
_BODY_KEYS = ("params",)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that vanishes mid-request is worth a line, not a traceback on stderr."""
        exc = sys.exc_info()[1]
        logger.debug("api: request from {} ended: {!r}", client_address[0], exc)


class ApiServer:
    def __init__(
        self,
        scheduler: Scheduler,
        host: str,
        port: int,
        token: str | None,
        *,
        read_timeout: float = 10.0,
    ) -> None:
        if not is_loopback(host) and not token:
            raise ArrowlineError(
                f"the scheduler API would listen on {host} without a token",
                hint="pass --token (or set ARROWLINE_API_TOKEN), or bind 127.0.0.1",
            )
        self.scheduler = scheduler
        self.token = token
        self.loopback = is_loopback(host)
        handler = type("Handler", (_Handler,), {"api": self, "timeout": read_timeout})
        try:
            self.server = _Server((host, port), handler)
        except OSError as exc:  # in use, not an address of this machine, a privileged port
            raise ArrowlineError(
                f"cannot serve the scheduler API on {_authority(host, port)}: {exc.strerror or exc}"
            ) from None
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="api")

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{_authority(str(host), int(port))}"

    def origins(self, host_header: str) -> set[str]:
        """The origins a browser gives pages of this API. Bound to every address, the API
        cannot know its names, and takes the one the request was sent to."""
        host, port = self.server.server_address[:2]
        names = {_authority(str(host), int(port))}
        if self.loopback:
            names |= {f"{name}:{port}" for name in _LOOPBACK_NAMES}
        elif ipaddress.ip_address(str(host)).is_unspecified and host_header:
            names.add(host_header)
        return {f"http://{name}" for name in names}

    def start(self) -> None:
        self.thread.start()
        logger.info("scheduler API on {}", self.address)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Refused(Exception):
    """Ends a request with this status and message (raised from the checks, answered once)."""

    def __init__(self, status: int, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": message, **fields}


class _Handler(BaseHTTPRequestHandler):
    api: ApiServer

    def log_message(self, fmt: str, *args: Any) -> None:
        # the request line is the client's text: an argument to the log line, never its format
        logger.debug("api: {}", fmt % args)

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def _answer(self, route: Callable[[str], None]) -> None:
        """Run the checks every request passes, then the route; turn a refusal into its
        status and anything unexpected into a 500 and one log line."""
        try:
            self._same_origin()
            route(urlsplit(self.path).path)
        except _Refused as refused:
            self._send(refused.status, refused.body)
        except Exception as exc:  # a bug or a catalog outage: the client learns no internals
            logger.error(
                "api: {} {} failed: {}: {}", self.command, self.path, type(exc).__name__, exc
            )
            self._send(500, {"error": "internal error; the scheduler's log says more"})

    def _same_origin(self) -> None:
        """Refuse what a browser sends on behalf of another site (see the module docstring)."""
        host = self.headers.get("Host", "")
        if self.api.loopback and host and not is_loopback(_hostname(host)):
            raise _Refused(403, f"the API on loopback does not answer for host {host!r}")
        site = self.headers.get("Sec-Fetch-Site", "").lower()
        if site in ("cross-site", "same-site"):
            raise _Refused(403, f"cross-origin requests are refused (Sec-Fetch-Site: {site})")
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower() not in self.api.origins(host.lower()):
            raise _Refused(403, f"cross-origin requests are refused (Origin: {origin[:200]})")

    def _authorize(self, path: str) -> None:
        token = self.api.token
        if not token or path in _OPEN_PATHS:
            return
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise _Refused(401, "missing or wrong token")

    def _get(self, path: str) -> None:
        self._authorize(path)
        layout = self.api.scheduler.layout
        if path == "/":
            self._send(200, self._index())
        elif path == "/healthz":
            self._send(200, {"leader": self.api.scheduler.leading})
        elif path == "/metrics":
            from engine.scheduling.metrics import render

            self._send(200, render(layout.catalog), "text/plain; version=0.0.4")
        elif path == "/status":
            from engine.scheduling.status import status_rows

            self._send(200, status_rows(layout))
        elif path.startswith("/runs/"):
            self._run(path.removeprefix("/runs/"))
        else:
            raise _Refused(404, f"no such endpoint: GET {path}; GET / lists them")

    def _index(self) -> dict[str, Any]:
        return {
            "endpoints": [
                {
                    "method": e.method,
                    "path": e.path,
                    "does": e.does,
                    "token": e.token and self.api.token is not None,
                }
                for e in ENDPOINTS
            ]
        }

    def _run(self, run_id: str) -> None:
        from engine.state.catalog import CatalogReader

        with CatalogReader(self.api.scheduler.layout.catalog) as catalog:
            if catalog.has_run(run_id):
                run = catalog.run(run_id)
                tasks = [
                    {
                        "task_id": t.task_id,
                        "state": t.state.value,
                        "rows_out": t.rows_out,
                        "error": t.error,
                    }
                    for t in catalog.task_runs(run_id)
                ]
                self._send(
                    200,
                    {
                        "run_id": run.run_id,
                        "pipeline": run.pipeline,
                        "state": run.state.value,
                        "logical_date": run.logical_date,
                        "started_at": run.started_at,
                        "ended_at": run.ended_at,
                        "error": run.error,
                        "tasks": tasks,
                    },
                )
                return
            request = catalog.request_for_run(run_id)
        if request is None:
            raise _Refused(404, f"no run {run_id}")
        state = {"pending": "QUEUED", "skipped": "SKIPPED"}.get(request.state, "STARTING")
        self._send(200, {"run_id": run_id, "pipeline": request.pipeline, "state": state})

    def _post(self, path: str) -> None:
        self._authorize(path)
        parts = path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "pipelines" or parts[2] != "runs":
            raise _Refused(404, f"no such endpoint: POST {path}; GET / lists them")
        name = parts[1]
        params = self._params(self._body())
        try:
            request = self.api.scheduler.request(name, params, "http")
        except ParameterError as exc:
            raise _Refused(
                400,
                exc.message,
                parameter=exc.parameter,
                expected=exc.expected,
                received=exc.received,
            ) from None
        except DefinitionError as exc:  # e.g. a parameter naming a table no task produces
            raise _Refused(400, exc.message) from None
        except KeyError:
            raise _Refused(
                404, f"no pipeline {name!r} in {self.api.scheduler.layout.project_dir}"
            ) from None
        self._send(
            202,
            {
                "run_id": request.run_id,
                "request_id": request.id,
                "status_url": f"/runs/{request.run_id}",
            },
        )

    def _body(self) -> bytes:
        """The body of a POST: JSON, framed by one Content-Length of at most MAX_BODY."""
        kind = self.headers.get_content_type()  # text/plain when the header is missing
        if kind != "application/json":
            raise _Refused(415, f"send the body as application/json, not {kind}")
        if self.headers.get("Transfer-Encoding"):
            raise _Refused(411, "send the body with a Content-Length, not a Transfer-Encoding")
        lengths = set(self.headers.get_all("Content-Length") or [])
        if not lengths:
            raise _Refused(411, "a POST needs a Content-Length header")
        text = lengths.pop().strip()
        if lengths or not _CONTENT_LENGTH.fullmatch(text):
            raise _Refused(400, "Content-Length must be one whole number of bytes")
        length = int(text)
        if length > MAX_BODY:
            raise _Refused(413, f"the body is {length} bytes; at most {MAX_BODY} are read")
        try:
            data = self.rfile.read(length)
        except TimeoutError:
            raise _Refused(408, f"the body did not arrive within {self.timeout} s") from None
        if len(data) < length:
            raise _Refused(400, f"the body ended after {len(data)} of {length} bytes")
        return data

    def _params(self, data: bytes) -> dict[str, Any]:
        """The `params` object of a JSON body (an empty body means none)."""
        try:
            body = json.loads(data, parse_constant=_no_constant) if data.strip() else {}
        except (ValueError, RecursionError) as exc:
            raise _Refused(400, f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _Refused(400, 'the body must be a JSON object: {"params": {...}}')
        unknown = sorted(set(body) - set(_BODY_KEYS))
        if unknown:
            raise _Refused(400, f"unknown key {unknown[0]!r} in the body; it may have: params")
        params = body.get("params", {})
        if not isinstance(params, dict):
            raise _Refused(400, "'params' must be a JSON object of parameter names to values")
        return params


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _hostname(host_header: str) -> str:
    """The host of a Host header (`127.0.0.1:8080`, `[::1]:8080`), or '' when it is malformed."""
    try:
        return urlsplit(f"//{host_header}").hostname or ""
    except ValueError:
        return ""

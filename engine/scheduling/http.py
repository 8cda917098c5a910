"""The scheduler's small HTTP API, for other systems to trigger and poll runs: a Starlette
application served by uvicorn in a thread of the scheduler (engine.scheduling.serving).

    GET  /                                           -> 200 this index of endpoints, as JSON
    POST /pipelines/{name}/runs   {"params": {...}}  -> 202 {"run_id", "request_id", "status_url"}
    GET  /runs/{run_id}                              -> 200 the run and its tasks (or QUEUED)
    GET  /status                                     -> 200 every pipeline at a glance
    GET  /metrics                                    -> 200 Prometheus text format
    GET  /healthz                                    -> 200 {"leader": true|false}

It binds 127.0.0.1 by default. Bound anywhere else it needs a token, and every request but the
index and /healthz must carry `Authorization: Bearer <token>`. Each request opens its own
catalog connection, in a worker thread.

Without a token, a web page open in a browser on the same machine is the attacker to keep out:
it can send requests to loopback but cannot choose their `Origin`, `Sec-Fetch-Site` or (after
rebinding its own name to 127.0.0.1) `Host`. So a request whose `Origin` is not the API's own, that
a browser marks cross-site, or that names a host other than loopback, is refused (403), and a
POST must be `application/json` (415), which a page cannot send across origins without asking
first. Bodies need a Content-Length (411; chunked bodies too) of at most `MAX_BODY` (413); a
malformed one is h11's to refuse (400). A client that stops sending its body is answered 408
after `read_timeout` seconds, and one that stops sending its request head loses the connection
as late; neither holds a thread meanwhile. Every refusal closes the connection.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loguru import logger
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.core.errors import ArrowlineError, DefinitionError, ParameterError
from engine.scheduling.serving import ThreadedServer, authority, host_of, is_loopback

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
_BODY_KEYS = ("params",)


class ApiServer:
    """The API of `scheduler` on `host`:`port` (0: a free port, which `address` then names).

    Raises ArrowlineError off loopback without a token, or when the address cannot be bound.
    """

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
        self.read_timeout = read_timeout
        try:
            self.server = ThreadedServer(
                _app(self), host, port, name="scheduler API", timeout=read_timeout
            )
        except OSError as exc:  # in use, not an address of this machine, a privileged port
            raise ArrowlineError(
                f"cannot serve the scheduler API on {authority(host, port)}: {exc.strerror or exc}"
            ) from None

    @property
    def address(self) -> str:
        return f"http://{authority(self.server.host, self.server.port)}"

    def origins(self, host_header: str) -> set[str]:
        """The origins a browser gives pages of this API. Bound to every address, the API
        cannot know its names, and takes the one the request was sent to."""
        host, port = self.server.host, self.server.port
        names = {authority(host, port)}
        if self.loopback:
            names |= {f"{name}:{port}" for name in _LOOPBACK_NAMES}
        elif ipaddress.ip_address(host).is_unspecified and host_header:
            names.add(host_header)
        return {f"http://{name}" for name in names}

    def start(self) -> None:
        self.server.start()
        logger.info("scheduler API on {}", self.address)

    def stop(self) -> None:
        self.server.stop()


class _Refused(Exception):
    """Ends a request with this status and message (raised from the checks, answered once)."""

    def __init__(self, status: int, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": message, **fields}

    def response(self) -> Response:
        # the client may have left part of its body unread, or be no client of ours: hang up
        return _json(self.status, self.body, headers={"Connection": "close"})


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    data = json.dumps(body, default=str).encode()
    return Response(data, status, headers, media_type="application/json")


class _Checked:
    """ASGI middleware: the origin and token checks every request passes before its route."""

    def __init__(self, app: ASGIApp, api: ApiServer) -> None:
        self.app = app
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("lifespan", "websocket"):  # no request to check (both are off)
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            _same_origin(self.api, headers)
            _authorize(self.api, scope["path"], headers)
        except _Refused as refused:
            await refused.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _same_origin(api: ApiServer, headers: Headers) -> None:
    """Refuse what a browser sends on behalf of another site (see the module docstring)."""
    host = headers.get("host", "")
    if api.loopback and host and not is_loopback(host_of(host)):
        raise _Refused(403, f"the API on loopback does not answer for host {host!r}")
    site = headers.get("sec-fetch-site", "").lower()
    if site in ("cross-site", "same-site"):
        raise _Refused(403, f"cross-origin requests are refused (Sec-Fetch-Site: {site})")
    origin = headers.get("origin")
    if origin is not None and origin.lower() not in api.origins(host.lower()):
        raise _Refused(403, f"cross-origin requests are refused (Origin: {origin[:200]})")


def _authorize(api: ApiServer, path: str, headers: Headers) -> None:
    if not api.token or path in _OPEN_PATHS:
        return
    given = headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {api.token}".encode()):
        raise _Refused(401, "missing or wrong token")


_Route = Callable[[Request], Awaitable[Response]]


def _answering(route: _Route) -> _Route:
    """Turn a refusal into its status and anything unexpected into a 500 and one log line."""

    async def answer(request: Request) -> Response:
        try:
            return await route(request)
        except _Refused as refused:
            return refused.response()
        except Exception as exc:  # a bug or a catalog outage: the client learns no internals
            logger.error(
                "api: {} {} failed: {}: {}",
                request.method,
                request.url.path,
                type(exc).__name__,
                exc,
            )
            return _json(500, {"error": "internal error; the scheduler's log says more"})

    return answer


def _app(api: ApiServer) -> Starlette:
    layout = api.scheduler.layout

    @_answering
    async def index(request: Request) -> Response:
        return _json(200, _index(api))

    @_answering
    async def healthz(request: Request) -> Response:
        return _json(200, {"leader": api.scheduler.leading})

    @_answering
    async def metrics(request: Request) -> Response:
        from engine.scheduling.metrics import render

        text = await run_in_threadpool(render, layout.catalog)
        return Response(text, media_type="text/plain; version=0.0.4")

    @_answering
    async def status(request: Request) -> Response:
        from engine.scheduling.status import status_rows

        return _json(200, await run_in_threadpool(status_rows, layout))

    @_answering
    async def run(request: Request) -> Response:
        return _json(200, await run_in_threadpool(_run, api, request.path_params["run_id"]))

    @_answering
    async def trigger(request: Request) -> Response:
        name = request.path_params["name"]
        params = _params(await _body(request, api.read_timeout))
        queued = await run_in_threadpool(_request, api, name, params)
        return _json(202, queued)

    async def no_such_endpoint(request: Request, exc: Exception) -> Response:
        path = request.url.path
        refused = _Refused(404, f"no such endpoint: {request.method} {path}; GET / lists them")
        response = refused.response()
        if isinstance(exc, HTTPException) and exc.status_code == 405:
            response.status_code = 405
            response.headers.update(exc.headers or {})
        return response

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            Route("/status", status),
            Route("/runs/{run_id:path}", run),
            Route("/pipelines/{name}/runs", trigger, methods=["POST"]),
        ],
        exception_handlers={404: no_such_endpoint, 405: no_such_endpoint},
    )
    app.router.redirect_slashes = False  # a POST redirected would lose its body on the way
    app.add_middleware(_Checked, api=api)
    return app


def _index(api: ApiServer) -> dict[str, Any]:
    return {
        "endpoints": [
            {
                "method": e.method,
                "path": e.path,
                "does": e.does,
                "token": e.token and api.token is not None,
            }
            for e in ENDPOINTS
        ]
    }


def _run(api: ApiServer, run_id: str) -> dict[str, Any]:
    from engine.state.catalog import CatalogReader

    with CatalogReader(api.scheduler.layout.catalog) as catalog:
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
            return {
                "run_id": run.run_id,
                "pipeline": run.pipeline,
                "state": run.state.value,
                "logical_date": run.logical_date,
                "started_at": run.started_at,
                "ended_at": run.ended_at,
                "error": run.error,
                "tasks": tasks,
            }
        request = catalog.request_for_run(run_id)
    if request is None:
        raise _Refused(404, f"no run {run_id}")
    state = {"pending": "QUEUED", "skipped": "SKIPPED"}.get(request.state, "STARTING")
    return {"run_id": run_id, "pipeline": request.pipeline, "state": state}


def _request(api: ApiServer, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Queue a run of `name` with the scheduler; what the POST answers."""
    try:
        request = api.scheduler.request(name, params, "http")
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
        raise _Refused(404, f"no pipeline {name!r} in {api.scheduler.layout.project_dir}") from None
    return {
        "run_id": request.run_id,
        "request_id": request.id,
        "status_url": f"/runs/{request.run_id}",
    }


async def _body(request: Request, timeout: float) -> bytes:
    """The body of a POST: JSON, framed by a Content-Length of at most MAX_BODY, arriving
    within `timeout` seconds. (h11 has refused a malformed or conflicting Content-Length.)"""
    kind = _content_type(request.headers.get("content-type", ""))
    if kind != "application/json":
        raise _Refused(415, f"send the body as application/json, not {kind}")
    if "transfer-encoding" in request.headers:
        raise _Refused(411, "send the body with a Content-Length, not a Transfer-Encoding")
    text = request.headers.get("content-length")
    if text is None:
        raise _Refused(411, "a POST needs a Content-Length header")
    length = int(text)
    if length > MAX_BODY:
        raise _Refused(413, f"the body is {length} bytes; at most {MAX_BODY} are read")
    data = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                data += chunk
    except TimeoutError:
        raise _Refused(408, f"the body did not arrive within {timeout} s") from None
    except ClientDisconnect:  # nobody is left to read the answer; it ends the request
        raise _Refused(400, f"the body ended after {len(data)} of {length} bytes") from None
    return bytes(data)


def _content_type(header: str) -> str:
    """The media type of a Content-Type header, as email.message reads it: text/plain when the
    header is missing or is no type/subtype."""
    kind = header.split(";", 1)[0].strip().lower()
    return kind if kind.count("/") == 1 else "text/plain"


def _params(data: bytes) -> dict[str, Any]:
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

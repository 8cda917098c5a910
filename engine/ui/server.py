"""`arrowline ui`: the web monitor, a Starlette application served by uvicorn.

    GET  /                                  every pipeline: last run, trend, next run, attention
    GET  /pipelines/{name}                  its DAG (states of its last run), definition, runs
    GET  /runs?pipeline=&state=&since=&until=&after=
                                            runs, newest first, a keyset page at a time
    GET  /runs/{run}                        DAG, Gantt of attempts, tasks, where time went, errors
    GET  /runs/{run}/events                 server-sent events while the run runs
    GET  /runs/{run}/tasks/{task}           error, transitions, schema drift, preview, quarantine
    GET  /lineage?pipeline=&column=&direction=
    GET  /compare?a=&b=&threshold=         two runs side by side, slower tasks marked
    GET  /dead-letters?status=
    POST /pipelines/{name}/pause|resume|trigger, /dead-letters/{id}/requeue|resolve

Every page is rendered on the server (engine.ui.render) and works without JavaScript; one small
script (static/app.js) follows a running run. Access and cross-site rules: engine.ui.guard.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.core.errors import ArrowlineError, SelectionError, StateError
from engine.core.states import RunState
from engine.state.locks import ConcurrentRun
from engine.ui.actions import Actions
from engine.ui.guard import Guard, Refusal
from engine.ui.pages import Definitions, Pages, pipeline_href, run_href
from engine.ui.render import STATIC, compile_templates, render

__all__ = ["build_app"]

MAX_FORM = 16_384
FORM_TIMEOUT = 10.0
LIVE_POLL = 0.25
"""Seconds between looks at a running run's state: a change reaches the page within a second."""
_AFTER = re.compile(r"^[0-9T:.+\-]{10,40}\|[\w.\-:]{1,200}$")
_STATIC = {"app.css": "text/css", "app.js": "text/javascript", "favicon.svg": "image/svg+xml"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" makes a browser send `Origin: null`
    "Cache-Control": "no-store",
}


class _Guarded:
    """ASGI middleware: host, token and cross-site checks before any route runs."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("lifespan", "websocket"):  # no request to check
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            self.guard.check_host(request.headers.get("host"))
            query_token = request.query_params.get("token")
            bearer = request.headers.get("authorization", "")
            self.guard.check_token(
                bearer=bearer[7:] if bearer.lower().startswith("bearer ") else None,
                cookie=request.cookies.get(self.guard.cookie),
                query=query_token,
            )
        except Refusal as refusal:
            await _refusal(refusal)(scope, receive, send)
            return
        fetch_site = request.headers.get("sec-fetch-site")
        if fetch_site in ("cross-site", "same-site") and (
            request.method != "GET" or request.headers.get("sec-fetch-mode") != "navigate"
        ):
            # another site's page may link here, but not make the browser fetch a page in the
            # background (an <img> on any web page would plan a pipeline, or run its UDFs)
            background = Refusal(403, f"a {fetch_site} request that is not a navigation")
            await _refusal(background)(scope, receive, send)
            return
        if query_token is not None and self.guard.token and request.method == "GET":
            # keep the token in a cookie, and out of the address bar and history; the way back
            # is this server's own path (never `//elsewhere`)
            rest = {k: v for k, v in request.query_params.items() if k != "token"}
            path = "/" + scope.get("raw_path", b"/").decode("latin-1").split("?")[0].lstrip("/")
            target = path + (f"?{urlencode(rest)}" if rest else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(
                self.guard.cookie, query_token, httponly=True, samesite="strict", path="/"
            )
            await response(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                headers.extend((k.lower().encode(), v.encode()) for k, v in _HEADERS.items())
            await send(message)

        await self.app(scope, receive, with_headers)


def _refusal(refusal: Refusal) -> Response:
    return HTMLResponse(
        render("error.html", status=refusal.status, message=refusal.message, csrf=""),
        status_code=refusal.status,
        headers=_HEADERS,
    )


def build_app(project_dir: Path, guard: Guard) -> Starlette:
    """The monitor's app. Building it compiles the templates and finds the project's pipeline
    files, so the first view of a page pays for neither."""
    compile_templates()
    pages = Pages(project_dir, Definitions())
    pages.warm()
    actions = Actions(project_dir)
    csrf = guard.form_token()

    def page(template: str, code: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(render(template, csrf=csrf, **context), status_code=code)

    def failed(exc: Exception) -> HTMLResponse:
        if isinstance(exc, ConcurrentRun):  # before StateError, which it is
            running = exc.holder.get("run_id")
            return page(
                "error.html",
                code=409,
                status=409,
                message=str(exc).split("\n")[0],  # the command line's hint does not apply here
                running=run_href(running) if isinstance(running, str) and running else None,
            )
        not_found = isinstance(exc, LookupError | StateError | SelectionError)
        status = 404 if not_found else 400
        return page("error.html", code=status, status=status, message=str(exc))

    def html(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except (ArrowlineError, LookupError, ValueError) as exc:
                return failed(exc)

        return answer

    @html
    async def overview(request: Request) -> Response:
        return page("overview.html", **await run_in_threadpool(pages.overview))

    @html
    async def pipeline(request: Request) -> Response:
        name = request.path_params["name"]
        as_defined = request.query_params.get("as") == "defined"
        context = await run_in_threadpool(pages.pipeline, name, as_defined=as_defined)
        return page("pipeline.html", **context, href=pipeline_href(name))

    @html
    async def docs(request: Request) -> Response:
        return page("docs.html", **await run_in_threadpool(pages.docs, request.path_params["name"]))

    @html
    async def runs(request: Request) -> Response:
        query = request.query_params
        state = RunState(query["state"]) if query.get("state") else None
        after = query.get("after") or None
        if after is not None and not _AFTER.match(after):
            raise ValueError(f"'after' is not a page position: {after[:60]!r}")
        context = await run_in_threadpool(
            lambda: pages.runs(
                pipeline=query.get("pipeline") or None,
                state=state,
                since=_day(query.get("since"), "since"),
                until=_day(query.get("until"), "until", end=True),
                after=after,
            )
        )
        filters = {k: v for k, v in context["filters"].items() if v}
        next_href = (
            "/runs?" + urlencode({**filters, "after": context["next_key"]})
            if context["next_key"]
            else None
        )
        return page("runs.html", **context, next_href=next_href)

    @html
    async def run(request: Request) -> Response:
        context = await run_in_threadpool(pages.run, request.path_params["run"])
        return page("queued.html" if "queued" in context else "run.html", **context)

    @html
    async def task(request: Request) -> Response:
        context = await run_in_threadpool(
            pages.task, request.path_params["run"], request.path_params["task"]
        )
        return page("task.html", **context)

    async def events(request: Request) -> Response:
        run_id = request.path_params["run"]
        try:
            first = await run_in_threadpool(pages.run_state, run_id)
        except (ArrowlineError, LookupError) as exc:
            return failed(exc)

        async def stream() -> AsyncIterator[str]:
            seen = first
            yield f"event: state\ndata: {json.dumps(seen)}\n\n"
            while seen["live"]:
                if await request.is_disconnected():
                    return
                await asyncio.sleep(LIVE_POLL)
                now = await run_in_threadpool(pages.run_state, run_id)
                if now != seen:
                    seen = now
                    yield f"event: state\ndata: {json.dumps(now)}\n\n"
            yield "event: end\ndata: {}\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"X-Accel-Buffering": "no"},
        )

    @html
    async def lineage(request: Request) -> Response:
        query = request.query_params
        context = await run_in_threadpool(
            lambda: pages.lineage(
                query.get("pipeline") or None,
                query.get("column") or None,
                downstream=query.get("direction") == "downstream",
            )
        )
        return page("lineage.html", **context)

    @html
    async def compare(request: Request) -> Response:
        query = request.query_params
        try:
            threshold = float(query.get("threshold") or 20)
        except ValueError:
            raise ValueError("threshold must be a number of percent, e.g. 20") from None
        if not 0 <= threshold <= 10_000:
            raise ValueError(f"threshold {threshold:g} is not a percentage between 0 and 10000")
        context = await run_in_threadpool(
            pages.compare, query.get("a") or None, query.get("b") or None, threshold
        )
        return page("compare.html", **context)

    @html
    async def dead_letters(request: Request) -> Response:
        status = request.query_params.get("status") or "open"
        if status not in ("open", "requeued", "resolved", "all"):
            raise ValueError(f"status {status!r}: one of open, requeued, resolved, all")
        pipeline = request.query_params.get("pipeline") or None
        context = await run_in_threadpool(pages.dead_letters, status, pipeline)
        return page("dead_letters.html", **context)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return Response("not found", status_code=404)
        return Response((STATIC / name).read_bytes(), media_type=_STATIC[name])

    def action(
        work: Callable[[Request, dict[str, str]], str],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def answer(request: Request) -> Response:
            try:
                fields = await _form(request)
                guard.check_post(
                    host_header=request.headers.get("host"),
                    origin=request.headers.get("origin"),
                    fetch_site=request.headers.get("sec-fetch-site"),
                    form_token=fields.get("csrf"),
                )
            except Refusal as refusal:
                return _refusal(refusal)
            try:
                target = await run_in_threadpool(work, request, fields)
            except (ArrowlineError, LookupError, ValueError) as exc:
                return failed(exc)
            return RedirectResponse(target, status_code=303)

        return answer

    def pause(request: Request, form: dict[str, str]) -> str:
        name = request.path_params["name"]
        actions.pause(name, form.get("reason", ""))
        return pipeline_href(name)

    def resume(request: Request, form: dict[str, str]) -> str:
        name = request.path_params["name"]
        actions.resume(name)
        return pipeline_href(name)

    def trigger(request: Request, form: dict[str, str]) -> str:
        return run_href(actions.trigger(request.path_params["name"]))

    def requeue(request: Request, form: dict[str, str]) -> str:
        return run_href(actions.requeue(_letter(request)))

    def resolve(request: Request, form: dict[str, str]) -> str:
        actions.resolve(_letter(request), form.get("note", ""))
        return "/dead-letters?status=resolved"

    routes = [
        Route("/", overview),
        Route("/pipelines/{name}", pipeline),
        Route("/pipelines/{name}/docs", docs),
        Route("/pipelines/{name}/pause", action(pause), methods=["POST"]),
        Route("/pipelines/{name}/resume", action(resume), methods=["POST"]),
        Route("/pipelines/{name}/trigger", action(trigger), methods=["POST"]),
        Route("/runs", runs),
        Route("/runs/{run}", run),
        Route("/runs/{run}/events", events),
        Route("/runs/{run}/tasks/{task:path}", task),
        Route("/lineage", lineage),
        Route("/compare", compare),
        Route("/dead-letters", dead_letters),
        Route("/dead-letters/{id:int}/requeue", action(requeue), methods=["POST"]),
        Route("/dead-letters/{id:int}/resolve", action(resolve), methods=["POST"]),
        Route("/static/{name}", static),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(_Guarded, guard=guard)
    app.state.actions = actions
    return app


async def _form(request: Request) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body of at most MAX_FORM bytes (our forms send a
    token and a short reason); anything else is refused before it is read whole."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise Refusal(415, "send the form as application/x-www-form-urlencoded")
    body = b""
    try:
        async with asyncio.timeout(FORM_TIMEOUT):
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_FORM:
                    raise Refusal(413, f"a form of more than {MAX_FORM:,} bytes")
    except TimeoutError:
        raise Refusal(408, f"the form did not arrive within {FORM_TIMEOUT:g} s") from None
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refusal(400, f"the form cannot be read: {exc}") from None
    return dict(pairs)


def _letter(request: Request) -> int:
    letter = int(request.path_params["id"])
    if not 0 < letter < 2**63:
        raise LookupError(f"no dead letter {letter}")
    return letter


def _day(text: str | None, name: str, *, end: bool = False) -> datetime | None:
    """A `since`/`until` date of the runs filter; `until` includes that whole day."""
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name} must be a date like 2024-11-02, not {text[:40]!r}") from None
    try:
        return datetime.combine(day + timedelta(days=1) if end else day, time(), tzinfo=UTC)
    except OverflowError:
        raise ValueError(f"{name} {text!r} is past the last date there is") from None

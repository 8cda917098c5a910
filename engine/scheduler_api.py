"""The scheduler's small HTTP API, for other systems to trigger and poll runs.

    POST /pipelines/{name}/runs   {"params": {...}}  -> 202 {"run_id", "request_id", "status_url"}
    GET  /runs/{run_id}                              -> 200 the run and its tasks (or QUEUED)
    GET  /status                                     -> 200 every pipeline at a glance
    GET  /metrics                                    -> 200 Prometheus text format
    GET  /healthz                                    -> 200 {"leader": true|false}

It binds 127.0.0.1 by default. Bound anywhere else it needs a token, and every request must
carry `Authorization: Bearer <token>`. Each request opens its own catalog connection.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from loguru import logger

from engine.catalog_db import catalog_location
from engine.errors import ArrowlineError, ParameterError

if TYPE_CHECKING:
    from engine.scheduler import Scheduler

__all__ = ["ApiServer"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiServer:
    def __init__(self, scheduler: Scheduler, host: str, port: int, token: str | None) -> None:
        if not is_loopback(host) and not token:
            raise ArrowlineError(
                f"the scheduler API would listen on {host} without a token",
                hint="pass --token (or set ARROWLINE_API_TOKEN), or bind 127.0.0.1",
            )
        self.scheduler = scheduler
        self.token = token
        handler = type("Handler", (_Handler,), {"api": self})
        self.server = ThreadingHTTPServer((host, port), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="api")

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self.thread.start()
        logger.info("scheduler API on {}", self.address)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    api: ApiServer

    def log_message(self, fmt: str, *args: Any) -> None:
        logger.debug("api: " + fmt, *args)

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        token = self.api.token
        if not token:
            return True
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
        self._send(401, {"error": "missing or wrong token"})
        return False

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(200, {"leader": self.api.scheduler.leading})
            return
        if not self._authorized():
            return
        project = self.api.scheduler.project
        if self.path == "/metrics":
            from engine.metrics import render

            self._send(200, render(catalog_location(project)), "text/plain; version=0.0.4")
        elif self.path == "/status":
            from engine.status import status_rows

            self._send(200, status_rows(project))
        elif self.path.startswith("/runs/"):
            self._run(self.path.removeprefix("/runs/"))
        else:
            self._send(404, {"error": f"no such endpoint: GET {self.path}"})

    def _run(self, run_id: str) -> None:
        from engine.scheduler_store import SchedulerReader

        with SchedulerReader(catalog_location(self.api.scheduler.project)) as catalog:
            found = catalog.query("select run_id from runs where run_id = ?", (run_id,))
            if found:
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
            self._send(404, {"error": f"no run {run_id}"})
            return
        state = {"pending": "QUEUED", "skipped": "SKIPPED"}.get(request.state, "STARTING")
        self._send(200, {"run_id": run_id, "pipeline": request.pipeline, "state": state})

    def do_POST(self) -> None:
        if not self._authorized():
            return
        parts = self.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "pipelines" or parts[2] != "runs":
            self._send(404, {"error": f"no such endpoint: POST {self.path}"})
            return
        name = parts[1]
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}") if length else {}
            params = body.get("params", {}) if isinstance(body, dict) else None
            if not isinstance(params, dict):
                raise ValueError("'params' must be an object")
        except ValueError as exc:
            self._send(400, {"error": f"the body is not valid: {exc}"})
            return
        try:
            request = self.api.scheduler.request(name, params, "http")
        except ParameterError as exc:
            self._send(400, {"error": exc.message})
            return
        except KeyError:
            self._send(404, {"error": f"no pipeline {name!r} in {self.api.scheduler.project}"})
            return
        self._send(
            202,
            {
                "run_id": request.run_id,
                "request_id": request.id,
                "status_url": f"/runs/{request.run_id}",
            },
        )

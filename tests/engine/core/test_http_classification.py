"""HTTP errors from a real server on loopback: 429 and 5xx are transient with the server's
Retry-After, 4xx are terminal; a UDF that calls such a service is retried accordingly."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from engine.api.pipeline import run
from engine.core.errors import UserCodeError, classify
from engine.core.states import RunState
from engine.state.catalog import CatalogReader
from tests.conftest import WritePipeline


class Handler(BaseHTTPRequestHandler):
    script: ClassVar[list[tuple[int, dict[str, str]]]] = []
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Handler.hits.append(self.path)
        status, headers = Handler.script.pop(0) if Handler.script else (200, {})
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        body = b'{"ok": true}'
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Handler.script, Handler.hits = [], []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def failure(url: str, status: int, headers: dict[str, str] | None = None) -> BaseException:
    Handler.script.append((status, headers or {}))
    try:
        httpx.get(url).raise_for_status()
    except httpx.HTTPError as exc:
        return exc
    raise AssertionError("the server was meant to fail")


def test_throttling_and_server_errors_are_transient_with_retry_after(server: str) -> None:
    throttled = classify(failure(server, 429, {"Retry-After": "7"}))
    assert (throttled.transient, throttled.kind, throttled.retry_after) == (True, "HTTP 429", 7.0)
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    unavailable = classify(failure(server, 503, {"Retry-After": when}))
    assert unavailable.transient
    assert unavailable.retry_after is not None
    assert 100 < unavailable.retry_after <= 120
    assert classify(failure(server, 500)).transient
    for status in (400, 401, 403, 404, 422):
        verdict = classify(failure(server, status))
        assert (verdict.transient, verdict.kind) == (False, f"HTTP {status}")


def test_a_refused_connection_is_transient() -> None:
    with pytest.raises(httpx.ConnectError) as refused:
        httpx.get("http://127.0.0.1:9/")
    assert classify(refused.value).transient


def test_a_udf_throttled_by_a_service_is_retried_after_its_retry_after(
    server: str, write: WritePipeline, project: Path
) -> None:
    write(
        "udfs.py",
        f"""
import httpx
import polars as pl

def enrich(frame):
    httpx.get("{server}/rates").raise_for_status()
    return frame.with_columns(rate=pl.lit(1.5))
""",
    )
    path = write(
        "p.yaml",
        """
        pipeline: rates
        tasks:
          - id: src
            sql: select 1 as x
          - id: enriched
            udf: {input: src, function: "udfs.py:enrich", mode: frame}
            retry: {attempts: 3, backoff: 0s, jitter: none}
        """,
    )
    Handler.script = [(429, {"Retry-After": "1"}), (503, {})]
    result = run(path)
    assert result.state is RunState.SUCCESS
    assert result.tasks["enriched"].attempts == 3
    assert Handler.hits == ["/rates"] * 3
    with CatalogReader(project / ".arrowline" / "catalog.db") as catalog:
        events = [t.event for t in catalog.transitions(result.run_id, "enriched")]
    assert "retry in 1.00s" in events  # the server's Retry-After, not the 0 s backoff
    assert "retry in 0.00s" in events  # the 503 said nothing: the policy's backoff

    Handler.script = [(404, {})]
    failed = run(path)
    assert failed.state is RunState.FAILED
    assert failed.tasks["enriched"].attempts == 1  # terminal: not retried
    assert failed.tasks["enriched"].error_kind == UserCodeError.__name__

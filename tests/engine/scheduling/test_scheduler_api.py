"""The scheduler's HTTP API, its commands (schedule, trigger, backfill, status, metrics), webhook
alerts against a loopback receiver, and the metrics text read back by prometheus_client."""

from __future__ import annotations

import http.client
import json
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from click.testing import Result
from prometheus_client.parser import text_string_to_metric_families

from engine.core.errors import ArrowlineError
from engine.scheduling.alerts import Alert, AlertSender
from engine.scheduling.http import ENDPOINTS, ApiServer
from engine.scheduling.scheduler import Scheduler, SchedulerSettings
from engine.spec.model import AlertsSpec
from engine.state.catalog import Catalog, CatalogReader
from engine.state.db import catalog_location
from tests.catalog_sql import sql
from tests.conftest import WritePipeline

# every test here runs on the embedded catalog and again on a shared PostgreSQL one
pytestmark = pytest.mark.usefixtures("each_catalog")

Cli = Callable[..., Result]

PIPELINE = """
pipeline: daily
schedule: "0 2 * * *"
timezone: Europe/Berlin
params: {n: 1}
tasks:
  - id: t
    sql: select {{ params.n }} as n, cast('{{ ds }}' as date) as day
"""


def serve(
    project: Path, token: str | None, read_timeout: float = 1.0
) -> Iterator[tuple[Scheduler, str]]:
    scheduler = Scheduler(project, SchedulerSettings())
    assert scheduler.try_lead()
    server = ApiServer(scheduler, "127.0.0.1", 0, token, read_timeout=read_timeout)
    server.start()
    yield scheduler, server.address
    server.stop()
    for runs in scheduler.active.values():
        for active in runs:
            active.thread.join(10)
    scheduler.close()


@pytest.fixture
def api(project: Path, write: WritePipeline) -> Iterator[tuple[Scheduler, str]]:
    write("daily.yaml", PIPELINE)
    yield from serve(project, "s3cret")


@pytest.fixture
def open_api(project: Path, write: WritePipeline) -> Iterator[tuple[Scheduler, str]]:
    """The API as `arrowline scheduler --port N` serves it: on loopback, without a token."""
    write("daily.yaml", PIPELINE)
    yield from serve(project, None)


def settle(scheduler: Scheduler) -> None:
    for _ in range(20):
        scheduler.tick()
        alive = [a for runs in scheduler.active.values() for a in runs]
        if not alive and not scheduler.store.requests(state="pending"):
            return
        for active in alive:
            active.thread.join(10)


def test_trigger_and_poll_a_run_over_http(api: tuple[Scheduler, str]) -> None:
    scheduler, address = api
    auth = {"Authorization": "Bearer s3cret"}
    assert httpx.post(f"{address}/pipelines/daily/runs", json={}).status_code == 401
    created = httpx.post(f"{address}/pipelines/daily/runs", json={"params": {"n": 5}}, headers=auth)
    assert created.status_code == 202
    run_id = created.json()["run_id"]
    queued = httpx.get(f"{address}/runs/{run_id}", headers=auth).json()
    assert queued["state"] == "QUEUED"
    settle(scheduler)
    done = httpx.get(f"{address}/runs/{run_id}", headers=auth).json()
    assert done["state"] == "SUCCESS"
    assert done["tasks"] == [{"task_id": "t", "state": "SUCCESS", "rows_out": 1, "error": None}]
    bad = httpx.post(f"{address}/pipelines/daily/runs", json={"params": {"nope": 1}}, headers=auth)
    assert bad.status_code == 400
    assert "nope" in bad.json()["error"]
    missing = httpx.post(f"{address}/pipelines/weekly/runs", json={}, headers=auth)
    assert missing.status_code == 404
    assert httpx.get(f"{address}/runs/nope", headers=auth).status_code == 404
    assert httpx.get(f"{address}/healthz").json() == {"leader": True}
    assert httpx.get(f"{address}/status").status_code == 401
    (status,) = httpx.get(f"{address}/status", headers=auth).json()
    assert status["pipeline"] == "daily"
    assert status["last_run"]["run_id"] == run_id
    assert status["last_run"]["state"] == "SUCCESS"
    assert status["schedule"] == "0 2 * * * (Europe/Berlin)"
    metrics = httpx.get(f"{address}/metrics", headers=auth)
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    (sample,) = [s for s in families["arrowline_runs"].samples if s.labels["state"] == "SUCCESS"]
    assert sample.value == 1


# `select {{ params.n }}` with this list as n printed the Python text of the list into the SQL,
# which reads a file of the server into the run's output.
ATTACK = (
    "'] as n, null as day union all select [content], null from read_text($$/etc/hostname$$) --\""
)


@pytest.mark.parametrize(
    ("value", "received"),
    [
        ([ATTACK], "[\"'] as n, null as day union all"),
        ({"x": ATTACK}, '{"x": "\'] as n'),
        (True, "true"),
        (1.5, "1.5"),
        (ATTACK, "'\\'] as n"),
    ],
)
def test_a_value_not_of_the_parameters_type_is_refused_before_it_reaches_sql(
    open_api: tuple[Scheduler, str], value: object, received: str
) -> None:
    scheduler, address = open_api
    refused = httpx.post(f"{address}/pipelines/daily/runs", json={"params": {"n": value}})
    assert refused.status_code == 400
    body = refused.json()
    assert (body["parameter"], body["expected"]) == ("n", "int")
    assert body["received"].startswith(received)
    assert body["error"].startswith("parameter 'n' from the http request: ")
    assert scheduler.store.requests("daily") == []  # nothing queued, nothing stored


def test_a_parameter_sent_as_text_is_read_as_its_type(open_api: tuple[Scheduler, str]) -> None:
    scheduler, address = open_api
    created = httpx.post(f"{address}/pipelines/daily/runs", json={"params": {"n": "5"}})
    assert created.status_code == 202
    settle(scheduler)
    with CatalogReader(catalog_location(scheduler.project)) as catalog:
        run = catalog.run(created.json()["run_id"])
    assert (run.state.value, run.params) == ("SUCCESS", {"n": 5})


def test_the_api_answers_only_json_posts_from_its_own_origin(
    open_api: tuple[Scheduler, str],
) -> None:
    scheduler, address = open_api
    url = f"{address}/pipelines/daily/runs"
    port = address.rsplit(":", 1)[1]
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,
    ):
        headers = {"Content-Type": content_type} if content_type else {}
        refused = httpx.post(url, content=b'{"params": {}}', headers=headers)
        assert refused.status_code == 415, content_type
        assert "application/json" in refused.json()["error"]
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": f"http://127.0.0.1:{int(port) + 1}"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Host": f"evil.example:{port}"},  # a page that rebound its name to 127.0.0.1
    ):
        refused = httpx.post(url, json={}, headers=headers)
        assert refused.status_code == 403, headers
        assert "refused" in refused.json()["error"] or "host" in refused.json()["error"]
    rebound = httpx.get(f"{address}/status", headers={"Host": f"evil.example:{port}"})
    assert rebound.status_code == 403
    assert scheduler.store.requests("daily") == []
    for headers in (
        {"Origin": address},
        {"Origin": f"http://localhost:{port}"},
        {"Sec-Fetch-Site": "same-origin", "Origin": address},
        {"Content-Type": "application/json; charset=utf-8"},
    ):
        accepted = httpx.post(
            url, content=b"{}", headers={"Content-Type": "application/json"} | headers
        )
        assert accepted.status_code == 202, headers
    assert len(scheduler.store.requests("daily")) == 4


def connect(address: str) -> socket.socket:
    parts = urlsplit(address)
    assert parts.hostname is not None
    assert parts.port is not None
    return socket.create_connection((parts.hostname, parts.port), timeout=20)


def exchange(address: str, request: bytes) -> tuple[int, bytes]:
    """Write raw bytes to the API, as an attacker's client would, and read until it hangs up;
    returns the status and body."""
    with connect(address) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def send(address: str, request: bytes) -> tuple[int, dict[str, Any]]:
    """`exchange`, with the API's JSON answer."""
    status, body = exchange(address, request)
    return status, json.loads(body)


def post(headers: str, body: bytes = b"") -> bytes:
    return (
        b"POST /pipelines/daily/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + headers.encode()
        + b"\r\n"
        + body
    )


JSON = "Content-Type: application/json\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "status", "says"),
    [
        (post(JSON + "Content-Length: 209715200\r\n"), 413, "at most 1048576"),
        (post(JSON), 411, "Content-Length"),
        (post(JSON + "Transfer-Encoding: chunked\r\n", b"2\r\n{}\r\n0\r\n\r\n"), 411, "Transfer"),
        (post(JSON + "Content-Length: 1\r\n", b"{"), 400, "not valid JSON"),
        (post(JSON + "Content-Length: 3\r\n", b"NaN"), 400, "NaN is not a number"),
        (post(JSON + "Content-Length: 200000\r\n", b"[" * 200_000), 400, "not valid JSON"),
        (post(JSON + "Content-Length: 3\r\n", b"[1]"), 400, "must be a JSON object"),
        (post(JSON + "Content-Length: 13\r\n", b'{"param": {}}'), 400, "unknown key 'param'"),
        (post(JSON + "Content-Length: 15\r\n", b'{"params": [1]}'), 400, "'params' must be"),
        (post(JSON + "Content-Length: 2\r\n", b"\xff\xfe"), 400, "not valid JSON"),
    ],
)
def test_bodies_must_be_framed_small_json(
    open_api: tuple[Scheduler, str],
    capfd: pytest.CaptureFixture[str],
    request_bytes: bytes,
    status: int,
    says: str,
) -> None:
    scheduler, address = open_api
    answered, body = send(address, request_bytes)
    assert (answered, says in body["error"]) == (status, True), body
    assert scheduler.store.requests("daily") == []
    assert "Traceback" not in capfd.readouterr().err


def test_a_client_that_stops_sending_loses_its_connection_not_a_thread(
    open_api: tuple[Scheduler, str], capfd: pytest.CaptureFixture[str]
) -> None:
    scheduler, address = open_api
    started = time.monotonic()
    status, body = send(address, post(JSON + "Content-Length: 100\r\n", b'{"params"'))
    assert (status, body["error"]) == (408, "the body did not arrive within 1.0 s")
    assert time.monotonic() - started < 10
    silent = socket.create_connection(("127.0.0.1", int(address.rsplit(":", 1)[1])))
    try:  # a client that sends nothing at all does not keep the API from answering others
        assert httpx.get(f"{address}/healthz").json() == {"leader": True}
    finally:
        silent.close()
    assert scheduler.store.requests("daily") == []
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize(
    "request_bytes",
    [
        post(JSON + "Content-Length: ten\r\n"),
        post(JSON + "Content-Length: -1\r\n"),
        post(JSON + "Content-Length: 2\r\nContent-Length: 3\r\n", b"{} "),
        post(JSON + "Content-Length: 2\r\nTransfer-Encoding: gzip\r\n", b"{}"),
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"x" * 20_000,
    ],
    ids=["words", "negative", "conflicting", "unknown-encoding", "unfinished-huge-head"],
)
def test_a_request_framed_badly_is_refused_before_the_api_reads_it(
    open_api: tuple[Scheduler, str], capfd: pytest.CaptureFixture[str], request_bytes: bytes
) -> None:
    """h11 refuses these (400, plain text) and hangs up; the API never sees them."""
    scheduler, address = open_api
    assert exchange(address, request_bytes) == (400, b"Invalid HTTP request received.")
    assert httpx.get(f"{address}/healthz").json() == {"leader": True}
    assert scheduler.store.requests("daily") == []
    assert "Traceback" not in capfd.readouterr().err


@pytest.fixture
def patient_api(project: Path, write: WritePipeline) -> Iterator[tuple[Scheduler, str]]:
    """The open API with a read timeout longer than any test waits."""
    write("daily.yaml", PIPELINE)
    yield from serve(project, None, read_timeout=60.0)


def test_clients_stalled_mid_body_hold_no_worker_while_others_are_answered(
    patient_api: tuple[Scheduler, str],
) -> None:
    """More stalled bodies than the server has worker threads (40): were a body read on a
    thread, the requests after them would wait for the read timeout."""
    scheduler, address = patient_api
    stalled = [connect(address) for _ in range(50)]
    try:
        for connection in stalled:
            connection.sendall(post(JSON + "Content-Length: 100\r\n", b'{"params"'))
        with httpx.Client(base_url=address, timeout=10) as client:
            assert client.get("/healthz").json() == {"leader": True}
            assert client.get("/status").status_code == 200  # on a worker thread
            created = client.post("/pipelines/daily/runs", json={"params": {"n": 2}})
            assert created.status_code == 202
        for connection in stalled:  # still waiting for their bodies, not refused
            connection.setblocking(False)
            with pytest.raises(BlockingIOError):
                connection.recv(1)
    finally:
        for connection in stalled:
            connection.close()
    assert len(scheduler.store.requests("daily")) == 1


def hangs_up(connection: socket.socket, trickle: bytes = b"", within: float = 10) -> bool:
    """Whether the server closes `connection` within `within` seconds, while the client sends
    `trickle` a byte at a time (or nothing)."""
    deadline = time.monotonic() + within
    for byte in trickle.ljust(1000, b"x") if trickle else b"":
        if time.monotonic() > deadline:
            return False
        try:
            connection.sendall(bytes([byte]))
        except OSError:
            return True
        ready, _, _ = select.select([connection], [], [], 0.1)
        if ready:
            break
    connection.settimeout(max(0.0, deadline - time.monotonic()))
    try:
        return connection.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_client_that_never_finishes_its_request_head_is_hung_up_on(
    open_api: tuple[Scheduler, str],
) -> None:
    """uvicorn alone would wait for ever for a head; the API gives it the read timeout (1 s)."""
    _, address = open_api
    with connect(address) as silent:
        assert hangs_up(silent)
    with connect(address) as trickling:
        trickling.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        assert hangs_up(trickling, trickle=b"a")
    with connect(address) as kept:  # after an answer, the next head gets the same time
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while not answer.endswith(b'{"leader": true}'):
            answer += kept.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        kept.sendall(b"GET /hea")
        assert hangs_up(kept, trickle=b"d")


def test_stopping_the_api_does_not_wait_for_a_stalled_client(project: Path) -> None:
    scheduler = Scheduler(project, SchedulerSettings())
    server = ApiServer(scheduler, "127.0.0.1", 0, None, read_timeout=1.0)
    server.start()
    try:
        with connect(server.address) as stalled:
            stalled.sendall(post(JSON + "Content-Length: 100\r\n", b"{"))
            time.sleep(0.2)  # the request has begun
            started = time.monotonic()
            server.stop()
            assert time.monotonic() - started < 10
            assert not server.server.thread.is_alive()
            assert server.address.startswith("http://127.0.0.1:")  # still names where it was
    finally:
        scheduler.close()


def test_an_answer_keeps_the_connection_and_a_refusal_closes_it(
    open_api: tuple[Scheduler, str],
) -> None:
    _, address = open_api
    parts = urlsplit(address)
    assert parts.hostname is not None
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request("GET", "/healthz")
        answer = connection.getresponse()
        assert (answer.status, answer.will_close, answer.read()) == (
            200,
            False,
            b'{"leader": true}',
        )
        first = connection.sock
        connection.request("GET", "/status")
        answer = connection.getresponse()
        assert (answer.status, connection.sock) == (200, first)  # the same connection
        answer.read()
        connection.request("POST", "/pipelines/daily/runs", b"{}", {"Content-Type": "text/plain"})
        refused = connection.getresponse()
        assert (refused.status, refused.getheader("Connection")) == (415, "close")
    finally:
        connection.close()


def test_a_known_path_asked_with_another_method_names_the_ones_it_takes(
    open_api: tuple[Scheduler, str],
) -> None:
    _, address = open_api
    wrong = httpx.get(f"{address}/pipelines/daily/runs")
    assert (wrong.status_code, wrong.headers["Allow"]) == (405, "POST")
    assert wrong.json()["error"] == "no such endpoint: GET /pipelines/daily/runs; GET / lists them"
    assert httpx.delete(f"{address}/status").status_code == 405


def test_a_failure_inside_a_route_is_a_500_that_tells_no_internals(
    open_api: tuple[Scheduler, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, address = open_api

    def broken(layout: object) -> None:
        raise RuntimeError("catalog password is hunter2")

    monkeypatch.setattr("engine.scheduling.status.status_rows", broken)
    failed = httpx.get(f"{address}/status")
    assert (failed.status_code, failed.json()) == (
        500,
        {"error": "internal error; the scheduler's log says more"},
    )
    assert httpx.get(f"{address}/healthz").json() == {"leader": True}


def _ipv6_loopback_refusal() -> str | None:
    """What the system says to binding ::1, or None when it can."""
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def test_the_api_serves_ipv6_loopback_on_a_free_port(project: Path) -> None:
    """Served on ::1 where the machine has IPv6 loopback; where it has none, the server
    refuses to start with the system's error (one it binds up front, not a silent thread)."""
    scheduler = Scheduler(project, SchedulerSettings())
    reason = _ipv6_loopback_refusal()
    if reason is not None:
        with pytest.raises(OSError, match=re.escape(reason)):
            ApiServer(scheduler, "::1", 0, None)
        scheduler.close()
        return
    server = ApiServer(scheduler, "::1", 0, None)
    server.start()
    try:
        assert server.address.startswith("http://[::1]:")
        assert not server.address.endswith(":0")
        answer = httpx.get(f"{server.address}/healthz", headers={"Origin": server.address})
        assert answer.json() == {"leader": False}
    finally:
        server.stop()
        scheduler.close()


def test_get_root_lists_every_endpoint_and_whether_it_needs_the_token(
    api: tuple[Scheduler, str],
) -> None:
    _, address = api
    index = httpx.get(f"{address}/")  # no token: it only describes the API
    assert index.status_code == 200
    endpoints = {(e["method"], e["path"]): e for e in index.json()["endpoints"]}
    assert set(endpoints) == {(e.method, e.path) for e in ENDPOINTS}
    assert {key for key, e in endpoints.items() if not e["token"]} == {
        ("GET", "/"),
        ("GET", "/healthz"),
    }
    assert all(e["does"] for e in endpoints.values())
    auth = {"Authorization": "Bearer s3cret"}
    for method, path in endpoints:
        if method == "GET" and "{" not in path:
            assert httpx.get(f"{address}{path}", headers=auth).status_code == 200, path
    assert httpx.get(f"{address}/runs/x").status_code == 401  # the token is still required
    lost = httpx.get(f"{address}/nope", headers=auth)
    assert (lost.status_code, lost.json()["error"]) == (
        404,
        "no such endpoint: GET /nope; GET / lists them",
    )


def test_an_api_on_a_busy_port_is_an_error_naming_it(project: Path) -> None:
    scheduler = Scheduler(project, SchedulerSettings())
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            ArrowlineError, match=rf"^cannot serve the scheduler API on 127.0.0.1:{port}: "
        ):
            ApiServer(scheduler, "127.0.0.1", port, None)
    finally:
        taken.close()
        scheduler.close()


def test_the_api_refuses_to_listen_off_loopback_without_a_token(project: Path) -> None:
    scheduler = Scheduler(project, SchedulerSettings())
    try:
        with pytest.raises(ArrowlineError, match="without a token"):
            ApiServer(scheduler, "0.0.0.0", 0, None)
    finally:
        scheduler.close()


def test_metrics_parse_and_count_what_ran(cli: Cli, write: WritePipeline, project: Path) -> None:
    write("daily.yaml", PIPELINE)
    write(
        "broken.yaml",
        "pipeline: broken\ntasks:\n  - id: b\n    retry: {attempts: 2, backoff: 0s}\n"
        "    sql: select cast('x' as int) as n\n",
    )
    write(
        "flaky.py",
        """
        import pathlib

        import polars as pl

        def flaky():
            marker = pathlib.Path(__file__).with_name("flaky.marker")
            if not marker.exists():
                marker.write_text("x")
                raise ConnectionResetError("connection reset by peer")
            return {"m": pl.col("n") + 1}
        """,
    )
    write(
        "daily.yaml",
        PIPELINE
        + "  - id: u\n    retry: {attempts: 3, backoff: 0s}\n"
        + '    udf: {input: t, function: "flaky.py:flaky"}\n',
    )
    assert cli("run", project / "daily.yaml", "--no-progress").exit_code == 0
    assert cli("run", project / "broken.yaml", "--no-progress").exit_code != 0
    result = cli("metrics", project, "-o", project / "m.prom")
    assert result.exit_code == 0
    families = {f.name: f for f in text_string_to_metric_families((project / "m.prom").read_text())}
    runs = {
        (s.labels["pipeline"], s.labels["state"]): s.value
        for s in families["arrowline_runs"].samples
    }
    assert runs == {("broken", "FAILED"): 1, ("daily", "SUCCESS"): 1}
    duration = [
        s for s in families["arrowline_task_duration_seconds"].samples if s.name.endswith("_count")
    ]
    assert {(s.labels["pipeline"], s.labels["task"], s.value) for s in duration} == {
        ("daily", "t", 1),
        ("daily", "u", 1),
        ("broken", "b", 1),
    }
    rows = {
        (s.labels["pipeline"], s.labels["direction"]): s.value
        for s in families["arrowline_rows"].samples
    }
    assert rows[("daily", "out")] == 1
    retries = {s.labels["task"]: s.value for s in families["arrowline_retries"].samples}
    assert retries == {"b": 0, "t": 0, "u": 1}  # a data error is not retried; a reset is
    letters = {
        (s.labels["pipeline"], s.labels["status"]): s.value
        for s in families["arrowline_dead_letters"].samples
    }
    assert letters == {("broken", "open"): 1}


def test_schedule_pause_resume_list_and_status(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    write("daily.yaml", PIPELINE)
    paused = cli(
        "schedule", "pause", "daily", "--reason", "warehouse migration", "--project-dir", project
    )
    assert paused.exit_code == 0
    listed = json.loads(cli("schedule", "list", project, "--format", "json").stdout)
    (row,) = listed
    assert (row["pipeline"], row["paused"], row["pause_reason"]) == (
        "daily",
        True,
        "warehouse migration",
    )
    assert row["next_run"] is None
    assert cli("schedule", "resume", "daily", "--project-dir", project).exit_code == 0
    (row,) = json.loads(cli("schedule", "list", project, "--format", "json").stdout)
    next_run = datetime.fromisoformat(row["next_run"])
    local = next_run.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) == (2, 0)
    assert next_run - datetime.now(UTC) <= timedelta(days=1)
    shown = cli("status", project)
    assert shown.exit_code == 0
    assert "daily" in shown.stdout
    assert "never" in shown.stdout
    caption = f"catalog {catalog_location(project).describe()}; no scheduler running"
    assert "".join(caption.split()) in "".join(shown.stdout.split())  # however rich wraps it
    missing = cli("schedule", "pause", "weekly", "--reason", "x", "--project-dir", project)
    assert missing.exit_code == 2
    assert "no pipeline 'weekly'" in missing.stderr


def test_trigger_runs_directly_when_no_scheduler_runs(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    write("daily.yaml", PIPELINE)
    result = cli("trigger", "daily", "--param", "n=3", "--project-dir", project)
    assert result.exit_code == 0, result.stderr
    assert "SUCCESS" in result.stdout
    with CatalogReader(catalog_location(project)) as catalog:
        (run,) = catalog.runs("daily")
    assert run.params == {"n": 3}  # typed like the default


def test_trigger_goes_through_a_running_scheduler(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    write("daily.yaml", PIPELINE)
    scheduler = Scheduler(project, SchedulerSettings())
    assert scheduler.try_lead()
    try:
        result = cli("trigger", "daily", "--project-dir", project)
        assert "queued with the scheduler" in result.stdout
        (request,) = scheduler.store.requests("daily")
        assert request.source == "manual"
        settle(scheduler)
        with CatalogReader(catalog_location(project)) as catalog:
            assert catalog.run(request.run_id).state.value == "SUCCESS"
    finally:
        scheduler.close()


def test_backfill_runs_each_interval_once(cli: Cli, write: WritePipeline, project: Path) -> None:
    write("daily.yaml", PIPELINE)
    result = cli(
        "backfill",
        "daily",
        "--from",
        "2026-03-27",
        "--to",
        "2026-03-30",
        "--parallel",
        "2",
        "--project-dir",
        project,
    )
    assert result.exit_code == 0, result.stderr
    with CatalogReader(catalog_location(project)) as catalog:
        days = [
            row[0]
            for row in sql(
                catalog, "select logical_date from runs where state = 'SUCCESS' order by 1"
            )
        ]
    # fires 03-27 .. 03-30 at 02:00 Berlin (03-29's 02:00 does not exist: it fires at 03:00)
    assert days == [
        "2026-03-26T01:00:00+00:00",
        "2026-03-27T01:00:00+00:00",
        "2026-03-28T01:00:00+00:00",
        "2026-03-29T01:00:00+00:00",
    ]
    again = cli(
        "backfill", "daily", "--from", "2026-03-27", "--to", "2026-03-31", "--project-dir", project
    )
    assert again.exit_code == 0
    assert "1 intervals to run, 4 already run or decided" in again.stderr


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]
    statuses: list[int]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status = type(self).statuses.pop(0) if type(self).statuses else 200
        if status == 200:
            type(self).received.append(body)
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhook_alerts_are_retried_and_deduplicated(project: Path) -> None:
    handler = type("Hook", (_Hook,), {"received": [], "statuses": [503, 500]})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    spec = AlertsSpec(webhook=url, log=False, dedup=timedelta(minutes=10))
    try:
        with Catalog(catalog_location(project)) as store:
            sender = AlertSender(store, retry_delays=(0.01, 0.01, 0.01))
            now = datetime(2026, 1, 1, tzinfo=UTC)
            first = Alert("p", "failure", "task t", "run r1 FAILED", now)
            assert sender.send(first, spec)
            assert [a["message"] for a in handler.received] == ["run r1 FAILED"]  # after 2 retries
            for minute in range(1, 6):
                again = Alert(
                    "p", "failure", "task t", "run r FAILED", now + timedelta(minutes=minute)
                )
                assert not sender.send(again, spec)
            later = Alert("p", "failure", "task t", "run r9 FAILED", now + timedelta(minutes=11))
            assert sender.send(later, spec)
            assert handler.received[-1]["suppressed"] == 5
            other = Alert("p", "sla", "2026-01-01T02:00", "late", now + timedelta(minutes=11))
            assert sender.send(other, spec)  # another kind: its own key
            assert len(handler.received) == 3
            assert not sender.send(other, AlertsSpec(webhook=url, on=("failure",)))
    finally:
        server.shutdown()
        server.server_close()

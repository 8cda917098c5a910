"""The scheduler's HTTP API, its commands (schedule, trigger, backfill, status, metrics), webhook
alerts against a loopback receiver, and the metrics text read back by prometheus_client."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from prometheus_client.parser import text_string_to_metric_families

from engine.alerts import Alert, AlertSender
from engine.catalog import CatalogReader
from engine.catalog_db import catalog_location
from engine.errors import ArrowlineError
from engine.scheduler import Scheduler, SchedulerSettings
from engine.scheduler_api import ApiServer
from engine.scheduler_store import SchedulerStore
from engine.spec import AlertsSpec
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


@pytest.fixture
def api(project: Path, write: WritePipeline) -> Iterator[tuple[Scheduler, str]]:
    write("daily.yaml", PIPELINE)
    scheduler = Scheduler(project, SchedulerSettings())
    assert scheduler.try_lead()
    server = ApiServer(scheduler, "127.0.0.1", 0, "s3cret")
    server.start()
    yield scheduler, server.address
    server.stop()
    for runs in scheduler.active.values():
        for active in runs:
            active.thread.join(10)
    scheduler.close()


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
            for row in catalog.query(
                "select logical_date from runs where state = 'SUCCESS' order by 1"
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
        with SchedulerStore(catalog_location(project)) as store:
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

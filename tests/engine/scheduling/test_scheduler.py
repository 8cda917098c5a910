"""The scheduler's decisions with an injected clock, running real pipelines in its threads:
catch-up, overlap policies, pause and resume, manual, file and upstream triggers, SLA alerts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import Result

from engine.scheduling.scheduler import Scheduler, SchedulerSettings
from engine.state.catalog import CatalogReader
from engine.state.db import catalog_location
from engine.tasks import TaskContext, TaskOutcome, run_task
from tests.catalog_sql import transaction
from tests.conftest import PgSchema, WritePipeline

# every test here runs on the embedded catalog and again on a shared PostgreSQL one
pytestmark = pytest.mark.usefixtures("each_catalog")

T0 = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Gate:
    """A runner that holds a task named `slow` until released (to keep a run busy)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def __call__(self, context: TaskContext) -> TaskOutcome:
        if context.task.id == "slow":
            self.entered.set()
            while not self.release.is_set():
                context.cancel.raise_if_cancelled()
                time.sleep(0.02)
        return run_task(context)


def pipeline(
    name: str, extra: str = "", tasks: str = "  - id: slow\n    sql: select 1 as x\n"
) -> str:
    return f'pipeline: {name}\nschedule: "* * * * *"\n{extra}tasks:\n{tasks}'


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def make(project: Path, clock: Clock) -> Iterator[Callable[..., Scheduler]]:
    made: list[Scheduler] = []

    def _make(runner: Callable[[TaskContext], TaskOutcome] = run_task) -> Scheduler:
        scheduler = Scheduler(project, SchedulerSettings(runner=runner, file_scan_every=0), clock)
        assert scheduler.try_lead()
        made.append(scheduler)
        return scheduler

    yield _make
    for scheduler in made:
        for runs in scheduler.active.values():
            for active in runs:
                if active.executor is not None:
                    active.executor.cancel()
                active.thread.join(10)
        scheduler.close()


def settle(scheduler: Scheduler, ticks: int = 50) -> None:
    """Tick until nothing is running or queued (without moving the clock)."""
    for _ in range(ticks):
        scheduler.tick()
        running = [a for runs in scheduler.active.values() for a in runs]
        queued = any(
            scheduler.store.intervals(name, "queued") or scheduler.store.requests(name, "pending")
            for name in scheduler.loaded
        )
        if not running and not queued:
            return
        for active in running:
            active.thread.join(10)
    raise AssertionError("the scheduler did not settle")


def runs(project: Path, name: str) -> list[tuple[str, str]]:
    with CatalogReader(catalog_location(project)) as catalog:
        return [(r.logical_date, r.state.value) for r in reversed(catalog.runs(name))]


def intervals(scheduler: Scheduler, name: str) -> list[tuple[str, str, str | None]]:
    return [(i.fire_at[11:16], i.state, i.reason) for i in scheduler.store.intervals(name)]


def test_a_new_schedule_starts_from_now_and_catchup_false_runs_the_latest(
    write: WritePipeline, project: Path, clock: Clock, make: Callable[..., Scheduler]
) -> None:
    write("p.yaml", pipeline("p"))
    scheduler = make()
    settle(scheduler)
    assert runs(project, "p") == []  # nothing was due since the schedule was first seen
    clock.advance(minutes=5)  # 00:05:30: 00:01 .. 00:05 are due
    settle(scheduler)
    assert runs(project, "p") == [("2026-01-01T00:04:00+00:00", "SUCCESS")]  # covers 00:04-00:05
    assert [(fire, state) for fire, state, _ in intervals(scheduler, "p")] == [
        ("00:01", "skipped"),
        ("00:02", "skipped"),
        ("00:03", "skipped"),
        ("00:04", "skipped"),
        ("00:05", "started"),
    ]
    assert intervals(scheduler, "p")[0][2] == "catchup: false runs the latest interval only"
    settle(scheduler)
    assert len(runs(project, "p")) == 1  # ticking again decides nothing twice


def test_catchup_runs_missed_intervals_oldest_first_up_to_max_catchup(
    write: WritePipeline, project: Path, clock: Clock, make: Callable[..., Scheduler]
) -> None:
    write("p.yaml", pipeline("p", "catchup: true\nmax_catchup: 3\n"))
    scheduler = make()
    settle(scheduler)
    clock.advance(minutes=5)
    settle(scheduler)
    assert runs(project, "p") == [
        ("2026-01-01T00:02:00+00:00", "SUCCESS"),
        ("2026-01-01T00:03:00+00:00", "SUCCESS"),
        ("2026-01-01T00:04:00+00:00", "SUCCESS"),
    ]
    skipped = [i for i in intervals(scheduler, "p") if i[1] == "skipped"]
    assert [fire for fire, _, _ in skipped] == ["00:01", "00:02"]
    assert skipped[0][2] == "more than max_catchup (3) intervals were missed"


@pytest.mark.parametrize("policy", ["skip", "queue", "cancel_previous", "allow"])
def test_overlap_policies(
    write: WritePipeline,
    project: Path,
    clock: Clock,
    make: Callable[..., Scheduler],
    policy: str,
) -> None:
    write("p.yaml", pipeline("p", f"overlap: {policy}\n"))
    gate = Gate()
    scheduler = make(gate)
    scheduler.tick()
    clock.advance(minutes=1)  # 00:01 due
    scheduler.tick()
    assert gate.entered.wait(10)
    clock.advance(minutes=1)  # 00:02 due while the 00:01 run is held
    scheduler.tick()
    time.sleep(0.3)
    scheduler.tick()
    states = {fire: state for fire, state, _ in intervals(scheduler, "p")}
    if policy == "skip":
        assert states == {"00:01": "started", "00:02": "skipped"}
    elif policy == "queue":
        assert states == {"00:01": "started", "00:02": "queued"}
    elif policy == "allow":
        assert states == {"00:01": "started", "00:02": "started"}
        assert len([a for a in scheduler.active["p"] if a.thread.is_alive()]) == 2
    gate.release.set()
    settle(scheduler)
    final = runs(project, "p")
    if policy == "skip":
        assert final == [("2026-01-01T00:00:00+00:00", "SUCCESS")]
    elif policy in ("queue", "allow"):
        assert sorted(final) == [
            ("2026-01-01T00:00:00+00:00", "SUCCESS"),
            ("2026-01-01T00:01:00+00:00", "SUCCESS"),
        ]
    else:
        assert final == [
            ("2026-01-01T00:00:00+00:00", "CANCELLED"),
            ("2026-01-01T00:01:00+00:00", "SUCCESS"),
        ]


def test_pause_and_resume(
    write: WritePipeline, project: Path, clock: Clock, make: Callable[..., Scheduler]
) -> None:
    write("p.yaml", pipeline("p"))
    scheduler = make()
    settle(scheduler)
    scheduler.store.set_paused("p", str(project / "p.yaml"), True, "warehouse migration", "ann")
    clock.advance(minutes=3)
    settle(scheduler)
    assert runs(project, "p") == []
    row = scheduler.store.schedule("p")
    assert row is not None
    assert (row.paused, row.reason, row.changed_by) == (True, "warehouse migration", "ann")
    scheduler.store.set_paused("p", str(project / "p.yaml"), False, None, "ann")
    settle(scheduler)
    assert runs(project, "p") == [("2026-01-01T00:02:00+00:00", "SUCCESS")]


def test_a_manual_request_runs_with_its_run_id_and_params(
    write: WritePipeline, project: Path, make: Callable[..., Scheduler]
) -> None:
    write(
        "p.yaml",
        "pipeline: p\nparams: {n: 1}\ntasks:\n  - id: t\n    sql: select {{ params.n }} as n\n",
    )
    scheduler = make()
    request = scheduler.store.request_run("p", str(project / "p.yaml"), {"n": 7}, "manual")
    settle(scheduler)
    with CatalogReader(catalog_location(project)) as catalog:
        run = catalog.run(request.run_id)
    assert run.state.value == "SUCCESS"
    assert run.params == {"n": 7}


def test_a_file_triggers_once_after_it_stops_growing(
    write: WritePipeline, project: Path, clock: Clock, make: Callable[..., Scheduler]
) -> None:
    write(
        "p.yaml",
        'pipeline: p\ntrigger: {files: "landing/*.csv", settle: 30s}\n'
        "tasks:\n  - id: t\n    sql: select 1 as x\n",
    )
    scheduler = make()
    landing = project / "landing" / "a.csv"
    landing.parent.mkdir()
    landing.write_text("id\n1\n")
    scheduler.tick()
    clock.advance(seconds=20)
    with landing.open("a") as handle:  # still being written
        handle.write("2\n")
    scheduler.tick()
    clock.advance(seconds=20)  # 20 s since it last grew: not settled
    scheduler.tick()
    assert scheduler.store.requests("p") == []
    clock.advance(seconds=15)
    settle(scheduler)
    (request,) = scheduler.store.requests("p")
    assert request.source == "files:landing/a.csv"
    assert runs(project, "p")[0][1] == "SUCCESS"
    clock.advance(minutes=5)
    settle(scheduler)
    assert len(scheduler.store.requests("p")) == 1  # the same file never triggers twice


def test_a_pipeline_runs_after_another_succeeds(
    write: WritePipeline, project: Path, make: Callable[..., Scheduler]
) -> None:
    from engine.api.pipeline import run

    write("a.yaml", "pipeline: a\ntasks:\n  - id: t\n    sql: select 1 as x\n")
    write("b.yaml", "pipeline: b\ntrigger: {after: a}\ntasks:\n  - id: t\n    sql: select 2 as y\n")
    scheduler = make()
    settle(scheduler)
    first = run(project / "a.yaml")
    settle(scheduler)
    (request,) = scheduler.store.requests("b")
    assert request.source == f"after:a:{first.run_id}"
    assert [state for _, state in runs(project, "b")] == ["SUCCESS"]
    settle(scheduler)
    assert len(scheduler.store.requests("b")) == 1


def test_a_failed_run_and_an_sla_miss_alert_once_per_window(
    write: WritePipeline, project: Path, clock: Clock, make: Callable[..., Scheduler]
) -> None:
    write(
        "p.yaml",
        pipeline(
            "p",
            "sla: 90s\nalerts: {log: true, dedup: 1h}\n",
            "  - id: broken\n    retry: {attempts: 1}\n    sql: select cast('x' as int) as n\n",
        ),
    )
    scheduler = make()
    settle(scheduler)
    clock.advance(minutes=1)
    settle(scheduler)
    ((failed_run, state),) = [(r, s) for r, s in runs_by_id(project, "p")]
    assert state == "FAILED"
    assert [(a.kind, a.subject) for a in scheduler.alerts.sent] == [
        ("failure", failed_run),
        ("dead_letter", "broken"),
    ]
    clock.advance(seconds=100)  # the 00:01 run is past its SLA; the 00:02 run fails too
    settle(scheduler)
    sent = [a.kind for a in scheduler.alerts.sent]
    assert sent.count("sla") == 1
    assert sent.count("failure") == 2  # two runs: two subjects
    assert sent.count("dead_letter") == 1  # the same task again within the hour: counted only
    settle(scheduler)
    assert [a.kind for a in scheduler.alerts.sent].count("sla") == 1  # deduplicated
    clock.advance(hours=2)  # past the window: the next one goes out, saying what it held back
    settle(scheduler)
    latest = [a for a in scheduler.alerts.sent if a.kind == "dead_letter"][-1]
    assert latest.suppressed >= 1


def runs_by_id(project: Path, name: str) -> list[tuple[str, str]]:
    with CatalogReader(catalog_location(project)) as catalog:
        return [(r.run_id, r.state.value) for r in reversed(catalog.runs(name))]


def test_a_quarantine_above_the_threshold_alerts(
    write: WritePipeline, project: Path, make: Callable[..., Scheduler]
) -> None:
    write("data/o.csv", "id,amount\n1,5\n2,-1\n3,-2\n4,7\n")
    write(
        "p.yaml",
        """
        pipeline: p
        alerts: {quarantine_above: 1}
        tasks:
          - id: o
            extract: {from: files, path: data/o.csv}
          - id: checked
            validate:
              input: o
              on_fail: quarantine
              max_rejected_fraction: 0.9
              schema: {columns: {amount: {checks: {ge: 0}}}}
        """,
    )
    scheduler = make()
    scheduler.store.request_run("p", str(project / "p.yaml"), {}, "manual")
    settle(scheduler)
    (alert,) = [a for a in scheduler.alerts.sent if a.kind == "quarantine"]
    assert "quarantined 2 rows (more than 1)" in alert.message


@pytest.mark.parametrize(
    ("pipeline_level", "source_level"),
    [("freshness: {src: 6h}", ""), ("", ", max_staleness: 6h")],
    ids=["freshness", "max_staleness"],
)
def test_a_stale_watermark_alerts_and_shows_in_metrics(
    write: WritePipeline,
    project: Path,
    pg: PgSchema,
    make: Callable[..., Scheduler],
    pipeline_level: str,
    source_level: str,
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from engine.api.pipeline import run
    from engine.scheduling.metrics import render

    pg.execute(
        f"create table {pg.table('src')} (id int, at timestamp)",
        f"insert into {pg.table('src')} values (1, '2025-12-31 12:00'), (2, '2025-12-31 14:00')",
    )
    write(
        "p.yaml",
        f"""
        pipeline: p
        {pipeline_level}
        alerts: {{log: true}}
        connections:
          wh: {{kind: postgres, uri: "${{env:TEST_PG_URI}}"}}
        tasks:
          - id: src
            extract:
              from: postgres
              connection: wh
              table: {pg.table("src")}
              incremental: {{cursor: at, key: [id]{source_level}}}
          - id: out
            load: {{input: src, to: parquet, path: out/rows.parquet}}
        """,
    )
    assert run(project / "p.yaml").ok
    scheduler = make()  # its clock: 2026-01-01 00:00:30, 10.5 h after the newest row
    settle(scheduler)
    (alert,) = [a for a in scheduler.alerts.sent if a.kind == "freshness"]
    assert alert.subject == "src"
    assert "max_staleness 6:00:00" in alert.message
    families = {
        f.name: f
        for f in text_string_to_metric_families(render(catalog_location(project)).decode())
    }
    (lag,) = families["arrowline_watermark_lag_seconds"].samples
    assert lag.labels["task"] == "src"
    assert lag.value > 6 * 3600  # measured against the real clock: the rows are from 2025


def test_a_pipeline_called_scheduler_does_not_meet_the_schedulers_own_lock(
    write: WritePipeline, project: Path, make: Callable[..., Scheduler]
) -> None:
    write("p.yaml", "pipeline: scheduler\ntasks:\n  - id: t\n    sql: select 1 as x\n")
    scheduler = make()
    request = scheduler.store.request_run("scheduler", str(project / "p.yaml"), {}, "manual")
    settle(scheduler)
    with CatalogReader(catalog_location(project)) as catalog:
        assert catalog.run(request.run_id).state.value == "SUCCESS"


def test_a_schedule_paused_and_resumed_before_any_scheduler_saw_it_fires(
    write: WritePipeline,
    project: Path,
    clock: Clock,
    make: Callable[..., Scheduler],
    cli: Callable[..., Result],
) -> None:
    write("p.yaml", pipeline("p"))
    assert cli("schedule", "pause", "p", "--reason", "warehouse migration").exit_code == 0
    assert cli("schedule", "resume", "p").exit_code == 0
    scheduler = make()
    settle(scheduler)
    clock.advance(minutes=1)  # 00:01 falls due
    settle(scheduler)
    assert runs(project, "p") == [("2026-01-01T00:00:00+00:00", "SUCCESS")]
    clock.advance(minutes=1)
    settle(scheduler)
    assert len(runs(project, "p")) == 2


def test_a_backfill_leaves_the_schedules_last_fire_and_the_scheduler_fires_after_it(
    write: WritePipeline,
    project: Path,
    clock: Clock,
    make: Callable[..., Scheduler],
    cli: Callable[..., Result],
) -> None:
    write("p.yaml", pipeline("p"))
    assert cli("schedule", "pause", "p", "--reason", "warehouse migration").exit_code == 0
    assert cli("schedule", "resume", "p").exit_code == 0
    backfilled = cli(
        "backfill", "p", "--from", "2025-12-31T23:58:00", "--to", "2025-12-31T23:59:00"
    )
    assert backfilled.exit_code == 0, backfilled.output
    scheduler = make()
    row = scheduler.store.schedule("p")
    assert row is not None
    assert row.last_fire is not None
    assert not row.last_fire.startswith("0001")  # a backfill is not the schedule's position
    assert len(runs(project, "p")) == 2
    # the backfill set the schedule's start by the wall clock; the scheduler's clock follows it
    clock.now = datetime.fromisoformat(row.last_fire) + timedelta(seconds=30)
    settle(scheduler)
    clock.advance(minutes=1)
    settle(scheduler)
    assert len(runs(project, "p")) == 3


def test_a_last_fire_in_year_one_decides_at_once_and_records_a_bounded_number_of_intervals(
    write: WritePipeline, project: Path, clock: Clock, make: Callable[..., Scheduler]
) -> None:
    write("s.yaml", 'pipeline: s\nschedule: "* * * * * *"\ntasks:\n  - id: t\n    sql: select 1\n')
    scheduler = make()
    settle(scheduler)
    with transaction(scheduler.store) as connection:  # as an older version left it
        connection.execute("update schedules set last_fire = '0001-01-01T00:00:00+00:00'")
    clock.advance(seconds=1)
    ticked = threading.Thread(target=settle, args=(scheduler,), daemon=True)
    started = time.monotonic()
    ticked.start()
    ticked.join(30)
    assert not ticked.is_alive(), "the scheduler walked the schedule from year 1"
    assert time.monotonic() - started < 30
    # every second since year 1 was missed: the latest runs, and only the newest few are recorded
    assert [state for _, state in runs(project, "s")] == ["SUCCESS"]
    recorded = scheduler.store.intervals("s")
    assert 1 < len(recorded) <= 1 + 100
    assert recorded[-1].state == "started"
    row = scheduler.store.schedule("s")
    assert row is not None
    assert row.last_fire == recorded[-1].fire_at


def test_a_stopping_scheduler_decides_nothing_more(
    write: WritePipeline, project: Path, clock: Clock, make: Callable[..., Scheduler]
) -> None:
    write("p.yaml", pipeline("p"))
    write("q.yaml", pipeline("q"))
    scheduler = make()
    settle(scheduler)
    scheduler.stop()  # SIGTERM
    clock.advance(minutes=1)
    scheduler.tick()
    assert scheduler.store.intervals("p") == scheduler.store.intervals("q") == []
    assert runs(project, "p") == runs(project, "q") == []


def test_stop_is_safe_in_a_signal_handler_that_interrupts_a_log_line(
    project: Path, make: Callable[..., Scheduler], capsys: pytest.CaptureFixture[str]
) -> None:
    from loguru import logger

    scheduler = make()

    def interrupted(message: object) -> None:  # SIGTERM arriving while a record is written
        scheduler.stop()

    logger.enable("engine")
    logger.add(interrupted, level="INFO")
    logger.info("a line being written")
    assert scheduler.stopping.is_set()
    assert "Logging error" not in capsys.readouterr().err

"""The questions the catalog answers by name for the scheduler, the HTTP API, retention and the
metrics (they once ran their own SQL), on both catalogs: what each includes, leaves out and in
which order."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine.core.states import RunState, TaskState
from engine.state.catalog import Catalog, catalog_location
from engine.state.reports import Count

pytestmark = pytest.mark.usefixtures("each_catalog")

NOON = datetime(2024, 1, 1, 12, tzinfo=UTC)


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    with Catalog(catalog_location(tmp_path)) as opened:
        yield opened


def _run(
    catalog: Catalog,
    run_id: str,
    pipeline: str = "p",
    *,
    ends: RunState | None = None,
    reused: dict[str, str] | None = None,
) -> None:
    """A run of one task `t`; ended in `ends`, with `t` finished the same way, when given."""
    catalog.create_run(
        run_id, pipeline, "v", None, {}, "2024-01-01", None, [("t", "sql", 0, "f")], reused or {}
    )
    if ends is None:
        return
    catalog.transition_run(run_id, RunState.RUNNING, "started")
    for state in (TaskState.QUEUED, TaskState.RUNNING):
        catalog.transition_task(run_id, "t", state, "moved")
    done = TaskState.SUCCESS if ends is RunState.SUCCESS else TaskState.FAILED
    fields = {"rows_in": 2, "rows_out": 3, "bytes_out": 5_000_000_000, "duration_s": 1.5}
    catalog.transition_task(run_id, "t", done, "ended", attempt=2, fields=fields)
    catalog.transition_run(run_id, ends, "ended")


def _letter(catalog: Catalog, run_id: str) -> int:
    return catalog.add_dead_letter(
        run_id=run_id,
        pipeline="p",
        task_id="t",
        pipeline_version="v",
        pipeline_file=None,
        params={},
        logical_date="2024-01-01",
        error_kind="data",
        transient=False,
        reason="bad row",
        attempts=[],
    )


def test_a_run_is_known_by_its_exact_id_only(catalog: Catalog) -> None:
    _run(catalog, "20240101T000000Z-aaaaaa")
    assert catalog.has_run("20240101T000000Z-aaaaaa")
    assert not catalog.has_run("20240101T000000Z")  # a prefix finds it with run(), not here
    assert not catalog.has_run("last")


def test_run_states_are_newest_first_and_of_the_pipeline_only(catalog: Catalog) -> None:
    _run(catalog, "r1", ends=RunState.FAILED)
    _run(catalog, "r2", ends=RunState.SUCCESS)
    _run(catalog, "r3")
    _run(catalog, "other", "q")
    assert catalog.run_states("p") == [("r3", "PENDING"), ("r2", "SUCCESS"), ("r1", "FAILED")]


def test_the_latest_definition_is_the_newest_run_that_stored_one(catalog: Catalog) -> None:
    assert catalog.latest_definition("p") is None
    catalog.create_run("r1", "p", "v", None, {}, "d", None, [], {}, definition="pipeline: p\n")
    catalog.create_run("r2", "p", "v", None, {}, "d", None, [], {})  # stored none
    assert catalog.latest_definition("p") == "pipeline: p\n"


def test_reuses_are_listed_for_the_pipelines_runs(catalog: Catalog) -> None:
    _run(catalog, "r1", ends=RunState.SUCCESS)
    _run(catalog, "r2", reused={"t": "r1"})
    _run(catalog, "q1", "q", reused={"t": "r1"})
    assert catalog.reuses_in("p") == [("r2", "t", "r1")]


def test_runs_with_a_letter_a_requeue_may_resume_exclude_resolved_ones(catalog: Catalog) -> None:
    letters = {}
    for run_id in ("open", "requeued", "resolved"):
        _run(catalog, run_id, ends=RunState.FAILED)
        letters[run_id] = _letter(catalog, run_id)
    catalog.settle_dead_letters("requeued", ["t"], "FAILED", "9999")  # requeued, failed again
    catalog.resolve_dead_letter(letters["resolved"], "reloaded by hand", by="ann")
    assert catalog.lettered_runs("p") == {"open", "requeued"}


def test_queued_work_is_a_queued_interval_or_a_pending_request(catalog: Catalog) -> None:
    assert catalog.pipelines_with_queued_work() == set()
    catalog.claim_intervals("a", None, [(NOON, NOON, "queued", None)])
    catalog.claim_intervals("b", None, [(NOON, NOON, "queued", None)])
    catalog.start_interval("b", NOON.isoformat(), "rb")
    catalog.claim_intervals("c", None, [(NOON, NOON, "skipped", "overlap")])
    catalog.request_run("d", "d.yaml", {}, "manual")
    started = catalog.request_run("e", "e.yaml", {}, "manual")
    catalog.settle_request(started.id, "started")
    assert catalog.pipelines_with_queued_work() == {"a", "d"}


def test_an_upstream_success_triggers_once_and_only_after_registration(catalog: Catalog) -> None:
    _run(catalog, "before", "up", ends=RunState.SUCCESS)
    since = catalog.run("before").ended_at
    assert since is not None
    _run(catalog, "failed", "up", ends=RunState.FAILED)
    _run(catalog, "first", "up", ends=RunState.SUCCESS)
    _run(catalog, "second", "up", ends=RunState.SUCCESS)
    assert catalog.untriggered_successes("up", since, "down") == ["first", "second"]
    assert catalog.record_trigger("down", "after", "first")
    assert catalog.untriggered_successes("up", since, "down") == ["second"]
    assert catalog.untriggered_successes("up", since, "elsewhere") == ["first", "second"]


def test_late_intervals_are_due_not_skipped_and_not_succeeded_newest_first(
    catalog: Catalog,
) -> None:
    fires = [NOON + timedelta(hours=hour) for hour in range(5)]
    catalog.claim_intervals(
        "p",
        None,
        [
            (fires[0], fires[0], "queued", None),  # started, succeeded: not late
            (fires[1], fires[1], "queued", None),  # started, failed: late
            (fires[2], fires[2], "skipped", "overlap"),  # skipped: not late
            (fires[3], fires[3], "queued", None),  # never started: late
            (fires[4], fires[4], "queued", None),  # not due yet
        ],
    )
    for fire, run_id, ends in ((fires[0], "ok", RunState.SUCCESS), (fires[1], "bad", None)):
        catalog.start_interval("p", fire.isoformat(), run_id)
        _run(catalog, run_id, ends=ends)
    catalog.transition_run("bad", RunState.CANCELLED, "cancelled")
    late = catalog.late_intervals("p", fires[3])
    assert [(i.fire_at, i.run_id, i.state) for i in late] == [
        (fires[3].isoformat(), None, None),
        (fires[1].isoformat(), "bad", "CANCELLED"),
    ]
    assert len(catalog.late_intervals("p", fires[3], limit=1)) == 1


def test_reports_count_and_sum_over_every_pipeline(catalog: Catalog) -> None:
    _run(catalog, "r1", ends=RunState.SUCCESS)
    _run(catalog, "r2", ends=RunState.FAILED)
    _run(catalog, "q1", "q", ends=RunState.SUCCESS)
    _letter(catalog, "r2")
    reports = catalog.reports
    assert reports.runs_by_state() == [
        Count("p", "FAILED", 1),
        Count("p", "SUCCESS", 1),
        Count("q", "SUCCESS", 1),
    ]
    assert reports.dead_letters_by_status() == [Count("p", "open", 1)]
    (p, _) = reports.task_totals()
    assert (p.pipeline, p.task_id, p.timed_runs, p.seconds) == ("p", "t", 2, 3.0)
    # integers on both databases (PostgreSQL sums bigints as numeric), past 32 bits
    assert (p.rows_in, p.rows_out, p.bytes_out, p.retries) == (4, 6, 10_000_000_000, 2)
    assert all(isinstance(v, int) for v in (p.rows_in, p.bytes_out, p.retries, p.rows_rejected))
    assert sorted((d.pipeline, d.task_id, d.seconds) for d in reports.last_durations()) == [
        ("p", "t", 1.5),
        ("q", "t", 1.5),
    ]


def test_the_scheduler_lag_is_of_each_pipelines_newest_started_interval(
    catalog: Catalog,
) -> None:
    later = NOON + timedelta(hours=1)
    catalog.claim_intervals(
        "p", None, [(NOON, NOON, "queued", None), (later, later, "queued", None)]
    )
    catalog.claim_intervals("q", None, [(NOON, NOON, "queued", None)])  # never started
    assert catalog.reports.scheduler_lags() == []
    catalog.start_interval("p", NOON.isoformat(), "r1")
    catalog.start_interval("p", later.isoformat(), "r2")
    (lag,) = catalog.reports.scheduler_lags()
    assert (lag.pipeline, lag.fire_at) == ("p", later.isoformat())
    assert datetime.fromisoformat(lag.started_at) > later

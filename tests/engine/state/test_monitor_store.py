"""The web monitor's catalog questions, on both catalogs: pages of runs by keyset with filters,
what needs attention in a pipeline, and each run's task graph as planned."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.core.states import RunState, TaskState
from engine.state.catalog import Catalog, catalog_location

pytestmark = pytest.mark.usefixtures("each_catalog")

GRAPH = [("a", "extract", ()), ("b", "sql", ("a",)), ("c", "load", ("b",))]


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    with Catalog(catalog_location(tmp_path)) as opened:
        yield opened


def _run(catalog: Catalog, run_id: str, pipeline: str, ends: RunState) -> None:
    catalog.create_run(
        run_id,
        pipeline,
        "v",
        None,
        {},
        "2024-01-01",
        None,
        [("b", "sql", 1, "f")],
        {},
        graph=GRAPH,
    )
    catalog.transition_run(run_id, RunState.RUNNING, "started")
    for state in (TaskState.QUEUED, TaskState.RUNNING):
        catalog.transition_task(run_id, "b", state, "moved")
    done = TaskState.SUCCESS if ends is RunState.SUCCESS else TaskState.FAILED
    catalog.transition_task(run_id, "b", done, "ended", attempt=1, fields={"rows_rejected": 4})
    catalog.transition_run(run_id, ends, "ended")


def test_pages_of_runs_follow_each_other_newest_first_without_gaps_or_repeats(
    catalog: Catalog,
) -> None:
    for i in range(7):
        _run(catalog, f"r{i}", "p" if i % 2 else "q", RunState.SUCCESS)
    seen: list[str] = []
    after = None
    while True:
        page = catalog.monitor.runs_page(after=after, limit=3)
        seen += [run.run_id for run in page.runs]
        if page.next_key is None:
            break
        after = page.next_key
    assert seen == [f"r{i}" for i in reversed(range(7))]


def test_a_page_of_runs_filters_by_pipeline_and_state(catalog: Catalog) -> None:
    _run(catalog, "r1", "p", RunState.SUCCESS)
    _run(catalog, "r2", "p", RunState.FAILED)
    _run(catalog, "r3", "q", RunState.FAILED)
    failed_p = catalog.monitor.runs_page(pipeline="p", state=RunState.FAILED)
    assert [run.run_id for run in failed_p.runs] == ["r2"]
    assert failed_p.next_key is None
    assert failed_p.runs[0].duration_s is not None


def test_a_run_keeps_the_graph_it_was_planned_with(catalog: Catalog) -> None:
    _run(catalog, "r1", "p", RunState.SUCCESS)
    assert catalog.monitor.run_graph("r1") == GRAPH
    catalog.create_run("r2", "p", "v", None, {}, "d", None, [], {})  # a run with no graph
    assert catalog.monitor.run_graph("r2") is None


def test_attention_counts_open_dead_letters_and_the_last_runs_quarantined_rows(
    catalog: Catalog,
) -> None:
    _run(catalog, "r1", "p", RunState.FAILED)
    catalog.add_dead_letter(
        run_id="r1",
        pipeline="p",
        task_id="b",
        pipeline_version="v",
        pipeline_file=None,
        params={},
        logical_date="2024-01-01",
        error_kind="data",
        transient=False,
        reason="bad",
        attempts=[],
    )
    seen = catalog.monitor.attention("p", "r1")
    assert (seen.dead_letters, seen.quarantined) == (1, 4)
    assert catalog.monitor.attention("q", None).dead_letters == 0


def test_the_last_success_is_found_however_many_runs_failed_since(catalog: Catalog) -> None:
    _run(catalog, "r00", "p", RunState.SUCCESS)
    for i in range(1, 25):
        _run(catalog, f"r{i:02d}", "p", RunState.FAILED)
    found = catalog.monitor.last_success("p")
    assert found is not None
    assert found.run_id == "r00"
    assert catalog.monitor.last_success("q") is None

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.core.errors import StateError
from engine.core.states import RunState, TaskState
from engine.state.catalog import Catalog, CatalogReader, catalog_location
from tests.catalog_sql import sql

pytestmark = pytest.mark.usefixtures("each_catalog")


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    c = Catalog(catalog_location(tmp_path))
    yield c
    c.close()


def _run(catalog: Catalog, run_id: str, pipeline: str = "p") -> None:
    catalog.create_run(
        run_id,
        pipeline,
        "v1",
        "p.yaml",
        {"a": 1},
        "2024-01-01T00:00:00+00:00",
        None,
        [("extract_a", "extract", 0, "f1"), ("b", "sql", 1, "f2")],
        {},
    )


def test_records_runs_tasks_and_every_transition(catalog: Catalog) -> None:
    _run(catalog, "20240101T000000Z-aaaaaa")
    run_id = "20240101T000000Z-aaaaaa"
    catalog.transition_run(run_id, RunState.RUNNING, "started")
    for state in (TaskState.QUEUED, TaskState.RUNNING):
        catalog.transition_task(run_id, "extract_a", state, state.value.lower())
    catalog.transition_task(
        run_id,
        "extract_a",
        TaskState.SUCCESS,
        "done",
        attempt=1,
        fields={
            "rows_in": 10,
            "rows_out": 10,
            "bytes_out": 123,
            "duration_s": 0.5,
            "output_path": "/x",
            "output_schema": json.dumps([{"name": "x"}]),
        },
    )
    catalog.transition_task(run_id, "b", TaskState.SKIPPED, "upstream failed")
    catalog.transition_run(run_id, RunState.FAILED, "finished", "failed: b")

    run = catalog.run("20240101")
    assert (run.state, run.params, run.error) == (RunState.FAILED, {"a": 1}, "failed: b")
    assert run.duration_s is not None
    assert run.duration_s >= 0
    tasks = {t.task_id: t for t in catalog.task_runs(run_id)}
    assert tasks["extract_a"].rows_out == 10
    assert tasks["extract_a"].attempts == 1
    assert tasks["extract_a"].output_schema == [{"name": "x"}]
    assert tasks["b"].state is TaskState.SKIPPED
    history = [(t.task_id, t.from_state, t.to_state) for t in catalog.transitions(run_id)]
    assert history == [
        (None, None, "PENDING"),
        (None, "PENDING", "RUNNING"),
        ("extract_a", "PENDING", "QUEUED"),
        ("extract_a", "QUEUED", "RUNNING"),
        ("extract_a", "RUNNING", "SUCCESS"),
        ("b", "PENDING", "SKIPPED"),
        (None, "RUNNING", "FAILED"),
    ]
    latest = catalog.latest_output("p", "extract_a")
    assert latest is not None
    assert latest.run_id == run_id


def test_run_lookup_by_prefix_last_and_errors(catalog: Catalog) -> None:
    _run(catalog, "20240101T000000Z-aaaaaa")
    _run(catalog, "20240101T000000Z-bbbbbb")
    assert catalog.run("20240101T000000Z-b").run_id.endswith("bbbbbb")
    assert catalog.run("last").run_id.endswith("bbbbbb")
    with pytest.raises(StateError, match="ambiguous"):
        catalog.run("2024")
    with pytest.raises(StateError, match="no run"):
        catalog.run("1999")


def test_unknown_fields_are_refused(catalog: Catalog) -> None:
    _run(catalog, "r")
    with pytest.raises(StateError, match="unknown task run fields"):
        catalog.transition_task(
            "r", "b", TaskState.QUEUED, "x", fields={"state; drop table runs": 1}
        )


def test_reader_is_read_only_and_needs_an_existing_catalog(
    tmp_path: Path, catalog: Catalog
) -> None:
    _run(catalog, "r")
    reader = CatalogReader(catalog.location)
    assert [r.run_id for r in reader.runs()] == ["r"]
    with pytest.raises(Exception, match=r"readonly|read-only"):
        sql(reader, "delete from runs")
    reader.close()
    if catalog.shared:  # a shared catalog is created by whoever comes first, a reader too
        return
    with pytest.raises(StateError, match="no arrowline catalog"):
        CatalogReader(tmp_path / "nowhere.db")


def test_a_reader_in_another_process_sees_committed_transitions_while_writing(
    catalog: Catalog,
) -> None:
    _run(catalog, "r")
    catalog.transition_run("r", RunState.RUNNING, "started")
    code = (
        "from pathlib import Path; from engine.state.catalog import CatalogReader, catalog_location;"
        f"r = CatalogReader(catalog_location(Path({str(catalog.path.parent.parent)!r})));"
        "print(r.run('r').state.value)"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert output.stdout.strip() == "RUNNING"

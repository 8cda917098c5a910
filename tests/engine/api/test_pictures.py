"""A run's boxes: the graph it recorded, or the pipeline's edges now for a run from before
graphs were recorded; a reused task links to the run that made its output."""

from __future__ import annotations

from pathlib import Path

from engine.api.pictures import run_boxes
from engine.core.states import RunState
from engine.state.catalog import Catalog, catalog_location


def test_a_run_without_a_recorded_graph_is_drawn_with_the_edges_given(tmp_path: Path) -> None:
    with Catalog(catalog_location(tmp_path)) as catalog:
        tasks = [("a", "sql", 0, "f"), ("b", "sql", 1, "f")]
        catalog.create_run("r", "p", "v", None, {}, "d", None, tasks, {})  # no graph: an old run
        boxes = run_boxes(catalog, catalog.run("r"), fallback=lambda: {"b": ("a",)})
    assert [(b.id, b.kind, b.upstream) for b in boxes] == [("a", "sql", ()), ("b", "sql", ("a",))]


def test_a_reused_task_links_to_the_run_that_made_its_output(tmp_path: Path) -> None:
    graph = [("a", "sql", ()), ("b", "sql", ("a",))]
    with Catalog(catalog_location(tmp_path)) as catalog:
        catalog.create_run(
            "r1", "p", "v", None, {}, "d", None, [("a", "sql", 0, "f")], {}, graph=graph
        )
        catalog.transition_run("r1", RunState.RUNNING, "started")
        catalog.create_run(
            "r2", "p", "v", None, {}, "d", None, [("b", "sql", 1, "f")], {"a": "r1"}, graph=graph
        )
        boxes = run_boxes(
            catalog,
            catalog.run("r2"),
            href=lambda t: f"/runs/r2/tasks/{t}",
            reused_href=lambda run, t: f"/runs/{run}/tasks/{t}",
        )
    a, b = boxes
    assert (a.state, a.href, a.note) == ("REUSED", "/runs/r1/tasks/a", "reused from r1")
    assert (b.state, b.href) == ("PENDING", "/runs/r2/tasks/b")

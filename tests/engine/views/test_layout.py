"""The layered layout: edges run left to right through one waypoint per layer they cross, boxes
of a layer never overlap, chains are straight, and a 5,000-task graph stays a drawable size."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.views.layout import Layout, layout


@st.composite
def dags(draw: st.DrawFn) -> dict[str, list[str]]:
    size = draw(st.integers(1, 40))
    upstream: dict[str, list[str]] = {}
    for i in range(size):
        picks = draw(st.lists(st.integers(0, max(i - 1, 0)), max_size=3)) if i else []
        upstream[f"t{i}"] = sorted({f"t{p}" for p in picks})
    return upstream


def _check(drawn: Layout, upstream: dict[str, list[str]]) -> None:
    assert set(drawn.position) == set(upstream)
    by_layer: dict[float, list[float]] = defaultdict(list)
    for x, y in drawn.position.values():
        by_layer[x].append(y)
        assert 0 <= y < drawn.rows
    for rows in by_layer.values():
        rows.sort()
        assert all(b - a >= 1 - 1e-9 for a, b in itertools.pairwise(rows))
    edges = {(e.source, e.target) for e in drawn.edges}
    assert edges == {(up, node) for node, ups in upstream.items() for up in ups}
    for edge in drawn.edges:
        assert edge.points[0] == drawn.position[edge.source]
        assert edge.points[-1] == drawn.position[edge.target]
        xs = [x for x, _ in edge.points]
        assert all(b > a for a, b in itertools.pairwise(xs))  # always rightwards


@given(dags())
@settings(max_examples=150, deadline=None)
def test_every_layout_keeps_edges_rightward_and_boxes_apart(upstream: dict[str, list[str]]) -> None:
    _check(layout(upstream), upstream)


def test_a_long_edge_passes_through_each_layer_it_crosses() -> None:
    drawn = layout({"a": [], "b": ["a"], "c": ["b"], "d": ["c", "a"]})
    (long_edge,) = [e for e in drawn.edges if (e.source, e.target) == ("a", "d")]
    assert [x for x, _ in long_edge.points] == [0.0, 1.0, 2.0, 3.0]


def test_a_chain_is_a_straight_line_and_a_fan_in_sits_between_its_sources() -> None:
    chain = layout({"a": [], "b": ["a"], "c": ["b"]})
    assert len({y for _, y in chain.position.values()}) == 1
    fan = layout({"x": [], "y": [], "z": ["x", "y"]})
    assert fan.position["z"][1] == pytest.approx((fan.position["x"][1] + fan.position["y"][1]) / 2)


def test_a_cycle_is_refused() -> None:
    with pytest.raises(ValueError, match="cycle"):
        layout({"a": ["b"], "b": ["a"]})


def test_a_5000_task_graph_stays_a_drawable_size() -> None:
    rng = random.Random(7)
    upstream = {
        f"t{i}": [f"t{rng.randint(max(0, i - 300), i - 1)}" for _ in range(rng.randint(0, 3))]
        if i > 20
        else []
        for i in range(5000)
    }
    drawn = layout(upstream)
    _check(drawn, {k: sorted(set(v)) for k, v in upstream.items()})
    waypoints = sum(len(e.points) - 2 for e in drawn.edges)
    assert waypoints <= 3 * 5000  # the budget: the longest edges beyond it are drawn straight
    assert drawn.rows < 5000  # fewer row slots than tasks: layers share the height

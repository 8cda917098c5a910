"""A layered drawing of a DAG, computed on the server: where each task sits and which points each
edge passes through, for the SVG builder (engine.views.svg) to draw.

The method is Sugiyama's, as dot and dagre do it, cut down to what a pipeline needs and kept
linear enough for 5,000 tasks in well under a second:

1. layers: a task's level (engine.core.graph), so data flows left to right;
2. an edge that spans several layers gets one waypoint per layer it crosses, so long edges are
   routed between tasks instead of through them;
3. order within a layer: a few sweeps that sort each layer by the mean position of its
   neighbours in the layer before (then after), which removes most crossings;
4. vertical positions: each task as near its neighbours' mean as the tasks above it allow, then
   pulled back up, so a chain is a straight line and a fan-in sits beside its sources' middle.

Everything is a pure function of `{task: upstream tasks}`; positions are in abstract units that
the SVG builder scales.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise

from engine.core.graph import Graph

__all__ = ["Edge", "Layout", "layout"]

SWEEPS = 4
"""Down-and-up ordering sweeps: crossings stop falling after three or four on pipeline DAGs."""

WAYPOINTS_PER_NODE = 3
"""Waypoints allowed per task. Short edges are routed first; in a huge graph where a few sources
feed tasks many layers away, the longest edges past this budget are drawn straight across, which
keeps a 5,000-task drawing under a second and a few thousand rows tall."""

WAYPOINT_HALF = 0.1
"""Half the height of a waypoint in row slots (a task's is 0.5): edges pass close together."""


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    points: tuple[tuple[float, float], ...]
    """Centres the edge passes through, source first, target last (waypoints between)."""


@dataclass(frozen=True)
class Layout:
    """Each node's layer (column) and row, and each edge's route, in layout units: one unit of x
    per layer, one of y per row slot."""

    position: dict[str, tuple[float, float]]
    edges: tuple[Edge, ...]
    layers: int
    rows: float = field(default=0.0)
    """The height in row slots (the largest y + 1)."""


def layout(upstream: Mapping[str, Iterable[str]]) -> Layout:
    """Lay out the DAG given as `{node: its upstream nodes}` (upstream names that are not nodes
    are ignored). Raises ValueError on a cycle."""
    graph = Graph({node: [d for d in deps if d in upstream] for node, deps in upstream.items()})
    level = graph.levels()
    if not level:
        return Layout({}, (), 0)
    layers = max(level.values()) + 1

    # Waypoints: an edge u -> v across k layers becomes u -> w1 -> ... -> v; the waypoints are
    # nodes of the ordering problem (named by tuples, which no task id can equal).
    ranks: list[list[object]] = [[] for _ in range(layers)]
    for node in graph.topological():
        ranks[level[node]].append(node)
    down: dict[object, list[object]] = {node: [] for node in graph.order}
    up: dict[object, list[object]] = {node: [] for node in graph.order}
    chains: list[tuple[str, str, list[object]]] = []
    order_of = {node: i for i, node in enumerate(graph.order)}
    spans = sorted(
        (
            (level[target] - level[source], source, target)
            for target in graph.order
            for source in graph.upstream[target]
        ),
        key=lambda edge: edge[0],
    )
    budget = WAYPOINTS_PER_NODE * len(graph.order)
    for span, source, target in spans:
        routed = span - 1 <= budget
        budget -= span - 1 if routed else 0
        chain: list[object] = [source]
        if routed:
            for layer in range(level[source] + 1, level[target]):
                waypoint = (source, target, layer)
                ranks[layer].append(waypoint)
                down[waypoint], up[waypoint] = [], []
                chain.append(waypoint)
        chain.append(target)
        for a, b in pairwise(chain):
            down[a].append(b)
            up[b].append(a)
        chains.append((source, target, chain))
    chains.sort(key=lambda c: (order_of[c[1]], order_of[c[0]]))

    _order(ranks, up, down)
    y = _rows(ranks, up, down)
    position = {node: (float(level[node]), y[node]) for node in graph.order}
    edges = tuple(
        Edge(source, target, tuple(_point(node, level, y) for node in chain))
        for source, target, chain in chains
    )
    rows = max(y.values()) + 1.0
    return Layout(position, edges, layers, rows)


def _point(
    node: object, level: Mapping[str, int], y: Mapping[object, float]
) -> tuple[float, float]:
    if isinstance(node, tuple):
        return float(node[2]), y[node]
    assert isinstance(node, str)
    return float(level[node]), y[node]


def _order(
    ranks: list[list[object]],
    up: Mapping[object, list[object]],
    down: Mapping[object, list[object]],
) -> None:
    """Reorder each layer in place by the barycentre of its neighbours (stable, so ties keep
    the declaration order)."""
    index = {node: i for rank in ranks for i, node in enumerate(rank)}
    for sweep in range(SWEEPS):
        forward = sweep % 2 == 0
        sequence = range(1, len(ranks)) if forward else range(len(ranks) - 2, -1, -1)
        neighbours = up if forward else down
        for layer in sequence:
            rank = ranks[layer]

            def centre(
                node: object, neighbours: Mapping[object, list[object]] = neighbours
            ) -> float:
                around = neighbours[node]
                if not around:
                    return index[node]  # no neighbour that side: keep its place
                return sum(index[n] for n in around) / len(around)

            rank.sort(key=centre)
            for i, node in enumerate(rank):
                index[node] = i


def _rows(
    ranks: list[list[object]],
    up: Mapping[object, list[object]],
    down: Mapping[object, list[object]],
) -> dict[object, float]:
    """Vertical positions: in each layer, in order, each node at the mean of its upstream
    neighbours' rows but at least one slot below the node above it; then a pass from the right
    lets nodes with no upstream (sources) move next to their consumers."""
    y: dict[object, float] = {}
    for rank in ranks:
        _place(rank, [_mean(up[node], y) for node in rank], y)
    for rank in reversed(ranks[:-1]):
        wanted = [_mean(down[node], y) if not up[node] and down[node] else y[node] for node in rank]
        _place(rank, wanted, y)
    top = min(y.values())
    return {node: row - top for node, row in y.items()}


def _mean(around: list[object], y: Mapping[object, float]) -> float | None:
    known = [y[n] for n in around if n in y]
    return sum(known) / len(known) if known else None


def _place(rank: list[object], wanted: list[float | None], y: dict[object, float]) -> None:
    """Each node at its wanted row, keeping the order and one slot between neighbours: pushed
    down where the one above is in the way, then the layer's block shifted up by the mean push
    (the one uniform shift nearest, in squares, to every wanted row), so a fan of sources is
    centred on its consumer rather than hanging below it."""
    floor = float("-inf")
    pushed = 0.0
    placed: list[float] = []
    for node, want in zip(rank, wanted, strict=True):
        half = WAYPOINT_HALF if isinstance(node, tuple) else 0.5
        floor += half
        target = want if want is not None else max(floor, 0.0)
        row = max(target, floor)
        pushed += row - target
        placed.append(row)
        floor = row + half
    shift = pushed / len(rank) if rank else 0.0
    for node, row in zip(rank, placed, strict=True):
        y[node] = row - shift

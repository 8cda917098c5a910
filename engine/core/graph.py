"""The task graph: edges, cycles with their path, dependency order, levels and closures.

Everything here is a pure function of `{task: upstream tasks}` and runs in O(V + E); a 1,000-task
pipeline is a few milliseconds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["Graph", "find_cycles"]


class Graph:
    """A DAG (or, before validation, any digraph) of task ids, keeping declaration order."""

    def __init__(self, upstream: Mapping[str, Iterable[str]]) -> None:
        self.order: tuple[str, ...] = tuple(upstream)
        self.upstream: dict[str, tuple[str, ...]] = {
            node: tuple(dict.fromkeys(deps)) for node, deps in upstream.items()
        }
        self.downstream: dict[str, list[str]] = {node: [] for node in self.order}
        for node in self.order:
            for dep in self.upstream[node]:
                if dep in self.downstream:
                    self.downstream[dep].append(node)

    def topological(self) -> list[str]:
        """Kahn's algorithm; among ready tasks, declaration order wins, so output is stable.

        Raises ValueError when the graph has a cycle (validation reports cycles first).
        """
        position = {node: index for index, node in enumerate(self.order)}
        missing = {
            node: sum(dep in position for dep in deps) for node, deps in self.upstream.items()
        }
        import heapq

        ready = [position[node] for node, count in missing.items() if count == 0]
        heapq.heapify(ready)
        result: list[str] = []
        while ready:
            node = self.order[heapq.heappop(ready)]
            result.append(node)
            for child in self.downstream[node]:
                missing[child] -= 1
                if missing[child] == 0:
                    heapq.heappush(ready, position[child])
        if len(result) != len(self.order):
            raise ValueError("the graph has a cycle")
        return result

    def levels(self) -> dict[str, int]:
        """Level 0 has no upstream; every other task is one more than its deepest upstream."""
        level: dict[str, int] = {}
        for node in self.topological():
            deps = [level[d] for d in self.upstream[node] if d in level]
            level[node] = max(deps) + 1 if deps else 0
        return level

    def ancestors(self, nodes: Iterable[str]) -> set[str]:
        return self._closure(nodes, self.upstream)

    def descendants(self, nodes: Iterable[str]) -> set[str]:
        return self._closure(nodes, self.downstream)

    @staticmethod
    def _closure(start: Iterable[str], edges: Mapping[str, Sequence[str]]) -> set[str]:
        seen: set[str] = set()
        queue = deque(start)
        while queue:
            node = queue.popleft()
            for nxt in edges.get(node, ()):
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append(nxt)
        return seen


def find_cycles(upstream: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """One cycle per strongly connected component, as a path that returns to its start.

    `{"a": ["c"], "b": ["a"], "c": ["b"]}` -> `[["a", "b", "c", "a"]]`, read as "a feeds b feeds
    c feeds a". Self-loops are cycles of length one (`["a", "a"]`). Iterative Tarjan, so deep
    chains do not hit Python's recursion limit.
    """
    downstream: dict[str, list[str]] = {node: [] for node in upstream}
    for node, deps in upstream.items():
        for dep in deps:
            if dep in downstream:
                downstream[dep].append(node)

    index_of: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in downstream:
        if root in index_of:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child_index = work.pop()
            if child_index == 0:
                index_of[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = downstream[node]
            if child_index < len(children):
                work.append((node, child_index + 1))
                child = children[child_index]
                if child not in index_of:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index_of[child])
                continue
            if low[node] == index_of[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                is_self_loop = len(component) == 1 and node in downstream[node]
                if len(component) > 1 or is_self_loop:
                    components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])

    order = {node: position for position, node in enumerate(upstream)}
    return [_cycle_path(sorted(c, key=order.__getitem__), downstream) for c in components]


def _cycle_path(members: list[str], downstream: Mapping[str, list[str]]) -> list[str]:
    """A concrete cycle inside one strongly connected component, from its first-declared member."""
    inside = set(members)
    start = members[0]
    # Breadth-first search back to `start` gives the shortest cycle through it.
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in downstream[node]:
            if child not in inside or (child == node and len(members) > 1):
                continue  # a self-loop inside a larger cycle would hide the cycle's path
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if child not in parent:
                parent[child] = node
                queue.append(child)
    raise AssertionError("strongly connected component without a cycle")  # pragma: no cover

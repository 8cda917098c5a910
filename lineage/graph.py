"""The column lineage graph of a pipeline: nodes are columns of task outputs (`task.column`)
and of the data outside it (`<place>::column`); edges say which columns a column's values come
from (`value`) or which decide whether its rows exist (`filter`).

Task kinds add their own edges (`engine.tasks`); this module holds the graph, its walks, how it
is stored (plain data in the catalog) and drawn (Mermaid, Graphviz).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from engine.core.sqltext import quote_identifier
from lineage.columns import ColumnEdge, Kind, Unresolved

__all__ = [
    "LineageEdge",
    "LineageGraph",
    "add_edges",
    "add_unresolved",
    "render_graph",
    "sql_columns",
]


@dataclass(frozen=True, order=True)
class LineageEdge:
    target: str
    """`task.column` of the output."""
    source: str
    """`task.column` it depends on."""
    kind: Kind
    inferred: bool = False


@dataclass
class LineageGraph:
    edges: list[LineageEdge] = field(default_factory=list)
    unresolved: dict[str, list[str]] = field(default_factory=dict)
    """task -> reasons its lineage is incomplete."""
    external: dict[str, str] = field(default_factory=dict)
    """extract or load task -> the table or files outside the pipeline it reads or writes."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as the catalog keeps it with the run."""
        return {
            "edges": [
                {"target": e.target, "source": e.source, "kind": e.kind, "inferred": e.inferred}
                for e in sorted(set(self.edges))
            ],
            "unresolved": self.unresolved,
            "external": self.external,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LineageGraph:
        return cls(
            edges=[LineageEdge(**edge) for edge in data.get("edges", [])],
            unresolved={k: list(v) for k, v in data.get("unresolved", {}).items()},
            external=dict(data.get("external", {})),
        )

    def columns(self, task: str) -> set[str]:
        """The columns of `task` that some edge starts or ends at."""
        prefix = f"{task}."
        nodes = {node for e in self.edges for node in (e.target, e.source)}
        return {node.removeprefix(prefix) for node in nodes if node.startswith(prefix)}

    def upstream(self, node: str, kind: Kind | None = None) -> dict[str, Any]:
        """{source: {"kind": ..., "upstream": {...}}}, recursively, as plain data."""
        return self._walk(node, kind, forward=False, seen=set())

    def downstream(self, node: str, kind: Kind | None = None) -> dict[str, Any]:
        return self._walk(node, kind, forward=True, seen=set())

    def _walk(self, node: str, kind: Kind | None, forward: bool, seen: set[str]) -> dict[str, Any]:
        tree: dict[str, Any] = {}
        for edge in self.edges:
            here, there = (edge.source, edge.target) if forward else (edge.target, edge.source)
            if here != node or (kind is not None and edge.kind != kind):
                continue
            key = f"{there} ({edge.kind}{', inferred' if edge.inferred else ''})"
            if there in seen:
                tree[key] = {}
                continue
            tree[key] = self._walk(there, kind, forward, seen | {node})
        return tree


def sql_columns(schema: pa.Schema) -> dict[str, str]:
    """Columns for sqlglot's qualify: it expands stars by name, and needs a struct's fields to
    tell `s.field` (a field of column s) from `t.column`; other types do not matter to it."""
    return {field.name: _sql_type(field.type) for field in schema}


def _sql_type(data_type: pa.DataType) -> str:
    if pa.types.is_struct(data_type):
        fields = ", ".join(f"{quote_identifier(f.name)} {_sql_type(f.type)}" for f in data_type)
        return f"STRUCT({fields})"
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        return f"{_sql_type(data_type.value_type)}[]"
    return "VARCHAR"


def add_edges(graph: LineageGraph, task: str, edges: Iterable[ColumnEdge]) -> None:
    for edge in edges:
        graph.edges.append(
            LineageEdge(
                f"{task}.{edge.output}", f"{edge.table}.{edge.column}", edge.kind, edge.inferred
            )
        )


def add_unresolved(graph: LineageGraph, task: str, problems: Iterable[Unresolved]) -> None:
    for problem in problems:
        where = f"column {problem.output}: " if problem.output else ""
        graph.unresolved.setdefault(task, []).append(where + problem.reason)


def render_graph(report: Mapping[str, Any], fmt: str) -> str:
    """A report's tree as a Mermaid flowchart or a Graphviz digraph (edges point downstream)."""
    edges: list[tuple[str, str, str]] = []

    def walk(node: str, tree: Mapping[str, Any]) -> None:
        for key, below in tree.items():
            name, _, label = key.partition(" (")
            label = label.rstrip(")")
            pair = (node, name) if report["direction"] == "downstream" else (name, node)
            edges.append((*pair, label))
            walk(name, below)

    walk(report["column"], report["tree"])
    unique = list(dict.fromkeys(edges))
    if fmt == "mermaid":
        ids = {n: f"n{i}" for i, n in enumerate(dict.fromkeys(x for e in unique for x in e[:2]))}
        lines = ["flowchart LR"]
        lines += [f'  {ids[n]}["{n}"]' for n in ids]
        lines += [f"  {ids[a]} -->|{label}| {ids[b]}" for a, b, label in unique]
        return "\n".join(lines) + "\n"
    lines = ["digraph lineage {", "  rankdir=LR;"]
    for a, b, label in unique:
        style = ' style="dashed"' if label.startswith("filter") else ""
        lines.append(f'  "{a}" -> "{b}" [label="{label}"{style}];')
    return "\n".join([*lines, "}"]) + "\n"

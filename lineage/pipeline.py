"""Column lineage of a whole pipeline: every task's edges composed over the DAG.

A node is a column of a task's output (`task.column`); sources outside the pipeline appear as
nodes of the extract or load task that touches them, with the external name kept in
`LineageGraph.external` (`postgres:wh#public.orders`, `file:data/*.csv`, `duckdb:out.duckdb#t`).
Per task:

- sql: `lineage.columns.column_lineage` over the upstream tasks' schemas;
- udf: `lineage.udf.udf_lineage` (expression trees; frame UDFs by schema comparison, `inferred`);
- extract: each output column comes from the same column of the source (a PostgreSQL `query`
  is not analysed yet: its columns are reported unresolved);
- validate: columns pass through as values, and every column a check reads decides which rows
  pass, so it is a filter of every output;
- load: the input's columns become the target's columns.

Schemas are those `plan` computes before anything runs (engine.planning.schemas: every transform
over empty inputs; file extracts from their readers), else the latest successful output's; a run
records its lineage over the schemas it wrote. A task whose schema cannot be known has its lineage
unresolved with that reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from connectors.base import NamingContext
from engine.core.places import Place
from engine.core.sqltext import quote_identifier
from engine.planning.build import Plan, PlannedTask
from engine.spec.model import TaskKind
from engine.state.catalog import CatalogReader
from lineage.columns import ColumnEdge, ColumnLineage, Kind, Unresolved, column_lineage

__all__ = [
    "LineageEdge",
    "LineageGraph",
    "lineage_report",
    "pipeline_lineage",
    "render_graph",
    "task_lineage",
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


def _columns(schema: pa.Schema) -> dict[str, str]:
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


def _place(task: PlannedTask) -> Place:
    """Where an extract reads or a load writes, as its connector names it."""
    owner, config = task.spec.connector, task.spec.extract or task.spec.load
    assert owner is not None
    assert config is not None
    return owner.place(config, NamingContext())


def pipeline_lineage(
    plan: Plan,
    schemas: Mapping[str, pa.Schema],
    base_dir: Path,
    *,
    captured: Mapping[str, ColumnLineage] | None = None,
    call_udfs: bool = True,
) -> LineageGraph:
    """`schemas`: task -> the Arrow schema of its output. `captured`: UDF lineage a run read
    from the plans it executed; `call_udfs=False` compares a frame UDF's schemas instead of
    calling it again (a run's record: the function may have side effects)."""
    graph = LineageGraph()
    for task in plan.tasks:
        one = task_lineage(
            task, schemas, base_dir, (captured or {}).get(task.id), call_udfs=call_udfs
        )
        graph.edges += one.edges
        graph.unresolved.update(one.unresolved)
        graph.external.update(one.external)
    return graph


def task_lineage(
    task: PlannedTask,
    schemas: Mapping[str, pa.Schema],
    base_dir: Path,
    captured: ColumnLineage | None = None,
    *,
    call_udfs: bool = True,
) -> LineageGraph:
    """One task's edges (`schemas`: its inputs' and its own output's)."""
    graph = LineageGraph()
    try:
        if captured is not None:
            _add(graph, task.id, captured.edges)
            _report(graph, task.id, captured.unresolved)
        else:
            _task(graph, task, schemas, base_dir, call_udfs)
    except Exception as exc:  # user code (a UDF) may fail to load: say so
        graph.unresolved.setdefault(task.id, []).append(f"{type(exc).__name__}: {exc}")
    return graph


def _add(graph: LineageGraph, task: str, edges: Iterable[ColumnEdge]) -> None:
    for edge in edges:
        graph.edges.append(
            LineageEdge(
                f"{task}.{edge.output}", f"{edge.table}.{edge.column}", edge.kind, edge.inferred
            )
        )


def _task(
    graph: LineageGraph,
    task: PlannedTask,
    schemas: Mapping[str, pa.Schema],
    base_dir: Path,
    call_udfs: bool,
) -> None:
    missing = [name for name in (*task.inputs, task.id) if name not in schemas]
    if task.kind is TaskKind.LOAD:
        missing = [name for name in task.inputs if name not in schemas]
    if missing:
        graph.unresolved.setdefault(task.id, []).append(
            f"no schema yet for {', '.join(missing)}: run the pipeline once"
        )
        return
    if task.kind is TaskKind.EXTRACT:
        place = _place(task)
        graph.external[task.id] = place.label
        if place.query:
            _source_query(graph, task, place, schemas[task.id].names)
            return
        external = graph.external[task.id]
        for column in _columns(schemas[task.id]):
            graph.edges.append(LineageEdge(f"{task.id}.{column}", f"{external}::{column}", "value"))
        return
    if task.kind is TaskKind.SQL:
        assert task.sql is not None
        inputs = {n: _columns(schemas[n]) for n in task.inputs}
        result = column_lineage(task.sql, inputs, schemas[task.id].names)
        _add(graph, task.id, result.edges)
        _report(graph, task.id, result.unresolved)
        return
    (source,) = task.inputs
    columns = _columns(schemas[source])
    if task.kind is TaskKind.UDF:
        import polars as pl

        from lineage.udf import udf_lineage
        from transforms.udf import load_udf

        config = task.spec.udf
        assert config is not None
        frame = pl.from_arrow(schemas[source].empty_table())
        output = pl.from_arrow(schemas[task.id].empty_table())
        assert isinstance(frame, pl.DataFrame)
        assert isinstance(output, pl.DataFrame)
        function = load_udf(config, base_dir)
        known = None if call_udfs else output.schema
        result = udf_lineage(function, config, source, frame.schema, known)
        _add(graph, task.id, result.edges)
        _report(graph, task.id, result.unresolved)
        return
    if task.kind is TaskKind.VALIDATE:
        checked = _checked_columns(task)
        for column in columns:
            graph.edges.append(LineageEdge(f"{task.id}.{column}", f"{source}.{column}", "value"))
            for rule in checked:
                graph.edges.append(LineageEdge(f"{task.id}.{column}", f"{source}.{rule}", "filter"))
        return
    graph.external[task.id] = _place(task).label  # a load: the target's columns
    for column in columns:
        graph.edges.append(LineageEdge(f"{task.id}.{column}", f"{source}.{column}", "value"))


def _source_query(graph: LineageGraph, task: PlannedTask, place: Place, outputs: list[str]) -> None:
    """An extract's query, traced to the tables it reads: `<source>#<table>::<column>`."""
    from lineage.columns import source_query_lineage

    assert place.query is not None
    result, tables = source_query_lineage(place.query, outputs, place.dialect or "duckdb")
    graph.external[task.id] = place.table_label(",".join(sorted(tables.values())))
    for edge in result.edges:
        source = f"{place.table_label(tables[edge.table])}::{edge.column}"
        graph.edges.append(LineageEdge(f"{task.id}.{edge.output}", source, edge.kind))
    _report(graph, task.id, result.unresolved)


def _checked_columns(task: PlannedTask) -> list[str]:
    """Columns a validate task's inline schema has rules for (a schema module: unknown)."""
    config = task.spec.validate_
    schema = getattr(config, "schema_", None)
    columns = getattr(schema, "columns", None)
    return list(columns) if isinstance(columns, Mapping) else []


def _report(graph: LineageGraph, task: str, problems: Iterable[Unresolved]) -> None:
    for problem in problems:
        where = f"column {problem.output}: " if problem.output else ""
        graph.unresolved.setdefault(task, []).append(where + problem.reason)


def lineage_report(
    plan: Plan,
    catalog: CatalogReader | None,
    column: str,
    *,
    downstream: bool = False,
    kind: Kind | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """What `arrowline lineage` and `engine.open(...).lineage(...)` return: plain data.

    With `run_id` (an id, a prefix, or 'last': the pipeline's last run), the lineage recorded
    when that run ended; otherwise the pipeline as it is defined now, over the schemas `plan`
    computes (engine.planning.schemas) or the last run's. A task or column that does not exist is a
    SelectionError naming the closest one."""
    from engine.core.errors import SelectionError, StateError
    from engine.core.problems import did_you_mean

    task_id, _, name = column.partition(".")
    if task_id not in plan:
        raise SelectionError(
            f"pipeline {plan.pipeline!r} has no task {task_id!r}."
            f"{did_you_mean(task_id, [t.id for t in plan.tasks])}"
        )
    if run_id is not None:
        if catalog is None:
            raise StateError("there is no catalog yet", hint="run the pipeline first")
        run_id = catalog.run_of(plan.pipeline, run_id).run_id
        stored = catalog.lineage(run_id)
        if stored is None:
            raise StateError(
                f"run {run_id} has no recorded lineage",
                hint="lineage is recorded when a run ends; `arrowline runs` lists the runs",
            )
        graph = LineageGraph.from_dict(stored)
        written = _recorded_columns(catalog, run_id, task_id)
    else:
        from engine.planning.schemas import schemas_for_lineage

        schemas = schemas_for_lineage(plan, catalog)
        graph = pipeline_lineage(plan, schemas, plan.base_dir)
        written = schemas[task_id].names if task_id in schemas else []
    known = {*written, *graph.columns(task_id)}
    if known and name not in known:
        listed = sorted(known)
        raise SelectionError(
            f"task {task_id!r} has no column {name!r}.{did_you_mean(name, listed)}",
            hint=f"its columns: {', '.join(listed[:30])}"
            + (f", ... ({len(listed) - 30} more)" if len(listed) > 30 else ""),
        )
    tree = graph.downstream(column, kind) if downstream else graph.upstream(column, kind)
    return {
        "column": column,
        "run_id": run_id,
        "direction": "downstream" if downstream else "upstream",
        "tree": tree,
        "unresolved": graph.unresolved,
        "external": graph.external,
    }


def _recorded_columns(catalog: CatalogReader, run_id: str, task_id: str) -> list[str]:
    """The columns of a task's output in a run (or in the run it reused it from)."""
    row = catalog.task_run(run_id, task_id)
    reused_from = catalog.reused(run_id).get(task_id)
    if (row is None or row.output_schema is None) and reused_from:
        row = catalog.task_run(reused_from, task_id)
    return [field["name"] for field in (row.output_schema or [])] if row is not None else []


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

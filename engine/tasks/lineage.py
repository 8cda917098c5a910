"""Column lineage of a pipeline: every task's edges, from its kind, composed over the DAG.

Schemas are those `plan` computes before anything runs (`engine.planning.schemas`: every
transform over empty inputs, sources from their connectors), else the latest successful
output's; a run records its lineage over the schemas it wrote. A task whose schemas are not
known has its lineage unresolved with that reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from engine.core.schemachange import SchemaChange
from engine.tasks import kind_of
from engine.tasks.base import RenderedTask
from lineage.columns import ColumnLineage
from lineage.drift import compare_schemas, lineage_renames
from lineage.graph import LineageGraph, add_edges, add_unresolved

__all__ = ["pipeline_lineage", "task_drift", "task_lineage"]


def pipeline_lineage(
    tasks: Iterable[RenderedTask],
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
    for task in tasks:
        one = task_lineage(
            task, schemas, base_dir, (captured or {}).get(task.id), call_udfs=call_udfs
        )
        graph.edges += one.edges
        graph.unresolved.update(one.unresolved)
        graph.external.update(one.external)
    return graph


def task_lineage(
    task: RenderedTask,
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
            add_edges(graph, task.id, captured.edges)
            add_unresolved(graph, task.id, captured.unresolved)
            return graph
        kind = kind_of(task.spec)
        needed = [*task.inputs, task.id] if kind.produces_table else list(task.inputs)
        missing = [name for name in needed if name not in schemas]
        if missing:
            graph.unresolved.setdefault(task.id, []).append(
                f"no schema yet for {', '.join(missing)}: run the pipeline once"
            )
            return graph
        return kind.lineage(task, schemas, base_dir, call_udfs=call_udfs)
    except Exception as exc:  # user code (a UDF) may fail to load: say so
        graph.unresolved.setdefault(task.id, []).append(f"{type(exc).__name__}: {exc}")
    return graph


def task_drift(
    task: RenderedTask,
    before: pa.Schema,
    now: pa.Schema,
    schemas: Mapping[str, pa.Schema],
    recorded: Mapping[str, Any] | None,
    base_dir: Path,
    *,
    call_udfs: bool,
) -> list[SchemaChange]:
    """A task's changes from `before` to `now`. When columns were both added and dropped and the
    lineage recorded with the old output (`recorded`) is known, lineage names the renames;
    `schemas` are the task's inputs'."""
    changes = compare_schemas(before, now)
    if recorded is None or not {"added", "dropped"} <= {change.change for change in changes}:
        return changes
    edges = task_lineage(task, {**schemas, task.id: now}, base_dir, call_udfs=call_udfs)
    renames = lineage_renames(task.id, before, now, LineageGraph.from_dict(recorded), edges)
    return compare_schemas(before, now, renames)

"""What `arrowline lineage` and `engine.open(...).lineage(...)` answer: a column's upstream or
downstream, as recorded by a run or as the pipeline is defined now."""

from __future__ import annotations

from typing import Any

from engine.planning.build import Plan
from engine.state.catalog import CatalogReader
from engine.tasks.lineage import pipeline_lineage
from lineage.columns import Kind
from lineage.graph import LineageGraph

__all__ = ["LineageReport", "lineage_report"]


class LineageReport(dict[str, Any]):
    """A lineage answer: a plain dict (column, run_id, direction, tree, unresolved, external),
    JSON as it is, that a notebook shows as a tree."""

    def _repr_html_(self) -> str:
        from engine.planning.display import lineage_html

        return lineage_html(self)


def lineage_report(
    plan: Plan,
    catalog: CatalogReader | None,
    column: str,
    *,
    downstream: bool = False,
    kind: Kind | None = None,
    run_id: str | None = None,
) -> LineageReport:
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
        graph = pipeline_lineage(plan.tasks, schemas, plan.base_dir)
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
    return LineageReport(
        {
            "column": column,
            "run_id": run_id,
            "direction": "downstream" if downstream else "upstream",
            "tree": tree,
            "unresolved": graph.unresolved,
            "external": graph.external,
        }
    )


def _recorded_columns(catalog: CatalogReader, run_id: str, task_id: str) -> list[str]:
    """The columns of a task's output in a run (or in the run it reused it from)."""
    row = catalog.task_run(run_id, task_id)
    reused_from = catalog.reused(run_id).get(task_id)
    if (row is None or row.output_schema is None) and reused_from:
        row = catalog.task_run(reused_from, task_id)
    return [field["name"] for field in (row.output_schema or [])] if row is not None else []

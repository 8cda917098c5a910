"""What watches a run besides the catalog: its column lineage, recorded when it ends, and its
OpenLineage events. Both are records, not results: their failures are logged, never raised.

The executor tells each observer when the run starts and how it ended; an observer never reads
back what the executor wrote to the catalog.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

import pyarrow as pa
from loguru import logger

from connectors.base import NamingContext
from engine.core.errors import ArrowlineError
from engine.core.secrets import register_secrets_in, resolve_secrets
from engine.core.states import RunState, TaskState
from engine.execution.results import TaskResult
from engine.planning.build import Plan, PlannedTask
from engine.state.catalog import Catalog
from engine.state.workspace import Workspace
from lineage.columns import ColumnLineage
from lineage.graph import LineageGraph
from lineage.openlineage import Job, JobRun, OpenLineageEmitter, Sink, query_tables

__all__ = ["LineageRecorder", "OpenLineageObserver", "RunObserver", "register_plan_secrets"]


class RunObserver(Protocol):
    def started(self) -> None: ...

    def finished(
        self,
        state: RunState,
        error: str | None,
        graph: LineageGraph | None,
        schemas: Mapping[str, pa.Schema],
        results: Mapping[str, TaskResult],
    ) -> None: ...


def register_plan_secrets(plan: Plan) -> None:
    """Secrets written into the pipeline itself (a literal password, a UDF's api_key) are
    hidden in this run's messages and stored errors, as resolved references are."""
    register_secrets_in(
        {
            "params": dict(plan.params),
            "connections": {
                name: spec.model_dump(mode="json") for name, spec in plan.connections.items()
            },
            "openlineage": plan.openlineage.model_dump(mode="json") if plan.openlineage else None,
            "tasks": [
                task.spec.model_dump(mode="json", by_alias=True, fallback=repr)
                for task in plan.tasks
            ],
        }
    )


class LineageRecorder:
    """Composes the run's column lineage over the schemas its tasks wrote (or reused) and keeps
    it with the run in the catalog."""

    def __init__(self, plan: Plan, catalog: Catalog) -> None:
        self.plan = plan
        self.catalog = catalog
        self.captured: dict[str, ColumnLineage] = {}
        """Column lineage runners read from what they ran (frame UDFs' plans)."""

    def record(self, schemas: Mapping[str, pa.Schema]) -> LineageGraph | None:
        if not schemas:
            return None
        from engine.tasks.lineage import pipeline_lineage

        try:
            graph = pipeline_lineage(
                self.plan.tasks,
                schemas,
                self.plan.base_dir,
                captured=self.captured,
                call_udfs=False,
            )
            self.catalog.record_lineage(self.plan.run_id, graph.to_dict())
        except Exception as exc:  # never fail a finished run over its record
            logger.bind(pipeline=self.plan.pipeline, run_id=self.plan.run_id).warning(
                "column lineage of the run not recorded: {}", exc
            )
            return None
        return graph


def openlineage_sink(plan: Plan, environ: Mapping[str, str] | None = None) -> Sink | None:
    """Where the run's events go: the pipeline's `openlineage:` settings, else OpenLineage's
    environment variables; None when neither names a file or a URL."""
    env = os.environ if environ is None else environ
    spec = plan.openlineage
    url = (spec.url if spec else None) or env.get("OPENLINEAGE_URL")
    file = (spec.file if spec else None) or env.get("ARROWLINE_OPENLINEAGE_FILE")
    if not url and not file:
        return None
    endpoint = spec.endpoint if spec else env.get("OPENLINEAGE_ENDPOINT", "api/v1/lineage")
    key = (spec.api_key if spec else None) or env.get("OPENLINEAGE_API_KEY")
    if key:
        key = resolve_secrets(key, where="openlineage.api_key", base_dir=plan.base_dir)
    path = Path(file) if file else None
    return Sink(
        file=path if path is None or path.is_absolute() else plan.base_dir / path,
        url=f"{url.rstrip('/')}/{endpoint.lstrip('/')}" if url else None,
        api_key=key,
        timeout_s=spec.timeout.total_seconds() if spec else 5.0,
        namespace=(spec.namespace if spec else None)
        or env.get("OPENLINEAGE_NAMESPACE", "arrowline"),
    )


def _job(task: PlannedTask, plan: Plan, connections: Mapping[str, Any]) -> Job:
    """A task as OpenLineage sees it, the data it reads or writes outside named by its
    connector (`connections`: the run's resolved ones; host, port and database are used)."""
    owner = task.spec.connector
    config = task.spec.extract or task.spec.load
    if owner is None or config is None:
        return Job(task.id, task.kind.value, "transform", task.inputs, task.sql)
    role: Literal["source", "sink"] = "source" if task.spec.extract is not None else "sink"
    try:
        naming = NamingContext(plan.base_dir.resolve(), {**plan.connections, **connections})
        place = owner.place(config, naming)
        datasets = tuple(place.datasets(query_tables(place.query) if place.query else ()))
    except Exception as exc:  # a query that does not parse: say so, send the rest
        logger.warning("openlineage: no dataset for task {}: {}", task.id, exc)
        datasets = ()
    return Job(task.id, task.kind.value, role, task.inputs, task.sql, datasets)


class OpenLineageObserver:
    """Sends the run's OpenLineage events: START when it starts, and when it ends each task's
    START and COMPLETE or FAIL, then the pipeline's."""

    def __init__(
        self, plan: Plan, sink: Sink, workspace: tuple[str, str], connections: Mapping[str, Any]
    ):
        self.plan = plan
        jobs = tuple(_job(task, plan, connections) for task in plan.tasks)
        run = JobRun(plan.pipeline, plan.run_id, plan.logical_date, jobs)
        self.emitter = OpenLineageEmitter(run, sink, workspace)

    @classmethod
    def for_plan(
        cls, plan: Plan, workspace: Workspace, connections: Mapping[str, Any]
    ) -> OpenLineageObserver | None:
        """The run's observer, when the pipeline or the environment asks for events."""
        try:
            sink = openlineage_sink(plan)
        except ArrowlineError as exc:  # e.g. the api key's variable is not set: say, go on
            logger.bind(pipeline=plan.pipeline, run_id=plan.run_id).warning(
                "openlineage events are off for this run: {}", exc.message
            )
            return None
        if sink is None:
            return None
        return cls(plan, sink, workspace.dataset(), connections)

    def started(self) -> None:
        self.emitter.start()

    def finished(
        self,
        state: RunState,
        error: str | None,
        graph: LineageGraph | None,
        schemas: Mapping[str, pa.Schema],
        results: Mapping[str, TaskResult],
    ) -> None:
        ran = {task.id for task in self.plan.to_run}
        tasks = [
            (r.task_id, r.started_at, r.ended_at, r.state is TaskState.SUCCESS, r.error)
            for r in results.values()
            if r.task_id in ran and r.started_at
        ]
        self.emitter.finish(state is RunState.SUCCESS, error, graph, schemas, tasks)

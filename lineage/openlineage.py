"""OpenLineage run events: what a run read and wrote, column by column, for Marquez and friends.

A run sends

- START for the pipeline when it starts (job `<pipeline>`, nominal time = its logical date);
- for every task that ran, START and COMPLETE or FAIL (job `<pipeline>.<task>`, with a `parent`
  facet naming the pipeline's run), its input and output datasets, the output's `schema` facet
  and a `columnLineage` facet from the task's own edges;
- COMPLETE or FAIL for the pipeline when it ends, its inputs being what the extracts read and its
  outputs what the loads wrote, with column lineage composed through every task in between.

Datasets follow OpenLineage's naming: local files are namespace `file` and their absolute path;
PostgreSQL is `postgres://host:port` and `database.schema.table`; a DuckDB table is
`duckdb://<absolute file>` and its table name. A task's workspace output is the folder that holds
its runs' outputs. A PostgreSQL server's host, port and database come from the run's resolved
connection (they are not secrets; the password never leaves the process).

A value edge becomes a DIRECT transformation, a filter edge an INDIRECT one of subtype FILTER.
Run ids are UUIDs derived from the pipeline, the arrowline run id and the task, so the events of
one run (and of its resumption) agree. Sending never fails a run: an endpoint that does not
answer after three attempts gets a warning in the log, and no further events of that run.
"""

from __future__ import annotations

import functools
import json
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from loguru import logger

from engine.core.secrets import mask_text
from lineage.graph import LineageGraph

__all__ = ["Job", "JobRun", "OpenLineageEmitter", "Sink", "query_tables", "run_uuid"]

SPEC = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
RUN_EVENT = f"{SPEC}#/$defs/RunEvent"
FACETS = {
    "schema": "1-2-0/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet",
    "columnLineage": "1-2-0/ColumnLineageDatasetFacet.json#/$defs/ColumnLineageDatasetFacet",
    "parent": "1-2-0/ParentRunFacet.json#/$defs/ParentRunFacet",
    "nominalTime": "1-0-1/NominalTimeRunFacet.json#/$defs/NominalTimeRunFacet",
    "errorMessage": "1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet",
    "jobType": "2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet",
    "sql": "1-1-0/SQLJobFacet.json#/$defs/SQLJobFacet",
}
_RUN_NAMESPACE = uuid.UUID("6d1d2f7e-5a3b-4a0e-9a63-0b6c8d2b9a10")


@functools.cache
def producer() -> str:
    """Read once: every event and facet carries it, and a metadata lookup reads the disk."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"https://github.com/arrowline/arrowline/tree/{version('arrowline')}"
    except PackageNotFoundError:
        return "https://github.com/arrowline/arrowline"


def _facet(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "_producer": producer(),
        "_schemaURL": f"https://openlineage.io/spec/facets/{FACETS[name]}",
        **fields,
    }


def run_uuid(pipeline: str, run_id: str, task_id: str | None = None) -> str:
    return str(uuid.uuid5(_RUN_NAMESPACE, f"{pipeline}\0{run_id}\0{task_id or ''}"))


def _now() -> str:
    return datetime.now(UTC).isoformat()


# ---------------------------------------------------------------------------------------------
# datasets


Dataset = tuple[str, str]
"""(namespace, name)."""


@dataclass(frozen=True)
class Job:
    """A task as OpenLineage sees it."""

    id: str
    kind: str
    """The task's kind (`extract`, `sql`, ...), its job type."""
    role: Literal["source", "transform", "sink"]
    """A source reads `datasets` outside the pipeline, a sink writes them; a transform reads
    and writes the workspace."""
    inputs: tuple[str, ...] = ()
    sql: str | None = None
    datasets: tuple[Dataset, ...] = ()


@dataclass(frozen=True)
class JobRun:
    """One run of a pipeline as OpenLineage sees it: its jobs are the tasks of its plan."""

    pipeline: str
    run_id: str
    logical_date: datetime
    jobs: tuple[Job, ...]

    def job(self, job_id: str) -> Job:
        return next(job for job in self.jobs if job.id == job_id)


def query_tables(query: str | None) -> list[str]:
    from lineage.tables import SqlSyntaxError, parse_select, referenced_tables

    statement = parse_select(query) if query else None
    if statement is None or isinstance(statement, SqlSyntaxError):
        return []
    return sorted({ref.qualified for ref in referenced_tables(statement)})


# ---------------------------------------------------------------------------------------------
# events


@dataclass(frozen=True)
class Sink:
    """Where events go: a JSON-lines file, an HTTP endpoint, or both."""

    file: Path | None = None
    url: str | None = None
    api_key: str | None = None
    timeout_s: float = 5.0
    namespace: str = "arrowline"


class OpenLineageEmitter:
    """Builds a run's events and sends them to a `Sink`."""

    def __init__(self, run: JobRun, sink: Sink, workspace: tuple[str, str]) -> None:
        """`workspace`: the (namespace, name) of the workspace's top folder as a dataset, as
        OpenLineage names them: ("file", "/abs/path") or ("s3://bucket", "prefix")."""
        self.run = run
        self.sink = sink
        self.workspace = workspace
        self.namespace = sink.namespace
        self._lock = threading.Lock()
        self._endpoint_down = False
        """Set when an event could not be delivered: the rest of the run's events are not
        tried, so a dead endpoint costs a run one event's retries, not every event's."""

    # -- the pieces

    def _run_uuid(self, task_id: str | None = None) -> str:
        return run_uuid(self.run.pipeline, self.run.run_id, task_id)

    def _job(self, task: Job | None = None) -> dict[str, Any]:
        job_type = "DAG" if task is None else task.kind.upper()
        facets: dict[str, Any] = {
            "jobType": _facet(
                "jobType", processingType="BATCH", integration="ARROWLINE", jobType=job_type
            )
        }
        if task is not None and task.sql:
            facets["sql"] = _facet("sql", query=mask_text(task.sql))
        name = self.run.pipeline if task is None else f"{self.run.pipeline}.{task.id}"
        return {"namespace": self.namespace, "name": name, "facets": facets}

    def _workspace(self, task_id: str) -> Dataset:
        namespace, root = self.workspace
        return (namespace, "/".join(p for p in (root, self.run.pipeline, task_id) if p))

    def _node_dataset(self, node: str) -> tuple[Dataset, str] | None:
        """A lineage node (`task.column`, or `<external>::column` of an extract) as a dataset
        and field."""
        if "::" in node:
            return None  # resolved through the extract's own edge (see _source_fields)
        task_id, _, column = node.partition(".")
        return self._workspace(task_id), column

    def _dataset(
        self, dataset: Dataset, schema: pa.Schema | None, lineage: dict[str, Any] | None
    ) -> dict[str, Any]:
        from engine.core.types import format_type

        facets: dict[str, Any] = {}
        if schema is not None:
            fields = [
                {"name": f.name, "type": format_type(f.type), "ordinal_position": i}
                for i, f in enumerate(schema, start=1)
            ]
            facets["schema"] = _facet("schema", fields=fields)
        if lineage:
            facets["columnLineage"] = _facet("columnLineage", fields=lineage)
        return {"namespace": dataset[0], "name": dataset[1], "facets": facets}

    @staticmethod
    def _transformation(kind: str) -> dict[str, Any]:
        if kind == "filter":
            return {"type": "INDIRECT", "subtype": "FILTER"}
        return {"type": "DIRECT", "subtype": "TRANSFORMATION"}

    def _task_lineage(self, task: Job, graph: LineageGraph) -> dict[str, Any]:
        """The column lineage facet of a task's output: its own edges."""
        fields: dict[str, list[dict[str, Any]]] = {}
        for edge in graph.edges:
            target_task, _, column = edge.target.partition(".")
            if target_task != task.id:
                continue
            for dataset, field in self._source_fields(task, edge.source):
                fields.setdefault(column, []).append(
                    {
                        "namespace": dataset[0],
                        "name": dataset[1],
                        "field": field,
                        "transformations": [self._transformation(edge.kind)],
                    }
                )
        return {column: {"inputFields": inputs} for column, inputs in fields.items()}

    def _source_fields(self, task: Job, source: str) -> list[tuple[Dataset, str]]:
        if "::" in source:  # an extract's column: from the same column of its source dataset
            where, _, column = source.rpartition("::")
            datasets = list(task.datasets)
            if len(datasets) > 1:  # a query over several tables: `...#<table>::<column>`
                table = where.rpartition("#")[2]
                datasets = [d for d in datasets if f".{d[1]}".endswith(f".{table}")]
            return [(dataset, column) for dataset in datasets]
        found = self._node_dataset(source)
        return [found] if found else []

    def _pipeline_lineage(self, load: Job, graph: LineageGraph) -> dict[str, Any]:
        """A load target's columns traced through every task to the extracts' sources."""
        by_target: dict[str, list[tuple[str, str]]] = {}
        for edge in graph.edges:
            by_target.setdefault(edge.target, []).append((edge.source, edge.kind))
        extract_of = {
            source: target.partition(".")[0]
            for target, sources in by_target.items()
            for source, _ in sources
            if "::" in source
        }
        fields: dict[str, Any] = {}
        for edge in graph.edges:
            task_id, _, column = edge.target.partition(".")
            if task_id != load.id or column in fields:
                continue
            reached: dict[tuple[str, str, str], str] = {}
            stack = [(f"{load.id}.{column}", "value")]
            seen: set[tuple[str, str]] = set()
            while stack:
                node, kind = stack.pop()
                if (node, kind) in seen:
                    continue
                seen.add((node, kind))
                for source, edge_kind in by_target.get(node, []):
                    path_kind = "filter" if "filter" in (kind, edge_kind) else "value"
                    if "::" in source:
                        extract = self.run.job(extract_of[source])
                        for dataset, field in self._source_fields(extract, source):
                            key = (*dataset, field)
                            if reached.get(key) != "value":
                                reached[key] = path_kind
                    else:
                        stack.append((source, path_kind))
            if reached:
                fields[column] = {
                    "inputFields": [
                        {
                            "namespace": namespace,
                            "name": name,
                            "field": field,
                            "transformations": [self._transformation(kind)],
                        }
                        for (namespace, name, field), kind in sorted(reached.items())
                    ]
                }
        return fields

    def _event(
        self,
        event_type: str,
        when: str,
        task: Job | None,
        inputs: list[dict[str, Any]],
        outputs: list[dict[str, Any]],
        error: str | None = None,
    ) -> dict[str, Any]:
        run_facets: dict[str, Any] = {}
        if task is None:
            run_facets["nominalTime"] = _facet(
                "nominalTime", nominalStartTime=self.run.logical_date.isoformat()
            )
        else:
            run_facets["parent"] = _facet(
                "parent",
                run={"runId": self._run_uuid()},
                job={"namespace": self.namespace, "name": self.run.pipeline},
            )
        if error:
            run_facets["errorMessage"] = _facet(
                "errorMessage", message=error, programmingLanguage="python"
            )
        return {
            "eventType": event_type,
            "eventTime": when,
            "producer": producer(),
            "schemaURL": RUN_EVENT,
            "run": {"runId": self._run_uuid(task.id if task else None), "facets": run_facets},
            "job": self._job(task),
            "inputs": inputs,
            "outputs": outputs,
        }

    # -- what the executor calls

    def start(self) -> None:
        inputs, outputs = self._pipeline_datasets(None, None)
        self.send(self._event("START", _now(), None, inputs, outputs))

    def finish(
        self,
        succeeded: bool,
        error: str | None,
        graph: LineageGraph | None,
        schemas: Mapping[str, pa.Schema],
        tasks: Iterable[tuple[str, str | None, str | None, bool, str | None]],
    ) -> None:
        """`tasks`: (task id, started at, ended at, succeeded, error) of each task that ran."""
        graph = graph or LineageGraph()
        for task_id, started, ended, ok, task_error in tasks:
            task = self.run.job(task_id)
            inputs, outputs = self._task_datasets(task, graph, schemas)
            self.send(self._event("START", started or _now(), task, inputs, []))
            self.send(
                self._event(
                    "COMPLETE" if ok else "FAIL",
                    ended or _now(),
                    task,
                    inputs,
                    outputs if ok else [],
                    task_error,
                )
            )
        inputs, outputs = self._pipeline_datasets(graph, schemas)
        self.send(
            self._event("COMPLETE" if succeeded else "FAIL", _now(), None, inputs, outputs, error)
        )

    def _task_datasets(
        self, task: Job, graph: LineageGraph, schemas: Mapping[str, pa.Schema]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        if task.role == "source":
            inputs = [self._dataset(d, None, None) for d in list(task.datasets)]
        else:
            inputs = [
                self._dataset(self._workspace(name), schemas.get(name), None)
                for name in task.inputs
            ]
        lineage = self._task_lineage(task, graph)
        if task.role == "sink":
            source_schema = schemas.get(task.inputs[0]) if task.inputs else None
            outputs = [self._dataset(d, source_schema, lineage) for d in list(task.datasets)]
        else:
            outputs = [self._dataset(self._workspace(task.id), schemas.get(task.id), lineage)]
        return inputs, outputs

    def _pipeline_datasets(
        self, graph: LineageGraph | None, schemas: Mapping[str, pa.Schema] | None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        schemas = schemas or {}
        inputs, outputs = [], []
        for task in self.run.jobs:
            if task.role == "source":
                inputs += [
                    self._dataset(d, schemas.get(task.id), None) for d in list(task.datasets)
                ]
            elif task.role == "sink":
                lineage = self._pipeline_lineage(task, graph) if graph else None
                source_schema = schemas.get(task.inputs[0]) if task.inputs else None
                outputs += [
                    self._dataset(d, source_schema if graph else None, lineage)
                    for d in list(task.datasets)
                ]
        return inputs, outputs

    # -- delivery

    def send(self, event: Mapping[str, Any]) -> None:
        text = json.dumps(event, sort_keys=True)
        with self._lock:
            if self.sink.file is not None:
                try:
                    self.sink.file.parent.mkdir(parents=True, exist_ok=True)
                    with self.sink.file.open("a", encoding="utf-8") as handle:
                        handle.write(text + "\n")
                except OSError as exc:
                    logger.warning("openlineage: cannot write {}: {}", self.sink.file, exc)
            if self.sink.url is not None and not self._endpoint_down:
                self._post(text)

    def _post(self, text: str) -> None:
        import httpx

        from engine.core.secrets import redact

        headers = {"Content-Type": "application/json"}
        if self.sink.api_key:
            headers["Authorization"] = f"Bearer {self.sink.api_key}"
        problem = ""
        for attempt in range(3):
            try:
                response = httpx.post(
                    self.sink.url or "", content=text, headers=headers, timeout=self.sink.timeout_s
                )
                if response.status_code < 300:
                    return
                problem = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code not in (408, 429):
                    break  # the endpoint refuses the event itself: another attempt would too
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2 * 2**attempt)
        self._endpoint_down = True
        logger.warning(
            "openlineage: event not delivered to {} ({}); no more events go there in this run",
            self.sink.url,
            redact(problem),
        )

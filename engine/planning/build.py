"""The plan: what one run will do, decided before anything runs.

`build_plan` is a pure function of the definition, the run's parameters, the selection, the
catalog's read side and the files the definition names (code, schemas, input files by size and
time, for fingerprints). It renders every template, derives every dependency, orders the tasks and
decides, for a selection, which upstream outputs are reused from an earlier run. `arrowline plan`
prints the same `Plan` that `arrowline run` executes, so the two cannot disagree.

Cache: a task whose cache is on stands on an earlier output made from the same definition,
parameters, code, input and upstream contents (engine.planning.cache); every planned task says
why it runs, or which run's output it reuses. `force` runs every task.

Selection: `--select enriched` runs `enriched` and whatever upstream it needs; an upstream task
with an earlier output of the cache key it has now is reused instead of run, whatever its cache
setting. `enriched+` also runs everything downstream of `enriched`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from loguru import logger

from engine.core.errors import (
    DefinitionError,
    ParameterError,
    PipelineInvalid,
    SelectionError,
    error_context,
)
from engine.core.graph import Graph, find_cycles
from engine.core.runids import check_run_id
from engine.core.s3 import ObjectStoreLocation, trust, workspace_connection
from engine.core.secrets import mask_secrets, mask_text
from engine.planning.cache import CacheDecision, cache_enabled, decide, observe_inputs
from engine.planning.fingerprint import pipeline_fingerprint, task_fingerprints
from engine.planning.select import excluded_tasks, select_tasks, selectable
from engine.spec.definition import Definition
from engine.spec.model import (
    BreakerPolicy,
    CacheKey,
    ExecutorSpec,
    OpenLineageSpec,
    PipelineSpec,
    RetentionSpec,
    RetryPolicy,
    TaskKind,
    TaskSpec,
)
from engine.spec.params import RenderContext, new_run_id, resolve_params
from engine.spec.resolve import macro_texts
from engine.spec.settings import effective_workspace, use_workspace_connection
from engine.spec.targets import TARGET_PARAM
from engine.state.catalog import CatalogReader
from engine.tasks import kind_of
from engine.tasks.checks import check_tables
from engine.tasks.resolve import ResolvedTask, resolve_task

__all__ = ["Action", "Plan", "PlannedTask", "build_plan", "kept_outputs"]

Action = Literal["run", "reuse"]


@dataclass(frozen=True)
class PlannedTask:
    id: str
    kind: TaskKind
    spec: TaskSpec
    """The task with its templates rendered for this run."""
    inputs: tuple[str, ...]
    upstream: tuple[str, ...]
    level: int
    action: Action
    reuse_run: str | None
    retry: RetryPolicy
    timeout: timedelta | None
    fingerprint: str
    sql: str | None = None
    watermark_sinks: tuple[tuple[str, Any], ...] = ()
    """For an incremental extract: every load downstream of it (id, config), each of which
    keeps the watermark of the rows it committed."""
    commits_watermarks: tuple[str, ...] = ()
    """For a load: the incremental extracts upstream, whose new watermarks it commits."""
    cache: CacheDecision | None = None
    """Why it runs, or whose output stands for it (engine.planning.cache)."""
    defined_at: str | None = None
    """`file:line` of the task in the pipeline file (None for a pipeline built in Python),
    which run-time errors name as validation errors do."""
    adds_to: str | None = None
    """For an incremental sql task: the run whose output it adds to (`{{ this }}`); None on
    its first run and with --full-refresh, when it makes the whole table."""

    @property
    def at(self) -> str:
        """ " at file:line" where the task is defined, or nothing, for messages."""
        return f" at {self.defined_at}" if self.defined_at else ""

    @property
    def connection(self) -> str | None:
        """The named connection the task's extract or load uses, if any."""
        return self.spec.connection

    @property
    def incremental(self) -> bool:
        return self.spec.incremental is not None

    @property
    def produces_table(self) -> bool:
        return kind_of(self.spec).produces_table

    def describe_output(self) -> str:
        return kind_of(self.spec).describe_output(self.spec)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind.value,
            "level": self.level,
            "action": self.action,
            "reuse_run": self.reuse_run,
            "inputs": list(self.inputs),
            "upstream": list(self.upstream),
            "output": self.describe_output(),
            "retry": self.retry.model_dump(mode="json"),
            "timeout_s": self.timeout.total_seconds() if self.timeout else None,
            "fingerprint": self.fingerprint,
            "sql": mask_text(self.sql) if self.sql is not None else None,
            "incremental": self.incremental,
            "watermark_sinks": [sink for sink, _ in self.watermark_sinks],
            "commits_watermarks": list(self.commits_watermarks),
            "defined_at": self.defined_at,
            "adds_to": self.adds_to,
            **(self.cache.to_dict() if self.cache is not None else {}),
        }


@dataclass(frozen=True)
class Plan:
    pipeline: str
    pipeline_version: str
    pipeline_file: str | None
    base_dir: Path
    run_id: str
    logical_date: datetime
    params: Mapping[str, Any]
    tasks: tuple[PlannedTask, ...]
    """In dependency order (declaration order among tasks that are ready together)."""
    selected: tuple[str, ...] | None = None
    full_refresh: bool = False
    """Incremental extracts read everything, ignoring their watermarks."""
    connections: Mapping[str, Any] = field(default_factory=dict)
    """Specs (secrets unresolved) of the connections the pipeline's tasks and its workspace
    use."""
    definition: str | None = None
    """The definition as YAML, stored with the run so a later `--resume` can show a diff."""
    resumed: bool = False
    """This plan continues an ended run under its run id (see engine.planning.resume)."""
    circuit_breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    pools: Mapping[str, int] = field(default_factory=dict)
    """Resource pool -> its slots (engine.execution.pools)."""
    openlineage: OpenLineageSpec | None = None
    retention: RetentionSpec = field(default_factory=RetentionSpec)
    """What the workspace keeps once the run ends (engine.state.retention)."""
    workspace: str | None = None
    """The pipeline's `workspace:` setting (engine.state.layout)."""
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)
    """Where its attempts run (engine.execution.remote for Ray)."""
    force: bool = False
    """Every task runs, whatever the cache holds."""

    @functools.cached_property
    def _by_id(self) -> dict[str, PlannedTask]:
        # derived, so dataclasses.replace(plan, tasks=...) gets a fresh one
        return {task.id: task for task in self.tasks}

    def task(self, task_id: str) -> PlannedTask:
        return self._by_id[task_id]

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._by_id

    @property
    def to_run(self) -> tuple[PlannedTask, ...]:
        return tuple(task for task in self.tasks if task.action == "run")

    def shown_params(self) -> dict[str, Any]:
        """The parameters as they may be printed: secret ones masked, arrowline's own (a
        project's chosen target, said as `--target`) left out."""
        shown: dict[str, Any] = mask_secrets(
            {
                k: v if isinstance(v, str | int | float | bool | None) else str(v)
                for k, v in self.params.items()
                if k != TARGET_PARAM
            }
        )
        return shown

    def __repr__(self) -> str:
        return (
            f"<Plan {self.pipeline} {self.run_id}: {len(self.to_run)} of {len(self.tasks)} "
            "tasks to run>"
        )

    def _repr_html_(self) -> str:
        """What a notebook shows: the task graph and why each task runs (planning.display)."""
        from engine.planning.display import plan_html

        return plan_html(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "pipeline_version": self.pipeline_version,
            "run_id": self.run_id,
            "logical_date": self.logical_date.isoformat(),
            "params": self.shown_params(),
            "selected": list(self.selected) if self.selected is not None else None,
            "full_refresh": self.full_refresh,
            "force": self.force,
            "resumed": self.resumed,
            "tasks": [task.to_dict() for task in self.tasks],
        }


def kept_outputs(
    spec: PipelineSpec,
    catalog: CatalogReader | None,
    params: Mapping[str, Any],
    *,
    before: str | None = None,
) -> dict[str, str]:
    """The run whose output each incremental sql task adds to (`{{ this }}`): its newest
    success made for the same target (a SQL project's `target` parameter: dev's rows are not
    prod's), other than run `before` (a resumed run's own). None when that output left the
    workspace: the task then makes the whole table, as on its first run."""
    if catalog is None:
        return {}
    found = {}
    for task in spec.tasks:
        if task.sql is None or task.sql.incremental is None:
            continue
        for row, recorded in catalog.kept_outputs(spec.name, task.id):
            made_for = json.loads(recorded).get(TARGET_PARAM) if recorded else None
            if row.run_id == before or made_for != params.get(TARGET_PARAM):
                continue
            if row.output_on_disk:
                found[task.id] = row.output_run
            else:  # retention took it (another target's output was newer): said, not silent
                logger.warning(
                    "{}: the output it adds to (run {}) is no longer in the workspace "
                    "(retention removed it): it makes its whole table again, as on a first run",
                    task.id,
                    row.output_run,
                )
            break
    return found


def _defined_at(definition: Definition, task_id: str) -> str | None:
    file, line = definition.task_location(task_id)
    return f"{file}:{line}" if file and line else None


def build_plan(
    definition: Definition,
    *,
    params: Mapping[str, Any] | None = None,
    select: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    catalog: CatalogReader | None = None,
    run_id: str | None = None,
    logical_date: datetime | None = None,
    environ: Mapping[str, str] | None = None,
    full_refresh: bool = False,
    force: bool = False,
    kept: Mapping[str, str] | None = None,
) -> Plan:
    """Plan one run. Raises DefinitionError (PipelineInvalid when the run's parameters name a
    table no task produces), ParameterError or SelectionError. `kept`: the runs whose outputs
    incremental sql tasks add to (default: `kept_outputs` of `catalog`)."""
    spec = definition.spec
    use_workspace_connection(spec.workspace, spec.connections, definition.base_dir)
    if spec.workspace is not None:  # its outputs are read at its store while planning
        trust(ObjectStoreLocation.parse(spec.workspace))
    resolved_params = resolve_params(spec.parameters, params, environ)
    run_id = run_id or new_run_id()
    try:
        check_run_id(run_id)
    except ValueError as exc:
        raise ParameterError(str(exc)) from None
    when = (logical_date or datetime.now(UTC)).astimezone(UTC)
    if kept is None:
        kept = kept_outputs(spec, catalog, resolved_params) if not full_refresh else {}
    adds_to = dict(kept)
    context = RenderContext(
        spec.name, resolved_params, run_id, when, macro_texts(definition), frozenset(adds_to)
    )

    resolved = {}
    for task in spec.tasks:
        with error_context(pipeline=spec.name, task_id=task.id):
            resolved[task.id] = resolve_task(task, context, definition)
    # A parameter can name a table no task produces; say so before anything runs.
    problems = check_tables(definition, resolved.values(), resolved_params)
    if problems:
        raise PipelineInvalid(problems)
    upstream = {
        task_id: tuple(d for d in r.upstream if d in resolved) for task_id, r in resolved.items()
    }
    cycles = find_cycles(upstream)
    if cycles:
        raise DefinitionError(f"dependency cycle: {' -> '.join(cycles[0])}")
    graph = Graph(upstream)
    levels = graph.levels()
    order = graph.topological()
    enabled = {task.id: cache_enabled(spec, task) and not force for task in spec.tasks}
    observed = observe_inputs(definition, resolved, catalog, enabled)
    fingerprints = task_fingerprints(definition, resolved, resolved_params, order, observed)
    selectables = selectable(definition, order, fingerprints, catalog)
    chosen = select_tasks(select, exclude, graph, selectables, definition.base_dir)
    if chosen is not None:  # a task chosen brings the tasks that are part of it
        chosen |= {t.id for t in spec.tasks if t.part_of in chosen}
    decisions = decide(
        spec,
        order,
        upstream,
        fingerprints,
        catalog,
        observable={task_id: _observable(resolved[task_id], definition) for task_id in order},
        force=force,
        chosen=chosen,
    )
    actions: dict[str, tuple[Action, str | None]] = {
        task_id: ("reuse", d.reuse_run) if d.reuse_run else ("run", None)
        for task_id, d in decisions.items()
    }
    if chosen is not None:
        # the selection and the upstream its running tasks read; a reused output ends a branch
        needed: set[str] = set()
        frontier = list(chosen)
        while frontier:
            task_id = frontier.pop()
            if task_id not in needed:
                needed.add(task_id)
                if actions[task_id][0] == "run":
                    frontier.extend(graph.upstream[task_id])
        actions = {task_id: action for task_id, action in actions.items() if task_id in needed}
        if exclude:  # an excluded task runs for nobody: one the selection needs must be reused
            left_out = excluded_tasks(exclude, graph, selectables, definition.base_dir)
            for task_id in [
                t for t in order if t in left_out and actions.get(t, ("",))[0] == "run"
            ]:
                readers = sorted(t for t in graph.downstream[task_id] if t in needed)
                raise SelectionError(
                    f"--exclude leaves out {task_id!r}, which {', '.join(readers)} "
                    f"{'reads' if len(readers) == 1 else 'read'}, and it has no output to reuse "
                    f"({decisions[task_id].reason})",
                    hint="run it first, or leave it out of --exclude; `arrowline plan` says "
                    "why it cannot be reused",
                )

    incremental = {t.id for t in spec.tasks if t.incremental is not None}
    # the tasks that write outside and can commit an extract's watermark beside their rows
    loads = [t.id for t in spec.tasks if not kind_of(t).produces_table]
    downstream = {task_id: graph.descendants([task_id]) for task_id in incremental}
    sinks_of = {
        task_id: tuple((load, resolved[load].spec.load) for load in loads if load in below)
        for task_id, below in downstream.items()
    }
    commits = {
        load: tuple(e for e in graph.order if e in downstream and load in downstream[e])
        for load in loads
    }
    planned = []
    for task_id in graph.topological():
        if task_id not in actions:
            continue
        rendered = resolved[task_id]
        action, reuse_run = actions[task_id]
        planned.append(
            PlannedTask(
                id=task_id,
                kind=rendered.spec.kind,
                spec=rendered.spec,
                inputs=rendered.inputs,
                upstream=upstream[task_id],
                level=levels[task_id],
                action=action,
                reuse_run=reuse_run,
                retry=rendered.spec.retry or spec.defaults.retry,
                timeout=rendered.spec.timeout or spec.defaults.timeout,
                fingerprint=fingerprints[task_id].value,
                sql=rendered.sql,
                watermark_sinks=sinks_of.get(task_id, ()),
                commits_watermarks=commits.get(task_id, ()),
                cache=decisions[task_id],
                defined_at=_defined_at(definition, task_id),
                adds_to=adds_to.get(task_id),
            )
        )
    return Plan(
        pipeline=spec.name,
        pipeline_version=pipeline_fingerprint(spec),
        pipeline_file=definition.file,
        base_dir=definition.base_dir,
        run_id=run_id,
        logical_date=when,
        params=resolved_params,
        tasks=tuple(planned),
        selected=tuple(sorted(chosen)) if chosen is not None else None,
        full_refresh=full_refresh,
        force=force,
        definition=spec.document(),
        circuit_breaker=spec.circuit_breaker,
        pools=dict(spec.pools),
        openlineage=spec.openlineage,
        retention=spec.retention,
        workspace=spec.workspace,
        executor=spec.executor,
        connections={
            name: spec.connections[name]
            for name in sorted(
                {r.spec.connection or "" for r in resolved.values()}
                | {workspace_connection(effective_workspace(spec.workspace)) or ""}
            )
            if name in spec.connections
        },
    )


def _observable(task: ResolvedTask, definition: Definition) -> bool:
    """Whether what the task reads can be told without reading it: a transform's inputs are
    upstream outputs; a source says (files by size and time), or its cache key query does."""
    owner, source = task.spec.connector, task.spec.extract
    if owner is None or source is None or isinstance(task.spec.cache, CacheKey):
        return True
    return owner.observe(source, definition.base_dir) is not None

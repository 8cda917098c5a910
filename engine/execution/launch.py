"""One run of a plan in a project, the way every caller starts one: the CLI, notebooks, the
scheduler and backfills.

    with the pipeline's run lock:                  (engine.state.locks; one run at a time)
        settle the runs a dead process left RUNNING (engine.planning.resume)
        resolve the plan's connections, execute it  (engine.execution.executor)
        apply the pipeline's retention               (engine.state.retention)

How a run is carried out, apart from what it runs, is one value, `RunOptions`: parallelism,
settings, the task runner, listeners, and what to do when the pipeline is running already.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine.execution.executor import ExecutionSettings, Executor, RunEvent, RunResult
from engine.execution.recovery import recover_interrupted
from engine.planning.build import Plan
from engine.planning.resume import find_run_to_resume, plan_resume
from engine.spec.definition import Definition
from engine.spec.model import ExecutorSpec, RetryPolicy
from engine.spec.settings import use_workspace_connection
from engine.state.catalog import Catalog, CatalogReader
from engine.state.layout import ProjectLayout
from engine.state.locks import IfRunning, RunLock
from engine.tasks import TaskRunner, run_task

if TYPE_CHECKING:
    from engine.state.retention import Collection
    from engine.state.workspace import Workspace

__all__ = ["IfRunning", "RunOptions", "collect_outputs", "execute", "replay", "resume"]


@dataclass(frozen=True)
class RunOptions:
    """How a run is carried out. Every field has the default a script wants."""

    max_parallel: int | None = None
    """Tasks at once (default: the settings', which default to the CPUs, at least 2)."""
    settings: ExecutionSettings | None = None
    runner: TaskRunner = run_task
    """Runs one task; tests swap in fakes."""
    listener: Callable[[RunEvent], None] | None = None
    """Hears every task event (the CLI's live progress)."""
    on_executor: Callable[[Executor], None] | None = None
    """Handed the executor before it starts, to cancel it from a signal handler."""
    if_running: IfRunning = "refuse"
    """When another run of the pipeline holds its lock: refuse (ConcurrentRun), wait, or share
    it (the scheduler's `overlap: allow`)."""
    wait_timeout: float | None = None
    """With `if_running="wait"`: give up after this many seconds."""
    on_wait: Callable[[dict[str, Any]], None] | None = None
    """Called once with the holder (run id, pid, host) when this run starts waiting."""
    executor: ExecutorSpec | None = None
    """Where attempts run, over the pipeline's `executor:` (`arrowline run --executor`)."""

    def execution_settings(self, layout: ProjectLayout) -> ExecutionSettings:
        """The settings with `max_parallel` applied, DuckDB spilling under the project."""
        settings = self.settings or ExecutionSettings()
        if self.max_parallel is not None:
            settings = replace(settings, max_parallel=self.max_parallel)
        if settings.duckdb.temp_directory is None:
            temp = layout.temp_dir
            settings = replace(settings, duckdb=replace(settings.duckdb, temp_directory=temp))
        return settings


_DEFAULT = RunOptions()


@contextmanager
def _locked(
    layout: ProjectLayout, pipeline: str, run_id: str, options: RunOptions
) -> Iterator[Catalog]:
    """Hold the pipeline's run lock, settle the runs a dead process left RUNNING, and yield
    the catalog."""
    lock = RunLock(
        layout.state_dir,
        pipeline,
        run_id,
        if_running=options.if_running,
        wait_timeout=options.wait_timeout,
        on_wait=options.on_wait,
        catalog=layout.catalog,
    )
    with lock:
        catalog = Catalog(layout.catalog)
        try:
            if not lock.shared:  # a sharer cannot tell a dead run from another live sharer
                recover_interrupted(catalog, layout.workspace(), pipeline)
            yield catalog
        finally:
            catalog.close()


def _execute_locked(
    the_plan: Plan, layout: ProjectLayout, catalog: Catalog, options: RunOptions
) -> RunResult:
    """Run the plan, then apply the pipeline's retention while the run lock is still held. A
    run that shares the lock (`overlap: allow`) leaves that to the next run holding it alone:
    another run of the pipeline may be planning its reuse at that very moment."""
    from engine.execution.connections import resolve_plan_connections
    from engine.execution.runlog import run_log

    workspace = layout.workspace()
    _views_need_local_files(the_plan, workspace)
    _reused_from_here(the_plan, catalog, workspace)
    settings, runner = options.execution_settings(layout), options.runner
    where = options.executor or the_plan.executor
    if where.kind == "ray":
        from engine.execution.remote import RayRunner, refuse_streams

        refuse_streams(the_plan)
        settings = replace(settings, pipelined=False)  # a stream cannot cross hosts
        runner = RayRunner(the_plan, workspace, where.address)
    executor = Executor(
        the_plan,
        layout.project_dir,
        catalog=catalog,
        settings=settings,
        runner=runner,
        listener=options.listener,
        connections=resolve_plan_connections(the_plan),
        workspace=workspace,
    )
    if options.on_executor is not None:
        options.on_executor(executor)
    with run_log(layout.logs_dir, the_plan.pipeline, the_plan.run_id):
        try:
            result = executor.run()
        finally:
            if (close := getattr(runner, "close", None)) is not None:
                close()
    if options.if_running != "share":
        _apply_retention(the_plan, layout, catalog)
    return result


def _views_need_local_files(the_plan: Plan, workspace: Workspace) -> None:
    """A DuckDB view over the workspace's files cannot point into an object store (validation
    says so for a pipeline's own `workspace:`; this for $ARROWLINE_WORKSPACE)."""
    from engine.core.errors import DefinitionError
    from engine.state.workspace import LocalWorkspace
    from engine.tasks.output_checks import view_reads_files

    if isinstance(workspace, LocalWorkspace):
        return
    for task in the_plan.to_run:
        if view_reads_files(task.spec):
            raise DefinitionError(
                f"task {task.id!r}{task.at}: materialize: view makes its target read the "
                f"workspace's files by their path, and the workspace is {workspace.describe()}",
                hint="load a table (remove materialize: view), or keep the workspace local",
            )


def _reused_from_here(the_plan: Plan, catalog: Catalog, workspace: Workspace) -> None:
    """An output a run reuses (a resume's, a selection's upstream) must be in the workspace
    the run publishes to: it is read from there."""
    from engine.core.errors import StateError

    for task in the_plan.tasks:
        if task.action != "reuse" or task.reuse_run is None:
            continue
        row = catalog.task_run(task.reuse_run, task.id)
        if row is not None and row.output_path and not workspace.holds(row.output_path):
            raise StateError(
                f"task {task.id!r} would reuse its output of run {task.reuse_run}, which is in "
                f"another workspace ({row.output_path}) than this run's ({workspace.describe()})",
                hint="run the pipeline whole (without --resume or --select), or set the "
                "workspace it was run with again",
            )


def _apply_retention(the_plan: Plan, layout: ProjectLayout, catalog: Catalog) -> None:
    """Remove the outputs of earlier runs that the pipeline's retention no longer keeps. The
    run has ended: a failure here is logged, never turned into a failed run."""
    from loguru import logger

    from engine.state.retention import collect, format_bytes, plan_collection

    log = logger.bind(pipeline=the_plan.pipeline, run_id=the_plan.run_id)
    keep = the_plan.retention.keep_runs
    try:
        collection = plan_collection(catalog, layout.workspace(), the_plan.pipeline, keep)
        collect(catalog, collection)
    except Exception as exc:  # a catalog or file system problem: the next run tries again
        log.warning("retention: outputs of earlier runs not removed: {}", exc)
        return
    if collection.removals:
        log.info(
            "retention: removed {} outputs of earlier runs ({}), keeping the last {} runs",
            len(collection.removals),
            format_bytes(collection.bytes),
            keep,
        )


def collect_outputs(
    layout: ProjectLayout, catalog: CatalogReader, pipeline: str, keep_runs: int, *, dry_run: bool
) -> Collection:
    """Remove (or, `dry_run`, only decide) the outputs of `pipeline` that its retention no
    longer keeps, as a run does when it ends (`arrowline gc`). Decided and removed under the
    pipeline's run lock, so no run of it starts meanwhile; ConcurrentRun when one is going (it
    applies retention when it ends)."""
    from engine.state.retention import collect, plan_collection

    workspace = layout.workspace()
    if dry_run:
        return plan_collection(catalog, workspace, pipeline, keep_runs)
    assert isinstance(catalog, Catalog), "removing outputs needs the catalog opened for writing"
    with RunLock(layout.state_dir, pipeline, "gc", if_running="refuse", catalog=layout.catalog):
        collection = plan_collection(catalog, workspace, pipeline, keep_runs)
        collect(catalog, collection)
        workspace.prune_copies(pipeline)  # this host's copies of what another host removed
    return collection


def _with_workspace(layout: ProjectLayout, definition: Definition) -> ProjectLayout:
    """The layout with the pipeline's workspace, the connection it is read with resolved."""
    spec = definition.spec
    use_workspace_connection(spec.workspace, spec.connections, definition.base_dir)
    return layout.with_workspace(spec.workspace)


def execute(the_plan: Plan, layout: ProjectLayout, options: RunOptions | None = None) -> RunResult:
    """Run exactly `the_plan`; returns the result, it does not raise on failure."""
    options = options or _DEFAULT
    layout = layout.with_workspace(the_plan.workspace)
    with _locked(layout, the_plan.pipeline, the_plan.run_id, options) as catalog:
        return _execute_locked(the_plan, layout, catalog, options)


def resume(
    definition: Definition,
    layout: ProjectLayout,
    run_id: str = "last",
    *,
    force: bool = False,
    retry: RetryPolicy | None = None,
    options: RunOptions | None = None,
    on_plan: Callable[[Plan], None] | None = None,
) -> RunResult:
    """Continue a run that did not succeed (`run_id`, a prefix, or 'last'): tasks that
    succeeded in it are reused, the others run again, under the same run id. Raises
    ResumeRefused (with a diff) when the pipeline changed since, unless `force`. `retry`
    replaces the retry policy of the tasks that run again; `on_plan` is handed the plan."""
    options = options or _DEFAULT
    name = definition.spec.name
    layout = _with_workspace(layout, definition)
    # The lock names the run it is held for, so a run refused meanwhile can say which: "last"
    # is resolved first (with no runs at all, find_run_to_resume says so under the lock).
    with CatalogReader(layout.catalog) as reader:
        if run_id == "last":
            last = reader.last_run(name)
            target = last.run_id if last is not None else "last"
        else:
            target = reader.run(run_id).run_id
    with _locked(layout, name, target, options) as catalog:
        previous = find_run_to_resume(catalog, name, target)
        the_plan = plan_resume(definition, catalog, previous, force=force)
        if retry is not None:
            the_plan = replace(
                the_plan,
                tasks=tuple(
                    replace(t, retry=retry) if t.action == "run" else t for t in the_plan.tasks
                ),
            )
        if on_plan is not None:
            on_plan(the_plan)
        return _execute_locked(the_plan, layout, catalog, options)


def replay(
    definition: Definition,
    layout: ProjectLayout,
    task_id: str,
    *,
    from_run: str | None = None,
    downstream: Sequence[str] = (),
    options: RunOptions | None = None,
) -> tuple[RunResult, int]:
    """Run the rows a validate task quarantined (in `from_run`, else its latest run) through it
    again, and through the `downstream` tasks named; returns the run and the rows replayed."""
    from engine.planning.replay import plan_replay
    from engine.spec.params import new_run_id

    options = options or _DEFAULT
    run_id = new_run_id()
    layout = _with_workspace(layout, definition)
    with _locked(layout, definition.spec.name, run_id, options) as catalog:
        the_plan, source = plan_replay(
            definition,
            catalog,
            task_id,
            from_run=from_run,
            downstream=downstream,
            workspace=layout.workspace(),
            run_id=run_id,
        )
        return _execute_locked(the_plan, layout, catalog, options), source.rows

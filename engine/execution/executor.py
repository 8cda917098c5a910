"""The executor: runs a `Plan`, starting each task as soon as its own upstream tasks succeeded.

One dispatcher (the calling thread) owns all state: it moves tasks through the state machine,
writes every transition to the catalog, starts attempts on worker threads (at most
`max_parallel` at a time), and reacts to their results as they arrive. There is no barrier
between levels: in a diamond, the right branch does not wait for the left.

A failed task's downstream tasks are SKIPPED; independent branches go on; the run fails. A
transient error is retried after an exponential, jittered delay while attempts remain. A task
past its `timeout` is asked to stop (DuckDB queries are interrupted, streaming loops stop at the
next batch); one that does not stop within `cancel_grace` is abandoned: its thread is left to
finish alone and its output is never published. Ctrl-C cancels the same way.

Workers are daemon threads rather than a ThreadPoolExecutor, so an abandoned attempt can never
keep the process alive at exit.
"""

from __future__ import annotations

import heapq
import json
import os
import queue
import random
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from loguru import logger

from engine.core.cancel import CancelToken
from engine.core.errors import (
    ArrowlineError,
    Cancelled,
    DataError,
    RunFailed,
    TaskTimeout,
    classify,
    disk_full,
)
from engine.core.faults import fault_point
from engine.core.secrets import redact, register_secrets_in
from engine.core.states import RunState, TaskState
from engine.core.tables import InputTable
from engine.core.watermark import Watermark
from engine.execution.breaker import CircuitBreaker, CircuitOpen
from engine.execution.retry import backoff_delay
from engine.execution.watermarks import WatermarkBroker
from engine.planning.build import Plan, PlannedTask
from engine.state.catalog import Catalog, now_text
from engine.state.workspace import Workspace
from engine.tasks import TaskContext, TaskOutcome, TaskRunner, run_task
from engine.tasks.base import schema_json
from transforms.sql import DuckDBSettings

if TYPE_CHECKING:
    from lineage.graph import LineageGraph
    from lineage.openlineage import OpenLineageEmitter

__all__ = ["ExecutionSettings", "Executor", "RunEvent", "RunResult", "TaskResult"]


@dataclass(frozen=True)
class ExecutionSettings:
    max_parallel: int = max(2, os.cpu_count() or 2)
    cancel_grace: float = 10.0
    """Seconds a task gets to stop after a timeout or cancel before its attempt is abandoned."""
    heartbeat_interval: float = 5.0
    duckdb: DuckDBSettings = field(default_factory=DuckDBSettings)


@dataclass
class TaskResult:
    task_id: str
    state: TaskState
    attempts: int = 0
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    duration_s: float = 0.0
    error: str | None = None
    error_kind: str | None = None
    output: InputTable | None = None
    target: str | None = None
    reused_from: str | None = None


@dataclass
class RunResult:
    run_id: str
    pipeline: str
    state: RunState
    tasks: dict[str, TaskResult]
    duration_s: float
    project_dir: Path
    plan: Plan

    @property
    def ok(self) -> bool:
        return self.state is RunState.SUCCESS

    @property
    def failed(self) -> list[TaskResult]:
        return [t for t in self.tasks.values() if t.state is TaskState.FAILED]

    def raise_for_status(self) -> RunResult:
        """Raise RunFailed, naming the failed tasks and their errors, when the run did not
        succeed; return the result when it did, so a script can write
        `result = pipeline.run().raise_for_status()` and not go on after a failure unawares."""
        if self.ok:
            return self
        error = RunFailed(
            f"run {self.run_id} of pipeline {self.pipeline!r} {self.state.value}: "
            f"{self._outcome()}",
            hint=f"`arrowline runs {self.run_id}` shows every task and attempt",
            failed=tuple(t.task_id for t in self.failed),
        )
        error.pipeline, error.run_id = self.pipeline, self.run_id
        raise error

    def _outcome(self) -> str:
        """The failed tasks with their errors' first lines, then the skipped ones."""
        parts = [
            f"task {t.task_id!r} failed ({t.error_kind}): {(t.error or '').splitlines()[0]}"
            if t.error
            else f"task {t.task_id!r} failed"
            for t in self.failed
        ]
        skipped = [t.task_id for t in self.tasks.values() if t.state is TaskState.SKIPPED]
        if skipped:
            parts.append(f"skipped: {', '.join(skipped)}")
        return "; ".join(parts) or "no task failed"

    def __repr__(self) -> str:
        if self.ok:
            return (
                f"<RunResult {self.pipeline} {self.run_id} SUCCESS in {self.duration_s:.2f}s, "
                f"{len(self.tasks)} tasks>"
            )
        return f"<RunResult {self.pipeline} {self.run_id} {self.state.value}: {self._outcome()}>"


@dataclass(frozen=True)
class RunEvent:
    """What a listener (progress display, tests) hears: a task changed state."""

    task_id: str | None
    state: str
    attempt: int = 0
    error: str | None = None


_WAKE = object()
"""Put on the results queue to wake the dispatcher without a result."""


@dataclass
class _Attempt:
    task: PlannedTask
    number: int
    cancel: CancelToken
    staging: Path
    started: float
    deadline: float | None
    stop_requested_at: float | None = None
    rows: int = 0
    started_wall: str = field(default_factory=now_text)


def _describe(exc: BaseException) -> str:
    """The error as stored and shown: secrets masked, a short traceback for unexpected ones."""
    if isinstance(exc, ArrowlineError):
        return redact(str(exc))
    text = f"{type(exc).__name__}: {exc}"
    frames = traceback.format_tb(exc.__traceback__)[-3:]
    return redact(text + ("\n" + "".join(frames).rstrip() if frames else ""))


class Executor:
    """Runs one plan. Create one per run."""

    def __init__(
        self,
        plan: Plan,
        project_dir: Path,
        *,
        catalog: Catalog,
        settings: ExecutionSettings | None = None,
        runner: TaskRunner = run_task,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        listener: Callable[[RunEvent], None] | None = None,
        connections: Mapping[str, Any] | None = None,
    ) -> None:
        self.plan = plan
        self.project_dir = project_dir
        self.catalog = catalog
        self.settings = settings or ExecutionSettings()
        self.runner = runner
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.listener = listener
        self.workspace = Workspace.for_project(project_dir)
        self.connections = dict(connections or {})
        self.captured_lineage: dict[str, Any] = {}
        """Column lineage runners read from what they ran (frame UDFs' plans)."""
        self.watermarks = WatermarkBroker(plan, catalog, self.connections)
        self.log = logger.bind(pipeline=plan.pipeline, run_id=plan.run_id)

        self.states: dict[str, TaskState] = {}
        self.results: dict[str, TaskResult] = {}
        self.outputs: dict[str, InputTable] = {}
        self.waiting_on: dict[str, int] = {}
        self.downstream: dict[str, list[str]] = {task.id: [] for task in plan.tasks}
        self.ready: deque[str] = deque()
        self.retries: list[tuple[float, int, str]] = []
        self.breaker_waits: list[tuple[float, int, str]] = []
        """QUEUED tasks their connection's open breaker holds back: (look again at, seq, task)."""
        self.running: dict[str, _Attempt] = {}
        self.finished: queue.SimpleQueue[Any] = queue.SimpleQueue()
        """(attempt, outcome or exception) from workers, or _WAKE from cancel()."""
        self.cancelling: BaseException | None = None
        policy = plan.circuit_breaker
        self.breakers = {
            name: CircuitBreaker(
                name,
                failures=policy.failures,
                cooldown=policy.cooldown.total_seconds(),
                clock=clock,
            )
            for name in {t.connection for t in plan.to_run if t.connection}
        }
        self.attempt_log: dict[str, list[dict[str, Any]]] = {}
        """Every failed attempt of each task, for its dead letter."""
        self._sequence = 0
        self._cancel_requested = threading.Event()

    # -- public ---------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Ask the run to stop (thread-safe, and safe from a signal handler); running tasks are
        cancelled cooperatively. The dispatcher wakes at once."""
        self._cancel_requested.set()
        self.finished.put(_WAKE)

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested.is_set()

    def progress(self) -> dict[str, int]:
        """Rows so far of the running tasks (read from any thread)."""
        return {task_id: attempt.rows for task_id, attempt in list(self.running.items())}

    def run(self) -> RunResult:
        started = self.clock()
        started_wall = now_text()
        self._create()
        self.catalog.transition_run(self.plan.run_id, RunState.RUNNING, "started")
        self.log.info("run started: {} tasks to run", len(self.plan.to_run))
        emitter = self._openlineage()
        if emitter is not None:
            emitter.start()
        try:
            self._dispatch()
        except BaseException as exc:  # a bug or a catalog failure: record it, then re-raise
            self._abort(exc)
            raise
        state = self._final_state()
        graph = self._record_lineage()
        error = None
        if state is RunState.FAILED:
            error = "failed: " + ", ".join(
                t for t, s in self.states.items() if s is TaskState.FAILED
            )
        self.catalog.transition_run(self.plan.run_id, state, "finished", error)
        if emitter is not None:
            self._openlineage_finish(emitter, state, error, graph)
        if self.plan.resumed:
            self.catalog.settle_dead_letters(
                self.plan.run_id, [t.id for t in self.plan.to_run], state.value, started_wall
            )
        duration = self.clock() - started
        self.log.info("run finished: {} in {:.2f}s", state.value, duration)
        return RunResult(
            self.plan.run_id,
            self.plan.pipeline,
            state,
            self.results,
            duration,
            self.project_dir,
            self.plan,
        )

    @property
    def output_schemas(self) -> dict[str, pa.Schema]:
        """task -> the schema of the output it wrote or reused in this run."""
        return {task_id: table.schema for task_id, table in self.outputs.items()}

    def _record_lineage(self) -> LineageGraph | None:
        """Compose the run's column lineage over the schemas its tasks wrote (or reused) and
        keep it with the run. Lineage is a record, not a result: a failure is logged."""
        if not self.outputs:
            return None
        from engine.tasks.lineage import pipeline_lineage

        try:
            graph = pipeline_lineage(
                self.plan.tasks,
                self.output_schemas,
                self.plan.base_dir,
                captured=self.captured_lineage,
                call_udfs=False,
            )
            self.catalog.record_lineage(self.plan.run_id, graph.to_dict())
        except Exception as exc:  # never fail a finished run over its record
            self.log.warning("column lineage of the run not recorded: {}", exc)
            return None
        return graph

    def _openlineage(self) -> OpenLineageEmitter | None:
        """The run's OpenLineage emitter, when the pipeline or the environment asks for one."""
        from lineage.openlineage import OpenLineageEmitter, Sink

        try:
            sink = Sink.for_plan(self.plan)
        except ArrowlineError as exc:  # e.g. the api key's variable is not set: say, go on
            self.log.warning("openlineage events are off for this run: {}", exc.message)
            return None
        if sink is None:
            return None
        return OpenLineageEmitter(self.plan, sink, self.workspace.root, self.connections)

    def _openlineage_finish(
        self,
        emitter: OpenLineageEmitter,
        state: RunState,
        error: str | None,
        graph: LineageGraph | None,
    ) -> None:
        ran = {task.id for task in self.plan.to_run}
        tasks = [
            (row.task_id, row.started_at, row.ended_at, row.state is TaskState.SUCCESS, row.error)
            for row in self.catalog.task_runs(self.plan.run_id)
            if row.task_id in ran and row.started_at
        ]
        emitter.finish(state is RunState.SUCCESS, error, graph, self.output_schemas, tasks)

    # -- setup ----------------------------------------------------------------------------------

    def _register_secrets(self) -> None:
        """Secrets written into the pipeline itself (a literal password, a UDF's api_key) are
        hidden in this run's messages and stored errors, as resolved references are."""
        plan = self.plan
        register_secrets_in(
            {
                "params": dict(plan.params),
                "connections": {
                    name: spec.model_dump(mode="json") for name, spec in plan.connections.items()
                },
                "openlineage": plan.openlineage.model_dump(mode="json")
                if plan.openlineage
                else None,
                "tasks": [
                    task.spec.model_dump(mode="json", by_alias=True, fallback=repr)
                    for task in plan.tasks
                ],
            }
        )

    def _create(self) -> None:
        plan = self.plan
        self._register_secrets()
        reused = {
            task.id: task.reuse_run
            for task in plan.tasks
            if task.action == "reuse" and task.reuse_run
        }
        to_run = [(t.id, t.kind.value, t.level, t.fingerprint) for t in plan.to_run]
        if plan.resumed:
            self.catalog.resume_run(plan.run_id, to_run, plan.definition, plan.pipeline_version)
        else:
            self.catalog.create_run(
                plan.run_id,
                plan.pipeline,
                plan.pipeline_version,
                plan.pipeline_file,
                dict(plan.params),
                plan.logical_date.isoformat(),
                list(plan.selected) if plan.selected else None,
                to_run,
                reused,
                plan.definition,
            )
        for task in plan.tasks:
            if task.action == "reuse":
                self._reuse(task)
                continue
            self.states[task.id] = TaskState.PENDING
            self.results[task.id] = TaskResult(task.id, TaskState.PENDING)
            self.waiting_on[task.id] = sum(1 for dep in task.upstream if dep in self.states)
            for dep in task.upstream:
                if dep in self.downstream:
                    self.downstream[dep].append(task.id)
        for task in plan.to_run:
            if self.waiting_on[task.id] == 0:
                self._queue(task.id, "ready")

    def _reuse(self, task: PlannedTask) -> None:
        """An output that stands: from an earlier run (--select) or this one (--resume)."""
        assert task.reuse_run is not None
        result = TaskResult(task.id, TaskState.SUCCESS, reused_from=task.reuse_run)
        if task.produces_table:
            directory = self.workspace.output_dir(self.plan.pipeline, task.id, task.reuse_run)
            self.outputs[task.id] = self.workspace.table(task.id, task.reuse_run, directory)
            result.output = self.outputs[task.id]
        if task.incremental:
            row = self.catalog.task_run(task.reuse_run, task.id)
            saved = (row.details or {}).get("watermark") if row else None
            if saved:  # the loads that still run commit the watermark of the rows they get
                self.watermarks.restore(task, Watermark.from_json(saved))
        self.results[task.id] = result

    # -- state changes ----------------------------------------------------------------------------

    def _move(
        self,
        task_id: str,
        target: TaskState,
        event: str,
        *,
        attempt: int | None = None,
        error: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        self.catalog.transition_task(
            self.plan.run_id, task_id, target, event, attempt=attempt, error=error, fields=fields
        )
        self.states[task_id] = target
        self.results[task_id].state = target
        if self.listener is not None:
            self.listener(RunEvent(task_id, target.value, attempt or 0, error))

    def _queue(self, task_id: str, event: str) -> None:
        self._move(task_id, TaskState.QUEUED, event)
        self.ready.append(task_id)

    def _skip_downstream(self, task_id: str) -> None:
        stack = list(self.downstream[task_id])
        while stack:
            child = stack.pop()
            if self.states.get(child) is TaskState.PENDING:
                self._move(child, TaskState.SKIPPED, f"upstream {task_id} did not succeed")
                self.log.bind(task_id=child).warning(
                    "skipped: upstream task {} did not succeed", task_id
                )
                stack.extend(self.downstream[child])

    # -- the loop ---------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        last_heartbeat = self.clock()
        while True:
            if self._cancel_requested.is_set() and self.cancelling is None:
                self._begin_cancel(Cancelled("the run was cancelled"))
            while (
                self.ready
                and len(self.running) < self.settings.max_parallel
                and self.cancelling is None
            ):
                self._start(self.ready.popleft())
            if not (self.running or self.ready or self.retries or self.breaker_waits):
                return
            now = self.clock()
            if now - last_heartbeat >= self.settings.heartbeat_interval:
                self._heartbeat()
                last_heartbeat = now
            wake = self._next_wake(now, last_heartbeat)
            try:
                if self.running:
                    try:
                        item = self.finished.get(timeout=max(0.0, wake - now))
                        while True:  # handle it and whatever else finished meanwhile
                            if item is not _WAKE:
                                self._finish(*item)
                            item = self.finished.get_nowait()
                    except queue.Empty:
                        pass
                elif self.retries or self.breaker_waits:
                    pause = max(0.0, wake - now)
                    if self.sleep is time.sleep:
                        self._cancel_requested.wait(pause)  # a cancel() ends the wait at once
                    else:
                        self.sleep(pause)
            except KeyboardInterrupt:
                if self.cancelling is not None:
                    raise  # a second Ctrl-C: stop waiting for tasks to wind down
                self._begin_cancel(Cancelled("the run was interrupted (Ctrl-C)"))
            self._release_retries()
            self._enforce_deadlines()

    def _heartbeat(self) -> None:
        """Tell the catalog the run is alive. A heartbeat only helps others tell a live run
        from a dead one, so one that cannot be written (a full disk, a catalog restarting) is
        said and skipped; the state changes that matter fail the run when they cannot be
        written."""
        try:
            self.catalog.heartbeat(self.plan.run_id)
        except ArrowlineError as exc:
            self.log.warning("heartbeat not recorded: {}", exc.message)

    def _next_wake(self, now: float, last_heartbeat: float) -> float:
        """When the loop must look again: a heartbeat, a retry, a deadline or a grace period."""
        candidates = [last_heartbeat + self.settings.heartbeat_interval]
        if self.retries:
            candidates.append(self.retries[0][0])
        if self.breaker_waits:
            candidates.append(self.breaker_waits[0][0])
        for attempt in self.running.values():
            if attempt.stop_requested_at is not None:
                candidates.append(attempt.stop_requested_at + self.settings.cancel_grace)
            elif attempt.deadline is not None:
                candidates.append(attempt.deadline)
        if self.running:
            candidates.append(now + 0.5)  # notice cancel() from another thread promptly
        return max(now, min(candidates))

    def _start(self, task_id: str) -> None:
        task = self.plan.task(task_id)
        if not self._breaker_admits(task):
            return
        number = self.results[task_id].attempts + 1
        self.results[task_id].attempts = number
        staging = self.workspace.staging(self.plan.pipeline, task_id, self.plan.run_id, number)
        now = self.clock()
        deadline = now + task.timeout.total_seconds() if task.timeout else None
        attempt = _Attempt(task, number, CancelToken(), staging, now, deadline)
        inputs = {name: self.outputs[name] for name in task.inputs}
        self._move(task_id, TaskState.RUNNING, f"attempt {number}", attempt=number)
        self.running[task_id] = attempt
        thread = threading.Thread(
            target=self._work, args=(attempt, inputs), name=f"arrowline-{task_id}", daemon=True
        )
        thread.start()

    def _breaker_admits(self, task: PlannedTask) -> bool:
        """Whether the breaker of the task's connection lets it try now.

        A refusal is not an attempt: the endpoint was not touched, so it proves nothing about
        the task. The task stays QUEUED, its attempts untouched, until the cooldown ends (it may
        then probe) or the probe in flight has its verdict. Spending attempts on refusals made
        a task with `attempts: 6` behind a breaker with `failures: 5` always fail its last
        attempt unseen, even when the server was back.
        """
        breaker = self.breakers.get(task.connection or "")
        if breaker is None:
            return True
        try:
            breaker.before()
        except CircuitOpen as exc:
            wait = exc.retry_after if exc.retry_after is not None else breaker.cooldown
            self._sequence += 1
            heapq.heappush(self.breaker_waits, (self.clock() + wait, self._sequence, task.id))
            self.log.bind(task_id=task.id).warning(
                "waiting, attempts untouched: {}", exc.message.split("; last error")[0]
            )
            return False
        return True

    def _wake_breaker_waits(self, connection: str) -> None:
        """A verdict on `connection`: the tasks waiting for its breaker ask it again now."""
        now = self.clock()
        self.breaker_waits = [
            (now, sequence, task_id)
            if self.plan.task(task_id).connection == connection
            else (due, sequence, task_id)
            for due, sequence, task_id in self.breaker_waits
        ]
        heapq.heapify(self.breaker_waits)

    def _work(self, attempt: _Attempt, inputs: dict[str, InputTable]) -> None:
        task = attempt.task

        def progress(rows: int) -> None:
            attempt.rows = rows

        context = TaskContext(
            self.plan.pipeline,
            self.plan.run_id,
            self.plan.base_dir,
            task,
            attempt.number,
            inputs,
            attempt.staging,
            attempt.cancel,
            progress,
            self.settings.duckdb,
            self.connections,
            watermark_start=lambda: self.watermarks.start(task),
            pending_watermarks=lambda: self.watermarks.pending(task),
        )
        result: TaskOutcome | BaseException
        with logger.contextualize(
            pipeline=self.plan.pipeline, run_id=self.plan.run_id, task_id=task.id
        ):
            try:
                result = self.runner(context)
            except BaseException as exc:  # reported to the dispatcher, which decides
                result = exc
        self.finished.put((attempt, result))

    def _finish(self, attempt: _Attempt, result: TaskOutcome | BaseException) -> None:
        task = attempt.task
        if self.running.get(task.id) is not attempt:
            self.workspace.discard(attempt.staging)  # an abandoned attempt finished late
            return
        del self.running[task.id]
        duration = self.clock() - attempt.started
        self._tell_breaker(task, result)
        # An attempt that completed after being asked to stop did complete: its output is whole.
        if isinstance(result, TaskOutcome):
            try:
                self._succeed(attempt, result, duration)
                return
            except (ArrowlineError, OSError) as exc:  # publishing failed: the attempt failed
                result = exc
        # A full disk the task's own code did not name: most likely where its output goes.
        result = disk_full(result, attempt.staging) or result
        self.workspace.discard(attempt.staging)
        self._fail(attempt, result, duration)

    def _check_drift(self, task: PlannedTask, staging: Path) -> list[dict[str, object]]:
        """How the staged output's schema changed since the task's last successful run;
        raises DataError when the task's `schema_change` policy refuses the change, or when
        two columns are one name to DuckDB."""
        import pyarrow.parquet as pq

        parts = sorted(staging.glob("part-*.parquet"))
        if not parts:
            return []
        from engine.core.sqltext import name_clash
        from lineage.drift import refusal

        schema = pq.read_schema(parts[0])
        clash = name_clash(schema.names)
        if clash is not None:  # DuckDB would rename one of them in every task reading it
            raise DataError(
                f"the output names {clash.describe()}",
                hint="give the columns distinct names in the task",
            )
        changes = self._schema_drift(task, schema)
        policy = task.spec.schema_change
        listed = refusal(changes, policy)
        if listed:
            raise DataError(
                f"output schema changed and schema_change is {policy}: {listed}",
                hint="fix the task, or set schema_change: evolve to accept the new schema",
            )
        return changes

    def _schema_drift(self, task: PlannedTask, schema: pa.Schema) -> list[dict[str, object]]:
        """How the output schema changed since the task's last successful run (empty when it
        did not, or there is no earlier output to compare with)."""
        import pyarrow.parquet as pq

        from engine.tasks.lineage import task_drift

        previous = self.catalog.latest_output(self.plan.pipeline, task.id)
        if previous is None or previous.run_id == self.plan.run_id or not previous.output_path:
            return []
        files = sorted(Path(previous.output_path).glob("part-*.parquet"))
        try:
            before = pq.read_schema(files[0]) if files else None
        except OSError:
            before = None
        if before is None:
            return []
        inputs = {n: s for n, s in self.output_schemas.items() if n in task.inputs}
        recorded = self.catalog.lineage(previous.run_id)
        changes = task_drift(
            task, before, schema, inputs, recorded, self.plan.base_dir, call_udfs=False
        )
        for change in changes:
            log = self.log.bind(task_id=task.id)
            (log.warning if change.breaking else log.info)(
                "schema change since run {}: column {!r} {} ({} -> {})",
                previous.run_id,
                change.column,
                change.change,
                change.before,
                change.after,
            )
        return [change.to_dict() for change in changes]

    def _tell_breaker(self, task: PlannedTask, result: TaskOutcome | BaseException) -> None:
        breaker = self.breakers.get(task.connection or "")
        if breaker is None:
            return
        if isinstance(result, TaskOutcome):
            breaker.succeeded()
        elif isinstance(result, Cancelled) or self.cancelling is not None:
            breaker.released()  # a cancel says nothing about the endpoint
        elif classify(result).transient:
            breaker.failed(_describe(result))
        else:
            breaker.succeeded()  # the endpoint answered; the request was wrong
        self._wake_breaker_waits(breaker.name)

    def _succeed(self, attempt: _Attempt, outcome: TaskOutcome, duration: float) -> None:
        task = attempt.task
        plan = self.plan
        fields: dict[str, Any] = {
            "duration_s": duration,
            "rows_in": outcome.rows_in,
            "rows_out": outcome.rows_out,
            "rows_rejected": outcome.rows_rejected,
            "target": outcome.target,
        }
        result = self.results[task.id]
        drift: list[dict[str, object]] = []
        if outcome.produces_output:
            drift = self._check_drift(task, attempt.staging)  # before anything is published
            directory = self.workspace.publish(attempt.staging, plan.pipeline, task.id, plan.run_id)
            fault_point("workspace.after_publish")
            table = self.workspace.table(task.id, plan.run_id, directory)
            self.outputs[task.id] = table
            result.output = table
            fields |= {
                "output_path": str(directory),
                "bytes_out": table.bytes,
                "output_schema": json.dumps(schema_json(table.schema)),
            }
        else:
            self.workspace.discard(attempt.staging)
        details = dict(outcome.details)
        if outcome.lineage is not None:
            self.captured_lineage[task.id] = outcome.lineage
        if outcome.produces_output and drift:
            details["schema_changes"] = drift
        if task.incremental and outcome.watermark is not None:
            details["watermark"] = outcome.watermark.to_json()  # what a resume restores
        if details:
            fields["details"] = json.dumps(details, default=str)
        if task.incremental:
            self.watermarks.extracted(task, outcome.watermark)
        if outcome.committed:
            self.watermarks.loaded(task, outcome.committed)
        result.rows_in, result.rows_out = outcome.rows_in, outcome.rows_out
        result.rows_rejected, result.duration_s, result.target = (
            outcome.rows_rejected,
            duration,
            outcome.target,
        )
        self._move(task.id, TaskState.SUCCESS, "succeeded", attempt=attempt.number, fields=fields)
        self.log.bind(task_id=task.id).info(
            "succeeded in {:.2f}s: {} rows in, {} rows out{}",
            duration,
            outcome.rows_in,
            outcome.rows_out,
            f", {outcome.rows_rejected} quarantined" if outcome.rows_rejected else "",
        )
        for child in self.downstream[task.id]:
            self.waiting_on[child] -= 1
            ready = self.waiting_on[child] == 0 and self.states[child] is TaskState.PENDING
            if ready and self.cancelling is None:
                self._queue(child, f"upstream {task.id} succeeded")

    def _fail(self, attempt: _Attempt, error: BaseException, duration: float) -> None:
        task = attempt.task
        kind = classify(error)
        text = _describe(error)
        result = self.results[task.id]
        result.error, result.error_kind, result.duration_s = text, kind.kind, duration
        self.attempt_log.setdefault(task.id, []).append(
            {
                "attempt": attempt.number,
                "started_at": attempt.started_wall,
                "duration_s": round(duration, 6),
                "error_kind": kind.kind,
                "transient": kind.transient,
                "error": text,
            }
        )
        fields = {
            "duration_s": duration,
            "error_kind": kind.kind,
            "error_transient": int(kind.transient),
        }
        log = self.log.bind(task_id=task.id)
        if self.cancelling is not None or isinstance(error, Cancelled):
            self._move(
                task.id,
                TaskState.CANCELLED,
                "cancelled",
                attempt=attempt.number,
                error=text,
                fields=fields,
            )
            log.warning("cancelled: {}", text.splitlines()[0])
            return
        if kind.transient and attempt.number < task.retry.attempts:
            delay = backoff_delay(task.retry, attempt.number, self.rng, kind.retry_after)
            self._move(
                task.id,
                TaskState.RETRYING,
                f"retry in {delay:.2f}s",
                attempt=attempt.number,
                error=text,
                fields=fields,
            )
            log.warning(
                "attempt {}/{} failed ({}), retrying in {:.2f}s: {}",
                attempt.number,
                task.retry.attempts,
                kind.kind,
                delay,
                text.splitlines()[0],
            )
            self._sequence += 1
            heapq.heappush(self.retries, (self.clock() + delay, self._sequence, task.id))
            return
        reason = "not retried: terminal error" if not kind.transient else "attempts exhausted"
        self._move(
            task.id, TaskState.FAILED, reason, attempt=attempt.number, error=text, fields=fields
        )
        log.error("failed ({}, {}): {}", kind.kind, reason, text)
        self._dead_letter(task, kind.kind, kind.transient, reason)
        self._skip_downstream(task.id)

    def _dead_letter(self, task: PlannedTask, kind: str, transient: bool, reason: str) -> None:
        """Record what an operator needs to act on a task that will not be retried again."""
        plan = self.plan
        letter = self.catalog.add_dead_letter(
            run_id=plan.run_id,
            pipeline=plan.pipeline,
            task_id=task.id,
            pipeline_version=plan.pipeline_version,
            pipeline_file=plan.pipeline_file,
            params=dict(plan.params),
            logical_date=plan.logical_date.isoformat(),
            error_kind=kind,
            transient=transient,
            reason=reason,
            attempts=self.attempt_log.get(task.id, []),
        )
        self.log.bind(task_id=task.id).warning(
            "dead letter {} recorded; `arrowline dlq show {}` has every attempt", letter, letter
        )

    def _release_retries(self) -> None:
        now = self.clock()
        while self.retries and self.retries[0][0] <= now:
            _, _, task_id = heapq.heappop(self.retries)
            if self.cancelling is None:
                self._queue(task_id, "retry due")
        while self.breaker_waits and self.breaker_waits[0][0] <= now:
            _, _, task_id = heapq.heappop(self.breaker_waits)
            if self.cancelling is None:
                self.ready.append(task_id)  # still QUEUED: it asks the breaker again

    def _enforce_deadlines(self) -> None:
        now = self.clock()
        for task_id, attempt in list(self.running.items()):
            if (
                attempt.stop_requested_at is None
                and attempt.deadline is not None
                and now >= attempt.deadline
            ):
                timeout = attempt.task.timeout
                assert timeout is not None
                attempt.stop_requested_at = now
                attempt.cancel.cancel(
                    TaskTimeout(
                        f"ran longer than its timeout of {timeout.total_seconds():g}s "
                        "and was stopped"
                    )
                )
                self.log.bind(task_id=task_id).warning(
                    "timed out after {:.1f}s; stopping", now - attempt.started
                )
            elif (
                attempt.stop_requested_at is not None
                and now >= attempt.stop_requested_at + self.settings.cancel_grace
            ):
                # The task did not stop: abandon the attempt; a late result is discarded.
                del self.running[task_id]
                reason = attempt.cancel.reason or Cancelled("cancelled")
                self._tell_breaker(attempt.task, reason)
                self.log.bind(task_id=task_id).error(
                    "did not stop within {:.0f}s; abandoning the attempt",
                    self.settings.cancel_grace,
                )
                self._fail(attempt, reason, now - attempt.started)

    def _begin_cancel(self, reason: Cancelled) -> None:
        self.cancelling = reason
        self.log.warning("cancelling: {}", reason)
        now = self.clock()
        for attempt in self.running.values():
            attempt.stop_requested_at = now
            attempt.cancel.cancel(reason)
        for task_id in list(self.ready):
            self._move(task_id, TaskState.CANCELLED, str(reason))
        self.ready.clear()
        for _, _, task_id in self.retries + self.breaker_waits:
            self._move(task_id, TaskState.CANCELLED, str(reason))
        self.retries.clear()
        self.breaker_waits.clear()
        for task_id, state in self.states.items():
            if state is TaskState.PENDING:
                self._move(task_id, TaskState.CANCELLED, str(reason))

    def _final_state(self) -> RunState:
        """What the run's tasks ended as. A cancel stops what had not finished; when it came
        too late to stop anything (every task succeeded, the loads committed), the run did
        succeed, and calling it CANCELLED would send the user to resume a finished run."""
        if all(state is TaskState.SUCCESS for state in self.states.values()):
            if self.cancelling is not None:
                self.log.info("the cancel came after every task had finished: nothing to stop")
            return RunState.SUCCESS
        if self.cancelling is not None and TaskState.CANCELLED in self.states.values():
            return RunState.CANCELLED
        return RunState.FAILED

    def _abort(self, exc: BaseException) -> None:
        """Leave the catalog honest after an unexpected error in the dispatcher itself (a
        catalog write that failed, a full disk, a second Ctrl-C)."""
        for attempt in self.running.values():
            attempt.cancel.cancel(Cancelled("the run stopped"))
        if not isinstance(exc, KeyboardInterrupt):
            self._wind_down()
        try:
            for task_id, state in self.states.items():
                if not state.terminal:
                    self._move(task_id, TaskState.CANCELLED, "run aborted", error=_describe(exc))
            # Interrupted for good (a second Ctrl-C): cancelled, not failed.
            final = RunState.CANCELLED if isinstance(exc, KeyboardInterrupt) else RunState.FAILED
            self.catalog.transition_run(self.plan.run_id, final, "aborted", _describe(exc))
        except ArrowlineError as failure:  # the catalog itself may be what failed, and still is
            self.log.error("could not record the end of the run: {}", failure.message)
        except Exception:
            self.log.exception("could not record the aborted run")

    def _wind_down(self) -> None:
        """Wait (up to `cancel_grace`) for the cancelled attempts to stop, and discard what they
        staged. Their space is what a full disk needs back before the run's end can be
        recorded, and a worker still inside DuckDB or Arrow when the interpreter exits can
        abort it ("Fatal Python error", exit 134) instead of letting it report the error."""
        deadline = time.monotonic() + self.settings.cancel_grace
        while self.running and time.monotonic() < deadline:
            try:
                item = self.finished.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is _WAKE:
                continue
            stopped: _Attempt = item[0]
            if self.running.get(stopped.task.id) is stopped:
                del self.running[stopped.task.id]
            self.workspace.discard(stopped.staging)
        for late in self.running.values():  # did not stop in time: at least free its space
            self.workspace.discard(late.staging)

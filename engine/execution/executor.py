"""The executor: runs a `Plan`, starting each task as soon as its own upstream tasks succeeded.

One dispatcher (the calling thread) owns all state: it moves tasks through the state machine,
writes every transition to the catalog, starts attempts on worker threads (at most
`max_parallel` at a time), and reacts to their results as they arrive. There is no barrier
between levels: in a diamond, the right branch does not wait for the left.

A failed task's downstream tasks are SKIPPED; independent branches go on; the run fails. A
transient error is retried after an exponential, jittered delay while attempts remain. A task
past its `timeout` is asked to stop (DuckDB queries are interrupted, streaming loops stop at the
next batch); one that does not stop within `cancel_grace` is abandoned: its thread is left to
finish alone and its output is never published (engine.execution.attempts). Ctrl-C cancels the
same way.
"""

from __future__ import annotations

import json
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
from loguru import logger

from engine.core.cancel import CancelToken
from engine.core.errors import ArrowlineError, Cancelled, disk_full
from engine.core.faults import fault_point
from engine.core.states import RunState, TaskState
from engine.core.tables import THIS, InputTable
from engine.core.usage import UsageMeter
from engine.execution.attempts import (
    WAKE,
    Attempt,
    classify_error,
    describe_error,
    start_attempt,
    stop_overdue,
    unstopped,
    wind_down,
)
from engine.execution.breaker import BreakerGate
from engine.execution.cache import CacheHit, ExecutionCache
from engine.execution.drift import DriftCheck
from engine.execution.observers import LineageRecorder, OpenLineageObserver, register_plan_secrets
from engine.execution.pools import PoolGate
from engine.execution.recovery import DeadLetters, heartbeat
from engine.execution.results import (
    ExecutionSettings,
    RunEvent,
    RunResult,
    TaskResult,
    final_state,
)
from engine.execution.retry import backoff_delay
from engine.execution.riders import PipelinedHandOff, Riders, StreamOpened, ephemeral
from engine.execution.waiting import DueQueue, next_wake
from engine.execution.watermarks import WatermarkBroker
from engine.planning.build import Plan, PlannedTask
from engine.state.catalog import Catalog, now_text
from engine.state.folders import STATE_DIR
from engine.state.workspace import Workspace
from engine.tasks import TaskContext, TaskOutcome, TaskRunner, run_task
from engine.tasks.base import schema_json
from transforms.sql import DuckDatabase

__all__ = ["ExecutionSettings", "Executor", "RunEvent", "RunResult", "TaskResult"]


class Executor(PipelinedHandOff):
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
        workspace: Workspace | None = None,
    ) -> None:
        self.plan = plan
        self.project_dir = project_dir
        self.catalog = catalog
        self.settings = settings or ExecutionSettings()
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.listener = listener
        self.workspace = workspace or Workspace.for_project(project_dir)
        self.connections = dict(connections or {})
        self.lineage = LineageRecorder(plan, catalog)
        self.drift = DriftCheck(plan, catalog)
        self.watermarks = WatermarkBroker(plan, catalog, self.connections)
        self.cache = ExecutionCache(plan, catalog, self.workspace)
        self.duckdb = DuckDatabase(self.settings.duckdb)  # the run's sql tasks share it
        self.runner = self.workspace.uploading(self.cache.hashing(runner))  # hashed, then sent
        self.log = logger.bind(pipeline=plan.pipeline, run_id=plan.run_id)

        self.states: dict[str, TaskState] = {}
        self.results: dict[str, TaskResult] = {}
        self.outputs: dict[str, InputTable] = {}
        self.waiting_on: dict[str, int] = {}
        self.downstream: dict[str, list[str]] = {task.id: [] for task in plan.tasks}
        self.ready: deque[str] = deque()
        self.retries = DueQueue(clock)
        self.running: dict[str, Attempt] = {}
        self.finished: queue.SimpleQueue[Any] = queue.SimpleQueue()
        """(attempt, outcome or exception) from workers, or WAKE from cancel()."""
        self.cancelling: BaseException | None = None
        self.breakers = BreakerGate.for_plan(plan, clock)
        locks = project_dir / STATE_DIR / "locks"  # a task QUEUED for a slot waits as for a breaker
        self.pools = PoolGate(plan, locks, catalog.location, self.breakers.waiting, clock, self.log)
        self.letters = DeadLetters(plan, catalog)
        self.riders = Riders()
        self._cancel_requested = threading.Event()

    # -- public ---------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Ask the run to stop (thread-safe, and safe from a signal handler); running tasks are
        cancelled cooperatively. The dispatcher wakes at once."""
        self._cancel_requested.set()
        self.finished.put(WAKE)

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested.is_set()

    def progress(self) -> dict[str, int]:
        """Rows so far of the running tasks (read from any thread)."""
        return {task_id: attempt.rows for task_id, attempt in list(self.running.items())}

    def run(self) -> RunResult:
        started, meter = self.clock(), UsageMeter()  # what the run costs the process
        started_wall = now_text()
        self._create()
        self.catalog.transition_run(self.plan.run_id, RunState.RUNNING, "started")
        self.log.info("run started: {} tasks to run", len(self.plan.to_run))
        observer = OpenLineageObserver.for_plan(self.plan, self.workspace, self.connections)
        if observer is not None:
            observer.started()
        try:
            self._dispatch()
        except BaseException as exc:  # a bug or a catalog failure: record it, then re-raise
            self._abort(exc)
            raise
        finally:
            self.duckdb.close()
            self.pools.close()
        state = final_state(self.states.values(), self.cancelling is not None)
        if state is RunState.SUCCESS and self.cancelling is not None:
            self.log.info("the cancel came after every task had finished: nothing to stop")
        graph = self.lineage.record(self.output_schemas)
        failed = [t for t, s in self.states.items() if s is TaskState.FAILED]
        error = "failed: " + ", ".join(failed) if state is RunState.FAILED else None
        self.catalog.transition_run(self.plan.run_id, state, "finished", error, meter.spent())
        if observer is not None:
            observer.finished(state, error, graph, self.output_schemas, self.results)
        if self.plan.resumed:
            self.catalog.settle_dead_letters(
                self.plan.run_id, [t.id for t in self.plan.to_run], state.value, started_wall
            )
        duration = self.clock() - started
        self.log.info("run finished: {} in {:.2f}s", state.value, duration)
        plan = self.plan
        return RunResult(
            plan.run_id, plan.pipeline, state, self.results, duration, self.project_dir, plan
        )

    @property
    def output_schemas(self) -> dict[str, pa.Schema]:
        """task -> the schema of the output it wrote or reused (or streamed) in this run."""
        return {t: table.schema for t, table in self.outputs.items()} | self.riders.schemas

    # -- setup ----------------------------------------------------------------------------------

    def _create(self) -> None:
        plan = self.plan
        register_plan_secrets(plan)
        reused = {
            task.id: task.reuse_run
            for task in plan.tasks
            if task.action == "reuse" and task.reuse_run
        }
        to_run = [(t.id, t.kind.value, t.level, t.fingerprint) for t in plan.to_run]
        graph = [(t.id, t.kind.value, t.upstream) for t in plan.tasks]
        if plan.resumed:
            self.catalog.resume_run(
                plan.run_id, to_run, plan.definition, plan.pipeline_version, graph
            )
        else:
            self.catalog.create_run(
                plan.run_id,
                plan.pipeline,
                plan.pipeline_version,
                plan.pipeline_file,
                dict(plan.params),
                plan.logical_date.isoformat(),
                list(plan.selected) if plan.selected is not None else None,
                to_run,
                reused,
                plan.definition,
                graph,
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
        self._hold_ephemeral_extracts()
        for task in plan.to_run:
            if self.waiting_on[task.id] == 0:
                self._queue(task.id, "ready")

    def _reuse(self, task: PlannedTask) -> None:
        """An output that stands: from an earlier run (--select) or this one (--resume)."""
        assert task.reuse_run is not None
        result = TaskResult(task.id, TaskState.SUCCESS, reused_from=task.reuse_run)
        if task.produces_table and task.spec.materialize != "ephemeral":  # it kept nothing
            directory = self.workspace.output_dir(self.plan.pipeline, task.id, task.reuse_run)
            self.outputs[task.id] = self.workspace.table(task.id, task.reuse_run, directory)
            result.output = self.outputs[task.id]
        if task.incremental:
            self.watermarks.reused(task)
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
        if target.terminal or target in (TaskState.RETRYING, TaskState.PENDING):
            self.pools.release(task_id)  # slots are held by running attempts only
        result = self.results[task_id]
        result.state = target
        if target is TaskState.RUNNING and result.started_at is None:
            result.started_at = now_text()
        elif target.terminal:
            result.ended_at = now_text()
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
            if not (self.running or self.ready or self.retries or self.breakers.waiting):
                return self.watermarks.settle()  # every task ended: release what they share
            now = self.clock()
            if now - last_heartbeat >= self.settings.heartbeat_interval:
                heartbeat(self.catalog, self.plan.run_id, self.log)
                last_heartbeat = now
            wake = next_wake(
                now,
                last_heartbeat + self.settings.heartbeat_interval,
                (self.retries, self.breakers.waiting),
                self.running.values(),
                self.settings.cancel_grace,
            )
            try:
                if self.running or self.pools.abandoned:  # (its late result frees slots)
                    try:
                        item = self.finished.get(timeout=max(0.0, wake - now))
                        while True:  # handle it and whatever else finished meanwhile
                            if isinstance(item, StreamOpened):
                                self._ride(item)
                            elif item is not WAKE:
                                self._finish(*item)
                            item = self.finished.get_nowait()
                    except queue.Empty:
                        pass
                elif self.retries or self.breakers.waiting:
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

    def _start(self, task_id: str, streamed: dict[str, InputTable] | None = None) -> Attempt | None:
        """Start an attempt (None when the breaker refuses it, or an earlier output stands for
        the task); `streamed`: the inputs of a load riding on a running extract."""
        task = self.plan.task(task_id)
        if (hit := self.cache.hit(task)) is not None:  # early cutoff: upstream came out as before
            self._cached(task, hit)
            return None
        refused = self.breakers.admits(task_id, task.connection)
        if refused is not None:
            self.log.bind(task_id=task_id).warning(
                "waiting, attempts untouched: {}", refused.message.split("; last error")[0]
            )
            return None
        if streamed is None and self._readers_held_back(task):
            return None
        if not self.pools.take(task_id, self.downstream[task_id] if ephemeral(task) else ()):
            return None  # QUEUED until a slot of its pools is free
        number = self.results[task_id].attempts + 1
        self.results[task_id].attempts = number
        staging = self.workspace.staging(self.plan.pipeline, task_id, self.plan.run_id, number)
        now = self.clock()
        deadline = now + task.timeout.total_seconds() if task.timeout else None
        attempt = Attempt(task, number, CancelToken(), staging, now, deadline)
        inputs = streamed or {name: self.outputs[name] for name in task.inputs}
        if (kept := task.adds_to) is not None:  # an incremental sql task's `this`: its last
            inputs = {**inputs, THIS: self.workspace.kept(self.plan.pipeline, task.id, kept)}
        waited = self.pools.waited(task_id)
        self._move(task_id, TaskState.RUNNING, f"attempt {number}{waited}", attempt=number)
        self.running[task_id] = attempt
        context = TaskContext(
            self.plan.pipeline,
            self.plan.run_id,
            self.plan.base_dir,
            task,
            number,
            inputs,
            attempt.staging,
            attempt.cancel,
            attempt.report_rows,
            self.duckdb,
            self.connections,
            watermarks=self.watermarks.of(task),
        )
        if streamed is None:
            context.tee = self.riders.tee(attempt, self._stream_consumers(task), self.finished.put)
        start_attempt(attempt, context, self.runner, self.finished)
        return attempt

    def _finish(self, attempt: Attempt, result: TaskOutcome | BaseException) -> None:
        task = attempt.task
        self.watermarks.repair()  # what the attempt found sinks hold, written from this thread
        if self.running.get(task.id) is not attempt:
            self.workspace.discard(attempt.staging)  # an abandoned attempt finished late
            self.pools.ended(task.id, attempt.number)  # its thread no longer uses the pool
            return
        del self.running[task.id]
        if self.riders.hold(attempt, result):
            return  # a load that ended before the extract it streamed from: decided then
        duration = self.clock() - attempt.started
        self.breakers.tell(task, result, self.cancelling is not None)
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
        self._producer_ended(task.id, result)
        self._fail(attempt, result, duration)

    def _succeed(self, attempt: Attempt, outcome: TaskOutcome, duration: float) -> None:
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
            # before anything is published
            drift = self.drift.check(task, attempt.staging, self.output_schemas, outcome.elsewhere)
            directory = self.workspace.publish(attempt.staging, plan.pipeline, task.id, plan.run_id)
            fault_point("workspace.after_publish")
            table = self.workspace.table(task.id, plan.run_id, directory)
            self.outputs[task.id] = table
            result.output = table
            fields |= {
                "output_path": self.workspace.locator(directory),
                "bytes_out": table.bytes,
                "output_schema": json.dumps(schema_json(table.schema)),
            }
        else:
            self.workspace.discard(attempt.staging)
            if outcome.handed_over is not None:  # kept nowhere: its readers inline it
                self.outputs[task.id] = outcome.handed_over
        details = dict(outcome.details)
        if outcome.lineage is not None:
            self.lineage.captured[task.id] = outcome.lineage
        if outcome.produces_output and drift:
            details["schema_changes"] = drift
        if task.incremental:
            details |= self.watermarks.saved(task, outcome.watermark)  # what a resume restores
        if details:
            fields["details"] = json.dumps(details, default=str)
        fields |= self.cache.succeeded(task, attempt.number)
        if task.incremental:
            self.watermarks.extracted(task, outcome.watermark)
        if outcome.committed:
            self.watermarks.loaded(task, outcome.committed)
        self._producer_ended(task.id, None)  # published, watermark known: its streams end
        result.rows_in, result.rows_out = outcome.rows_in, outcome.rows_out
        result.rows_rejected, result.target = outcome.rows_rejected, outcome.target
        result.duration_s = duration
        self._move(task.id, TaskState.SUCCESS, "succeeded", attempt=attempt.number, fields=fields)
        self.log.bind(task_id=task.id).info(
            "succeeded in {:.2f}s: {} rows in, {} rows out{}",
            duration,
            outcome.rows_in,
            outcome.rows_out,
            f", {outcome.rows_rejected} quarantined" if outcome.rows_rejected else "",
        )
        self._release(task.id)

    def _release(self, task_id: str) -> None:
        """A task succeeded: the tasks waiting on it alone are ready."""
        for child in self.downstream[task_id]:
            self.waiting_on[child] -= 1
            ready = self.waiting_on[child] == 0 and self.states[child] is TaskState.PENDING
            if ready and self.cancelling is None:
                self._queue(child, f"upstream {task_id} succeeded")

    def _cached(self, task: PlannedTask, hit: CacheHit) -> None:
        """An earlier output stands for the task (engine.execution.cache): no attempt runs."""
        result = self.results[task.id]
        result.reused_from, result.output = hit.run_id, hit.output
        if hit.output is not None:
            self.outputs[task.id] = hit.output
        self._move(task.id, TaskState.RUNNING, "cache lookup")
        self._move(task.id, TaskState.SUCCESS, f"cached (run {hit.run_id})", fields=hit.fields)
        self._release(task.id)

    def _fail(self, attempt: Attempt, error: BaseException, duration: float) -> None:
        task = attempt.task
        kind = classify_error(task, error)
        text = describe_error(error)
        result = self.results[task.id]
        result.error, result.error_kind, result.duration_s = text, kind.kind, duration
        self.letters.failed_attempt(
            task.id, attempt.number, attempt.started_wall, duration, kind, text
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
        lost = self._lost_stream(task)  # it read an ephemeral output: nothing to retry from
        left = self.riders.spent(task.id, attempt.number) < task.retry.attempts and not lost
        if kind.transient and left:
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
            self.retries.add(task.id, delay)
            return
        reason = lost or ("attempts exhausted" if kind.transient else "not retried: terminal error")
        self._move(
            task.id, TaskState.FAILED, reason, attempt=attempt.number, error=text, fields=fields
        )
        log.error("failed ({}, {}){}: {}", kind.kind, reason, task.at, text)
        self.letters.record(task.id, kind, reason)
        self._skip_downstream(task.id)

    def _release_retries(self) -> None:
        for task_id in self.retries.due():
            if self.cancelling is None:
                self._queue(task_id, "retry due")
        for task_id in self.breakers.waiting.due():
            if self.cancelling is None:
                self.ready.append(task_id)  # still QUEUED: it asks the breaker again

    def _enforce_deadlines(self) -> None:
        self._stretch_rider_deadlines()
        now = self.clock()
        stop_overdue(self.running.values(), now)
        for attempt in unstopped(self.running.values(), now, self.settings.cancel_grace):
            # The task did not stop: abandon the attempt; a late result is discarded.
            del self.running[attempt.task.id]
            self.pools.abandon(attempt.task.id, attempt.number)  # taken till its thread ends
            reason = attempt.cancel.reason or Cancelled("cancelled")
            self.log.bind(task_id=attempt.task.id).error(
                "did not stop within {:.0f}s; abandoning the attempt", self.settings.cancel_grace
            )
            if self.riders.hold(attempt, reason, abandoned=True):
                # A load riding on a running extract: its failure is decided when the extract
                # ends, as for a rider that stopped, so a retry reads the published output.
                continue
            self.riders.consumer_ended(attempt.task.id)
            self._producer_ended(attempt.task.id, attempt.cancel.reason or Cancelled("stopped"))
            self.breakers.tell(attempt.task, reason, self.cancelling is not None)
            self._fail(attempt, reason, now - attempt.started)

    def _begin_cancel(self, reason: Cancelled) -> None:
        self.cancelling = reason
        self.log.warning("cancelling: {}", reason)
        now = self.clock()
        for attempt in self.running.values():
            attempt.stop(now, reason)
        waiting = [*self.ready, *self.retries.clear(), *self.breakers.waiting.clear()]
        self.ready.clear()
        waiting += [task_id for task_id, st in self.states.items() if st is TaskState.PENDING]
        for task_id in waiting:
            self._move(task_id, TaskState.CANCELLED, str(reason))

    def _abort(self, exc: BaseException) -> None:
        """Leave the catalog honest after an unexpected error in the dispatcher itself (a
        catalog write that failed, a full disk, a second Ctrl-C)."""
        for attempt in self.running.values():
            attempt.cancel.cancel(Cancelled("the run stopped"))
        if not isinstance(exc, KeyboardInterrupt):
            wind_down(self.running, self.finished, self.settings.cancel_grace, self.workspace)
        said = describe_error(exc)
        try:
            for task_id, state in self.states.items():
                if not state.terminal:
                    self._move(task_id, TaskState.CANCELLED, "run aborted", error=said)
            # Interrupted for good (a second Ctrl-C): cancelled, not failed.
            final = RunState.CANCELLED if isinstance(exc, KeyboardInterrupt) else RunState.FAILED
            self.catalog.transition_run(self.plan.run_id, final, "aborted", said)
        except ArrowlineError as failure:  # the catalog itself may be what failed, and still is
            self.log.error("could not record the end of the run: {}", failure.message)
        except Exception:
            self.log.exception("could not record the aborted run")

"""`arrowline scheduler`: one process that runs a project's pipelines on time.

Every tick (1 s by default) the scheduler, for each pipeline file of the project:

1. decides the intervals that fell due since the last one it decided (`engine.scheduling.cron`):
   with `catchup: false` the newest only (the others are recorded as skipped), with `catchup: true`
   up to `max_catchup` of them, oldest first. The decision and the schedule's new last fire are
   one catalog transaction, and an interval is keyed by (pipeline, fire time), so no interval is
   ever decided, let alone run, twice;
2. turns new files that stopped growing (`trigger: {files: ...}`) and new successes of another
   pipeline (`trigger: {after: ...}`) into run requests, each event once (`triggers_seen`);
3. starts what is queued, by the pipeline's `overlap` policy when a run of it is still going:
   `skip` records the new interval as skipped, `queue` keeps it for later, `allow` starts it
   beside the other (both share the pipeline's lock), `cancel_previous` cancels the running one
   and starts the new one when it has stopped. Manual requests (`arrowline trigger`, the HTTP API)
   always queue;
4. sends alerts: failed runs, new dead letters, quarantines above the threshold, SLA misses,
   stale watermarks (`engine.scheduling.alerts`).

Runs execute in the scheduler's own process, each in a thread with the local executor. Only one
scheduler acts on a project at a time: it holds `.arrowline/scheduler.lock`; a standby
process polls it every tick and takes over within a tick of the active one dying. At start it
settles the runs a previous scheduler left RUNNING: marked INTERRUPTED, then resumed or left
failed per `on_restart`. SIGTERM stops new starts and lets running runs finish up to a deadline,
then cancels them.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loguru import logger

from engine.core.errors import ArrowlineError
from engine.core.states import RunState
from engine.execution.executor import Executor, RunResult
from engine.scheduling.alerts import Alert, AlertSender
from engine.scheduling.cron import Schedule
from engine.scheduling.discover import Loaded, discover_pipelines, request_run
from engine.scheduling.leader import Lead, Leadership
from engine.scheduling.triggers import Triggers
from engine.scheduling.watch import late_runs, stale_watermarks
from engine.spec.definition import Definition
from engine.spec.settings import use_workspace_connection
from engine.state.catalog import Catalog, CatalogReader
from engine.state.layout import ProjectLayout
from engine.state.schedules import RequestRow, ScheduleRow
from engine.state.values import iso, parse
from engine.state.workspace import LocalWorkspace, Workspace
from engine.tasks import TaskRunner, run_task

__all__ = [
    "Scheduler",
    "SchedulerSettings",
]

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


MISSED_RECORDED = 100
"""Missed intervals recorded as skipped, one row each, beyond those that may run."""


@dataclass
class _Active:
    run_id: str
    source: str
    thread: threading.Thread
    started: datetime
    shared: bool
    executor: Executor | None = None
    result: RunResult | None = None
    error: BaseException | None = None


@dataclass
class SchedulerSettings:
    tick: float = 1.0
    max_runs: int = 8
    shutdown_timeout: float = 60.0
    max_parallel: int | None = None
    runner: TaskRunner = run_task
    file_scan_every: float = 5.0
    """Seconds between globbing trigger folders (file triggers are settled by `settle` anyway)."""
    discover_every: float = 5.0
    """Seconds between walks of the project for new, changed or removed pipeline files."""


@dataclass
class Scheduler:
    project: Path | ProjectLayout
    """The project folder, or its layout; a folder is read as `ProjectLayout.at` reads it.
    Afterwards always the folder (absolute), and `layout` is the layout."""
    settings: SchedulerSettings = field(default_factory=SchedulerSettings)
    clock: Clock = utc_now

    def __post_init__(self) -> None:
        self.layout = ProjectLayout.of(self.project)
        self.project = self.layout.project_dir
        self.layout.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = Catalog(self.layout.catalog)
        self.alerts = AlertSender(self.store)
        self.loaded: dict[str, Loaded] = {}
        self.active: dict[str, list[_Active]] = {}
        self.triggers = Triggers(self.store, self.settings.file_scan_every)
        self.stopping = threading.Event()
        self.leadership = Leadership(self.layout, self.store)
        self._alerted_letters: set[int] = set()
        self._walked = 0.0
        self.next_due: dict[str, datetime] = {}
        """pipeline -> its next fire instant: nothing to decide before then."""
        self._stop_at: float | None = None
        self.lock = threading.Lock()

    # -- leadership --------------------------------------------------------------------------

    # -- leadership ----------------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        return self.leadership.leading

    def try_lead(self) -> bool:
        """Lead the project if nobody does; True while this process leads. A process that has
        just become the leader first settles what a previous one left (`recover`)."""
        lead = self.leadership.take()
        if lead is Lead.TAKEN:
            self.recover()
        return lead is not Lead.NO

    def release(self) -> None:
        self.leadership.release()

    # -- pipelines ---------------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> dict[str, Loaded]:
        """Load new and changed pipeline files (a file whose mtime did not change is not read).
        The project is walked at most every `discover_every` seconds."""
        from engine.core.errors import PipelineInvalid
        from engine.tasks.checks import load_definition

        moment = time.monotonic()
        if not force and moment - self._walked < self.settings.discover_every and self.loaded:
            return self.loaded
        self._walked = moment
        current = discover_pipelines(self.layout.project_dir)
        for name, path in current.items():
            mtime = path.stat().st_mtime_ns
            known = self.loaded.get(name)
            if known is not None and known.path == path and known.mtime_ns == mtime:
                continue
            try:
                definition = load_definition(path)
            except (PipelineInvalid, ArrowlineError) as exc:
                logger.error("pipeline {} ({}) is invalid; not scheduled: {}", name, path, exc)
                self.loaded[name] = Loaded(name, path, mtime, None, None, str(exc))
                continue
            spec = definition.spec
            schedule = Schedule(spec.schedule, spec.timezone) if spec.schedule else None
            self.loaded[name] = Loaded(name, path, mtime, definition, schedule)
        for name in list(self.loaded):
            if name not in current:
                del self.loaded[name]
        return self.loaded

    # -- one tick ----------------------------------------------------------------------------

    def tick(self) -> None:
        """One pass over every pipeline. An idle pipeline costs a dictionary lookup and a
        comparison: its next fire time is kept in memory, and the catalog is asked once per
        tick which pipelines have queued work."""
        now = self.clock()
        with self.lock:
            self.reap()
            states = {row.pipeline: row for row in self.store.schedules()}
            waiting = self.store.pipelines_with_queued_work()
            for loaded in self.refresh().values():
                if self.stopping.is_set():
                    return  # SIGTERM: the rest of the pipelines wait for the next scheduler
                if loaded.definition is None:
                    continue
                try:
                    self._pipeline_tick(
                        loaded, states.get(loaded.name), loaded.name in waiting, now
                    )
                except Exception as exc:  # one pipeline's problem must not stop the others
                    logger.exception("scheduler: pipeline {} failed its tick: {}", loaded.name, exc)

    def _pipeline_tick(
        self, loaded: Loaded, state: ScheduleRow | None, waiting: bool, now: datetime
    ) -> None:
        unplaced = loaded.schedule is not None and state is not None and state.last_fire is None
        if state is None or state.pipeline_file != str(loaded.path) or unplaced:
            state = self.store.ensure_schedule(
                loaded.name,
                str(loaded.path),
                loaded.schedule.previous(now) if loaded.schedule else None,
            )
        if not state.paused:
            due = self.next_due.get(loaded.name)
            if loaded.schedule is not None and (due is None or now >= due):
                assert state.last_fire is not None  # ensure_schedule placed it
                if self._decide(loaded, parse(state.last_fire), now):
                    waiting = True
                self.next_due[loaded.name] = loaded.schedule.next_after(now)
            triggered = self.triggers.files(loaded, now)
            if self.triggers.after(loaded, state.registered_at) or triggered:
                waiting = True
            if (waiting or self._busy(loaded.name)) and not self.stopping.is_set():
                self._dispatch(loaded, now)
        else:
            self.next_due.pop(loaded.name, None)  # on resume, look at what was missed
        if loaded.definition is not None and loaded.definition.spec.alerts is not None:
            for alert in late_runs(self.store, loaded, now) + stale_watermarks(
                self.store, loaded, now
            ):
                self.alerts.send(alert, loaded.definition.spec.alerts)

    def _busy(self, name: str) -> bool:
        return any(a.thread.is_alive() for a in self.active.get(name, []))

    def _decide(self, loaded: Loaded, since: datetime, now: datetime) -> bool:
        """Record the intervals due since the last decided one (`since`); True when one was
        queued. Only the newest ones are looked at, walking back from now: those that may run
        (`max_catchup`, or the latest) and up to MISSED_RECORDED more recorded as skipped. Older
        misses, after long downtime, are logged as one gap, never walked one by one."""
        assert loaded.definition is not None
        assert loaded.schedule is not None
        spec = loaded.definition.spec
        limit = (spec.max_catchup if spec.catchup else 1) + MISSED_RECORDED
        due = loaded.schedule.latest(since, now, limit)
        if not due:
            return False
        if len(due) == limit and loaded.schedule.next_after(since) < due[0]:
            logger.warning(
                "pipeline {}: the intervals due after {} and before {} were missed; "
                "they are not run or recorded one by one",
                loaded.name,
                iso(since),
                iso(due[0]),
            )
        keep = due[-spec.max_catchup :] if spec.catchup else due[-1:]
        missed = (
            "catchup: false runs the latest interval only"
            if not spec.catchup
            else (f"more than max_catchup ({spec.max_catchup}) intervals were missed")
        )
        busy = self._busy(loaded.name)
        if busy and spec.overlap == "cancel_previous":
            self._cancel_running(loaded)  # the newer interval supersedes the running one
        decided: list[tuple[datetime, datetime, str, str | None]] = []
        for fire in due:
            logical = loaded.schedule.interval_ending(fire).start
            if fire not in keep:
                decided.append((fire, logical, "skipped", missed))
            elif busy and spec.overlap == "skip":
                decided.append(
                    (fire, logical, "skipped", "overlap: skip, the previous run was still running")
                )
            else:
                decided.append((fire, logical, "queued", None))
        recorded = self.store.claim_intervals(loaded.name, due[-1], decided)
        for row in recorded:
            logger.info("pipeline {}: interval due {} {}", loaded.name, row.fire_at, row.state)
        return any(row.state == "queued" for row in recorded)

    # -- starting runs -----------------------------------------------------------------------

    def _running_total(self) -> int:
        return sum(1 for runs in self.active.values() for a in runs if a.thread.is_alive())

    def _dispatch(self, loaded: Loaded, now: datetime) -> None:
        """Start what is queued: one run at a time (oldest first), or all at once with
        `overlap: allow`. Intervals met `overlap` when they fell due (`_decide`); a trigger's
        request meets it here, when a run is going as it arrives."""
        assert loaded.definition is not None
        spec = loaded.definition.spec
        queued: list[tuple[str, Any]] = [
            ("interval", row) for row in self.store.intervals(loaded.name, "queued")
        ]
        queued += [("request", row) for row in self.store.requests(loaded.name, "pending")]
        for kind, item in queued:
            if self._running_total() >= self.settings.max_runs:
                return
            if self._busy(loaded.name) and spec.overlap != "allow":
                triggered = kind == "request" and item.source.startswith(("files:", "after:"))
                if triggered and spec.overlap == "skip" and not item.reason:
                    self._skip(loaded, kind, item, "overlap: skip, a run was still running")
                    continue
                if triggered and spec.overlap == "cancel_previous":
                    self._cancel_running(loaded)
                return  # the rest wait for the running run
            self._start(loaded, kind, item, shared=spec.overlap == "allow")

    def _cancel_running(self, loaded: Loaded) -> None:
        for running in self.active.get(loaded.name, []):
            if running.executor is not None and running.thread.is_alive():
                logger.info(
                    "pipeline {}: cancelling run {} (overlap: cancel_previous)",
                    loaded.name,
                    running.run_id,
                )
                running.executor.cancel()

    def _skip(self, loaded: Loaded, kind: str, item: Any, reason: str) -> None:
        if kind == "interval":
            self.store.skip_interval(loaded.name, item.fire_at, reason)
        else:
            self.store.settle_request(item.id, "skipped", reason)
        logger.info(
            "pipeline {}: {} skipped: {}",
            loaded.name,
            getattr(item, "fire_at", item.run_id),
            reason,
        )

    def _start(self, loaded: Loaded, kind: str, item: Any, *, shared: bool) -> None:
        from engine.spec.params import new_run_id

        if kind == "interval":
            run_id = new_run_id()
            if not self.store.start_interval(loaded.name, item.fire_at, run_id):
                return
            logical: datetime | None = parse(item.logical_date)
            params: dict[str, Any] = {}
            source = f"schedule:{item.fire_at}"
        else:
            request: RequestRow = item
            if not self.store.settle_request(request.id, "started"):
                return
            run_id, params, logical, source = request.run_id, request.params, None, request.source
        active = _Active(run_id, source, threading.Thread(), self.clock(), shared)
        active.thread = threading.Thread(
            target=self._run,
            args=(loaded, active, params, logical),
            name=f"run-{loaded.name}",
            daemon=True,
        )
        self.active.setdefault(loaded.name, []).append(active)
        logger.info("pipeline {}: starting run {} ({})", loaded.name, run_id, source)
        active.thread.start()

    def _run(
        self, loaded: Loaded, active: _Active, params: dict[str, Any], logical: datetime | None
    ) -> None:
        from engine.execution import launch
        from engine.planning.build import build_plan
        from engine.tasks.checks import load_definition

        def keep(executor: Executor) -> None:
            active.executor = executor
            if self.stopping.is_set() and self._deadline_passed():
                executor.cancel()

        # The run as `arrowline run` starts one (engine.execution.launch), with the file read
        # again: it may have changed since the tick that decided this run.
        options = launch.RunOptions(
            max_parallel=self.settings.max_parallel,
            runner=self.settings.runner,
            on_executor=keep,
            if_running="share" if active.shared and active.source != "resume" else "wait",
        )
        try:
            definition = load_definition(loaded.path)
            if active.source == "resume":
                # a changed pipeline is not resumed blindly (force=False): alerted instead
                active.result = launch.resume(
                    definition, self.layout, active.run_id, options=options
                )
            else:
                with CatalogReader(self.layout.catalog) as reader:  # what the cache reuses
                    the_plan = build_plan(
                        definition,
                        params=params,
                        logical_date=logical,
                        run_id=active.run_id,
                        catalog=reader,
                    )
                active.result = launch.execute(the_plan, self.layout, options)
        except BaseException as exc:  # recorded and alerted on, never lost
            active.error = exc
            logger.error("pipeline {}: run {} could not run: {}", loaded.name, active.run_id, exc)

    # -- after runs --------------------------------------------------------------------------

    def reap(self) -> None:
        """Collect finished runs: alerts on failure, dead letters and quarantines."""
        for name, runs in self.active.items():
            loaded = self.loaded.get(name)
            for active in [a for a in runs if not a.thread.is_alive()]:
                runs.remove(active)
                if loaded is not None and loaded.definition is not None:
                    self._after_run(loaded, active)

    def _after_run(self, loaded: Loaded, active: _Active) -> None:
        assert loaded.definition is not None
        spec = loaded.definition.spec.alerts
        result = active.result
        if result is None or result.state is not RunState.SUCCESS:
            state = result.state.value if result else "ERROR"
            failed = [t for t, r in (result.tasks.items() if result else []) if r.error]
            message = f"run {active.run_id} {state}" + (
                f": {', '.join(failed)} failed" if failed else ""
            )
            if active.error is not None:
                message += f": {active.error}"
            self.alerts.send(
                self._alert(
                    loaded.name,
                    "failure",
                    active.run_id,
                    message,
                    details={"source": active.source},
                ),
                spec,
            )
        if result is not None:
            rejected = sum(r.rows_rejected for r in result.tasks.values())
            threshold = spec.quarantine_above if spec else 0
            if spec is not None and rejected > threshold:
                self.alerts.send(
                    self._alert(
                        loaded.name,
                        "quarantine",
                        active.run_id,
                        f"run {active.run_id} quarantined {rejected} rows (more than {threshold})",
                    ),
                    spec,
                )
        for task_id in result.tasks if result is not None else ():
            row = self.store.task_run(active.run_id, task_id)
            said = (row.details or {}).get("alert") if row is not None else None
            if said:  # a source's own warning (a replication slot keeping too much WAL)
                self.alerts.send(self._alert(loaded.name, "source", task_id, str(said)), spec)
        for letter in self.store.dead_letters(loaded.name, status="open"):
            if letter.id in self._alerted_letters or letter.run_id != active.run_id:
                continue
            self._alerted_letters.add(letter.id)
            self.alerts.send(
                self._alert(
                    loaded.name,
                    "dead_letter",
                    letter.task_id,
                    f"task {letter.task_id} of run {letter.run_id} failed for good: "
                    f"{letter.reason}",
                    details={"letter": letter.id},
                ),
                spec,
            )

    def _alert(
        self,
        pipeline: str,
        kind: str,
        subject: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> Alert:
        """An alert stamped with the scheduler's clock (its de-duplication window follows it)."""
        return Alert(pipeline, kind, subject, message, self.clock(), details or {})

    # -- requests from outside (HTTP API, `arrowline trigger`) ---------------------------------

    def request(self, name: str, params: dict[str, Any], source: str) -> RequestRow:
        """Queue a run of pipeline `name` (KeyError when the project has none); its parameters
        are checked now (ParameterError), so a bad request fails at once, not at run time."""
        return request_run(self.layout, name, params, source)

    # -- restart recovery --------------------------------------------------------------------

    def _workspace(self, definition: Definition) -> Workspace:
        """A pipeline's workspace; when its object store does not answer, the local staging
        folder alone (what a dead attempt left there is still swept; its uploads stay until
        retention removes the run's folder)."""
        spec = definition.spec
        layout = self.layout.with_workspace(spec.workspace)
        try:
            use_workspace_connection(spec.workspace, spec.connections, definition.base_dir)
            return layout.workspace()
        except ArrowlineError as exc:  # unreachable, or a setting that cannot be used
            logger.warning("restart recovery: {}; sweeping local staging only", exc.message)
            return LocalWorkspace(layout.workspace_root)

    def recover(self) -> None:
        """Runs a dead scheduler (or any dead process) left RUNNING: INTERRUPTED, then resumed
        or failed per the pipeline's `on_restart`."""
        from engine.execution.recovery import recover_interrupted
        from engine.state.locks import lock_is_held

        for loaded in self.refresh(force=True).values():
            if loaded.definition is None or lock_is_held(
                self.layout.state_dir, loaded.name, self.layout.catalog
            ):
                continue
            workspace = self._workspace(loaded.definition)
            for run_id in recover_interrupted(self.store, workspace, loaded.name):
                if loaded.definition.spec.on_restart == "resume":
                    self.store.request_run(loaded.name, str(loaded.path), {}, "resume", run_id)
                    logger.warning(
                        "run {} of {} was interrupted by a restart; resuming it",
                        run_id,
                        loaded.name,
                    )
                else:
                    logger.warning(
                        "run {} of {} was interrupted by a restart; left failed (on_restart: fail)",
                        run_id,
                        loaded.name,
                    )

    # -- the loop ----------------------------------------------------------------------------

    def _deadline_passed(self) -> bool:
        return self._stop_at is not None and time.monotonic() >= self._stop_at

    def stop(self) -> None:
        """Stop starting runs; running ones get `shutdown_timeout` seconds, then are cancelled.
        Safe in a signal handler: it only sets flags. (A log line there could meet loguru's
        lock held by the code it interrupted; `serve` says it is stopping instead.)"""
        if not self.stopping.is_set():
            self._stop_at = time.monotonic() + self.settings.shutdown_timeout
            self.stopping.set()

    def serve(
        self, *, install_signals: bool = True, on_tick: Callable[[], None] | None = None
    ) -> int:
        """Run until stopped (SIGTERM / SIGINT); returns the exit code."""
        if install_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: self.stop())
        announced = False
        while not self.stopping.is_set():
            started = time.monotonic()
            if self.try_lead():
                self.tick()
            elif not announced:
                logger.info("another scheduler leads {}; standing by", self.layout.project_dir)
                announced = True
            if on_tick is not None:
                on_tick()
            self.stopping.wait(self._sleep(started))
        logger.info(
            "scheduler stopping: no new runs; waiting up to {}s for running ones",
            self.settings.shutdown_timeout,
        )
        return self._drain()

    def _sleep(self, tick_started: float) -> float:
        """Until the next tick, or sooner when a pipeline falls due before it: a run due at
        12:00:00 starts then, not up to a tick later."""
        wait = self.settings.tick - (time.monotonic() - tick_started)
        if self.next_due and self.leading:
            soonest = (min(self.next_due.values()) - self.clock()).total_seconds()
            wait = min(wait, soonest + 0.001)
        return max(0.0, wait)

    def _drain(self) -> int:
        running = [a for runs in self.active.values() for a in runs if a.thread.is_alive()]
        for active in running:
            left = max(0.0, (self._stop_at or 0) - time.monotonic())
            active.thread.join(left)
            if active.thread.is_alive() and active.executor is not None:
                logger.warning(
                    "run {} did not finish before the deadline; cancelling it", active.run_id
                )
                active.executor.cancel()
        for active in running:
            active.thread.join(30)
        with self.lock:
            self.reap()
        self.release()
        self.store.close()
        return 0

    def close(self) -> None:
        self.release()
        with contextlib.suppress(Exception):
            self.store.close()

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
import fcntl
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from loguru import logger

from engine.core.errors import ArrowlineError
from engine.core.states import RunState
from engine.execution.executor import Executor, RunResult
from engine.scheduling.alerts import Alert, AlertSender
from engine.scheduling.cron import Schedule
from engine.spec.definition import Definition
from engine.state.advisory import AdvisoryLock, advisory_held
from engine.state.catalog import Catalog
from engine.state.layout import ProjectLayout
from engine.state.schedules import RequestRow, ScheduleRow
from engine.state.values import iso, parse
from engine.tasks import TaskRunner, run_task

__all__ = [
    "Scheduler",
    "SchedulerSettings",
    "discover_pipelines",
    "request_run",
    "scheduler_running",
]

Clock = Callable[[], datetime]
MISSED_RECORDED = 100
"""Missed intervals recorded as skipped, one row each, beyond those that may run."""
_SKIP_DIRS = {".arrowline", ".git", ".venv", "venv", "node_modules", "__pycache__"}


def utc_now() -> datetime:
    return datetime.now(UTC)


def _yaml_files(project: Path) -> list[Path]:
    """YAML files of a project, without descending into state, VCS or virtualenv folders."""
    found = []
    for folder, folders, files in os.walk(project):
        folders[:] = sorted(d for d in folders if d not in _SKIP_DIRS and not d.startswith("."))
        found += [Path(folder, f) for f in sorted(files) if f.endswith((".yaml", ".yml"))]
    return found


_NAMES: dict[Path, tuple[int, str | None]] = {}
"""path -> (mtime, pipeline name or None): a file is parsed again only when it changes."""


def _pipeline_name(path: Path) -> str | None:
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return None
    cached = _NAMES.get(path)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        data = None
    name = None
    if isinstance(data, dict) and isinstance(data.get("pipeline"), str) and "tasks" in data:
        name = data["pipeline"]
    _NAMES[path] = (mtime, name)
    return name


def discover_pipelines(project: Path) -> dict[str, Path]:
    """Pipeline files of a project (YAML with `pipeline:` and `tasks:`), by pipeline name."""
    found: dict[str, Path] = {}
    for path in _yaml_files(project):
        name = _pipeline_name(path)
        if name is None:
            continue
        if name in found:
            logger.warning(
                "pipeline {} is defined twice: {} and {}; using the first", name, found[name], path
            )
            continue
        found[name] = path
    return found


@dataclass
class _Loaded:
    name: str
    path: Path
    mtime_ns: int
    definition: Definition | None
    schedule: Schedule | None
    problem: str | None = None


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
class _FileSeen:
    size: int
    mtime_ns: int
    since: datetime


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
        self.loaded: dict[str, _Loaded] = {}
        self.active: dict[str, list[_Active]] = {}
        self.files: dict[tuple[str, str], _FileSeen] = {}
        self.last_file_scan: dict[str, datetime] = {}
        self.stopping = threading.Event()
        self._leader_fd: int | None = None
        self._lease: AdvisoryLock | None = None
        """With a shared catalog, leadership is an advisory lock in its database."""
        self._alerted_letters: set[int] = set()
        self._walked = 0.0
        self.next_due: dict[str, datetime] = {}
        """pipeline -> its next fire instant: nothing to decide before then."""
        self._stop_at: float | None = None
        self.lock = threading.Lock()

    # -- leadership --------------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        return self._leader_fd is not None or self._lease is not None

    def try_lead(self) -> bool:
        """Take the project's scheduler lock if nobody holds it; True while this one holds it.
        With a shared catalog the lock is the catalog's, whichever host or folder each replica
        runs in, and the leader checks on every tick that the server still counts it as the
        holder: a leader whose session was ended (a network partition) stands down."""
        if self._leader_fd is not None:
            return True
        if self.store.shared:
            return self._try_lease()
        path = self.layout.scheduler_lock
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._leader_fd = fd
        logger.info("scheduler {} leads project {}", os.getpid(), self.layout.project_dir)
        self.recover()
        return True

    def _try_lease(self) -> bool:
        if self._lease is not None:
            if self._lease.alive():
                return True
            logger.error(
                "scheduler {} lost its lease on the catalog {}; standing down",
                os.getpid(),
                self.store.location.describe(),
            )
            self._lease.release()
            self._lease = None
        lease = AdvisoryLock(
            self.store.location,
            "scheduler",
            "leader",
            label=f"arrowline scheduler {os.getpid()}@{socket.gethostname()}",
        )
        if not lease.try_acquire():
            lease.release()
            return False
        self._lease = lease
        logger.info(
            "scheduler {} on {} leads the catalog {}",
            os.getpid(),
            socket.gethostname(),
            self.store.location.describe(),
        )
        self.recover()
        return True

    def release(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        if self._leader_fd is not None:
            fcntl.flock(self._leader_fd, fcntl.LOCK_UN)
            os.close(self._leader_fd)
            self._leader_fd = None

    # -- pipelines ---------------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> dict[str, _Loaded]:
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
                self.loaded[name] = _Loaded(name, path, mtime, None, None, str(exc))
                continue
            spec = definition.spec
            schedule = Schedule(spec.schedule, spec.timezone) if spec.schedule else None
            self.loaded[name] = _Loaded(name, path, mtime, definition, schedule)
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
        self, loaded: _Loaded, state: ScheduleRow | None, waiting: bool, now: datetime
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
            triggered = self._file_triggers(loaded, now)
            if self._after_triggers(loaded, state.registered_at) or triggered:
                waiting = True
            if (waiting or self._busy(loaded.name)) and not self.stopping.is_set():
                self._dispatch(loaded, now)
        else:
            self.next_due.pop(loaded.name, None)  # on resume, look at what was missed
        self._sla(loaded, now)
        self._freshness(loaded, now)

    def _busy(self, name: str) -> bool:
        return any(a.thread.is_alive() for a in self.active.get(name, []))

    def _decide(self, loaded: _Loaded, since: datetime, now: datetime) -> bool:
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

    # -- triggers ----------------------------------------------------------------------------

    def _file_triggers(self, loaded: _Loaded, now: datetime) -> bool:
        """Requests for settled new files; True when one was made."""
        assert loaded.definition is not None
        triggers = [t for t in loaded.definition.spec.trigger if t.files]
        if not triggers:
            return False
        last = self.last_file_scan.get(loaded.name)
        if last is not None and (now - last).total_seconds() < self.settings.file_scan_every:
            return False
        requested = False
        self.last_file_scan[loaded.name] = now
        base = loaded.path.parent
        for trigger in triggers:
            assert trigger.files is not None
            for path in sorted(base.glob(trigger.files)):
                if not path.is_file():
                    continue
                stat = path.stat()
                slot = (loaded.name, str(path))
                seen = self.files.get(slot)
                if seen is None or (seen.size, seen.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                    self.files[slot] = _FileSeen(stat.st_size, stat.st_mtime_ns, now)
                    continue  # new or still growing: wait until it settles
                if now - seen.since < trigger.settle:
                    continue
                name = path.relative_to(base)
                key = f"{name}|{stat.st_size}|{stat.st_mtime_ns}"
                requested |= self._on_trigger(loaded, "files", key, f"files:{name}")
        return requested

    def _on_trigger(self, loaded: _Loaded, kind: str, key: str, source: str) -> bool:
        """Request a run for a trigger event seen for the first time; False when it was seen."""
        if not self.store.record_trigger(loaded.name, kind, key):
            return False
        request = self.store.request_run(loaded.name, str(loaded.path), {}, source)
        logger.info("pipeline {}: {}; run {} requested", loaded.name, source, request.run_id)
        return True

    def _after_triggers(self, loaded: _Loaded, since: str) -> bool:
        """Requests for the successes, since the pipeline was registered, of the pipelines it
        runs after; True when one was made."""
        assert loaded.definition is not None
        requested = False
        for trigger in loaded.definition.spec.trigger:
            if not trigger.after:
                continue
            for run_id in self.store.untriggered_successes(trigger.after, since, loaded.name):
                source = f"after:{trigger.after}:{run_id}"
                requested |= self._on_trigger(loaded, "after", run_id, source)
        return requested

    # -- starting runs -----------------------------------------------------------------------

    def _running_total(self) -> int:
        return sum(1 for runs in self.active.values() for a in runs if a.thread.is_alive())

    def _dispatch(self, loaded: _Loaded, now: datetime) -> None:
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

    def _cancel_running(self, loaded: _Loaded) -> None:
        for running in self.active.get(loaded.name, []):
            if running.executor is not None and running.thread.is_alive():
                logger.info(
                    "pipeline {}: cancelling run {} (overlap: cancel_previous)",
                    loaded.name,
                    running.run_id,
                )
                running.executor.cancel()

    def _skip(self, loaded: _Loaded, kind: str, item: Any, reason: str) -> None:
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

    def _start(self, loaded: _Loaded, kind: str, item: Any, *, shared: bool) -> None:
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
        self, loaded: _Loaded, active: _Active, params: dict[str, Any], logical: datetime | None
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
                the_plan = build_plan(
                    definition, params=params, logical_date=logical, run_id=active.run_id
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

    def _after_run(self, loaded: _Loaded, active: _Active) -> None:
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

    def _sla(self, loaded: _Loaded, now: datetime) -> None:
        assert loaded.definition is not None
        spec = loaded.definition.spec
        if spec.sla is None or spec.alerts is None:
            return
        for missed in self.store.late_intervals(loaded.name, now - spec.sla):
            late = now - parse(missed.fire_at)
            self.alerts.send(
                self._alert(
                    loaded.name,
                    "sla",
                    missed.fire_at,
                    f"the run due {missed.fire_at} has not succeeded {late} after its time "
                    f"(sla {spec.sla}; run {missed.run_id or 'not started'}, "
                    f"{missed.state or 'no state'})",
                ),
                spec.alerts,
            )

    def _freshness(self, loaded: _Loaded, now: datetime) -> None:
        from engine.scheduling.metrics import watermark_time

        assert loaded.definition is not None
        spec = loaded.definition.spec
        limits = dict(spec.freshness)
        for task in spec.tasks:  # the same limit, said on the source (incremental.max_staleness)
            said = task.incremental.max_staleness if task.incremental else None
            if said is not None:
                limits.setdefault(task.id, said)
        if not limits or spec.alerts is None:
            return
        for task_id, allowed in limits.items():
            rows = self.store.watermarks(loaded.name, task_id)
            times = [t for t in (watermark_time(r.value) for r in rows) if t is not None]
            if not times:
                continue
            lag = now - min(times)
            if lag > allowed:
                self.alerts.send(
                    self._alert(
                        loaded.name,
                        "freshness",
                        task_id,
                        f"{task_id}'s watermark is {lag} behind now (max_staleness {allowed})",
                    ),
                    spec.alerts,
                )

    # -- requests from outside (HTTP API, `arrowline trigger`) ---------------------------------

    def request(self, name: str, params: dict[str, Any], source: str) -> RequestRow:
        """Queue a run of pipeline `name` (KeyError when the project has none); its parameters
        are checked now (ParameterError), so a bad request fails at once, not at run time."""
        return request_run(self.layout, name, params, source)

    # -- restart recovery --------------------------------------------------------------------

    def recover(self) -> None:
        """Runs a dead scheduler (or any dead process) left RUNNING: INTERRUPTED, then resumed
        or failed per the pipeline's `on_restart`."""
        from engine.execution.recovery import recover_interrupted
        from engine.state.locks import lock_is_held

        workspace = self.layout.workspace()
        for loaded in self.refresh(force=True).values():
            if loaded.definition is None or lock_is_held(
                self.layout.state_dir, loaded.name, self.layout.catalog
            ):
                continue
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


def request_run(
    project: ProjectLayout | Path, name: str, params: dict[str, Any], source: str
) -> RequestRow:
    """Queue a run for the project's scheduler; works from any thread or process."""
    from engine.spec.params import resolve_params
    from engine.tasks.checks import load_definition

    layout = ProjectLayout.of(project)
    path = discover_pipelines(layout.project_dir).get(name)
    if path is None:
        raise KeyError(name)
    spec = load_definition(path).spec
    resolve_params(spec.parameters, params, {}, source=f"the {source} request")
    with Catalog(layout.catalog) as store:
        return store.request_run(name, str(path), params, source)


def leader_lock_path(project: ProjectLayout | Path) -> Path:
    """The lock the active scheduler holds (ProjectLayout.scheduler_lock)."""
    return ProjectLayout.of(project).scheduler_lock


def scheduler_running(project: ProjectLayout | Path) -> bool:
    """True when a scheduler process leads the project (holds its lock)."""
    from engine.state.locks import file_lock_is_held

    layout = ProjectLayout.of(project)
    if layout.catalog.shared:
        return advisory_held(layout.catalog, "scheduler", "leader")
    return file_lock_is_held(layout.scheduler_lock)

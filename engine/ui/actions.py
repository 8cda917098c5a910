"""What the monitor's buttons do, each through the same `Project` the CLI calls: pause and resume
a schedule, trigger a run, requeue or resolve a dead letter.

A run started here (a trigger with no scheduler running, a requeue) runs on a thread of the
server, so the POST answers at once with the run's page, which then follows it live; a run
handed to a running scheduler is queued there, as `arrowline trigger` does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

from engine.api.options import PlanOptions, RunOptions
from engine.api.project import Project
from engine.core.errors import ArrowlineError
from engine.core.runids import new_run_id
from engine.state.catalog import Catalog
from engine.state.values import checked_note, current_actor

__all__ = ["Actions"]

MAX_REASON = 500
START_WAIT = 30.0
"""Seconds a triggered run has to appear in the catalog (planning a big pipeline takes a few)."""


@dataclass
class Actions:
    project_dir: Path
    threads: list[threading.Thread] = field(default_factory=list)

    def project(self) -> Project:
        return Project.find(self.project_dir)

    def pause(self, pipeline: str, reason: str) -> None:
        reason = reason.strip()
        if not reason:
            raise ValueError("say why the schedule is paused (the reason is shown to others)")
        self._set_paused(pipeline, True, checked_note(reason[:MAX_REASON]))

    def resume(self, pipeline: str) -> None:
        self._set_paused(pipeline, False, None)

    def _set_paused(self, pipeline: str, paused: bool, reason: str | None) -> None:
        with self.project() as project:
            path = project.pipeline_file(pipeline)
            with Catalog(project.layout.catalog) as store:
                store.set_paused(pipeline, str(path), paused, reason, f"{current_actor()} (ui)")

    def trigger(self, pipeline: str) -> str:
        """Start a run of the pipeline with its default parameters; the run's id."""
        with self.project() as project:
            path = project.pipeline_file(pipeline)
            if project.scheduler_running():
                return project.request_run(pipeline, {}, "ui").run_id
        run_id = new_run_id()

        def run() -> None:
            with Project.find(self.project_dir) as project:
                project.run(path, PlanOptions(run_id=run_id), RunOptions(if_running="refuse"))

        failure = self._start(f"trigger {pipeline}", run)
        self._wait(failure, lambda p: p.catalog.has_run(run_id), run_id)
        return run_id

    def requeue(self, letter_id: int) -> str:
        """Resume the dead letter's run on a thread; the run's id."""
        with self.project() as project:
            letter = project.catalog.dead_letter(letter_id)
            if letter.status == "resolved":
                raise ArrowlineError(f"dead letter {letter_id} is resolved")
            resumes = project.catalog.run(letter.run_id).resumes

        def run() -> None:
            with Project.find(self.project_dir) as project:
                project.requeue_dead_letter(letter_id, options=RunOptions(if_running="refuse"))

        failure = self._start(f"requeue dead letter {letter_id}", run)
        self._wait(failure, lambda p: p.catalog.run(letter.run_id).resumes > resumes, letter.run_id)
        return letter.run_id

    def resolve(self, letter_id: int, note: str) -> None:
        note = note.strip()
        if not note:
            raise ValueError("say how the dead letter was settled (the note is kept)")
        with self.project() as project:
            project.resolve_dead_letter(letter_id, note[:MAX_REASON])

    def _start(self, what: str, work: Callable[[], None]) -> list[BaseException]:
        """Run `work` on a thread; the list it returns receives the error it ends with."""
        failure: list[BaseException] = []

        def guarded() -> None:
            try:
                work()
            except Exception as exc:  # a thread's end: kept for the caller, and logged
                failure.append(exc)
                logger.error("{} failed: {}", what, exc)

        thread = threading.Thread(target=guarded, name=f"arrowline-ui {what}", daemon=True)
        self.threads = [t for t in self.threads if t.is_alive()]
        self.threads.append(thread)
        thread.start()
        return failure

    def _wait(
        self, failure: list[BaseException], started: Callable[[Project], bool], run_id: str
    ) -> None:
        """Wait until the run has started (`started` says so from the catalog), so the page the
        user is sent to shows it; an error before that (a lock held, a pipeline file gone, a
        parameter missing) is the action's error, shown on the page."""
        deadline = time.monotonic() + START_WAIT
        while time.monotonic() < deadline:
            if failure:
                error = failure[0]
                raise error if isinstance(error, ArrowlineError) else ArrowlineError(str(error))
            with self.project() as project:
                if project.layout.catalog.exists() and started(project):
                    return
            time.sleep(0.05)
        raise ArrowlineError(f"run {run_id} did not start within {START_WAIT:.0f} s")

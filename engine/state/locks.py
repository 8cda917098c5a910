"""One run of a pipeline at a time, and the proof that a RUNNING run is still alive.

Each pipeline has a lock file, `.arrowline/locks/<pipeline>.lock`, held with `flock` for the whole
run. The kernel releases it when the process ends however it ends (kill -9 included), so:

- a second run of the same pipeline finds the lock taken and waits or refuses, never interleaving
  its writes with the first;
- a run the catalog still calls RUNNING whose pipeline lock nobody holds is dead: the process that
  next takes the lock marks it INTERRUPTED (see `recover_interrupted`), and `arrowline runs`
  shows it as stale before anyone does.

The lock file also holds the holder's run id, pid and host, for the message a waiting run prints.

With a shared catalog in PostgreSQL (engine.state.db), runs on several hosts must exclude each
other, which a lock file cannot do; the lock is then a PostgreSQL advisory lock
(engine.state.advisory) with the same release-on-death property, and everything above holds across
hosts. flock is never used across a network file system.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Self

from engine.core.errors import StateError, full_disk_said
from engine.state.db import CatalogLocation, catalog_location

__all__ = ["ConcurrentRun", "RunLock", "file_lock_is_held", "lock_is_held"]

IfRunning = Literal["refuse", "wait", "share"]
"""refuse or wait when another run holds the lock; share: hold it together with other runs that
share it (the scheduler's `overlap: allow`), waiting only for a run that holds it alone."""


class ConcurrentRun(StateError):
    """Another run of the same pipeline holds its lock; `holder` says which, as it wrote it
    (run_id, pid, host, since; empty when unknown)."""

    holder: dict[str, Any] = {}  # noqa: RUF012 - replaced per instance, never mutated


def _lock_path(state_dir: Path, pipeline: str) -> Path:
    return state_dir / "locks" / f"{pipeline}.lock"


def _try_lock(fd: int, shared: bool = False) -> bool:
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _catalog(state_dir: Path, catalog: CatalogLocation | None) -> CatalogLocation:
    """The catalog whose kind decides the lock's: the project's own unless one is given."""
    return catalog if catalog is not None else catalog_location(state_dir.parent)


def lock_is_held(state_dir: Path, pipeline: str, catalog: CatalogLocation | None = None) -> bool:
    """True when some process holds the pipeline's run lock right now (a probe: the file lock
    is taken for an instant when nobody holds it; an advisory lock is looked up in pg_locks)."""
    catalog = _catalog(state_dir, catalog)
    if catalog.shared:
        from engine.state.advisory import advisory_held

        return advisory_held(catalog, "run", pipeline)
    return file_lock_is_held(_lock_path(state_dir, pipeline))


def file_lock_is_held(path: Path) -> bool:
    """True when some process holds a flock on `path` right now."""
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        if _try_lock(fd):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        return True
    finally:
        os.close(fd)


class RunLock:
    """`with RunLock(state_dir, pipeline, run_id, if_running="wait"): ...`"""

    def __init__(
        self,
        state_dir: Path,
        pipeline: str,
        run_id: str,
        *,
        if_running: IfRunning = "refuse",
        wait_timeout: float | None = None,
        poll: float = 0.2,
        on_wait: Callable[[dict[str, Any]], None] | None = None,
        catalog: CatalogLocation | None = None,
    ) -> None:
        """`catalog` (default: the project's, which `state_dir` belongs to): a shared catalog
        makes this an advisory lock in its database."""
        self.path = _lock_path(state_dir, pipeline)
        self.pipeline = pipeline
        self.run_id = run_id
        self.if_running = if_running
        self.wait_timeout = wait_timeout
        self.poll = poll
        self.on_wait = on_wait
        self._fd: int | None = None
        self._advisory = None
        catalog = _catalog(state_dir, catalog)
        if catalog.shared:
            from engine.state.advisory import AdvisoryLock

            self._advisory = AdvisoryLock(
                catalog,
                "run",
                pipeline,
                label=f"arrowline run {run_id} {os.getpid()}@{socket.gethostname()}",
            )

    @property
    def shared(self) -> bool:
        return self.if_running == "share"

    def holder(self) -> dict[str, Any]:
        """Who holds the lock, as its holder wrote it (empty when unknown)."""
        if self._advisory is not None:  # the holder's session is labelled with its run
            found = self._advisory.holder()
            if found is None:
                return {}
            label, since = found
            _, _, run_id, where = [*label.split(" ", 3), "", "", "", ""][:4]
            pid, _, host = where.partition("@")
            return {"run_id": run_id, "pid": pid, "host": host, "since": since}
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
            if isinstance(data, dict):
                return data
        return {}

    def _refusal(self, waited: float | None) -> ConcurrentRun:
        holder = self.holder()
        who = (
            f"run {holder.get('run_id', '?')} (pid {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')}, since {holder.get('since', '?')})"
            if holder
            else "another run"
        )
        if waited is None:
            refusal = ConcurrentRun(
                f"pipeline {self.pipeline!r} is already running: {who}",
                hint="wait for it to finish, or pass --if-running wait to queue behind it",
            )
        else:
            refusal = ConcurrentRun(
                f"pipeline {self.pipeline!r} is still running after waiting {waited:.0f}s: {who}"
            )
        refusal.holder = holder
        return refusal

    def _wait(self, try_once: Callable[[], bool]) -> None:
        """Call `try_once` until it takes the lock, refusing or waiting per `if_running`."""
        started = time.monotonic()
        announced = False
        while not try_once():
            if self.if_running == "refuse":
                raise self._refusal(None)
            waited = time.monotonic() - started
            if self.wait_timeout is not None and waited >= self.wait_timeout:
                raise self._refusal(waited)
            if not announced and self.on_wait is not None:
                self.on_wait(self.holder())
                announced = True
            time.sleep(self.poll)

    def acquire(self) -> None:
        if self._advisory is not None:
            advisory = self._advisory
            try:
                self._wait(lambda: advisory.try_acquire(shared=self.shared))
            except BaseException:
                advisory.release()
                raise
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._wait(lambda: _try_lock(fd, shared=self.shared))
        except BaseException:
            os.close(fd)
            raise
        info = {
            "run_id": self.run_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if not self.shared:  # sharers would overwrite each other: the file names one holder
            try:
                with full_disk_said(self.path, what="the run lock could not write"):
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, json.dumps(info).encode(), 0)
            except BaseException:
                os.close(fd)  # and the lock with it
                raise
        self._fd = fd

    def release(self) -> None:
        if self._advisory is not None:
            self._advisory.release()
        if self._fd is not None:
            if not self.shared:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

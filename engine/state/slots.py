"""Slots of named resource pools, shared by every run of a project (or of a shared catalog).

A pool of N slots is N locks, each taken without waiting: `.arrowline/locks/pools/<pool>.<i>.lock`
held with `flock` (the embedded catalog), or the PostgreSQL advisory lock ("pool", "<pool>.<i>")
of a shared catalog, which spans hosts. Either kind is released by the kernel or the server when
its holder ends however it ends, so a run killed with -9 never strands a slot, and no table of
leases needs heartbeats or cleaning. flock locks belong to an open file, not a process: two runs
in one process (the scheduler's) exclude each other as two processes do.

A slot's file holds who took it (pipeline, run, task, pid, host, since) for the message of a
task that waits; an advisory slot's holder names itself in `application_name`.

Runs that declare a pool with different sizes use its first N slots each: a pipeline that says
`warehouse: 2` never takes more than two, whatever another one says.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from engine.state.db import CatalogLocation

__all__ = ["PoolSlot"]


class PoolSlot:
    """One slot: `slot.try_take(holder)` ... `slot.release()`; `slot.holder()` names whoever
    holds it (this process included)."""

    def __init__(self, locks_dir: Path, location: CatalogLocation | None, pool: str, index: int):
        self.pool, self.index = pool, index
        self.path = locks_dir / "pools" / f"{pool}.{index}.lock"
        self.location = location if location is not None and location.shared else None
        self._fd: int | None = None
        self._advisory: Any = None

    @property
    def taken(self) -> bool:
        """Held by this object."""
        return self._fd is not None or self._advisory is not None

    def try_take(self, holder: dict[str, Any]) -> bool:
        assert not self.taken
        holder = holder | {"pid": os.getpid(), "host": socket.gethostname()}
        holder["since"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        if self.location is not None:
            from engine.state.advisory import AdvisoryLock

            label = f"arrowline pool {holder.get('run_id', '')} {holder.get('task_id', '')}"
            lock = AdvisoryLock(self.location, "pool", f"{self.pool}.{self.index}", label=label)
            try:
                took = lock.try_acquire()
            except BaseException:  # the catalog failed: its session goes with it
                lock.release()
                raise
            if took:
                self._advisory = lock
                return True
            lock.release()
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        with contextlib.suppress(OSError):  # who holds it only helps a message
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd
        return True

    def holder(self) -> str:
        """Who holds the slot, for a waiting task's message ("" when unknown)."""
        if self.location is not None:
            from engine.state.advisory import AdvisoryLock

            probe = AdvisoryLock(self.location, "pool", f"{self.pool}.{self.index}", label="probe")
            try:
                found = probe.holder()
            finally:
                probe.release()
            if found is None:
                return ""
            _, _, run_id, task_id = [*found[0].split(" ", 3), "", "", ""][:4]
            return f"task {task_id} of run {run_id}"
        if not self._held_elsewhere():
            return ""  # what the file says is stale: its holder ended without emptying it
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
            if isinstance(data, dict) and data:
                return (
                    f"task {data.get('task_id', '?')} of {data.get('pipeline', '?')} run "
                    f"{data.get('run_id', '?')} (pid {data.get('pid', '?')} on "
                    f"{data.get('host', '?')})"
                )
        return ""

    def _held_elsewhere(self) -> bool:
        """Whether another open file holds the slot's flock (probed without waiting)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)  # (closing it lets go of the probe's shared lock)
        return False

    def release(self) -> None:
        if self._advisory is not None:
            self._advisory.release()
            self._advisory = None
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

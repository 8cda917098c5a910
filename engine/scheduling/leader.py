"""Which scheduler process acts on a project: the one holding its lock.

With the embedded catalog the lock is a file lock in the project's state folder; with a shared
catalog it is an advisory lock in the catalog's database, whichever host or folder each replica
runs in, and the leader checks on every tick that the server still counts it as the holder: a
leader whose session was ended (a network partition) stands down.
"""

from __future__ import annotations

import fcntl
import os
import socket
from enum import StrEnum
from pathlib import Path

from loguru import logger

from engine.state.advisory import AdvisoryLock, advisory_held
from engine.state.catalog import Catalog
from engine.state.layout import ProjectLayout

__all__ = ["Lead", "Leadership", "leader_lock_path", "scheduler_running"]


class Lead(StrEnum):
    NO = "no"
    """Another process leads."""
    HELD = "held"
    """This process went on leading."""
    TAKEN = "taken"
    """This process has just become the leader (it then settles what a previous one left)."""


class Leadership:
    def __init__(self, layout: ProjectLayout, store: Catalog) -> None:
        self.layout = layout
        self.store = store
        self._fd: int | None = None
        self._lease: AdvisoryLock | None = None

    @property
    def leading(self) -> bool:
        return self._fd is not None or self._lease is not None

    def take(self) -> Lead:
        """Take the project's scheduler lock if nobody holds it."""
        if self._fd is not None:
            return Lead.HELD
        if self.store.shared:
            return self._take_lease()
        path = self.layout.scheduler_lock
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return Lead.NO
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        logger.info("scheduler {} leads project {}", os.getpid(), self.layout.project_dir)
        return Lead.TAKEN

    def _take_lease(self) -> Lead:
        if self._lease is not None:
            if self._lease.alive():
                return Lead.HELD
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
            return Lead.NO
        self._lease = lease
        logger.info(
            "scheduler {} on {} leads the catalog {}",
            os.getpid(),
            socket.gethostname(),
            self.store.location.describe(),
        )
        return Lead.TAKEN

    def release(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


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

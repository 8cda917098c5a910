"""Runs started by events: a new file that stopped growing (`trigger: {files: ...}`) and a
success of another pipeline (`trigger: {after: ...}`) become run requests, each event once (the
catalog remembers the events it has seen)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from loguru import logger

from engine.scheduling.discover import Loaded
from engine.state.catalog import Catalog

__all__ = ["Triggers"]


@dataclass
class _FileSeen:
    size: int
    mtime_ns: int
    since: datetime


class Triggers:
    def __init__(self, store: Catalog, scan_every: float) -> None:
        self.store = store
        self.scan_every = scan_every
        """Seconds between globbing a pipeline's trigger folders (settling waits anyway)."""
        self.seen: dict[tuple[str, str], _FileSeen] = {}
        """(pipeline, path) -> the file's size and time when first seen so."""
        self.last_scan: dict[str, datetime] = {}

    def files(self, loaded: Loaded, now: datetime) -> bool:
        """Requests for settled new files; True when one was made."""
        assert loaded.definition is not None
        triggers = [t for t in loaded.definition.spec.trigger if t.files]
        if not triggers:
            return False
        last = self.last_scan.get(loaded.name)
        if last is not None and (now - last).total_seconds() < self.scan_every:
            return False
        requested = False
        self.last_scan[loaded.name] = now
        base = loaded.path.parent
        for trigger in triggers:
            assert trigger.files is not None
            for path in sorted(base.glob(trigger.files)):
                if not path.is_file():
                    continue
                stat = path.stat()
                slot = (loaded.name, str(path))
                seen = self.seen.get(slot)
                if seen is None or (seen.size, seen.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                    self.seen[slot] = _FileSeen(stat.st_size, stat.st_mtime_ns, now)
                    continue  # new or still growing: wait until it settles
                if now - seen.since < trigger.settle:
                    continue
                name = path.relative_to(base)
                key = f"{name}|{stat.st_size}|{stat.st_mtime_ns}"
                requested |= self._request(loaded, "files", key, f"files:{name}")
        return requested

    def _request(self, loaded: Loaded, kind: str, key: str, source: str) -> bool:
        """Request a run for a trigger event seen for the first time; False when it was seen."""
        if not self.store.record_trigger(loaded.name, kind, key):
            return False
        request = self.store.request_run(loaded.name, str(loaded.path), {}, source)
        logger.info("pipeline {}: {}; run {} requested", loaded.name, source, request.run_id)
        return True

    def after(self, loaded: Loaded, since: str) -> bool:
        """Requests for the successes, since the pipeline was registered, of the pipelines it
        runs after; True when one was made."""
        assert loaded.definition is not None
        requested = False
        for trigger in loaded.definition.spec.trigger:
            if not trigger.after:
                continue
            for run_id in self.store.untriggered_successes(trigger.after, since, loaded.name):
                source = f"after:{trigger.after}:{run_id}"
                requested |= self._request(loaded, "after", run_id, source)
        return requested

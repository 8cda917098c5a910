"""PostgreSQL advisory locks: the shared catalog's counterpart of the embedded catalog's flock.

With the catalog in PostgreSQL, runs and schedulers on several hosts must exclude each other, and
a lock file on one host's disk cannot do that. A session-level advisory lock can, with the same
property the flock design rests on: the server releases it when the session ends, however it
ends. A process killed with -9 closes its socket and its locks go at once; a host that vanishes
(power, network) is noticed by TCP keepalives the session sets on the server side
(`PostgresDatabase.SERVER_KEEPALIVE`: about 11 s), after which its backend ends and its locks go.

Each lock holds one dedicated connection for as long as it is held; the holder can ask `alive()`
to learn whether the server still counts it as the holder (a session the server ended has lost
its lock, and a scheduler that was the leader must stop acting as one).

Keys are two int4s (engine.core.locking.advisory_key): the kind and catalog schema, then the name.
Two names whose crc32 collide would share a lock: that serializes two pipelines, never lets two
runs of one pipeline overlap.
"""

from __future__ import annotations

import contextlib

from engine.core.locking import advisory_key
from engine.state.db import CatalogLocation, PostgresDatabase

__all__ = ["AdvisoryLock", "advisory_held"]


class AdvisoryLock:
    """`lock = AdvisoryLock(location, "run", pipeline); lock.try_acquire()` ... `lock.release()`"""

    def __init__(self, location: CatalogLocation, kind: str, name: str, *, label: str) -> None:
        assert location.uri is not None, "advisory locks need a shared (PostgreSQL) catalog"
        self.location = location
        self.key = advisory_key(f"arrowline:{kind}:{location.schema}", name)
        self.label = label
        """Shown as the session's application_name in pg_stat_activity."""
        self._db: PostgresDatabase | None = None

    def _session(self) -> PostgresDatabase:
        if self._db is None:
            assert self.location.uri is not None
            self._db = PostgresDatabase(
                self.location.uri, self.location.schema, application_name=self.label
            )
        return self._db

    def try_acquire(self, *, shared: bool = False) -> bool:
        function = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
        rows = self._session().execute(
            f"select {function}(cast(? as int), cast(? as int))", self.key
        )
        return bool(rows[0][0])

    def alive(self) -> bool:
        """True while this session holds the lock; False once the server ended the session
        (or it was never taken)."""
        if self._db is None:
            return False
        try:
            return held(self._db, self.key, mine=True)
        except Exception:
            return False

    def is_held(self) -> bool:
        """True when any session holds the lock right now (this one included)."""
        return held(self._session(), self.key)

    def holder(self) -> tuple[str, str] | None:
        """The label (application_name) and session start of a session holding the lock, for
        the message a waiter prints; None when nobody holds it or the server will not say."""
        with contextlib.suppress(Exception):
            rows = self._session().execute(
                "select a.application_name, cast(a.backend_start as text) from pg_locks l "
                "join pg_stat_activity a using (pid) where " + _MATCH + " limit 1",
                _match(self.key),
            )
            if rows:
                return str(rows[0][0]), str(rows[0][1])
        return None

    def release(self) -> None:
        """Give the lock up: unlocked in the session first, so it is free when this returns
        (a closed session's locks go only when its server process has ended, a moment later,
        and a probe in between would still see them), then the session is ended."""
        if self._db is not None:
            with contextlib.suppress(Exception):
                self._db.execute("select pg_advisory_unlock_all()")
            with contextlib.suppress(Exception):
                self._db.close()
            self._db = None


def advisory_held(location: CatalogLocation, kind: str, name: str) -> bool:
    """True when some session, on any host, holds the lock (kind, name) of this catalog."""
    probe = AdvisoryLock(location, kind, name, label="arrowline probe")
    try:
        return probe.is_held()
    finally:
        probe.release()


def held(db: PostgresDatabase, key: tuple[int, int], *, mine: bool = False) -> bool:
    """Whether a granted advisory lock on `key` exists in this database (held by `db`'s own
    session when `mine`)."""
    rows = db.execute(
        "select exists (select 1 from pg_locks l where "
        + _MATCH
        + (" and l.pid = pg_backend_pid())" if mine else ")"),
        _match(key),
    )
    return bool(rows[0][0])


_MATCH = (
    "l.locktype = 'advisory' and l.granted and l.objsubid = 2 "
    "and l.database = (select oid from pg_database where datname = current_database()) "
    "and l.classid::bigint = ? and l.objid::bigint = ?"
)


def _match(key: tuple[int, int]) -> tuple[int, int]:
    # pg_locks shows the int4 keys as unsigned oids
    return key[0] % 2**32, key[1] % 2**32

"""When a schedule fires, in its time zone, across DST changes, month ends and leap days.

A cron expression (croniter's: five fields, or six with seconds last) names local wall-clock
times. Each matching wall time fires once, at one instant:

- a wall time that exists once fires then;
- a wall time that exists twice (the hour repeated when clocks go back) fires at its first
  occurrence only: a daily 01:30 job runs once on that day, not twice;
- a wall time that does not exist (the hour skipped when clocks go forward) fires at the moment
  the clocks jump, so a daily 02:30 job still runs that day, at 03:00 local; several skipped
  times fire once together.

So the schedule never skips or doubles a run its expression does not ask for. Instants are UTC.

Every walk over fire times is bounded by a count, never by how far back its start lies: a
schedule whose last fire is a year (or, from a bad state, two thousand years) ago is decided by
walking back from now (`latest`), not forward from then.

A run due at a fire time covers the interval from the previous fire time to it: its
`logical_date` is the interval's start (the data it covers), the convention of batch schedulers,
so re-running the same interval reads the same data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

__all__ = ["Interval", "Schedule"]


@dataclass(frozen=True, order=True)
class Interval:
    start: datetime
    """The run's logical date: the previous fire time (UTC)."""
    end: datetime
    """The fire time: when the run is due (UTC)."""


class Schedule:
    def __init__(self, cron: str, timezone: str = "UTC") -> None:
        self.cron = cron
        self.zone = ZoneInfo(timezone)
        self.timezone = timezone
        if not croniter.is_valid(cron):
            raise ValueError(f"{cron!r} is not a valid cron expression")

    def __repr__(self) -> str:
        return f"Schedule({self.cron!r}, {self.timezone!r})"

    # -- wall time <-> instant

    def _local(self, instant: datetime) -> datetime:
        return instant.astimezone(self.zone).replace(tzinfo=None)

    def _instant(self, wall: datetime) -> datetime:
        first = wall.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        exists = [u for u in (first, second) if self._local(u) == wall]
        if exists:
            return min(exists)  # repeated: the first occurrence
        # Skipped: the instant the clocks jump, between the two readings of the wall time.
        low, high = min(first, second), max(first, second)
        target = high.astimezone(self.zone).utcoffset()
        while high - low > timedelta(seconds=1):
            middle = low + (high - low) / 2
            if middle.astimezone(self.zone).utcoffset() == target:
                high = middle
            else:
                low = middle
        return high.replace(microsecond=0)

    # -- fire times

    def fires_after(self, after: datetime) -> Iterator[datetime]:
        """Fire instants strictly after `after`, in order, without end."""
        wall = self._local(after)
        iterator = croniter(self.cron, wall)
        last = after
        while True:
            instant = self._instant(iterator.get_next(datetime))
            if instant > last:
                last = instant
                yield instant

    def next_after(self, after: datetime) -> datetime:
        return next(self.fires_after(after))

    def previous(self, at_or_before: datetime) -> datetime:
        """The latest fire instant at or before the given instant."""
        wall = self._local(at_or_before) + timedelta(microseconds=1)
        iterator = croniter(self.cron, wall)
        while True:
            instant = self._instant(iterator.get_prev(datetime))
            if instant <= at_or_before:
                return instant

    def fires_before(self, at_or_before: datetime) -> Iterator[datetime]:
        """Fire instants at or before the given instant, newest first, without end."""
        wall = self._local(at_or_before) + timedelta(microseconds=1)
        iterator = croniter(self.cron, wall)
        last = at_or_before + timedelta(microseconds=1)
        while True:
            instant = self._instant(iterator.get_prev(datetime))
            if instant < last:  # several skipped wall times fire at one instant: once
                last = instant
                yield instant

    def due(self, after: datetime, until: datetime, limit: int | None = None) -> list[datetime]:
        """Fire instants in (after, until], oldest first; with `limit`, at most that many (the
        oldest), so a range reaching far back cannot walk for ever."""
        found: list[datetime] = []
        for instant in self.fires_after(after):
            if instant > until or (limit is not None and len(found) == limit):
                break
            found.append(instant)
        return found

    def latest(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """The newest `limit` fire instants in (after, until], oldest first. It walks back from
        `until`, so its cost is `limit` steps at most, however long ago `after` is."""
        found: list[datetime] = []
        for instant in self.fires_before(until):
            if instant <= after or len(found) == limit:
                break
            found.append(instant)
        return found[::-1]

    def interval_ending(self, fire: datetime) -> Interval:
        """The interval a run due at `fire` covers."""
        return Interval(self.previous(fire - timedelta(microseconds=1)), fire)

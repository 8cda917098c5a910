"""Tasks that wait for a time (a retry's backoff, a connection's open breaker), and when the
dispatcher must look again."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.execution.attempts import Attempt

__all__ = ["DueQueue", "next_wake"]


class DueQueue:
    """Task ids, each due at a time, optionally tagged (a connection) to be woken together."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, str, str | None]] = []
        self._sequence = itertools.count()

    def __bool__(self) -> bool:
        return bool(self._heap)

    def add(self, task_id: str, delay: float, tag: str | None = None) -> None:
        heapq.heappush(self._heap, (self.clock() + delay, next(self._sequence), task_id, tag))

    def wake(self, tag: str) -> None:
        """Everything tagged `tag` is due now."""
        now = self.clock()
        self._heap = [
            (now if other == tag else due, sequence, task_id, other)
            for due, sequence, task_id, other in self._heap
        ]
        heapq.heapify(self._heap)

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def due(self) -> list[str]:
        """The tasks whose time has come, no longer waiting."""
        now, found = self.clock(), []
        while self._heap and self._heap[0][0] <= now:
            found.append(heapq.heappop(self._heap)[2])
        return found

    def clear(self) -> list[str]:
        """Every waiting task, no longer waiting."""
        found = [task_id for _, _, task_id, _ in self._heap]
        self._heap.clear()
        return found


def next_wake(
    now: float,
    heartbeat_due: float,
    queues: Iterable[DueQueue],
    running: Iterable[Attempt],
    grace: float,
) -> float:
    """When the dispatcher must look again: a heartbeat, a retry, a breaker's cooldown, a
    running attempt's deadline or the end of its grace period."""
    candidates = [heartbeat_due]
    candidates += [due for due in (queue.next_due() for queue in queues) if due is not None]
    attempts = list(running)
    for attempt in attempts:
        if attempt.stop_requested_at is not None:
            candidates.append(attempt.stop_requested_at + grace)
        elif attempt.deadline is not None:
            candidates.append(attempt.deadline)
    if attempts:
        candidates.append(now + 0.5)  # notice cancel() from another thread promptly
    return max(now, min(candidates))

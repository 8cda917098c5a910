"""Circuit breakers: one per external endpoint (a named connection), shared by a run's tasks.

    CLOSED ──(N consecutive transient failures)──> OPEN ──(cooldown passed)──> HALF_OPEN
       ^                                             ^                            │ one probe
       └──────────────(the probe succeeds)───────────┼────────────────────────────┤
                                                     └──(the probe fails)─────────┘

While a breaker is OPEN, `before()` refuses a task that uses its connection with `CircuitOpen`,
which says until when; the task never touches the endpoint. The executor does not count a
refusal as an attempt: the task waits, QUEUED, until the cooldown ends (then one task probes)
or the probe in flight has its verdict, so a server that comes back during the cooldown is
found by tasks that still have every attempt they were given. Only transient failures (lost
connections, timeouts) count: a SQL error proves the server is up. The clock is injected, so
tests step through the states without sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum

from engine.core.errors import TransientTaskError

__all__ = ["BreakerState", "CircuitBreaker", "CircuitOpen"]


class CircuitOpen(TransientTaskError):
    """The task's connection has failed too often lately; it was not tried."""


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failures: int = 5,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.threshold = failures
        self.cooldown = cooldown
        self.clock = clock
        self.wall = wall
        self.state = BreakerState.CLOSED
        self.consecutive = 0
        self.opened_at: float | None = None
        self.last_error: str | None = None
        self._probing = False
        self._lock = threading.Lock()

    def _until(self) -> float:
        assert self.opened_at is not None
        return self.opened_at + self.cooldown

    def _refusal(self, now: float, why: str) -> CircuitOpen:
        # while a probe is in flight its verdict comes first, at the latest after a cooldown
        wait = max(0.0, self._until() - now) if self.state is BreakerState.OPEN else self.cooldown
        until = datetime.fromtimestamp(self.wall() + wait, UTC)
        return CircuitOpen(
            f"circuit breaker for connection {self.name!r} is open ({why}); tasks using it "
            f"wait until {until:%Y-%m-%d %H:%M:%S} UTC"
            + (f"; last error: {self.last_error}" if self.last_error else ""),
            hint=f"the breaker lets one probe through after {self.cooldown:g}s",
            retry_after=max(wait, 0.001),
        )

    def before(self) -> None:
        """Call before a task touches the endpoint; raises CircuitOpen when it must not."""
        with self._lock:
            now = self.clock()
            if self.state is BreakerState.OPEN:
                if now < self._until():
                    raise self._refusal(now, f"{self.consecutive} consecutive failures")
                self.state = BreakerState.HALF_OPEN
                self._probing = False
            if self.state is BreakerState.HALF_OPEN:
                if self._probing:
                    raise self._refusal(now, "a probe is in flight")
                self._probing = True

    def succeeded(self) -> None:
        with self._lock:
            self.state = BreakerState.CLOSED
            self.consecutive = 0
            self.opened_at = None
            self._probing = False

    def released(self) -> None:
        """A task that held the probe ended without a verdict (it was cancelled)."""
        with self._lock:
            self._probing = False

    def failed(self, error: str) -> None:
        """A transient failure of a task that used the endpoint."""
        with self._lock:
            self.consecutive += 1
            self.last_error = error.splitlines()[0][:200] if error else None
            if self.state is BreakerState.HALF_OPEN or self.consecutive >= self.threshold:
                self.state = BreakerState.OPEN
                self.opened_at = self.clock()
            self._probing = False

    def describe(self) -> dict[str, object]:
        return {
            "connection": self.name,
            "state": self.state.value,
            "consecutive_failures": self.consecutive,
            "open_for_s": round(self._until() - self.clock(), 3)
            if self.state is BreakerState.OPEN
            else None,
        }

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
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from engine.core.errors import Cancelled, TransientTaskError
from engine.execution.waiting import DueQueue

if TYPE_CHECKING:
    from engine.planning.build import Plan, PlannedTask

__all__ = ["BreakerGate", "BreakerState", "CircuitBreaker", "CircuitOpen"]


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


class BreakerGate:
    """The breakers of a run's connections, and the QUEUED tasks an open one holds back.

    A refusal is not an attempt: the endpoint was not touched, so it proves nothing about the
    task. The task stays QUEUED, its attempts untouched, until the cooldown ends (it may then
    probe) or the probe in flight has its verdict. Spending attempts on refusals made a task
    with `attempts: 6` behind a breaker with `failures: 5` always fail its last attempt unseen,
    even when the server was back.
    """

    def __init__(
        self,
        connections: Iterable[str],
        *,
        failures: int,
        cooldown: float,
        clock: Callable[[], float],
    ) -> None:
        self.breakers = {
            name: CircuitBreaker(name, failures=failures, cooldown=cooldown, clock=clock)
            for name in connections
        }
        self.waiting = DueQueue(clock)
        """QUEUED tasks held back, tagged by connection."""

    @classmethod
    def for_plan(cls, plan: Plan, clock: Callable[[], float]) -> BreakerGate:
        """One breaker per connection the plan's tasks use, by the pipeline's policy."""
        policy = plan.circuit_breaker
        return cls(
            {t.connection for t in plan.to_run if t.connection},
            failures=policy.failures,
            cooldown=policy.cooldown.total_seconds(),
            clock=clock,
        )

    def tell(self, task: PlannedTask, result: object, cancelling: bool) -> None:
        """What an attempt of `task` (its outcome or error) says of its connection."""
        from engine.execution.attempts import classify_error, describe_error

        if not isinstance(result, BaseException):
            self.verdict(task.connection, "ok")
        elif isinstance(result, Cancelled) or cancelling:
            self.verdict(task.connection, "released")  # says nothing of the endpoint
        elif classify_error(task, result).transient:
            self.verdict(task.connection, "failed", describe_error(result))
        else:
            self.verdict(task.connection, "ok")  # it answered; the request was wrong

    def holds_back(self, connection: str | None) -> bool:
        """Whether a task on `connection` would not be let through now (its breaker is not
        closed), asked without taking the probe."""
        breaker = self.breakers.get(connection or "")
        return breaker is not None and breaker.state is not BreakerState.CLOSED

    def refusal(self, connection: str | None) -> float | None:
        """Seconds a task on `connection` would be told to wait now; None when it would be let
        through (as a probe, after the cooldown). Asked without taking the probe."""
        breaker = self.breakers.get(connection or "")
        if breaker is None or breaker.state is BreakerState.CLOSED:
            return None
        now = breaker.clock()
        if breaker.state is BreakerState.OPEN and now >= breaker._until():
            return None  # its cooldown is over: the next task probes
        if breaker.state is BreakerState.HALF_OPEN and not breaker._probing:
            return None
        return breaker._refusal(now, "").retry_after

    def admits(self, task_id: str, connection: str | None) -> CircuitOpen | None:
        """None when the task may try its connection now; else the refusal, and the task waits
        in `waiting` until the cooldown ends or a verdict on its connection."""
        breaker = self.breakers.get(connection or "")
        if breaker is None:
            return None
        try:
            breaker.before()
        except CircuitOpen as exc:
            wait = exc.retry_after if exc.retry_after is not None else breaker.cooldown
            self.waiting.add(task_id, wait, breaker.name)
            return exc
        return None

    def verdict(
        self, connection: str | None, outcome: Literal["ok", "failed", "released"], error: str = ""
    ) -> None:
        """What an attempt on `connection` found; the tasks waiting for its breaker then ask it
        again at once."""
        breaker = self.breakers.get(connection or "")
        if breaker is None:
            return
        if outcome == "ok":
            breaker.succeeded()
        elif outcome == "failed":
            breaker.failed(error)
        else:
            breaker.released()
        self.waiting.wake(breaker.name)

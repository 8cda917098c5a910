"""Circuit breakers: state transitions with an injected clock, and a run against a dead server."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.api import run
from engine.breaker import BreakerState, CircuitBreaker, CircuitOpen
from engine.catalog import CatalogReader
from engine.states import RunState, TaskState
from tests.conftest import WritePipeline


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker("wh", failures=3, cooldown=30, clock=clock, wall=lambda: 0.0)


def test_consecutive_failures_open_it_and_it_says_until_when() -> None:
    clock = Clock()
    b = breaker(clock)
    for n in range(2):
        b.before()
        b.failed(f"connection refused {n}")
        assert b.state is BreakerState.CLOSED
    b.before()
    b.failed("connection refused 2")
    assert b.state is BreakerState.OPEN
    clock.now += 10
    with pytest.raises(CircuitOpen) as refused:
        b.before()
    message = str(refused.value)
    assert "circuit breaker for connection 'wh' is open (3 consecutive failures)" in message
    assert "until 1970-01-01 00:00:20 UTC" in message  # 20 s of the 30 s cooldown remain
    assert "last error: connection refused 2" in message
    assert refused.value.retry_after == pytest.approx(20.0)
    assert refused.value.transient


def test_a_success_resets_the_count() -> None:
    clock = Clock()
    b = breaker(clock)
    b.failed("x")
    b.failed("x")
    b.succeeded()
    b.failed("x")
    b.failed("x")
    assert b.state is BreakerState.CLOSED
    assert b.consecutive == 2


def test_after_the_cooldown_one_probe_decides() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failed("down")
    clock.now += 30
    b.before()  # the probe
    assert b.state is BreakerState.HALF_OPEN
    with pytest.raises(CircuitOpen, match="a probe is in flight"):
        b.before()
    b.failed("still down")  # the probe failed: open again for a full cooldown
    assert b.state is BreakerState.OPEN
    clock.now += 29.9
    with pytest.raises(CircuitOpen):
        b.before()
    clock.now += 0.1
    b.before()
    b.succeeded()
    assert b.state is BreakerState.CLOSED
    b.before()
    b.before()  # closed: everyone passes


def test_a_cancelled_probe_lets_the_next_task_probe() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failed("down")
    clock.now += 31
    b.before()
    b.released()
    b.before()
    assert b.state is BreakerState.HALF_OPEN


def test_tasks_on_a_dead_server_fail_fast_once_the_breaker_opens(
    write: WritePipeline, project: Path
) -> None:
    """Six extracts from a server that refuses connections, one at a time: the first three try
    it and fail; the breaker opens; the other three fail at once without trying."""
    tasks = "\n".join(
        f"  - id: e{i}\n    extract: {{from: postgres, connection: dead, query: select {i}}}"
        for i in range(6)
    )
    path = write(
        "p.yaml",
        f"""
pipeline: breaker
circuit_breaker: {{failures: 3, cooldown: 10m}}
defaults:
  retry: {{attempts: 1}}
connections:
  dead: {{kind: postgres, uri: "postgresql://postgres@127.0.0.1:9/test?connect_timeout=2"}}
tasks:
{tasks}
""",
    )
    result = run(path, max_parallel=1)
    assert result.state is RunState.FAILED
    assert all(t.state is TaskState.FAILED for t in result.tasks.values())
    kinds = [result.tasks[f"e{i}"].error_kind for i in range(6)]
    assert kinds[3:] == ["CircuitOpen"] * 3
    assert "CircuitOpen" not in kinds[:3]
    for i in range(3, 6):
        error = result.tasks[f"e{i}"].error or ""
        assert "circuit breaker for connection 'dead' is open" in error
        assert result.tasks[f"e{i}"].duration_s == 0.0  # it never touched the server
    with CatalogReader(project / ".arrowline" / "catalog.db") as catalog:
        row = catalog.task_run(result.run_id, "e5")
        assert row is not None
        assert (row.error_kind, row.error_transient) == ("CircuitOpen", True)
        tried = catalog.task_run(result.run_id, "e0")
        assert tried is not None
        assert tried.error_transient  # a refused connection is what opens a breaker

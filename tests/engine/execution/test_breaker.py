"""Circuit breakers: state transitions with an injected clock, and a run against a dead server."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from connectors.postgres.errors import PostgresUnavailable
from engine.api.pipeline import run
from engine.core.states import RunState, TaskState
from engine.execution.breaker import BreakerState, CircuitBreaker, CircuitOpen
from engine.execution.executor import Executor
from engine.state.catalog import CatalogReader
from tests.conftest import WritePipeline
from tests.engine.execution.test_executor import FakeClock, _execute, flaky_runner


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


def test_tasks_on_a_dead_server_wait_for_the_breaker_and_probe_one_at_a_time(
    write: WritePipeline, project: Path
) -> None:
    """Six extracts from a server that refuses connections, one at a time: the first three try
    it and fail; the breaker opens; each of the other three waits out a cooldown, then probes
    the server once (and fails, reopening it). None fails on a refusal."""
    tasks = "\n".join(
        f"  - id: e{i}\n    extract: {{from: postgres, connection: dead, query: select {i}}}"
        for i in range(6)
    )
    path = write(
        "p.yaml",
        f"""
pipeline: breaker
circuit_breaker: {{failures: 3, cooldown: 1s}}
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
    assert {t.error_kind for t in result.tasks.values()} == {"PostgresUnavailable"}
    assert all(t.attempts == 1 for t in result.tasks.values())
    with CatalogReader(project / ".arrowline" / "catalog.db") as catalog:
        rows = [catalog.task_run(result.run_id, f"e{i}") for i in range(6)]
        tried = catalog.task_run(result.run_id, "e0")
        assert tried is not None
        assert tried.error_transient  # a refused connection is what opens a breaker
    spans = sorted(
        (datetime.fromisoformat(row.started_at), datetime.fromisoformat(row.ended_at))
        for row in rows
        if row is not None and row.started_at and row.ended_at
    )
    assert len(spans) == 6
    gaps = [(b[0] - a[1]).total_seconds() for a, b in itertools.pairwise(spans)]
    assert all(gap < 0.5 for gap in gaps[:2])  # the first three try at once
    assert all(gap >= 0.9 for gap in gaps[2:]), gaps  # then one probe per cooldown


BACK_AFTER_FIVE = """
    pipeline: comeback
    circuit_breaker: {failures: 5, cooldown: 30s}
    connections:
      wh: {kind: postgres, uri: "postgresql://postgres@127.0.0.1:9/test"}
    tasks:
      - id: e
        extract: {from: postgres, connection: wh, query: select 1}
        retry: {attempts: 6, backoff: 1s, max_backoff: 2s, jitter: none}
"""


def test_a_refusal_does_not_spend_the_last_attempt_it_waits_and_probes(
    write: WritePipeline, project: Path
) -> None:
    path = write("p.yaml", BACK_AFTER_FIVE)
    clock = FakeClock()
    down = [PostgresUnavailable("cannot connect: connection refused") for _ in range(5)]
    runner, calls = flaky_runner({"e": down})  # down five times, back for the sixth
    result = _execute(path, runner, clock)
    assert result.ok, result.tasks["e"].error
    assert calls["e"] == 6
    assert result.tasks["e"].attempts == 6
    # backoffs 1 + 2 + 2 + 2 s, then the rest of the 30 s cooldown the fifth failure started
    assert clock.now - 1000.0 == pytest.approx(7.0 + 30.0)
    with CatalogReader(project / ".arrowline" / "catalog.db") as catalog:
        moves = [(t.to_state, t.error or "") for t in catalog.transitions(result.run_id, "e")]
    assert not [error for _, error in moves if "circuit breaker" in error]
    assert [state for state, _ in moves].count("RUNNING") == 6


def test_a_run_cancelled_while_a_task_waits_for_the_breaker_ends_at_once(
    write: WritePipeline, project: Path
) -> None:
    path = write(
        "p.yaml",
        BACK_AFTER_FIVE.replace("failures: 5, cooldown: 30s", "failures: 1, cooldown: 10m"),
    )
    runner, calls = flaky_runner({"e": [PostgresUnavailable("connection refused")]})
    executors: list[Executor] = []

    def cancel() -> None:  # as Ctrl-C does, while the task waits out the cooldown
        executors[0].cancel()

    timer = threading.Timer(1.5, cancel)
    timer.start()
    started = time.monotonic()
    result = run(path, runner=runner, on_executor=executors.append)
    assert time.monotonic() - started < 10  # not the 10 minute cooldown
    assert result.state is RunState.CANCELLED
    assert result.tasks["e"].state is TaskState.CANCELLED
    assert calls["e"] == 1
    assert result.tasks["e"].attempts == 1

"""Loads that ride on a running extract: the bookkeeping of pipelined hand-off.

When an extract starts, each load that reads only its output, whose sink takes a stream and
that nothing else holds up gets a `BatchStream` on the extract's `Tee`. When the extract knows
its schema it says so on the dispatcher's queue (`StreamOpened`), and the dispatcher starts the
load then, if a slot is free; a load that cannot start detaches and waits for the published
output as before. The extract writes its workspace copy beside the stream (resume, notebooks,
lineage and drift read it), so a load that fails can retry from the copy.

Order is what keeps it honest: a stream ends only after the extract's output was published and
its watermark recorded, so a load commits nothing an extract did not finish. When the extract's
attempt fails, its riders' attempts are void: they go back to PENDING, their attempts do not
count against their retries, and they wait for the extract's next attempt like any other task.
A rider that ends before its extract does (a failure of its own, or a load this run had already
committed) is held until the extract ends, then handled as if it ended then.
"""

from __future__ import annotations

import queue
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from engine.core.errors import Cancelled, TransientTaskError
from engine.core.states import TaskState
from engine.core.streams import BatchStream, Tee
from engine.core.tables import InputTable
from engine.execution.attempts import Attempt, classify_error, describe_error
from engine.execution.breaker import BreakerGate
from engine.execution.pools import PoolGate
from engine.execution.results import ExecutionSettings
from engine.planning.build import Plan, PlannedTask
from engine.tasks import TaskOutcome, kind_of

__all__ = ["PipelinedHandOff", "Ride", "Riders", "StreamOpened"]


@dataclass(frozen=True)
class StreamOpened:
    """Put on the dispatcher's queue by an extract's attempt when its schema is known."""

    attempt: Attempt
    schema: pa.Schema


@dataclass
class Ride:
    producer: str
    consumer: str
    stream: BatchStream
    attempt: Attempt | None = None
    """The consumer's attempt once it started."""
    held: tuple[Attempt, TaskOutcome | BaseException] | None = None
    """Its outcome, when it ended before the producer did."""
    abandoned: bool = False
    """Its attempt did not stop when asked and was given up: its thread may still deliver a
    late result, which is discarded."""


@dataclass
class Riders:
    depth: int = 1
    """Batches queued per stream: the memory a stream may hold. One is enough to keep both
    sides busy (the extract reads the next batch while the load writes this one); four cost
    ~50 MB more peak RSS on PostgreSQL -> Parquet with 16 MB batches and gained no time."""
    rides: dict[str, list[Ride]] = field(default_factory=dict)
    """producer -> the rides on its running attempt"""
    producers: dict[str, Attempt] = field(default_factory=dict)
    """producer -> its running attempt that has rides"""
    void: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    """task -> its attempts voided by a producer's failure (not counted against retries)"""
    schemas: dict[str, pa.Schema] = field(default_factory=dict)
    """ephemeral producer -> the schema it streamed (it has no output to read it from)"""

    def tee(self, attempt: Attempt, consumers: list[str], post: Any) -> Tee | None:
        """A tee for a producer's attempt with a stream per consumer; None without consumers.
        `post` puts a StreamOpened on the dispatcher's queue."""
        if not consumers:
            return None
        producer = attempt.task.id
        rides = [Ride(producer, c, BatchStream(producer, self.depth)) for c in consumers]
        self.rides[producer] = rides
        self.producers[producer] = attempt
        streams = [r.stream for r in rides]
        sole = ephemeral(attempt.task)
        return Tee(streams, lambda schema: post(StreamOpened(attempt, schema)), sole=sole)

    def opened(self, message: StreamOpened) -> list[Ride]:
        """The rides to start now that the producer's schema is known (none when that attempt
        is no longer the one running)."""
        producer = message.attempt.task.id
        if self.producers.get(producer) is not message.attempt:
            return []
        if ephemeral(message.attempt.task):
            self.schemas[producer] = message.schema
        return list(self.rides.get(producer, ()))

    def ride_of(self, attempt: Attempt) -> Ride | None:
        """The ride of a consumer's attempt, while its producer's attempt runs."""
        for rides in self.rides.values():
            for ride in rides:
                if ride.attempt is attempt:
                    return ride
        return None

    def hold(
        self, attempt: Attempt, result: TaskOutcome | BaseException, *, abandoned: bool = False
    ) -> bool:
        """Keep the outcome of a rider that ended before its producer; True when held. A
        failed rider breaks a producer that keeps no copy (engine.core.streams.Tee)."""
        ride = self.ride_of(attempt)
        if ride is None:
            return False
        if isinstance(result, BaseException):
            transient = classify_error(attempt.task, result).transient
            ride.stream.detach(RiderFailed(ride.consumer, result), transient=transient)
        else:
            ride.stream.detach()  # it needs no more rows (its load had committed before)
        ride.held = (attempt, result)
        ride.abandoned = abandoned
        return True

    def ended(self, producer: str) -> list[Ride]:
        """The producer's attempt ended: its rides, forgotten here."""
        self.producers.pop(producer, None)
        return self.rides.pop(producer, [])

    def consumer_ended(self, consumer: str) -> None:
        """A consumer's attempt was given up (abandoned after a timeout): the producer stops
        offering it batches."""
        for rides in self.rides.values():
            for ride in rides:
                if ride.consumer == consumer:
                    ride.stream.detach()

    def spent(self, task_id: str, attempt_number: int) -> int:
        """The attempts that count against a task's retries."""
        return attempt_number - self.void[task_id]


def ephemeral(task: PlannedTask) -> bool:
    """A producer that keeps no copy and streams to its readers (an ephemeral sql task hands
    over its query instead, after it ends, like a kept output)."""
    return task.spec.materialize == "ephemeral" and kind_of(task.spec).offers_stream


class RiderFailed(Exception):
    """What a producer that keeps no copy is told when a rider failed."""

    def __init__(self, consumer: str, error: BaseException) -> None:
        super().__init__(f"task {consumer!r} failed: {describe_error(error).splitlines()[0]}")


class PipelinedHandOff:
    """The executor's part that starts riders and ends their streams (mixed into Executor,
    whose state it reads and moves)."""

    plan: Plan
    settings: ExecutionSettings
    states: dict[str, TaskState]
    running: dict[str, Attempt]
    waiting_on: dict[str, int]
    downstream: dict[str, list[str]]
    cancelling: BaseException | None
    breakers: BreakerGate
    pools: PoolGate
    riders: Riders
    finished: queue.SimpleQueue[Any]
    clock: Callable[[], float]
    log: Any

    def _move(
        self,
        task_id: str,
        target: TaskState,
        event: str,
        *,
        attempt: int | None = None,
        error: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None: ...

    def _start(
        self, task_id: str, streamed: dict[str, InputTable] | None = None
    ) -> Attempt | None: ...

    def _fail(self, attempt: Attempt, error: BaseException, duration: float) -> None: ...

    def _tell_breaker(self, task: PlannedTask, result: TaskOutcome | BaseException) -> None: ...

    def _stream_consumers(self, task: PlannedTask) -> list[str]:
        """The loads that may ride on this task's attempt: they read only its output, their
        sink takes a stream, nothing else holds them up, and their breaker is closed."""
        sole = ephemeral(task)  # keeps no copy: every reader streams, whatever its breaker
        if not ((self.settings.pipelined or sole) and kind_of(task.spec).offers_stream):
            return []
        consumers = []
        for child in self.downstream[task.id]:
            planned = self.plan.task(child)
            if (
                planned.inputs == (task.id,)
                and self.states[child] is TaskState.PENDING
                and self.waiting_on[child] == 1
                and kind_of(planned.spec).takes_stream(planned.spec)
                and (sole or not self.breakers.holds_back(planned.connection))
            ):
                consumers.append(child)
        return consumers

    def _ride(self, message: StreamOpened) -> None:
        """An extract knows its schema: start the loads streaming from it, while slots are
        free; the others detach and wait for its published output."""
        producer = message.attempt.task.id
        sole = ephemeral(message.attempt.task)
        for ride in self.riders.opened(message):
            ready = self.states[ride.consumer] is TaskState.PENDING and self.cancelling is None
            # an ephemeral extract and its loads are one unit: they take slots together
            if not ready or (len(self.running) >= self.settings.max_parallel and not sole):
                ride.stream.detach()
                continue
            connection = self.plan.task(ride.consumer).connection
            if self.breakers.refusal(connection) is not None:  # only an ephemeral one's rider
                refused = TransientTaskError(f"the circuit breaker of {connection!r} is open")
                ride.stream.detach(RiderFailed(ride.consumer, refused), transient=True)
                continue
            if not sole and not self.pools.take(ride.consumer, queue=False):
                ride.stream.detach()  # its pool is full: it reads the published output later
                continue
            run_id = self.plan.run_id
            table = InputTable(producer, run_id, (), message.schema, 0, stream=ride.stream)
            self._move(ride.consumer, TaskState.QUEUED, f"streams from {producer}")
            ride.attempt = self._start(ride.consumer, {producer: table})
            if ride.attempt is None:  # pragma: no cover - its breaker was checked closed
                ride.stream.detach()
                continue
            ride.stream.consumer_cancel = ride.attempt.cancel

    def _stretch_rider_deadlines(self) -> None:
        """A riding load's timeout bounds its own work, as when it starts on the published
        output: the time it waited for its extract's next batch does not count."""
        for rides in self.riders.rides.values():
            for ride in rides:
                attempt, timeout = ride.attempt, self.plan.task(ride.consumer).timeout
                if attempt is None or timeout is None or attempt.stop_requested_at is not None:
                    continue
                attempt.deadline = attempt.started + timeout.total_seconds() + ride.stream.waited

    def _readers_held_back(self, task: PlannedTask) -> bool:
        """An ephemeral extract whose readers' breaker would refuse them waits with them
        (QUEUED, its attempts untouched, woken by a verdict on that connection) rather than
        break against the breaker attempt after attempt."""
        if not ephemeral(task):
            return False
        for child in self.downstream[task.id]:
            connection = self.plan.task(child).connection
            wait = self.breakers.refusal(connection)
            if wait is not None and connection is not None:
                self.breakers.waiting.add(task.id, wait, connection)
                self.log.bind(task_id=task.id).warning(
                    "waiting, attempts untouched: the circuit breaker of {!r}, which its "
                    "reader {} uses, is open",
                    connection,
                    child,
                )
                return True
        return False

    def _lost_stream(self, task: PlannedTask) -> str | None:
        """Why a task cannot be retried on its own: it read an ephemeral output that is gone."""
        for name in task.inputs:
            if name in self.riders.schemas and ephemeral(self.plan.task(name)):
                return (
                    f"not retried: its input {name!r} is ephemeral and kept nothing to retry "
                    "from; `arrowline run --resume` extracts it again"
                )
        return None

    def _producer_ended(self, producer: str, error: BaseException | None) -> None:
        """A producer's attempt ended. Succeeded (`error` None, output published): its streams
        end and what its riders did before that is handled now. Failed: its riders' attempts
        are void and they wait for its next attempt (or are skipped with it)."""
        self._stretch_rider_deadlines()  # what they waited for it so far does not count
        for ride in self.riders.ended(producer):
            if error is None:
                ride.stream.finish()
                if ride.held is not None:
                    attempt, result = ride.held
                    if ride.abandoned:  # its thread is given up: decided here, not by a result
                        assert isinstance(result, BaseException)
                        self._tell_breaker(attempt.task, result)
                        self._fail(attempt, result, self.clock() - attempt.started)
                        continue
                    self.running[ride.consumer] = attempt
                    self.finished.put((attempt, result))
                continue
            ride.stream.fail(error)
            if ride.attempt is None:
                continue
            ride.attempt.cancel.cancel(Cancelled(f"upstream task {producer} failed"))
            if self.running.get(ride.consumer) is ride.attempt:
                del self.running[ride.consumer]  # its late result is discarded
            if self.states[ride.consumer] is not TaskState.RUNNING:
                continue
            self.riders.void[ride.consumer] += 1
            number = ride.attempt.number
            if self.cancelling is not None:
                self._move(ride.consumer, TaskState.CANCELLED, str(self.cancelling), attempt=number)
                continue
            event = f"its stream from {producer} broke; waits for {producer}'s next attempt"
            self._move(ride.consumer, TaskState.PENDING, event, attempt=number)

    def _hold_ephemeral_extracts(self) -> None:
        """An ephemeral extract keeps nothing, so every task reading it must ride on it: it
        waits as well for whatever else its readers wait for (their `depends_on`), so that
        when it starts, they are held up by nothing but it."""
        for task in self.plan.to_run:
            if not ephemeral(task):
                continue
            for child in self.downstream[task.id]:
                for dep in self.plan.task(child).upstream:
                    held = task.id in self.downstream.get(dep, ())
                    if dep != task.id and dep in self.states and not held:
                        self.downstream[dep].append(task.id)
                        self.waiting_on[task.id] += 1

"""Pipelined hand-off: a task's batches reach the tasks that stream from it while it still runs.

A producer (an extract) offers every batch it writes to its `Tee`; each consumer (a load riding
on it) reads its own `BatchStream`, a bounded queue, so memory stays bounded by `depth` batches
per consumer and a slow consumer slows the producer, never the other way round. A stream ends
only when the executor says so, after the producer's output was published (`finish`) or with
the producer's error (`fail`): a consumer never commits rows of a producer that did not succeed.
A consumer that stops reading (it failed, or was never started) `detach`es, and the producer
stops offering it batches instead of waiting for it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator

import pyarrow as pa

from engine.core.cancel import CancelToken
from engine.core.errors import ArrowlineError

__all__ = ["BatchStream", "StreamBroken", "Tee", "TransientStreamBroken"]

_POLL = 0.1
"""Seconds between looks at the cancel tokens while a queue is full or empty."""
_END = object()


class StreamBroken(ArrowlineError):
    """The producer of a stream did not succeed: what its consumer read must not be kept."""


class BatchStream:
    """One consumer's view of a producer's batches."""

    def __init__(self, producer: str, depth: int = 1) -> None:
        self.producer = producer
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._detached = threading.Event()
        self.rows = 0
        """Rows handed to the consumer so far."""
        self.waited = 0.0
        """Seconds the consumer spent waiting for the producer's next batch: not its own work,
        so not counted against its timeout."""
        self.consumer_cancel: CancelToken | None = None
        self._on_end: list[Callable[[], None]] = []
        self._ended = False
        self._error: StreamBroken | None = None
        self.detached_by: BaseException | None = None
        self.detached_transient = False

    # -- the producer's side ----------------------------------------------------------------------

    def offer(self, item: object, cancel: CancelToken | None) -> None:
        """Queue `item` for the consumer, waiting while the queue is full; dropped once the
        consumer detached."""
        while not self._detached.is_set():
            if cancel is not None:
                cancel.raise_if_cancelled()
            try:
                self._queue.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """The producer's output is published: the consumer may commit what it read. Never
        waits (the dispatcher calls it): the consumer sees the end once the queue is drained."""
        self._ended = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        """The producer did not succeed: the consumer's next read raises. Never waits."""
        self._error = StreamBroken(f"the stream from task {self.producer!r} broke: {error}")
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(queue.Full):  # else the consumer finds the flag when it runs dry
            self._queue.put_nowait(_END)

    def detach(self, error: BaseException | None = None, *, transient: bool = False) -> None:
        """The consumer reads no more (`error`: why, when it failed, and whether that error
        is worth a retry): offers return at once."""
        self.detached_by = error
        self.detached_transient = transient
        self._detached.set()
        while True:  # free what is queued, and any producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    @property
    def detached(self) -> bool:
        return self._detached.is_set()

    # -- the consumer's side ----------------------------------------------------------------------

    def on_end(self, callback: Callable[[], None]) -> None:
        """Call `callback` (on the consumer's thread) when the stream ended well, before the
        consumer sees its end: what a load commits beside its rows is known only then."""
        self._on_end.append(callback)

    def batches(self) -> Iterator[pa.RecordBatch]:
        while True:
            if self._error is not None:
                raise self._error
            asked = time.monotonic()
            try:
                item = self._queue.get(timeout=_POLL)
            except queue.Empty:
                if self.consumer_cancel is not None:
                    self.consumer_cancel.raise_if_cancelled()
                item = _END if self._ended else None
            finally:
                self.waited += time.monotonic() - asked
            if item is None:
                continue
            if item is _END:
                if self._error is not None:
                    raise self._error
                if not self._ended or not self._queue.empty():
                    continue  # a wake-up that overtook batches still queued
                for callback in self._on_end:
                    callback()
                return
            assert isinstance(item, pa.RecordBatch)
            self.rows += item.num_rows
            yield item


class Tee:
    """The producer's side: every batch goes to each stream still attached.

    A `sole` tee is the only place the batches go (an ephemeral extract keeps no copy): a
    consumer that detached because it failed breaks the producer, whose rows would otherwise be
    lost to it."""

    def __init__(
        self,
        streams: list[BatchStream],
        opened: Callable[[pa.Schema], None] | None = None,
        *,
        sole: bool = False,
    ) -> None:
        self.streams = streams
        self.sole = sole
        self._opened = opened
        self._announced = threading.Event()
        self._lock = threading.Lock()

    def open(self, schema: pa.Schema) -> None:
        """The producer knows its schema (called by each of its streams; told once)."""
        with self._lock:
            if self._announced.is_set():
                return
            self._announced.set()
        if self._opened is not None:
            self._opened(schema)

    def put(self, batch: pa.RecordBatch, cancel: CancelToken | None) -> None:
        for stream in self.streams:
            stream.offer(batch, cancel)
            if self.sole and stream.detached_by is not None:
                raise _broken_by(stream)


def _broken_by(stream: BatchStream) -> StreamBroken:
    """What a producer that keeps no copy raises when a consumer failed: transient when the
    consumer's error was, so the pair is tried again."""
    text = f"a task reading this ephemeral output stopped: {stream.detached_by}"
    return TransientStreamBroken(text) if stream.detached_transient else StreamBroken(text)


class TransientStreamBroken(StreamBroken):
    """A consumer's transient failure broke a producer that keeps no copy: worth a retry."""

    transient = True

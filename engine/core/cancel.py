"""Cooperative cancellation, shared by the executor, the tasks it runs and their connectors."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["CancelToken"]


class CancelToken:
    """Cooperative cancellation shared by the executor and a running task.

    Long-running work checks `raise_if_cancelled()` between batches; work inside a library that
    can be interrupted (a DuckDB query) registers a callback with `on_cancel`.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], Any]] = []
        self.reason: BaseException | None = None

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self, reason: BaseException) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            callbacks = list(self._callbacks)
        for callback in callbacks:
            # An interrupt hook must never break cancellation itself.
            with contextlib.suppress(Exception):
                callback()

    def on_cancel(self, callback: Callable[[], Any]) -> Callable[[], None]:
        """Run `callback` on cancellation (now, if already cancelled). Returns an unregister."""
        with self._lock:
            already = self._event.is_set()
            if not already:
                self._callbacks.append(callback)
        if already:
            callback()

        def unregister() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unregister

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            assert self.reason is not None
            raise self.reason

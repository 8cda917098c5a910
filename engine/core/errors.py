"""Every error arrowline raises, in one shallow tree.

    ArrowlineError                  root; carries pipeline / run / task / connector context
    ├── DefinitionError             the pipeline file or Python definition is wrong
    │   └── PipelineInvalid         validation found problems; `.problems` lists every one
    ├── ParameterError              a parameter is unknown, undefined or cannot be coerced
    ├── SelectionError              `--select` names no task, or a reuse is impossible
    ├── StateError                  the catalog refuses something (invalid transition, unknown run)
    ├── TaskError                   a task failed while running
    │   ├── TransientTaskError      worth retrying: connection loss, timeouts, throttling
    │   │   └── TaskTimeout         the task ran past its `timeout`
    │   ├── DataError               the data is wrong: schema mismatch, failed validation, dup keys
    │   ├── Cancelled               the run was cancelled (Ctrl-C, SIGTERM, an API call)
    │   └── RunFailed               `RunResult.raise_for_status()`: a run ended without success
    ├── UserCodeError               a UDF or schema module raised or could not be imported
    └── DiskFull                    a write found its filesystem full (a task's output, a sink
                                    file, the catalog); names the filesystem and the path

Transient versus terminal is part of the type (`ArrowlineError.transient`), so the retry logic asks
the error instead of guessing from its message. Foreign exceptions are classified by
`classify()`; anything unknown is terminal, because retrying a bug only delays the report.

Context (pipeline, run, task, connector) is attached once, at the boundary where it is known, with
`error_context(...)`; messages never repeat it and never contain secrets.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from engine.core.problems import Problem

__all__ = [
    "ArrowlineError",
    "Cancelled",
    "DataError",
    "DefinitionError",
    "DiskFull",
    "ParameterError",
    "PipelineInvalid",
    "RunFailed",
    "SelectionError",
    "StateError",
    "TaskError",
    "TaskTimeout",
    "TransientTaskError",
    "UserCodeError",
    "classify",
    "disk_full",
    "error_context",
    "full_disk_said",
    "retry_after_seconds",
]


class ArrowlineError(Exception):
    """Root of every arrowline error."""

    transient: ClassVar[bool] = False
    """True when retrying the same work may succeed."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.pipeline: str | None = None
        self.run_id: str | None = None
        self.task_id: str | None = None
        self.connector: str | None = None

    def where(self) -> str:
        """`pipeline 'p', run r, task 't'` for the context that is known, or ''."""
        parts = []
        if self.pipeline:
            parts.append(f"pipeline {self.pipeline!r}")
        if self.run_id:
            parts.append(f"run {self.run_id}")
        if self.task_id:
            parts.append(f"task {self.task_id!r}")
        if self.connector:
            parts.append(f"connector {self.connector!r}")
        return ", ".join(parts)

    def __str__(self) -> str:
        text = self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class DefinitionError(ArrowlineError):
    """The pipeline definition cannot be used as written."""

    key: tuple[str | int, ...] | None = None
    """Where in the task it is wrong, when that is known (`("tests", 2)`: its third test)."""


class PipelineInvalid(DefinitionError):
    """Validation found one or more problems; all of them are in `problems`."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        lines = [p.format() for p in errors]
        super().__init__(
            f"{len(errors)} problem{'s' if len(errors) != 1 else ''} in the pipeline:\n"
            + "\n".join(f"  {line}" for line in lines)
        )


class ParameterError(ArrowlineError):
    """A parameter is unknown, undefined, or its value cannot be used.

    When one value is at fault, `parameter`, `expected` (its type) and `received` (the value as
    sent, shortened) say which, so an API can answer with them as fields, not only as prose."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        parameter: str | None = None,
        expected: str | None = None,
        received: str | None = None,
        place: tuple[str, int | None] | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.parameter = parameter
        self.expected = expected
        self.received = received
        self.place = place
        """The file and line where a template failed, when not in the task's own text: a macro
        file it called (as the pipeline names it), or a hook written elsewhere (absolute)."""


class SelectionError(ArrowlineError):
    """A `--select` expression names no task or cannot be satisfied."""


class StateError(ArrowlineError):
    """The catalog or the state machine refused an operation."""


class TaskError(ArrowlineError):
    """A task failed while running."""

    statement_line: int | None = None
    """The line of the task's SQL statement (as the task gave it) a database's error points
    at, when the error says one that can be told (transforms.sql)."""
    written_at: tuple[str, int | None] | None = None
    """The file (as messages name it) and line the failing SQL is written at, when known."""


class TransientTaskError(TaskError):
    """A failure that may go away on retry: lost connection, timeout, throttling."""

    transient = True

    def __init__(
        self, message: str, *, hint: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after
        """Seconds the remote side asked us to wait (HTTP Retry-After), when it said."""


class TaskTimeout(TransientTaskError):
    """The task ran past its `timeout` and was stopped; its partial output was discarded."""


class DataError(TaskError):
    """The data itself is wrong; retrying cannot help."""


class Cancelled(TaskError):
    """The run was cancelled before the task could finish."""


class RunFailed(TaskError):
    """A run ended FAILED or CANCELLED; raised on request (`RunResult.raise_for_status()`), since
    running returns a result rather than raising. `failed` names the tasks that failed."""

    def __init__(
        self, message: str, *, hint: str | None = None, failed: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message, hint=hint)
        self.failed = failed


class UserCodeError(ArrowlineError):
    """User code (a UDF, a schema module) could not be imported or raised."""


class DiskFull(ArrowlineError):
    """A write failed because its filesystem has no space left.

    Terminal: the same write fails again until someone frees space. The message names the
    filesystem (its mount point) and the file or folder being written, because the error the
    operating system gives ("No space left on device") says neither.
    """

    def __init__(self, path: Path, *, what: str = "writing") -> None:
        self.path = path
        self.mount = _mount_point(path)
        super().__init__(
            f"no space left on {self.mount} ({what} {path})",
            hint=f"free space on {self.mount} (or move what is written there to a larger "
            "disk) and run again",
        )


_FULL_WORDS = ("no space left on device", "database or disk is full")
_NAMED_FILE = re.compile(r'file \\?"([^"\\]+)\\?"')


def disk_full(exc: BaseException, path: Path, *, what: str = "writing") -> DiskFull | None:
    """`exc` as a DiskFull naming `path` (the file the OSError names, when it names one), or
    None when it is another failure. Knows ENOSPC, SQLite's SQLITE_FULL and the words Arrow,
    DuckDB and Polars wrap them in."""
    if isinstance(exc, DiskFull):
        return exc
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return DiskFull(Path(exc.filename) if exc.filename else path, what=what)
    if getattr(exc, "sqlite_errorcode", None) == 13:  # SQLITE_FULL
        return DiskFull(path, what=what)
    text = str(exc)
    if any(words in text.lower() for words in _FULL_WORDS):
        named = _NAMED_FILE.search(text)  # DuckDB: Could not write file "...": No space left
        return DiskFull(Path(named.group(1)) if named else path, what=what)
    return None


@contextmanager
def full_disk_said(
    path: Path,
    *,
    what: str = "writing",
    errors: tuple[type[BaseException], ...] = (OSError,),
) -> Iterator[None]:
    """Raise a full disk met inside the block as DiskFull naming `path`; other `errors` pass
    as they are. For the places that write files: a full disk is the user's to fix, not a bug
    to report with a traceback."""
    try:
        yield
    except errors as exc:
        full = disk_full(exc, path, what=what)
        if full is None:
            raise
        raise full from None


def _mount_point(path: Path) -> Path:
    """The mount point of the filesystem holding `path` (or the nearest parent that exists)."""
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    while not os.path.ismount(current) and current != current.parent:
        current = current.parent
    return current


@dataclass(frozen=True)
class Classification:
    """How the executor should treat an exception."""

    transient: bool
    kind: str
    """Short name shown in `arrowline runs RUN_ID`: the error's class name."""

    retry_after: float | None = None


# Foreign exceptions that mean "the other side went away" rather than "the request was wrong".
_TRANSIENT_BUILTINS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
)


def classify(exc: BaseException) -> Classification:
    """Decide whether `exc` is worth retrying.

    arrowline's own errors say it in their type. A few foreign ones are known: OS-level connection
    errors and timeouts are transient, also when user code raised them. Everything else is
    terminal.
    """
    if isinstance(exc, UserCodeError) and exc.__cause__ is not None:
        # A UDF that lost its connection to a service it calls, or was throttled by it: worth
        # retrying like any other task.
        cause = classify(exc.__cause__)
        if cause.transient:
            return Classification(True, type(exc).__name__, cause.retry_after)
    if isinstance(exc, ArrowlineError):
        retry_after = exc.retry_after if isinstance(exc, TransientTaskError) else None
        return Classification(exc.transient, type(exc).__name__, retry_after)
    if isinstance(exc, _TRANSIENT_BUILTINS):
        return Classification(True, type(exc).__name__)
    if type(exc).__module__.startswith("httpx"):
        return _classify_http(exc)
    return Classification(False, type(exc).__name__)


_TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})


def _classify_http(exc: BaseException) -> Classification:
    """httpx errors: transport failures and 408/425/429/5xx are transient, with the server's
    Retry-After (seconds or an HTTP date) when it sent one; other statuses are terminal."""
    import httpx

    name = type(exc).__name__
    if isinstance(exc, httpx.TransportError):
        return Classification(True, name)
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        if status in _TRANSIENT_HTTP or status >= 500:
            return Classification(True, f"HTTP {status}", retry_after_seconds(exc.response))
        return Classification(False, f"HTTP {status}")
    return Classification(False, name)


def retry_after_seconds(response: object) -> float | None:
    """The delay an HTTP response's Retry-After header asks for, or None."""
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime

    value = getattr(response, "headers", {}).get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds: float = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds)


@contextmanager
def error_context(
    *,
    pipeline: str | None = None,
    run_id: str | None = None,
    task_id: str | None = None,
    connector: str | None = None,
) -> Iterator[None]:
    """Attach context to any ArrowlineError leaving the block, without overwriting inner context."""
    try:
        yield
    except ArrowlineError as exc:
        if exc.pipeline is None:
            exc.pipeline = pipeline
        if exc.run_id is None:
            exc.run_id = run_id
        if exc.task_id is None:
            exc.task_id = task_id
        if exc.connector is None:
            exc.connector = connector
        raise

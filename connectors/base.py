"""What every connector shares: the config base model, capabilities, and the input contract.

A connector is a package with the same four modules: `config` (its pydantic models, tagged by
`from:` for sources and `to:` for sinks), `source` (config -> `pyarrow.RecordBatchReader`),
`sink` (an `InputTable` -> a target, in one transaction where the target has them) and
`capabilities` (what it can do, declared as data so the engine never asks `if kind == ...`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from engine.core.errors import DefinitionError
from engine.core.watermark import Watermark, WatermarkUpdate

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "CancelToken",
    "Capabilities",
    "CheckResult",
    "ConfigModel",
    "ConnectorContext",
    "FileVersion",
    "InputTable",
    "SinkResult",
    "file_versions",
    "parquet_list_sql",
]


class ConfigModel(BaseModel):
    """Base of every configuration model: frozen, unknown keys rejected."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        arbitrary_types_allowed=True,
    )


@dataclass(frozen=True)
class Capabilities:
    """What a connector can do, declared once."""

    name: str
    transactional: bool
    """Writes commit or roll back as a whole (and can hold a watermark in the same commit)."""
    load_modes: tuple[str, ...] = ()
    sqlglot_dialect: str | None = None
    streaming: bool = True
    """Reads and writes in bounded batches rather than whole tables."""


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


def parquet_list_sql(files: tuple[Path, ...] | list[Path]) -> str:
    """A DuckDB list literal of file paths, quotes doubled."""
    return "[" + ", ".join("'" + str(path).replace("'", "''") + "'" for path in files) + "]"


FileVersion = tuple[str, int, int]
"""One input file as it is now: (path, size in bytes, modification time in ns)."""


def file_versions(paths: Iterable[Path]) -> tuple[FileVersion, ...]:
    """Size and modification time of each file that exists. Cheap (no file is read), and
    enough to tell that a source would read something else than the last time."""
    versions = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue  # gone: leaving it out is what makes the set differ from before
        versions.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(versions)


@dataclass(frozen=True)
class InputTable:
    """A task output as another task reads it: Parquet files with a known schema and row count.

    Readers choose their access path: an Arrow stream (`reader`), a Polars LazyFrame (`lazy`),
    or DuckDB reading the files directly (`duckdb_source`), which is the fastest for SQL.
    """

    task_id: str
    run_id: str
    files: tuple[Path, ...]
    schema: pa.Schema
    num_rows: int
    bytes: int = 0
    extras: dict[str, Any] = field(default_factory=dict, compare=False)

    def batches(self, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        import pyarrow.parquet as pq

        for path in self.files:
            with pq.ParquetFile(path) as parquet:
                yield from parquet.iter_batches(batch_size=batch_size)

    def reader(self, batch_size: int = 65_536) -> pa.RecordBatchReader:
        """The rows as one Arrow stream, never more than a batch in memory at a time."""
        return pa.RecordBatchReader.from_batches(self.schema, self.batches(batch_size))

    def lazy(self) -> pl.LazyFrame:
        import polars as pl

        return pl.scan_parquet([str(path) for path in self.files])

    def duckdb_source(self) -> str:
        """A DuckDB table expression over the files."""
        return f"read_parquet({parquet_list_sql(self.files)})"


@dataclass
class ConnectorContext:
    """What a source or sink gets besides its config, for one attempt of one task."""

    base_dir: Path
    """Relative paths in the config start here (the pipeline file's folder)."""
    pipeline: str
    run_id: str
    task_id: str
    cancel: CancelToken | None = None
    connections: Mapping[str, Any] = field(default_factory=dict)
    """Named connections, secrets resolved (e.g. `ResolvedPostgres`)."""
    watermark: Watermark | None = None
    """For an incremental source: read rows past this one (None: read everything)."""
    pending_watermarks: tuple[WatermarkUpdate, ...] = ()
    """For a transactional sink: commit these in the same transaction as the data."""
    rejects: Any = None
    """For a file source: where malformed rows go (`connectors.files.badrows.Rejects`)."""

    def connection(self, name: str) -> Any:
        try:
            return self.connections[name]
        except KeyError:
            known = ", ".join(sorted(self.connections)) or "none"
            raise DefinitionError(f"no connection named {name!r} (connections: {known})") from None

    def raise_if_cancelled(self) -> None:
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()


@dataclass(frozen=True)
class CheckResult:
    """The outcome of trying one connection (`arrowline check`)."""

    name: str
    target: str
    ok: bool
    detail: str
    latency_ms: float | None = None


@dataclass(frozen=True)
class SinkResult:
    """What a load did, for the catalog and the summary."""

    rows: int
    target: str
    """Where the rows went, for people: `duckdb:warehouse.duckdb#main.orders`."""
    details: dict[str, Any] = field(default_factory=dict)
    committed_watermarks: tuple[WatermarkUpdate, ...] = ()
    """Watermarks the sink committed in the same transaction as the rows."""

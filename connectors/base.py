"""What every connector shares: the config base model, capabilities, and the input contract.

A connector is a package with the same four modules: `config` (its pydantic models, tagged by
`from:` for sources and `to:` for sinks), `source` (config -> `pyarrow.RecordBatchReader`),
`sink` (an `InputTable` -> a target, in one transaction where the target has them) and
`capabilities` (what it can do, declared as data so the engine never asks `if kind == ...`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core.cancel import CancelToken
from engine.core.errors import DefinitionError
from engine.core.watermark import Watermark, WatermarkUpdate

__all__ = [
    "Capabilities",
    "CheckResult",
    "ConnectorContext",
    "SinkResult",
]


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

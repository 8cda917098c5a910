"""The connectors arrowline knows, by name, loaded on first use.

Each entry names the package whose `CONNECTOR` is the descriptor (`connectors.base.Connector`).
Adding a connector is a folder of its own and one line here; the pipeline model's tagged unions
(`from:`, `to:`, `kind:`) and the reference are built from these descriptors, and the engine asks
them instead of branching on names. A descriptor's package imports only its config and reference;
its heavy code (drivers, readers, writers) loads when a task uses it.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator
from typing import Any

from connectors.base import Connector, SinkState
from engine.core.config import ConfigModel
from engine.core.errors import DefinitionError
from engine.core.problems import did_you_mean

__all__ = [
    "CONNECTORS",
    "connection_models",
    "connector",
    "connector_of",
    "connectors",
    "sink_models",
    "sink_state",
    "source_models",
    "target_connector",
]

CONNECTORS: dict[str, str] = {
    "files": "connectors.files",
    "duckdb": "connectors.duckdb",
    "postgres": "connectors.postgres",
    "generate": "connectors.generate",
    "http": "connectors.http",
    "delta": "connectors.delta",
    "iceberg": "connectors.iceberg",
    "s3": "connectors.s3",
}
"""Name -> the package holding its descriptor, in the order the reference lists them."""


@functools.cache
def connector(name: str) -> Connector:
    """The descriptor of connector `name`, imported the first time it is asked for."""
    module = CONNECTORS.get(name)
    if module is None:
        raise DefinitionError(
            f"unknown connector {name!r}.{did_you_mean(name, list(CONNECTORS))}",
            hint=f"connectors: {', '.join(CONNECTORS)}",
        )
    found: Connector = importlib.import_module(module).CONNECTOR
    return found


def connectors() -> Iterator[Connector]:
    """Every descriptor, in registry order (this imports every connector's config)."""
    return (connector(name) for name in CONNECTORS)


@functools.cache
def _by_model() -> dict[type[ConfigModel], Connector]:
    found: dict[type[ConfigModel], Connector] = {}
    for descriptor in connectors():
        for model in (descriptor.source, descriptor.sink, descriptor.connection):
            if model is not None:
                found[model] = descriptor
    return found


def connector_of(config: Any) -> Connector:
    """The descriptor that owns a source, sink or connection config."""
    try:
        return _by_model()[type(config)]
    except KeyError:
        raise TypeError(f"{type(config).__name__} is no connector's config") from None


def source_models() -> tuple[type[ConfigModel], ...]:
    return tuple(c.source for c in connectors() if c.source is not None)


def sink_models() -> tuple[type[ConfigModel], ...]:
    return tuple(c.sink for c in connectors() if c.sink is not None)


def connection_models() -> tuple[type[ConfigModel], ...]:
    return tuple(c.connection for c in connectors() if c.connection is not None)


def sink_state(config: Any) -> SinkState | None:
    """Where a sink keeps watermarks beside its data; None when it has no transaction to."""
    return connector_of(config).state(config)


def target_connector(target: str) -> Connector | None:
    """The connector whose load wrote `target` (a `SinkResult.target`, tagged `<name>:...`),
    when the tag is a connector's name."""
    name = target.split(":", 1)[0]
    return connector(name) if name in CONNECTORS else None

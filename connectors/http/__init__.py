"""HTTP JSON APIs: a source read page by page into Arrow, over a named `kind: http`
connection that budgets the API's rate limit for the whole run."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa

from connectors.base import (
    Capabilities,
    CheckResult,
    Connector,
    ConnectorContext,
    IncrementalSpec,
    NamingContext,
)
from connectors.http.config import HttpConnection, HttpSource
from connectors.http.reference import SECTIONS
from engine.core.config import ConfigModel
from engine.core.places import Place

__all__ = ["CONNECTOR", "HttpConnector"]


class HttpConnector(Connector):
    name = "http"
    capabilities = Capabilities(transactional=False)
    source = HttpSource
    connection = HttpConnection
    reference = SECTIONS

    def connection_name(self, config: ConfigModel) -> str | None:
        assert isinstance(config, HttpSource)
        return config.connection

    def incremental(self, config: ConfigModel) -> IncrementalSpec | None:
        return config.incremental if isinstance(config, HttpSource) else None

    def place(self, config: ConfigModel, ctx: NamingContext) -> Place:
        """`https://host` + the path: the OpenLineage dataset of a resource."""
        assert isinstance(config, HttpSource)
        spec = ctx.connections.get(config.connection)
        base = getattr(spec, "base_url", None) or ""
        parts = urlsplit(base if "${" not in base else "")
        namespace = (
            f"{parts.scheme}://{parts.netloc}" if parts.netloc else f"http:{config.connection}"
        )
        path = "/" + "/".join(p.strip("/") for p in (parts.path, config.path) if p.strip("/"))
        return Place(f"http:{config.connection}", namespace, table=path)

    def open(self, config: ConfigModel, ctx: ConnectorContext) -> list[pa.RecordBatchReader]:
        from connectors.http.source import open_http

        assert isinstance(config, HttpSource)
        return open_http(config, ctx)

    def resolve(self, name: str, spec: ConfigModel, base_dir: Path) -> Any:
        from connectors.http.client import resolve

        assert isinstance(spec, HttpConnection)
        return resolve(name, spec, base_dir)

    def check_connection(self, resolved: Any, uses: Sequence[ConfigModel] = ()) -> CheckResult:
        """One GET of the base URL with the connection's auth: any answer but 401, 403, a 5xx
        or none says the API is there and takes the credentials."""
        from engine.core.errors import ArrowlineError, DataError

        started = time.perf_counter()
        try:
            with resolved.client() as client:
                response = resolved.request(client, "GET", resolved.base_url)
            detail, ok = f"HTTP {response.status_code}", True
        except DataError as exc:  # a 4xx: the API is there; only 401 and 403 refuse us
            detail = exc.message
            ok = not any(f"answered {status}" in exc.message for status in (401, 403))
        except ArrowlineError as exc:
            detail, ok = exc.message, False
        latency = (time.perf_counter() - started) * 1000
        return CheckResult(resolved.name, resolved.shown(resolved.base_url), ok, detail, latency)


CONNECTOR = HttpConnector()

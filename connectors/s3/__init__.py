"""A named S3-compatible object store (`kind: s3`): the endpoint, region and credentials of an
object-store workspace that names it (`workspace: s3://bucket/prefix?connection=NAME`), read
by each process that uses the workspace from its own environment (on a Ray cluster: each
node), so no credential travels with a run or reaches the catalog."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from connectors.base import Capabilities, CheckResult, Connector, NamingContext, Section
from connectors.s3.config import S3Connection
from engine.core.config import ConfigModel
from engine.core.errors import DefinitionError
from engine.core.places import Place
from engine.core.s3 import S3Credentials, checked_endpoint
from engine.core.secrets import resolve_secrets

__all__ = ["CONNECTOR", "S3Connector"]

SECTIONS = (
    Section(
        "connections: kind: s3",
        S3Connection,
        "An S3-compatible object store: for an object-store workspace (`workspace: "
        "s3://bucket/prefix?connection=lake` reads and writes the outputs at its endpoint and "
        "region with its credentials, instead of the environment's AWS_* variables) and for "
        "Delta tables on s3:// paths (`connection: lake` on a Delta source or sink). Each "
        "process resolves the references itself (a Ray node from its own environment), so "
        "credentials never travel with a run; they never reach logs or the catalog. Given "
        "partly, the rest comes from the environment. `arrowline check` lists the store's "
        "buckets with them.",
        """\
workspace: s3://lake/arrowline?connection=lake
connections:
  lake:
    kind: s3
    endpoint: http://minio.internal:9000
    access_key_id: "${env:LAKE_ACCESS_KEY_ID}"
    secret_access_key: "${file:/run/secrets/lake_secret}\"""",
    ),
)


class S3Connector(Connector):
    name = "s3"
    capabilities = Capabilities(transactional=False, object_store=True)
    connection = S3Connection
    reference = SECTIONS

    def place(self, config: ConfigModel, ctx: NamingContext) -> Place:
        raise DefinitionError(
            "an s3 connection is a store's (a workspace's, a Delta table's): no source or sink"
        )

    def resolve(self, name: str, spec: ConfigModel, base_dir: Path) -> S3Credentials:
        assert isinstance(spec, S3Connection)
        where = f"connection {name!r}"

        def value(text: str | None) -> str | None:
            return resolve_secrets(text, where=where, base_dir=base_dir) if text else None

        key, secret = value(spec.access_key_id), value(spec.secret_access_key)
        if (key is None) != (secret is None):
            raise DefinitionError(
                f"{where}: access_key_id and secret_access_key go together",
                hint="give both, or neither to use the environment's AWS_* credentials",
            )
        return S3Credentials(
            name,
            checked_endpoint(value(spec.endpoint), where),
            value(spec.region),
            key,
            secret,
            value(spec.session_token),
            spec.conditional_put,
        )

    def check_connection(self, resolved: Any, uses: Sequence[ConfigModel] = ()) -> CheckResult:
        """List the store's buckets with the connection's credentials."""
        import pyarrow.fs as pafs

        from engine.core.s3 import s3_filesystem

        assert isinstance(resolved, S3Credentials)
        target = resolved.endpoint or "AWS"
        started = time.perf_counter()
        try:
            found = s3_filesystem(resolved).get_file_info(pafs.FileSelector("/"))
            detail, ok = f"{len(found)} bucket(s) visible", True
        except (OSError, ValueError) as exc:
            detail, ok = str(exc).splitlines()[0], False
        latency = (time.perf_counter() - started) * 1000
        return CheckResult(resolved.name, target, ok, detail, latency)


CONNECTOR = S3Connector()

"""The config of a named S3-compatible object store (`connections: {name: {kind: s3}}`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from engine.core.config import ConfigModel

__all__ = ["S3Connection"]


class S3Connection(ConfigModel):
    """An S3-compatible object store: where a workspace that names it
    (`workspace: s3://bucket/prefix?connection=NAME`) is, and the credentials it is read and
    written with. Secrets come from `${env:VAR}` or `${file:path}` references."""

    kind: Literal["s3"] = Field(description="Selects this connection type.")
    endpoint: str | None = Field(
        None,
        description="http(s)://host:port of an S3-compatible server (MinIO, Ceph, moto); "
        "none: AWS itself, or AWS_ENDPOINT_URL. The workspace URI's `endpoint` wins.",
    )
    region: str | None = Field(None, description="The store's region (else AWS_REGION).")
    access_key_id: str | None = Field(None, description="e.g. '${env:LAKE_ACCESS_KEY_ID}'.")
    secret_access_key: str | None = Field(
        None, description="e.g. '${file:/run/secrets/lake_secret}'."
    )
    session_token: str | None = Field(None, description="For temporary credentials.")
    conditional_put: bool = Field(
        True,
        description="Delta commits through it use conditional puts (If-None-Match), so two "
        "writers never overwrite each other's commit; false for a store without them, where "
        "only one writer of a table at a time is then safe.",
    )

"""S3-compatible object storage, as arrowline names it: `s3://bucket/prefix?endpoint=...&region=...`.

Endpoint and region may also come from the environment (AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL,
AWS_REGION or AWS_DEFAULT_REGION); credentials come only from the environment (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), never from the URI, which is written into the catalog
and the logs. Every part of a URI is checked before it reaches a request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pyarrow.fs as pafs

from engine.core.errors import DefinitionError

__all__ = ["ObjectStoreLocation", "is_object_store", "workspace_setting"]

_SCHEMES = ("s3",)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=-]{0,127}")
_ENDPOINT = re.compile(
    r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:]+\](:[0-9]{1,5})?"
)
_REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+){1,4}")
_QUERY_KEYS = ("endpoint", "region")


def is_object_store(location: str) -> bool:
    """Whether a workspace setting or an output's locator names an object store."""
    return location.split("://", 1)[0].lower() in _SCHEMES if "://" in location else False


@dataclass(frozen=True)
class ObjectStoreLocation:
    """A checked `s3://bucket/prefix?endpoint=...&region=...`: what the URI says, nothing
    secret."""

    bucket: str
    prefix: str
    """Key prefix without leading or trailing slash ('' for the bucket's top)."""
    endpoint: str | None
    region: str | None

    @classmethod
    def parse(cls, uri: str, environ: Mapping[str, str] | None = None) -> ObjectStoreLocation:
        """Check every part of `uri`; DefinitionError saying which part is wrong. Endpoint and
        region the URI leaves out come from `environ` (default: the process environment)."""
        env = os.environ if environ is None else environ
        parts = urlsplit(uri)
        shown = uri.split("?", 1)[0]
        if parts.scheme.lower() not in _SCHEMES:
            raise DefinitionError(f"workspace {shown!r}: only s3:// object stores are supported")
        if "@" in parts.netloc or parts.password or parts.username:
            raise DefinitionError(
                "workspace URI carries credentials: they would be written into the catalog "
                "and logs",
                hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment instead",
            )
        bucket = parts.netloc
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise DefinitionError(
                f"workspace {shown!r}: {bucket!r} is not a valid bucket name",
                hint="3-63 lowercase letters, digits, dots and hyphens",
            )
        if parts.fragment:
            raise DefinitionError(f"workspace {shown!r}: a URI fragment (#...) means nothing here")
        segments = [s for s in parts.path.split("/") if s]
        for segment in segments:
            if not _SEGMENT.fullmatch(segment) or segment.strip(".") == "":
                raise DefinitionError(
                    f"workspace {shown!r}: prefix part {segment!r} is not allowed",
                    hint="letters, digits, '.', '_', '-' and '=' (not starting with '.' or '-')",
                )
        query: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
            if key not in _QUERY_KEYS:
                raise DefinitionError(
                    f"workspace {shown!r}: unknown option {key!r}",
                    hint="options are endpoint and region; credentials come from the environment",
                )
            if key in query:
                raise DefinitionError(f"workspace {shown!r}: option {key!r} given twice")
            query[key] = value
        endpoint = (
            query.get("endpoint") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        )
        if endpoint is not None:
            endpoint = endpoint.rstrip("/")
            if not _ENDPOINT.fullmatch(endpoint):
                raise DefinitionError(
                    f"workspace {shown!r}: endpoint {endpoint!r} is not http(s)://host[:port]"
                )
        region = query.get("region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        if region is not None and not _REGION.fullmatch(region):
            raise DefinitionError(f"workspace {shown!r}: region {region!r} is not a region name")
        return cls(bucket, "/".join(segments), endpoint, region)

    @property
    def root(self) -> Path:
        """The prefix as a path in the filesystem (bucket first)."""
        return Path(self.bucket, *self.prefix.split("/")) if self.prefix else Path(self.bucket)

    def locator(self, path: Path) -> str:
        """The URI of `path` (in the filesystem) that outputs are recorded by: the scheme, the
        path, and the endpoint and region a reader elsewhere needs."""
        pairs = (("endpoint", self.endpoint), ("region", self.region))
        options = [f"{key}={value}" for key, value in pairs if value]
        return f"s3://{path.as_posix()}" + ("?" + "&".join(options) if options else "")

    def filesystem(self) -> Any:
        return _filesystem(self.endpoint, self.region, *_credentials())

    def describe(self) -> str:
        """For messages: where, never with what credentials."""
        at = f" at {self.endpoint}" if self.endpoint else ""
        return f"s3://{self.root.as_posix()}{at}"


def _credentials() -> tuple[str | None, str | None, str | None]:
    env = os.environ
    return (
        env.get("AWS_ACCESS_KEY_ID"),
        env.get("AWS_SECRET_ACCESS_KEY"),
        env.get("AWS_SESSION_TOKEN"),
    )


@lru_cache(maxsize=16)
def _filesystem(
    endpoint: str | None,
    region: str | None,
    access_key: str | None,
    secret_key: str | None,
    session_token: str | None,
) -> Any:
    """One S3FileSystem per endpoint, region and credentials (they are thread-safe)."""
    from engine.core.secrets import register_secret

    # allow_delayed_open: an object smaller than one part is one PUT, not a 3-request
    # multipart upload (manifests, LATEST, small outputs; measured against the moto server)
    options: dict[str, Any] = {
        "region": region or "us-east-1",
        "connect_timeout": 5.0,
        "allow_delayed_open": True,
    }
    if endpoint is not None:
        options["endpoint_override"] = endpoint
        options["scheme"] = endpoint.split("://", 1)[0]
    if access_key and secret_key:
        register_secret(secret_key)
        if session_token:
            register_secret(session_token)
        options |= {"access_key": access_key, "secret_key": secret_key}
        if session_token:
            options["session_token"] = session_token
    return pafs.S3FileSystem(**options)


def workspace_setting(value: str | None) -> str | None:
    """A pipeline's `workspace:` as written, checked: an object store's URI in every part that
    it spells itself (endpoint and region may still come from the environment at run time), or
    a folder. ValueError, for the pipeline model, saying what is wrong."""
    if value is None:
        return None
    if "://" not in value:
        if not value.strip() or "\x00" in value:
            raise ValueError("workspace must name a folder or an s3:// URI")
        return value
    try:
        ObjectStoreLocation.parse(value, environ={})
    except DefinitionError as exc:
        raise ValueError(exc.message + (f" ({exc.hint})" if exc.hint else "")) from None
    return value

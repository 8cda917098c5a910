"""S3-compatible object storage, as arrowline names it: `s3://bucket/prefix?endpoint=...&region=...`.

A workspace setting (a pipeline's `workspace:`, `$ARROWLINE_WORKSPACE`) is the one place an
endpoint is named; endpoint and region it leaves out come from the named connection it gives
(`?connection=NAME`, a pipeline's `kind: s3` connection, connectors/s3), else from the
environment (AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, AWS_REGION or AWS_DEFAULT_REGION).
Credentials come from that connection (its `${env:...}`/`${file:...}` references, resolved by
the process that uses them: `use_connection`), else from the environment (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), never from a URI, which is written into the catalog
and the logs.

An output is recorded in the catalog by a *locator*, `s3://bucket/key`, which names no endpoint:
a host reading it sends its credentials only where its own settings say that bucket is (the
workspace it opened, else its environment), never where a catalog row says. Every part of a
setting and of a locator is checked before it reaches a request or a path.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pyarrow.fs as pafs

from engine.core.errors import DefinitionError, StateError

__all__ = [
    "ObjectStoreLocation",
    "S3Credentials",
    "checked_endpoint",
    "is_object_store",
    "locate",
    "named_connection",
    "s3_filesystem",
    "trust",
    "unresolved",
    "use_connection",
    "workspace_connection",
    "workspace_setting",
]

_SCHEMES = ("s3",)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=-]{0,127}")
"""A part of a setting's prefix: what the user writes."""
_KEY_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._:=+-]{0,199}")
"""A part of a locator's key: pipeline, task and run names as the engine makes them."""
_HOST = r"(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:]+\])"
_ENDPOINT = re.compile(rf"https?://{_HOST}(?::[0-9]{{1,5}})?")
_REGION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_QUERY_KEYS = ("endpoint", "region", "connection")
_CONNECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


@dataclass(frozen=True)
class S3Credentials:
    """A named `kind: s3` connection, resolved (connectors/s3): where its store is and the
    credentials it is read with (never shown: no repr)."""

    name: str
    endpoint: str | None = None
    region: str | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    conditional_put: bool = True
    """The store takes conditional puts (what Delta commits rely on to never overwrite)."""


_CONNECTIONS: dict[tuple[str, str, str], S3Credentials] = {}
"""(connection, bucket, prefix) -> what the workspace there naming that connection uses: two
pipelines of one process (the scheduler's, a notebook's) may each have a `lake` of their own,
in one bucket too."""
_CONNECTIONS_LOCK = threading.Lock()


def use_connection(credentials: S3Credentials, bucket: str, prefix: str = "") -> None:
    """A named s3 connection this process resolved for a workspace in `bucket`: a workspace
    there naming it (`?connection=`) is read at its endpoint and region, with its credentials
    (resolved again, as after a rotation, they replace the earlier ones)."""
    with _CONNECTIONS_LOCK:
        _CONNECTIONS[credentials.name, bucket, prefix] = credentials


_UNRESOLVED: dict[tuple[str, str, str], str] = {}
"""Why a workspace's connection could not be resolved here (a notebook goes on without it)."""


def unresolved(setting: str, reason: str) -> None:
    """The connection a workspace setting names could not be resolved in this process: its
    reads say why, instead of only that it is not."""
    where = ObjectStoreLocation.parse(setting, environ={})
    if where.connection is not None:
        with _CONNECTIONS_LOCK:
            _UNRESOLVED[where.connection, where.bucket, where.prefix] = reason


def named_connection(connection: str | None, bucket: str, prefix: str = "") -> S3Credentials | None:
    """What `use_connection` registered for a workspace in `bucket` naming `connection`."""
    if connection is None:
        return None
    with _CONNECTIONS_LOCK:
        return _CONNECTIONS.get((connection, bucket, prefix))


def is_object_store(location: str) -> bool:
    """Whether a workspace setting or an output's locator names an object store."""
    return location.split("://", 1)[0].lower() in _SCHEMES if "://" in location else False


def _without_userinfo(endpoint: str) -> str:
    """An endpoint as a message may show it: never a user or password written into it."""
    parts = urlsplit(endpoint)
    host = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else "(unreadable)"


@dataclass(frozen=True)
class ObjectStoreLocation:
    """A checked `s3://bucket/prefix?endpoint=...&region=...`: what the URI says, nothing
    secret."""

    bucket: str
    prefix: str
    """Key prefix without leading or trailing slash ('' for the bucket's top)."""
    endpoint: str | None
    region: str | None
    connection: str | None = None
    """The named s3 connection whose credentials (and endpoint, region) it is read with."""

    @classmethod
    def parse(cls, uri: str, environ: Mapping[str, str] | None = None) -> ObjectStoreLocation:
        """Check every part of a workspace setting; DefinitionError saying which part is wrong.
        Endpoint and region the URI leaves out come from `environ` (default: the process
        environment)."""
        env = os.environ if environ is None else environ
        shown = uri.split("?", 1)[0].split("@", 1)[-1]
        if uri != uri.strip() or any(ord(c) < 32 for c in uri):
            raise DefinitionError(f"workspace {shown!r}: spaces or control characters around it")
        parts = urlsplit(uri)
        if parts.scheme.lower() not in _SCHEMES or not uri.lower().startswith("s3://"):
            raise DefinitionError(
                f"workspace {shown!r}: only s3:// object stores are supported",
                hint="without `workspace:`, outputs stay in the project's .arrowline/workspace/",
            )
        if "@" in parts.netloc:
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
                    hint="options are endpoint, region and connection (a `kind: s3` connection "
                    "holding the credentials); else credentials come from the environment",
                )
            if key in query:
                raise DefinitionError(f"workspace {shown!r}: option {key!r} given twice")
            query[key] = value
        connection = query.get("connection")
        if connection is not None and not _CONNECTION_NAME.fullmatch(connection):
            raise DefinitionError(
                f"workspace {shown!r}: connection {connection!r} is not a connection's name"
            )
        named = named_connection(connection, bucket, "/".join(segments))
        given = query.get("endpoint")
        if named is not None and named.endpoint and given and given.rstrip("/") != named.endpoint:
            raise DefinitionError(
                f"workspace {shown!r}: endpoint {_without_userinfo(given)!r} is not the one "
                f"connection {connection!r} names: its credentials go only to its own endpoint",
                hint="leave `endpoint` out of the URI; the connection says where the store is",
            )
        endpoint = _endpoint(
            query.get("endpoint")
            or (named.endpoint if named else None)
            or env.get("AWS_ENDPOINT_URL_S3")
            or env.get("AWS_ENDPOINT_URL"),
            shown,
        )
        region = (
            query.get("region")
            or (named.region if named else None)
            or env.get("AWS_REGION")
            or env.get("AWS_DEFAULT_REGION")
        )
        if region is not None and not _REGION.fullmatch(region):
            raise DefinitionError(f"workspace {shown!r}: region {region!r} is not a region name")
        return cls(bucket, "/".join(segments), endpoint, region, connection)

    @property
    def root(self) -> Path:
        """The prefix as a path in the filesystem (bucket first)."""
        return Path(self.bucket, *self.prefix.split("/")) if self.prefix else Path(self.bucket)

    def locator(self, path: Path) -> str:
        """The URI the catalog records for `path` (in the filesystem): bucket and key only."""
        return f"s3://{path.as_posix()}"

    def filesystem(self) -> Any:
        if self.connection is None:
            return _filesystem(self.endpoint, self.region or "us-east-1", *_credentials())
        named = named_connection(self.connection, self.bucket, self.prefix)
        if named is None:
            with _CONNECTIONS_LOCK:
                why = _UNRESOLVED.get((self.connection, self.bucket, self.prefix))
            if why is not None:
                raise StateError(
                    f"workspace {self.describe()} is read with connection {self.connection!r}, "
                    f"which cannot be resolved here: {why}",
                    hint="a process reading the outputs (a notebook too) needs the variables "
                    "and files the connection names",
                )
            raise StateError(
                f"workspace {self.describe()} is read with connection {self.connection!r}, "
                "which this process has not resolved",
                hint="a process resolves it from the pipeline file that declares it: open the "
                "project that holds that file, or run the pipeline by its file",
            )
        region = self.region or "us-east-1"
        return _filesystem(
            self.endpoint, region, named.access_key, named.secret_key, named.session_token
        )

    def describe(self) -> str:
        """For messages: where, never with what credentials."""
        at = f" at {self.endpoint}" if self.endpoint else ""
        return f"s3://{self.root.as_posix()}{at}"

    @property
    def store_key(self) -> str:
        """A short name of the store (its endpoint), so caches of two stores never mix."""
        return hashlib.sha256((self.endpoint or "aws").encode()).hexdigest()[:12]


def checked_endpoint(value: str | None, shown: str) -> str | None:
    """An endpoint as a setting or connection gives it, checked: http(s)://host[:port], no
    credentials in it. DefinitionError naming `shown` otherwise."""
    return _endpoint(value, shown)


def _endpoint(value: str | None, shown: str) -> str | None:
    if value is None:
        return None
    endpoint = value.rstrip("/")
    if "@" in urlsplit(endpoint).netloc:
        raise DefinitionError(
            f"workspace {shown!r}: the endpoint carries credentials "
            f"({_without_userinfo(endpoint)}); they would be written into the catalog and logs",
            hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment instead",
        )
    if not _ENDPOINT.fullmatch(endpoint):
        raise DefinitionError(
            f"workspace {shown!r}: endpoint {_without_userinfo(endpoint)!r} is not "
            "http(s)://host[:port]"
        )
    return endpoint


# -- which store a bucket is in, by this host's own settings ----------------------------------

_TRUSTED: dict[str, dict[str, ObjectStoreLocation]] = {}
"""bucket -> prefix -> a workspace this process was configured with there."""
_TRUSTED_LOCK = threading.Lock()


def trust(location: ObjectStoreLocation) -> None:
    """A workspace this process was configured with: its bucket is read at its endpoint."""
    with _TRUSTED_LOCK:
        _TRUSTED.setdefault(location.bucket, {})[location.prefix] = location


def locate(locator: str) -> tuple[ObjectStoreLocation, Path]:
    """The store and path of an output a catalog row names (`s3://bucket/key`), its parts
    checked (no `..`, no empty or odd part, no query); the endpoint and region are the ones
    this host was configured with for that bucket, else its environment's. StateError when the
    locator is not one arrowline writes."""
    parts = urlsplit(locator)
    key = parts.path.split("/")[1:]  # as written: no part dropped or joined
    if (
        parts.scheme not in _SCHEMES
        or not _BUCKET.fullmatch(parts.netloc)
        or parts.query
        or parts.fragment
        or not parts.path.startswith("/")
        or not key
        or any(not _KEY_PART.fullmatch(p) or p.strip(".") == "" for p in key)
    ):
        raise StateError(f"{locator!r} is not an output arrowline recorded")
    with _TRUSTED_LOCK:
        here = _TRUSTED.get(parts.netloc, {})
        inside = [p for p in here if not p or "/".join(key).startswith(p + "/")]
        known = here[max(inside, key=len)] if inside else None  # the workspace it is in
    if known is None:
        try:
            known = _configured(parts.netloc)
        except DefinitionError as exc:  # the environment's endpoint or region
            raise StateError(f"output {locator}: {exc.message}") from None
    return known, Path(parts.netloc, *key)


def _configured(bucket: str) -> ObjectStoreLocation:
    """Where this host's environment says `bucket` is: $ARROWLINE_WORKSPACE's store when it
    names that bucket, else AWS_ENDPOINT_URL (none: AWS itself)."""
    named = os.environ.get("ARROWLINE_WORKSPACE")
    if named and is_object_store(named):
        workspace = ObjectStoreLocation.parse(named)
        if workspace.bucket == bucket:
            return workspace
    return ObjectStoreLocation.parse(f"s3://{bucket}")


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
    """One S3FileSystem per endpoint, region and credentials (they are thread-safe); no region:
    the AWS SDK's own (AWS_REGION, the config file)."""
    from engine.core.secrets import register_secret

    # allow_delayed_open: an object smaller than one part is one PUT, not a 3-request
    # multipart upload (manifests, LATEST, small outputs; measured against the moto server)
    options: dict[str, Any] = {"connect_timeout": 5.0, "allow_delayed_open": True}
    if region is not None:
        options["region"] = region
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


def s3_filesystem(named: S3Credentials) -> Any:
    """The store a resolved `kind: s3` connection names, as a pyarrow filesystem (shared with
    every other user of the same endpoint, region and keys)."""
    return _filesystem(
        named.endpoint, named.region, named.access_key, named.secret_key, named.session_token
    )


def workspace_connection(setting: str | None) -> str | None:
    """The named connection a workspace setting reads its store with (`?connection=`)."""
    if setting is None or not is_object_store(setting):
        return None
    return ObjectStoreLocation.parse(setting, environ={}).connection


def workspace_setting(value: str | None) -> str | None:
    """A pipeline's `workspace:` as written, checked in every part it spells itself (endpoint
    and region may still come from the environment at run time). ValueError, for the pipeline
    model, saying what is wrong."""
    if value is None:
        return None
    try:
        ObjectStoreLocation.parse(value, environ={})
    except DefinitionError as exc:
        raise ValueError(exc.message + (f" ({exc.hint})" if exc.hint else "")) from None
    return value

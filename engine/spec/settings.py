"""Pipeline settings that say how runs are carried out and watched, not what they compute:
alerts, triggers, OpenLineage events, and where task attempts run (`executor:`, a task's
`resources:`). Part of the pipeline model (engine.spec.model), which re-exports them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from engine.core.config import ConfigModel
from engine.core.durations import Duration
from engine.core.sizes import ByteSize

__all__ = [
    "AlertsSpec",
    "ExecutorSpec",
    "OpenLineageSpec",
    "ResourcesSpec",
    "TriggerSpec",
    "effective_workspace",
    "use_workspace_connection",
]


class OpenLineageSpec(ConfigModel):
    """Where a run's OpenLineage events go. The environment can set the same: OPENLINEAGE_URL,
    OPENLINEAGE_API_KEY, OPENLINEAGE_NAMESPACE, ARROWLINE_OPENLINEAGE_FILE."""

    url: str | None = Field(
        None, description="HTTP endpoint base (events are POSTed to URL + endpoint)."
    )
    endpoint: str = Field("api/v1/lineage", description="Path under `url` that takes events.")
    api_key: str | None = Field(
        None, description="Bearer token, as a reference like '${env:OL_API_KEY}' (never logged)."
    )
    file: str | None = Field(None, description="Append each event as one JSON line to this file.")
    namespace: str = Field("arrowline", description="Namespace of the jobs (pipelines, tasks).")
    timeout: Duration = Field(
        timedelta(seconds=5),
        description="Per HTTP attempt; three attempts, then the event is dropped.",
    )


class TriggerSpec(ConfigModel):
    """Start a run when something happens, besides (or instead of) the schedule."""

    files: str | None = Field(
        None, description="Glob (relative to the pipeline file): a new file starts a run."
    )
    settle: Duration = Field(
        timedelta(seconds=30),
        description="A file counts once its size and modification time stayed the same this long.",
    )
    after: str | None = Field(
        None, description="Another pipeline of the project: each of its successful runs starts one."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> TriggerSpec:
        if (self.files is None) == (self.after is None):
            raise ValueError("a trigger has exactly one of 'files' or 'after'")
        return self


class AlertsSpec(ConfigModel):
    """Where alerts go, and which. Repeats of one alert within `dedup` are counted, not sent."""

    webhook: str | None = Field(None, description="URL that gets each alert as a JSON POST.")
    command: str | None = Field(
        None, description="Shell command run per alert, the alert as JSON on its stdin."
    )
    log: bool = Field(True, description="Also write each alert as a log line.")
    on: tuple[
        Literal["failure", "dead_letter", "quarantine", "sla", "freshness", "source"], ...
    ] = Field(
        ("failure", "dead_letter", "quarantine", "sla", "freshness", "source"),
        description="The kinds of alert to send. source: what an extract found at its source "
        "and said in its task details (a replication slot keeping more WAL than its "
        "max_retained_wal).",
    )
    quarantine_above: int = Field(
        0, ge=0, description="Alert when a run quarantines more rows than this."
    )
    dedup: Duration = Field(
        timedelta(hours=1), description="One alert per pipeline, kind and subject in this window."
    )


class ResourcesSpec(ConfigModel):
    """What one attempt of a task needs where it runs: on a Ray cluster, the slots its attempt
    takes (a node without them never gets it); locally, nothing."""

    cpu: float = Field(1.0, gt=0, le=1024, description="CPUs (fractions allowed).")
    memory: ByteSize | None = Field(
        None, description="Memory reserved for the attempt, e.g. 4GB (Ray schedules by it)."
    )


class ExecutorSpec(ConfigModel):
    """Where task attempts run: `local` (threads of this process) or `ray` (Ray tasks on a
    cluster; the driver keeps the plan, the catalog and the run lock)."""

    kind: Literal["local", "ray"] = Field("local", description="local or ray.")
    address: str | None = Field(
        None,
        max_length=512,
        description="The Ray cluster: `auto` (the one this host belongs to), "
        "`ray://host:port` (Ray Client), or none to start one in this process.",
    )


def effective_workspace(setting: str | None) -> str | None:
    """The workspace a run uses: the pipeline's `workspace:`, else $ARROWLINE_WORKSPACE."""
    import os

    return setting or os.environ.get("ARROWLINE_WORKSPACE") or None


def use_workspace_connection(
    setting: str | None, connections: Mapping[str, Any], base_dir: Path
) -> None:
    """Resolve, in this process's environment, the `kind: s3` connection a workspace setting
    reads its store with (`?connection=NAME`), before the store is opened: its endpoint,
    region and credentials are then the ones the workspace uses (engine.core.s3)."""
    from connectors.registry import connector_of
    from engine.core.errors import DefinitionError
    from engine.core.s3 import (
        ObjectStoreLocation,
        S3Credentials,
        use_connection,
        workspace_connection,
    )

    setting = effective_workspace(setting)
    name = workspace_connection(setting)
    if name is None:
        return
    spec = connections.get(name)
    if spec is None:
        from engine.core.problems import did_you_mean

        raise DefinitionError(
            f"the workspace ({setting}) is read with connection {name!r}, which the pipeline "
            f"does not declare.{did_you_mean(name, list(connections))}",
            hint="declare it under `connections:` as {kind: s3, ...}",
        )
    owner = connector_of(spec)
    if not owner.capabilities.object_store:
        raise DefinitionError(
            f"the workspace is read with connection {name!r}, which is {owner.name}: a "
            "workspace needs a `kind: s3` connection"
        )
    resolved = owner.resolve(name, spec, base_dir)
    assert isinstance(resolved, S3Credentials)
    assert setting is not None
    where = ObjectStoreLocation.parse(setting, environ={})
    use_connection(resolved, where.bucket, where.prefix)

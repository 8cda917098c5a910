"""Configuration of Apache Iceberg catalogs (`connections: {name: {kind: iceberg}}`), sources
(`extract: {from: iceberg}`) and sinks (`load: {to: iceberg}`)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator, model_validator

from connectors.keys import check_load_keys
from engine.core.config import PATH, SQL, ConfigModel
from engine.core.sqltext import name_clash

__all__ = ["IcebergConnection", "IcebergSink", "IcebergSource", "partition_field"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")
_PARTITION = re.compile(
    r"^(?:(?P<column>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<transform>year|month|day|hour|identity|void)\((?P<of>[A-Za-z_][A-Za-z0-9_]*)\)"
    r"|(?P<sized>bucket|truncate)\((?P<n>\d+),\s*(?P<by>[A-Za-z_][A-Za-z0-9_]*)\))$"
)


def partition_field(text: str) -> tuple[str, str, int | None]:
    """`region`, `day(at)`, `bucket(16, id)` as (column, transform, its size)."""
    match = _PARTITION.match(text.strip())
    if match is None:
        raise ValueError(
            f"partition {text!r} is not a column or a transform: write region, day(at), "
            "month(at), year(at), hour(at), bucket(16, id) or truncate(4, name)"
        )
    if match.group("column"):
        return match.group("column"), "identity", None
    if match.group("transform"):
        return match.group("of"), match.group("transform"), None
    size = int(match.group("n"))
    if size < 1:
        raise ValueError(f"partition {text!r}: {match.group('sized')} takes a size of 1 or more")
    return match.group("by"), match.group("sized"), size


class IcebergConnection(ConfigModel):
    """An Iceberg catalog: SQLite or PostgreSQL (pyiceberg's SQL catalog), or a REST catalog.
    Without one, a table lives in the embedded catalog of the project (SQLite and a local
    warehouse in `.arrowline/iceberg/`)."""

    kind: Literal["iceberg"] = Field(description="Selects this connection type.")
    uri: str = Field(
        description="sqlite:///path/catalog.db, postgresql://user:pw@host/db (the catalog's "
        "tables; secrets as ${env:...} or ${file:...}; needs `arrowline[postgres]` too), or "
        "http(s):// for a REST catalog.",
    )
    warehouse: str | None = Field(
        None,
        description="Where new tables' files go: a folder (relative to the pipeline file) or "
        "a URI (s3://...). For a REST catalog, the warehouse it serves, passed as written "
        "(often a name; the catalog may choose one itself).",
        json_schema_extra=PATH,
    )
    catalog: str | None = Field(
        None,
        description="The catalog's name: a SQL catalog keeps it with every table, so another "
        "tool sharing the catalog must use the same (default: the connection's name).",
    )
    properties: dict[str, str] = Field(
        default_factory=dict,
        description="Other catalog properties pyiceberg takes: a REST catalog's `token` "
        "(a bearer token) or `credential` (`client_id:secret`, exchanged at the catalog's "
        "/v1/oauth/tokens unless `oauth2-server-uri` says where), `s3.endpoint`, ...; "
        "values may be ${env:...} references.",
    )


class _Table(ConfigModel):
    table: str = Field(
        description="The table as `namespace.name` (a REST catalog may nest namespaces: a.b.t)."
    )
    connection: str | None = Field(
        None, description="A named connection of kind iceberg; none: the project's embedded one."
    )

    @field_validator("table")
    @classmethod
    def _qualified(cls, value: str) -> str:
        if not _IDENTIFIER.fullmatch(value):
            raise ValueError(
                f"table {value!r} must be namespace.name, of letters, digits and underscores"
            )
        return value

    @model_validator(mode="after")
    def _one_namespace_in_the_embedded_catalog(self) -> _Table:
        if self.connection is None and self.table.count(".") > 1:
            raise ValueError(
                f"table {self.table!r}: the embedded catalog keeps one level of namespace "
                "(namespace.name)"
            )
        return self


class IcebergSource(_Table):
    """Stream an Iceberg table, or one snapshot of it, as Arrow batches."""

    from_: Literal["iceberg"] = Field(alias="from", description="Selects this source.")
    columns: tuple[str, ...] | None = Field(
        None, min_length=1, description="Read only these columns (the others are never read)."
    )
    filter: str | None = Field(
        None,
        description="A condition in pyiceberg's expression syntax, e.g. `region = 'EU' and "
        "amount > 100`: files whose partitions or statistics cannot match are skipped.",
        json_schema_extra=SQL,
    )
    snapshot_id: int | None = Field(None, description="Time travel: read this snapshot.")
    as_of: datetime | None = Field(
        None,
        description="Time travel: read the table as it was at this time (ISO 8601; UTC when "
        "it names no zone).",
    )
    incremental: bool = Field(
        False,
        description="Read only the rows of data files written since the snapshot the last run "
        "read up to (its watermark), and add the column `_iceberg_sequence`: the sequence "
        "number of the snapshot read up to. Files a merge, overwrite or delete rewrote are "
        "read again whole, the rows they kept included; files a compaction (`replace`) only "
        "moved are not, unless it merged them with rows not yet read. Deleted rows are not "
        "reported. Needs a table of format version 2.",
    )
    batch_size: int = Field(65_536, ge=1, description="Rows per record batch, at most.")

    @model_validator(mode="after")
    def _one_way_to_pick_a_snapshot(self) -> IcebergSource:
        chosen = [name for name in ("snapshot_id", "as_of") if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise ValueError("set at most one of 'snapshot_id' or 'as_of'")
        if chosen and self.incremental:
            raise ValueError(f"incremental reads the newest snapshot; it cannot take {chosen[0]!r}")
        clash = name_clash(self.columns or ())
        if clash is not None:
            raise ValueError(f"columns names {clash.describe()}")
        return self


class IcebergSink(_Table):
    """Load into an Iceberg table: one snapshot per load, committed with the run and the
    watermarks of the extracts feeding it."""

    input: str = Field(description="Id of the task whose output is loaded.")
    to: Literal["iceberg"] = Field(description="Selects this sink.")
    mode: Literal["append", "replace", "merge", "apply"] = Field(
        "append",
        description="append: add the rows; replace: the table (or, with `predicate`, the rows "
        "matching it) becomes the input; merge: update rows whose keys match, insert the "
        "others; apply: apply a change stream (a `cdc` extract's output) in one snapshot: "
        "inserts, updates (an unchanged TOASTed value keeps the table's), deletes, truncates.",
    )
    keys: tuple[str, ...] = Field((), description="Merge keys; required for mode: merge and apply.")
    predicate: str | None = Field(
        None,
        description="replace: only the rows matching this condition (pyiceberg's expression "
        "syntax, e.g. `day = '2026-12-01'`) are replaced. merge: with delete_missing, only "
        "table rows matching it are deleted when their keys are not in the input.",
        json_schema_extra=SQL,
    )
    delete_missing: bool = Field(
        False,
        description="merge: delete table rows whose keys are not in the input (within "
        "`predicate`, when it is set).",
    )
    partition_by: tuple[str, ...] = Field(
        (),
        description="Partition spec of a new table: columns and transforms, e.g. [region, "
        "day(at), bucket(16, id)] (an existing table keeps its own).",
    )
    schema_change: Literal["evolve", "fail_on_breaking", "fail", "freeze"] = Field(
        "fail_on_breaking",
        description="When the input differs from the table. evolve: add new columns, widen "
        "types (int to long, float to double, wider decimals: Iceberg's promotions), fill "
        "missing nullable columns with NULL; fail_on_breaking (or fail): add and widen, refuse "
        "missing columns and incompatible types; freeze: refuse any difference. With mode: "
        "replace the table's schema becomes the input's, unless the task sets schema_change.",
    )

    @model_validator(mode="after")
    def _keys_fit_the_mode(self) -> IcebergSink:
        check_load_keys(self.mode, self.keys, delete_missing=(self.delete_missing, "merge"))
        if self.predicate is not None and self.mode in ("append", "apply"):
            raise ValueError("predicate applies to mode: replace or merge")
        seen: set[tuple[str, str]] = set()
        for text in self.partition_by:
            column, transform, _ = partition_field(text)
            if (column, transform) in seen:
                raise ValueError(f"partition_by names {transform}({column}) twice")
            seen.add((column, transform))
        return self

"""Configuration of Delta Lake sources (`extract: {from: delta}`) and sinks
(`load: {to: delta}`)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from connectors.keys import check_load_keys
from engine.core.config import PATH, SQL, ConfigModel
from engine.core.sqltext import name_clash

__all__ = ["DeltaSink", "DeltaSource"]

_TABLE_PATH = (
    "The table's folder, relative to the pipeline file, or a URI (s3://, gs://, az://, file://) "
    "whose credentials delta-rs takes from the environment (AWS_ACCESS_KEY_ID, ...; for an "
    "S3-compatible store other than AWS also AWS_ENDPOINT_URL, AWS_ALLOW_HTTP=true for http, "
    "and AWS_CONDITIONAL_PUT=etag so that concurrent commits stay safe)."
)

_CONNECTION = (
    "A `kind: s3` connection for an s3:// path: the store's endpoint, region and credentials "
    "(instead of the environment's), with commits made safe by conditional puts."
)


class DeltaSource(ConfigModel):
    """Stream a Delta table, or one version of it, as Arrow batches."""

    from_: Literal["delta"] = Field(alias="from", description="Selects this source.")
    path: str = Field(description=_TABLE_PATH, json_schema_extra=PATH)
    connection: str | None = Field(None, description=_CONNECTION)
    columns: tuple[str, ...] | None = Field(
        None, min_length=1, description="Read only these columns (the others are never read)."
    )
    filter: str | None = Field(
        None,
        description="A SQL condition on the table's columns (DuckDB's dialect), e.g. "
        "`region = 'EU' and day >= date '2026-01-01'`. Files whose partition values or "
        "statistics cannot match are skipped.",
        json_schema_extra=SQL,
    )
    version: int | None = Field(
        None, ge=0, description="Time travel: read the table as of this version."
    )
    as_of: datetime | None = Field(
        None,
        description="Time travel: read the table as it was at this time (ISO 8601; the last "
        "version committed at or before it).",
    )
    incremental: bool = Field(
        False,
        description="Read only the rows of files written since the version the last run read "
        "up to (its watermark, kept beside the data by a transactional sink or in the "
        "catalog). Adds the column `_delta_version`: the version read up to. Rows rewritten "
        "by an update, merge or overwrite are read again with the rows their files kept; rows "
        "a compaction or arrowline's widening only moved are not, unless the compaction "
        "merged them with rows not yet read (its files are then read again whole: rows are "
        "read twice rather than missed, which merge keys downstream absorb). Deleted rows are "
        "not reported.",
    )
    batch_size: int = Field(65_536, ge=1, description="Rows per record batch.")

    @model_validator(mode="after")
    def _one_way_to_pick_a_version(self) -> DeltaSource:
        chosen = [name for name in ("version", "as_of") if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise ValueError("set at most one of 'version' or 'as_of'")
        if chosen and self.incremental:
            raise ValueError(f"incremental reads the newest version; it cannot take {chosen[0]!r}")
        clash = name_clash(self.columns or ())
        if clash is not None:
            raise ValueError(f"columns names {clash.describe()}")
        return self


class DeltaSink(ConfigModel):
    """Load into a Delta table: one commit per load, with the run and the watermarks of the
    extracts feeding it in the commit's own metadata."""

    input: str = Field(description="Id of the task whose output is loaded.")
    to: Literal["delta"] = Field(description="Selects this sink.")
    path: str = Field(
        description=_TABLE_PATH + " Created on the first load.", json_schema_extra=PATH
    )
    connection: str | None = Field(None, description=_CONNECTION)
    mode: Literal["append", "replace", "merge", "apply"] = Field(
        "append",
        description="append: add the rows; replace: the table (or, with `predicate`, the rows "
        "matching it) becomes the input; merge: update rows whose keys match, insert the "
        "others; apply: apply a change stream (a `cdc` extract's output) in one merge: "
        "inserts, updates (an unchanged TOASTed value keeps the table's), deletes, truncates.",
    )
    keys: tuple[str, ...] = Field((), description="Merge keys; required for mode: merge and apply.")
    predicate: str | None = Field(
        None,
        description="replace: only the rows matching this condition are replaced (every input "
        "row must match it), e.g. `day = '2026-12-01'` for one partition. merge: only target "
        "rows matching it are considered, which lets delta-rs skip the other files (and limits "
        "delete_missing to them). A SQL condition in delta-rs's dialect (DataFusion); in merge, "
        "the table's columns are `t.<column>`.",
        json_schema_extra=SQL,
    )
    delete_missing: bool = Field(
        False,
        description="merge: delete table rows whose keys are not in the input (within "
        "`predicate`, when it is set): the table then holds exactly the input's keys.",
    )
    partition_by: tuple[str, ...] = Field(
        (), description="Partition columns of a new table (an existing table keeps its own)."
    )
    schema_change: Literal["evolve", "fail_on_breaking", "fail", "freeze"] = Field(
        "fail_on_breaking",
        description="When the input differs from the table. evolve: add new columns, widen "
        "types, fill missing nullable columns with NULL; fail_on_breaking (or fail): add new "
        "columns and widen types, refuse missing columns and incompatible types; freeze: "
        "refuse any difference. Widening rewrites the table's files in a commit of its own "
        "(delta-rs cannot change a column's type in place). With mode: replace the table "
        "becomes the input whatever its shape, unless the task sets schema_change.",
    )
    target_file_size: int | None = Field(
        None,
        ge=1_048_576,
        description="Bytes per data file written by append and replace (delta-rs's default: "
        "100 MB; a merge writes files of delta-rs's default size).",
    )

    @model_validator(mode="after")
    def _keys_fit_the_mode(self) -> DeltaSink:
        check_load_keys(self.mode, self.keys, delete_missing=(self.delete_missing, "merge"))
        if self.predicate is not None and self.mode in ("append", "apply"):
            raise ValueError("predicate applies to mode: replace or merge")
        return self

"""Configuration of PostgreSQL connections, sources (`extract: {from: postgres}`) and sinks
(`load: {to: postgres}`)."""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from pydantic import Field, model_validator

from connectors.base import IncrementalSpec
from connectors.keys import check_load_keys
from engine.core.config import ConfigModel
from engine.core.errors import DefinitionError
from engine.core.sizes import ByteSize
from engine.core.sqltext import split_table

__all__ = [
    "CdcSpec",
    "PartitionSpec",
    "PostgresConnection",
    "PostgresSink",
    "PostgresSource",
    "SchemaChange",
    "default_slot",
]


class PostgresConnection(ConfigModel):
    """A named PostgreSQL server. Secrets come from `${env:VAR}` or `${file:path}` references,
    resolved when a run starts and never printed."""

    kind: Literal["postgres"] = Field(description="Selects this connection type.")
    uri: str | None = Field(
        None,
        description="postgresql://user:password@host:port/database?sslmode=...; may be "
        "'${env:WAREHOUSE_URI}' or contain ${env:...} / ${file:...} parts.",
    )
    host: str | None = Field(None, description="Server host, when not given by `uri`.")
    port: int = Field(5432, ge=1, le=65535, description="Server port.")
    user: str | None = Field(None, description="Role to connect as.")
    password: str | None = Field(None, description="Password, e.g. '${file:/run/secrets/pg}'.")
    database: str | None = Field(None, description="Database name.")
    options: dict[str, str] = Field(
        default_factory=dict, description="libpq parameters such as sslmode, application_name."
    )
    connect_timeout: int = Field(10, ge=1, description="Seconds to wait for the server.")

    @model_validator(mode="after")
    def _uri_or_host(self) -> PostgresConnection:
        if (self.uri is None) == (self.host is None):
            raise ValueError("set exactly one of 'uri' or 'host'")
        return self


class PartitionSpec(ConfigModel):
    """Read ranges of one column over several connections sharing one snapshot."""

    column: str = Field(description="An integer, date or timestamp column to split on.")
    count: int = Field(
        ge=2, le=64, description="Number of ranges, each read on its own connection."
    )


_SLOT_NAME = r"^[a-z_][a-z0-9_]{0,62}$"


def default_slot(pipeline: str, task: str) -> str:
    """`arrowline_<pipeline>_<task>`, in the letters a slot name may have, at most 63. When a
    name has an underscore or a letter a slot cannot have, a hash of both names follows: the
    pipeline `x` with task `y_z` and the pipeline `x_y` with task `z` must not share a slot."""
    plain = f"arrowline_{pipeline}_{task}".lower()
    name = re.sub(r"[^a-z0-9_]", "_", plain)
    ambiguous = "_" in pipeline or "_" in task or name != plain
    if not ambiguous and len(name) <= 63:
        return name
    digest = hashlib.sha1(f"{pipeline}\0{task}".encode()).hexdigest()[:8]
    return f"{name[:54]}_{digest}"


class CdcSpec(ConfigModel):
    """Change data capture: the table's snapshot on the first run, then every insert, update,
    delete and truncate committed since the last run, read from a logical replication slot."""

    tables: tuple[str, ...] | None = Field(
        None,
        min_length=1,
        description="Several tables through one slot and publication, instead of `table`: "
        "the task stands for one task per table, `<task>__<table's name>`, which loads read by "
        "that id. One slot holds the WAL for all of them (a server allows few slots: "
        "max_replication_slots is 10 by default), but each table's task still reads the "
        "slot's range and keeps its own changes, so the server decodes it once per table. "
        "Each table's first snapshot is read under a snapshot of its own that meets the slot's "
        "changes exactly (a temporary slot's); the slot moves, when a run ends, only to the "
        "least position the tables' loads have committed or still need. They take turns at "
        "the slot: one reads it at a time.",
    )
    slot: str | None = Field(
        None,
        pattern=_SLOT_NAME,
        description="Replication slot (lowercase letters, digits, _; not a digit first); default "
        "arrowline_<pipeline>_<task> (a hash of both follows when either holds `_` or the name "
        "would pass 63 letters). Created on the first run; one slot per CDC task (with "
        "`tables`, one for all of them).",
    )
    publication: str | None = Field(
        None,
        pattern=_SLOT_NAME,
        description="Publication naming the table; default the slot's name. Created when "
        "missing (with `create`), else checked to publish the table (with `tables` and "
        "`create`, a table it lacks is added).",
    )
    create: bool = Field(
        True, description="Create the publication when it does not exist (else fail)."
    )
    max_retained_wal: ByteSize | None = Field(
        None,
        description="Warn (in the run's log, its task details and `arrowline cdc status`) "
        "when the slot keeps more WAL than this on the server, e.g. '10GB': a pipeline that "
        "stopped running makes the server keep every change since.",
    )
    max_changes: int | None = Field(
        None,
        ge=1,
        description="Read at most about this many change messages per run (whole "
        "transactions: the server stops at the first commit past it); the rest waits for the "
        "next run, and the run says (log, task details `behind_bytes`) how much WAL it left. "
        "Default: everything up to the WAL position when the run starts.",
    )


class PostgresSource(ConfigModel):
    """Stream a table or query out of PostgreSQL as Arrow batches (COPY, through ADBC)."""

    from_: Literal["postgres"] = Field(alias="from", description="Selects this source.")
    connection: str = Field(description="Name of a connection under `connections:`.")
    table: str | None = Field(
        None,
        description="Table (or view), e.g. public.orders; used exactly as written, capitals "
        "included (a quoted identifier in SQL terms).",
    )
    query: str | None = Field(None, description="A SELECT (Jinja template) instead of a table.")
    columns: tuple[str, ...] | None = Field(None, description="Read only these columns of `table`.")
    partition: PartitionSpec | None = Field(None, description="Parallel reads in ranges.")
    incremental: IncrementalSpec | None = Field(None, description="Read only what is new.")
    cdc: CdcSpec | None = Field(
        None,
        description="Read the table's changes from a replication slot instead of its rows "
        "(needs wal_level = logical and arrowline[postgres]).",
    )
    batch_bytes: int = Field(
        16 << 20,
        ge=1 << 16,
        description="Target size of each Arrow batch in bytes; bounds memory per connection.",
    )
    unconstrained_numeric: str = Field(
        "decimal(38,9)",
        description="Arrow type for NUMERIC without precision: 'decimal(P,S)' (a value that "
        "does not fit fails the task, never rounds), 'float64' or 'string'.",
    )

    @model_validator(mode="after")
    def _table_or_query(self) -> PostgresSource:
        tables = self.cdc.tables if self.cdc is not None else None
        if tables is not None:
            return self._tables(tables)
        if (self.table is None) == (self.query is None):
            raise ValueError("set exactly one of 'table' or 'query'")
        if self.columns is not None and self.table is None:
            raise ValueError("'columns' selects columns of a 'table'; write them in the query")
        if self.cdc is not None:
            if self.table is None:
                raise ValueError("'cdc' reads the changes of a 'table', not of a query")
            if self.incremental is not None:
                raise ValueError(
                    "'cdc' and 'incremental' exclude each other: a change stream is incremental"
                )
        return self

    def _tables(self, tables: tuple[str, ...]) -> PostgresSource:
        """`cdc.tables` without `table` (a task for several tables), or with one of them (the
        task of that table that the first became)."""
        if self.query is not None:
            raise ValueError("'cdc.tables' names the tables to read; it takes no 'query'")
        if self.table is not None and self.table not in tables:
            raise ValueError(f"table {self.table!r} is not one of cdc.tables {list(tables)}")
        if self.columns is not None:
            raise ValueError(
                "'columns' belongs to one table; with cdc.tables every table is read whole "
                "(give a table that needs it a cdc task of its own)"
            )
        if self.incremental is not None:
            raise ValueError(
                "'cdc' and 'incremental' exclude each other: a change stream is incremental"
            )
        seen: set[str] = set()
        names: dict[str, str] = {}
        for table in tables:
            try:
                _, name = split_table(table)
            except DefinitionError as exc:
                raise ValueError(exc.message) from None
            if table in seen:
                raise ValueError(f"cdc.tables names {table!r} twice")
            if name in names:
                raise ValueError(
                    f"cdc.tables names {names[name]!r} and {table!r}, whose tasks would both be "
                    f"<task>__{name}: give one of them a cdc task of its own"
                )
            if not re.fullmatch(r"[A-Za-z0-9_]+", name):
                raise ValueError(
                    f"table {table!r}: its name makes its task's id, so it must be letters, "
                    "digits and _ (give a table named otherwise a cdc task of its own)"
                )
            seen.add(table)
            names[name] = table
        return self

    def members(self, task_id: str) -> list[tuple[str, str]]:
        """With `cdc.tables`: (task id, table) of the task each table becomes, `<task>__<name>`
        whatever else the list holds, so adding a table never renames another's task."""
        assert self.cdc is not None
        assert self.cdc.tables is not None
        return [(f"{task_id}__{split_table(table)[1]}", table) for table in self.cdc.tables]


SchemaChange = Literal["evolve", "fail_on_breaking", "fail", "freeze"]


class PostgresSink(ConfigModel):
    """Load into a PostgreSQL table with COPY, in one transaction."""

    input: str = Field(description="Id of the task whose output is loaded.")
    to: Literal["postgres"] = Field(description="Selects this sink.")
    connection: str = Field(description="Name of a connection under `connections:`.")
    table: str = Field(
        description="Target table, optionally schema-qualified (analytics.orders); used exactly "
        "as written, capitals included (a quoted identifier in SQL terms)."
    )
    mode: Literal["append", "replace", "merge", "apply"] = Field(
        "append",
        description="append: COPY the rows in; replace: the table becomes exactly the input in "
        "one transaction (same columns: its rows are replaced in place, keeping indexes and "
        "grants; new columns: a new table is swapped in); merge: update rows whose keys match, "
        "insert the rest; apply: apply a change stream (a `cdc` extract's output) in order: "
        "inserts, updates (an unchanged TOASTed value keeps the table's), deletes, truncates.",
    )
    keys: tuple[str, ...] = Field(
        (), description="Merge (and apply) keys; the primary key of a new table."
    )
    truncate: bool = Field(
        False,
        description="With replace in place: empty the table with TRUNCATE instead of DELETE. "
        "About free and leaves no dead rows for autovacuum, but readers wait for the load to "
        "commit, and a repeatable-read transaction that began before it sees the table empty.",
    )
    delete_missing: bool = Field(
        False, description="With merge: delete target rows whose keys the input lacks."
    )
    schema_change: SchemaChange = Field(
        "fail_on_breaking",
        description="evolve: add new columns, widen types, fill missing nullable columns with "
        "NULL; fail_on_breaking (or fail): add new columns, refuse dropped columns and type "
        "changes; freeze: refuse any difference. With mode: replace or materialize: view "
        "the target becomes the input whatever its shape, unless the task sets "
        "schema_change: then what it refuses fails the load.",
    )

    @model_validator(mode="after")
    def _keys_fit_the_mode(self) -> PostgresSink:
        check_load_keys(
            self.mode,
            self.keys,
            delete_missing=(self.delete_missing, "merge"),
            truncate=(self.truncate, "replace"),
        )
        return self

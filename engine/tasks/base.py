"""What every task kind implements, and what one attempt of a task gets and gives back.

A kind (`Kind`) answers for one task of its kind: which tasks it reads (`inputs`), what can be
found wrong before a run (`check`), its output schema before data moves (`schema`), one attempt
(`run`), its column lineage (`lineage`) and where its output goes (`describe_output`). The
planner, the checks, `arrowline plan`, lineage and the executor ask `engine.tasks.KINDS` instead
of branching on a task's kind.

An attempt gets a `TaskContext`: its inputs as `InputTable`s, an empty staging folder, a cancel
token, a progress callback. It writes its output table into the staging folder in the layout of
`engine.core.tables` and returns a `TaskOutcome`; the executor publishes the folder when the
attempt succeeds and discards it otherwise, so a kind never cleans up after itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from connectors.base import ConnectorContext, Unknown
from engine.core.cancel import CancelToken
from engine.core.problems import Finding, did_you_mean
from engine.core.streams import Tee
from engine.core.tables import InputTable, fresh_directory
from engine.core.watermark import RowsAfter, Watermark, WatermarkUpdate
from engine.spec.definition import Definition
from engine.spec.model import TaskKind, TaskSpec
from lineage.tables import TableRef
from transforms.sql import DuckDatabase, DuckDBSettings

if TYPE_CHECKING:
    from lineage.graph import LineageGraph

__all__ = [
    "CheckContext",
    "Inputs",
    "Kind",
    "RenderedTask",
    "SchemaContext",
    "TaskContext",
    "TaskOutcome",
    "TaskRunner",
    "TaskWatermarks",
    "connection_findings",
    "dry_run",
    "schema_json",
]


class RenderedTask(Protocol):
    """A task rendered for one run, as a kind sees it (a planned task is one)."""

    @property
    def id(self) -> str: ...

    @property
    def spec(self) -> TaskSpec: ...

    @property
    def inputs(self) -> tuple[str, ...]: ...

    @property
    def sql(self) -> str | None: ...


@dataclass(frozen=True)
class Inputs:
    """What a rendered task reads: the tasks whose outputs it reads as data, and for SQL the
    statement and every table it names (task ids when the pipeline is valid)."""

    tasks: tuple[str, ...] = ()
    sql: str | None = None
    tables: tuple[TableRef, ...] = ()


@dataclass(frozen=True)
class TaskWatermarks:
    """What one attempt asks of the run's watermarks."""

    start: Callable[[], Watermark | None]
    """An incremental extract's starting watermark, asked for when it starts reading."""
    pending: Callable[[], tuple[WatermarkUpdate, ...]]
    """A load's watermarks to commit with its rows."""
    rows_after: Callable[[str], RowsAfter | None]
    """For a load, of the input named: only the rows past its sink's own watermark are to
    be sent (None: all of them)."""


@dataclass
class TaskContext:
    """One attempt of one task."""

    pipeline: str
    run_id: str
    base_dir: Path
    """Relative paths in the task's config start here (the pipeline file's folder)."""
    task: RenderedTask
    attempt: int
    inputs: dict[str, InputTable]
    staging_path: Path
    cancel: CancelToken
    progress: Callable[[int], None] = lambda rows: None
    duckdb: DuckDatabase = field(default_factory=DuckDatabase)
    """The run's DuckDB database, which its sql tasks share."""
    connections: Mapping[str, Any] = field(default_factory=dict)
    watermarks: TaskWatermarks | None = None
    """Where an incremental extract starts, and what a load commits and is sent."""
    tee: Tee | None = None
    """For an extract with loads streaming from it: where its batches go besides its output."""
    _staged: bool = field(default=False, repr=False)

    def connector(self, **extra: Any) -> ConnectorContext:
        """What a source or sink of this task gets."""
        return ConnectorContext(
            base_dir=self.base_dir,
            pipeline=self.pipeline,
            run_id=self.run_id,
            task_id=self.task.id,
            cancel=self.cancel,
            attempt=self.attempt,
            connections=self.connections,
            **extra,
        )

    @property
    def staging(self) -> Path:
        """The attempt's empty output folder, created on first use (a load writes none)."""
        if not self._staged:
            fresh_directory(self.staging_path)
            self._staged = True
        return self.staging_path

    def input(self) -> InputTable:
        """The single input of a udf, validate or load task."""
        (table,) = self.inputs.values()
        return table


@dataclass(frozen=True)
class StagedElsewhere:
    """An attempt's output written and uploaded on another host (engine.execution.remote):
    what the run's dispatcher needs of it, without its files."""

    manifest: dict[str, Any]
    """The upload's manifest, which publishing commits (engine.state.objectstore)."""
    content_hash: str | None
    """Its parts' digest (engine.execution.cache.content_hash), for the cache."""
    schema: pa.Schema | None
    """Its schema, for the drift check."""


@dataclass
class TaskOutcome:
    rows_in: int
    rows_out: int
    produces_output: bool = True
    rows_rejected: int = 0
    target: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    watermark: Watermark | None = None
    """For an incremental extract: the largest (cursor, key) of the rows it read."""
    committed: tuple[WatermarkUpdate, ...] = ()
    """For a load: the watermarks it committed with its rows."""
    handed_over: InputTable | None = None
    """An output kept nowhere but handed to the tasks that read it (an ephemeral sql task's
    query); `produces_output` is False."""
    lineage: Any = None
    """For a frame UDF: the column lineage read from the plan it ran (lineage.columns
    .ColumnLineage), so the run's record need not call the function again."""
    elsewhere: StagedElsewhere | None = None
    """Set when the attempt ran on another host: its output is uploaded already, and the
    staging folder here holds nothing."""


class TaskRunner(Protocol):
    """Runs one attempt of a task. The executor's default is `engine.tasks.run_task`; tests and
    benchmarks pass their own to measure or fake the work."""

    def __call__(self, context: TaskContext) -> TaskOutcome: ...


@dataclass(frozen=True)
class CheckContext:
    """What a kind's checks may read besides the task: the definition (its file, folder and
    connections) and the ids of every task of the pipeline."""

    definition: Definition
    task_ids: frozenset[str]


@dataclass(frozen=True)
class SchemaContext:
    """What working out a task's output schema before data moves gets: its inputs as empty
    tables of their planned schemas, a scratch folder, and settings like a run's."""

    pipeline: str
    base_dir: Path
    inputs: dict[str, InputTable]
    scratch: Path
    duckdb: DuckDBSettings


class Kind(Protocol):
    """One task kind."""

    kind: TaskKind
    produces_table: bool
    """Whether the task has an output other tasks read (every kind but load)."""
    reads_sql_tables: bool
    """Whether its SQL template names the tasks it reads (a sql task's statement)."""
    offers_stream: bool
    """Whether an attempt offers its batches to `TaskContext.tee` as it writes them."""
    inlines: bool
    """Whether, `materialize: ephemeral`, it hands its readers its query instead of rows
    (`TaskOutcome.handed_over`), which they run inside their own."""

    def takes_stream(self, task: TaskSpec) -> bool:
        """Whether the task can read its one input as a stream while its producer runs."""
        ...

    def inputs(self, task: TaskSpec) -> Inputs:
        """What a rendered task reads. Raises DefinitionError when that cannot be told (SQL
        that does not parse)."""
        ...

    def check(self, task: TaskSpec, ctx: CheckContext) -> Iterable[Finding]:
        """What can be found wrong with the (unrendered) task beyond its shape, by key path
        under the task: code that cannot be imported, a connection not declared, ..."""
        ...

    def references(self, task: TaskSpec, base_dir: Path) -> str | None:
        """What the task names by reference that decides its output, as text that changes with
        it (a UDF's code, a schema file's contents), for fingerprints; None when nothing."""
        ...

    def sql_template(self, task: TaskSpec, ctx: CheckContext) -> tuple[str, tuple[str, ...]] | None:
        """The task's SQL template and its key path, when it runs SQL (a statement, a source's
        query): the checks refuse parameters printed into it raw."""
        ...

    def schema(self, task: RenderedTask, ctx: SchemaContext) -> pa.Schema | Unknown | None:
        """The output schema before data moves (None: the kind has no output). Raises what
        the task would raise over empty inputs of the planned schemas."""
        ...

    def run(self, context: TaskContext) -> TaskOutcome:
        """One attempt."""
        ...

    def lineage(
        self,
        task: RenderedTask,
        schemas: Mapping[str, pa.Schema],
        base_dir: Path,
        *,
        call_udfs: bool,
    ) -> LineageGraph:
        """The task's column edges over its inputs' and its own output's `schemas`."""
        ...

    def describe_output(self, task: TaskSpec) -> str:
        """Where the output goes, for people (`arrowline plan`)."""
        ...


def connection_findings(task: TaskSpec, ctx: CheckContext) -> Iterator[Finding]:
    """An extract's or load's named connection is declared, and of its connector's kind."""
    from connectors.registry import connector_of

    name = task.connection
    if name is None:
        return
    key = (task.kind.value, "connection")
    connections = ctx.definition.spec.connections
    if name not in connections:
        known = ", ".join(sorted(connections)) or "none are declared"
        yield Finding(
            "unknown-connection",
            f"connection {name!r} is not declared.{did_you_mean(name, list(connections))}",
            key,
            hint=f"declare it under `connections:` (declared: {known})",
        )
        return
    needed, given = task.connector, connector_of(connections[name])
    assert needed is not None
    if not needed.takes_connection(given):
        from connectors.registry import CONNECTORS, connector

        kinds = [
            kind
            for kind in CONNECTORS
            if connector(kind).connection is not None and needed.takes_connection(connector(kind))
        ]
        wanted = " or ".join(f"a `kind: {kind}`" for kind in kinds) or "no named"
        yield Finding(
            "connection-kind",
            f"connection {name!r} is {given.name}, but this task needs {wanted} connection",
            key,
        )


def dry_run(kind: Kind, task: RenderedTask, ctx: SchemaContext) -> pa.Schema | Unknown:
    """A transform's output schema, by running it over empty inputs with the same code a run
    uses: DuckDB binds and types the statement, Polars builds and types the lazy plan, pandera
    checks the columns it needs. Raises what the task raises."""
    import pyarrow.parquet as pq

    from engine.core.tables import output_parts

    staging = ctx.scratch / "outputs" / task.id
    database = DuckDatabase(ctx.duckdb)
    context = TaskContext(
        ctx.pipeline,
        "plan",
        ctx.base_dir,
        task,
        1,
        ctx.inputs,
        staging,
        CancelToken(),
        duckdb=database,
    )
    try:
        outcome = kind.run(context)
    finally:
        database.close()
    if outcome.handed_over is not None:
        return outcome.handed_over.schema
    parts = output_parts(staging)
    if not parts:
        return Unknown("it wrote no output over empty inputs")
    return pq.read_schema(parts[0])


def schema_json(schema: pa.Schema) -> list[dict[str, str]]:
    from engine.core.types import format_type

    return [
        {"name": f.name, "type": format_type(f.type), "nullable": str(f.nullable).lower()}
        for f in schema
    ]

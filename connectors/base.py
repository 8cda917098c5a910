"""What a connector is: one descriptor the engine reads, and the contracts around it.

Every connector is a package with the same skeleton:

    connectors/<name>/__init__.py   the descriptor: a `Connector` subclass and `CONNECTOR`
    connectors/<name>/config.py     its pydantic models: a source tagged by `from:`, a sink by
                                    `to:`, a named connection by `kind:`
    connectors/<name>/source.py     config -> `pyarrow.RecordBatchReader`s (if it reads)
    connectors/<name>/sink.py       an `InputTable` -> the target, in one transaction where the
                                    target has them (if it writes)

plus whatever else the connector needs (`errors.py`, `state.py`, `types.py`, ...). The
descriptor declares as data what the engine must know (`capabilities`, the config models) and
answers, for one config, everything the engine asks: where it points (`place`), what can be
checked before a run (`check`), the schema before data moves (`schema`), what it would read now
(`observe`), how its errors are classified (`classify`). It imports the heavy code (drivers,
readers, writers) inside the methods that use it, so reading every descriptor to build the
pipeline model costs nothing (dlt's destination factories work the same way).

`connectors.registry` maps names to these packages and loads them on first use. Outside
`connectors/`, no code names a connector or checks a config's class: it asks the descriptor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import pyarrow as pa
from pydantic import Field

from engine.core.cancel import CancelToken
from engine.core.config import ConfigModel
from engine.core.durations import Duration
from engine.core.errors import Classification, DefinitionError
from engine.core.files import FileVersion
from engine.core.places import Place
from engine.core.problems import Finding
from engine.core.tables import InputTable
from engine.core.watermark import Watermark, WatermarkUpdate

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "MAINTENANCE",
    "Capabilities",
    "CheckResult",
    "Connector",
    "ConnectorContext",
    "Hook",
    "IncrementalSpec",
    "Maintenance",
    "NamingContext",
    "ProfileOutput",
    "SinkResult",
    "SinkState",
    "Unknown",
]


@dataclass(frozen=True)
class Capabilities:
    """What a connector can do, declared once."""

    transactional: bool
    """Writes commit or roll back as a whole (and can hold a watermark in the same commit)."""
    load_modes: tuple[str, ...] = ()
    sqlglot_dialect: str | None = None
    """The SQL dialect of a source's `query`, for lineage through it; None: it takes no SQL."""
    streaming: bool = True
    """Reads and writes in bounded batches rather than whole tables."""
    sink_streams: bool = False
    """Its sink reads its input once, batch by batch (only `InputTable.batches` and `schema`),
    so a load can start on an extract's first batch instead of waiting for its output."""
    key_queries: bool = False
    """A source can run a task's `cache: {key: <query>}` against its connection (`key_rows`)."""
    views: bool = False
    """A sink can make its target a view of the input (`materialize: view`, `view`)."""
    views_read_files: bool = False
    """Such a view reads the input's kept Parquet files by their path, so it needs them on a
    disk its readers share: not a workspace on an object store."""
    tables: bool = False
    """Its sources and sinks are tables of an open table format that take maintenance
    (`maintain`, `arrowline table`)."""
    object_store: bool = False
    """Its named connection is an S3-compatible object store: a workspace's
    (`workspace: s3://...?connection=NAME`), a Delta table's."""
    hooks: bool = False
    """Its sink runs a load's SQL hooks (`ConnectorContext.hooks_before` and `hooks_after`) in
    its target, inside the load's transaction (engine.spec.hooks)."""


@dataclass(frozen=True)
class Hook:
    """One SQL statement a sink runs in its target around a load's write, rendered."""

    sql: str
    label: str
    """What a failure names: which hook and where it is written (`post-hook 1 at
    models/orders.sql:2`)."""


@dataclass(frozen=True)
class ProfileOutput:
    """A dbt profile's output (profiles.yml) read by the connector of its `type`: the target
    it is (`{database, schema}`) and the named connection that target needs, or what is wrong
    with it, by setting (`("path", "must be a file")`; "" for the output as a whole)."""

    target: dict[str, Any] | None
    connection: dict[str, Any] | None = None
    problems: tuple[tuple[str, str], ...] = ()


class IncrementalSpec(ConfigModel):
    """Read only rows past the committed watermark."""

    cursor: str = Field(description="Column that grows with every change, e.g. updated_at.")
    key: tuple[str, ...] = Field(
        (),
        description="Columns that break ties between rows with the same cursor value, so a "
        "run that ends in the middle of equal cursor values misses nothing.",
    )
    lookback: Duration | None = Field(
        None,
        description="Also re-read rows this far behind the watermark (late commits); merge "
        "keys on the load make re-reading idempotent.",
    )
    nulls: Literal["include", "exclude"] = Field(
        "exclude",
        description="Rows whose cursor is NULL: 'include' reads them on every run, 'exclude' "
        "never reads them.",
    )
    max_staleness: Duration | None = Field(
        None,
        description="The scheduler sends a freshness alert when the committed watermark (a "
        "date or timestamp cursor) lags now by more than this. The same as the pipeline's "
        "`freshness: {task: ...}`, said where the source is.",
    )


@dataclass
class ConnectorContext:
    """What a source or sink gets besides its config, for one attempt of one task."""

    base_dir: Path
    """Relative paths in the config start here (the pipeline file's folder)."""
    pipeline: str
    run_id: str
    task_id: str
    cancel: CancelToken | None = None
    attempt: int = 1
    """Which attempt of the task this is. Two attempts of one task may overlap (a load whose
    extract broke is still winding down when the retry's load starts), so whatever an attempt
    names for itself alone (a staging file) carries it."""
    connections: Mapping[str, Any] = field(default_factory=dict)
    """Named connections, secrets resolved (what `Connector.resolve` returned)."""
    watermark: Watermark | None = None
    """For an incremental source: read rows past this one (None: read everything)."""
    pending_watermarks: tuple[WatermarkUpdate, ...] = ()
    """For a transactional sink: commit these in the same transaction as the data."""
    rejects: Any = None
    """For a source that sets malformed rows aside: its collector (`Connector.rejects`)."""
    reached: Watermark | None = None
    """Set by an incremental source: the position it read everything up to, when its rows do
    not say it (a change stream that found no change still moved past the WAL it read). The
    extract's watermark is the larger of this and its rows' largest."""
    notes: dict[str, Any] = field(default_factory=dict)
    """Set by a source: facts about the read for the task's details (changes read, ...)."""
    previous: Mapping[str, Any] = field(default_factory=dict)
    """For a source's status: the details its task's last successful run recorded."""
    checkpoint: Path | None = None
    """For a source: a folder of this run's that outlives an attempt, a kill included, where
    it may keep its progress (pages read) so a resumed run goes on from there. Not created
    here; a source removes it once its rows were all read."""
    hooks_before: tuple[Hook, ...] = ()
    """For a sink whose capabilities say `hooks`: statements to run in its transaction before
    it writes, in order."""
    hooks_after: tuple[Hook, ...] = ()
    """The same, after it writes and before it commits."""

    def connection(self, name: str) -> Any:
        try:
            return self.connections[name]
        except KeyError:
            known = ", ".join(sorted(self.connections)) or "none"
            raise DefinitionError(f"no connection named {name!r} (connections: {known})") from None

    def raise_if_cancelled(self) -> None:
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()


@dataclass(frozen=True)
class NamingContext:
    """What naming a config's place may use: the pipeline's folder (relative paths stay
    relative without one), and its connections (resolved when a run started, else their specs;
    host, port and database are no secrets)."""

    base_dir: Path = Path()
    connections: Mapping[str, Any] = field(default_factory=dict)


MAINTENANCE = ("optimize", "vacuum", "expire-snapshots")
"""Table maintenance (`arrowline table ACTION TASK`): compact small files into fewer large ones,
remove the files no version still needs that are past a retention, forget old versions."""


@dataclass(frozen=True)
class Maintenance:
    """One maintenance action on one table, as `arrowline table` was asked for it."""

    action: str
    """One of MAINTENANCE."""
    retention: Any = None
    """A timedelta: vacuum removes files unreferenced for longer, expire-snapshots forgets
    versions older; None: the table's own setting (Delta: 7 days for files, 30 for the log)."""
    dry_run: bool = False
    """Say what would be removed, remove nothing."""
    target_size: int | None = None
    """optimize: bytes per compacted file."""
    unsafe_retention: bool = False
    """Allow a retention shorter than the table's minimum (a reader of an older version may
    then find its files gone)."""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of trying one connection (`arrowline check`)."""

    name: str
    target: str
    ok: bool
    detail: str
    latency_ms: float | None = None


@dataclass(frozen=True)
class SinkResult:
    """What a load did, for the catalog and the summary."""

    rows: int
    target: str
    """Where the rows went, for people: `duckdb:warehouse.duckdb#main.orders`."""
    details: dict[str, Any] = field(default_factory=dict)
    committed_watermarks: tuple[WatermarkUpdate, ...] = ()
    """Watermarks the sink committed in the same transaction as the rows."""


@dataclass(frozen=True)
class Unknown:
    """A schema that cannot be known before data moves, and why (for `arrowline plan`)."""

    reason: str
    problem: Finding | None = None
    """A problem the run would fail on, found on the way (a header naming a column twice)."""


class SinkState(Protocol):
    """Watermarks a transactional sink keeps in its own target, beside the data."""

    def read(self, config: Any, ctx: ConnectorContext) -> dict[str, tuple[Watermark, str]]: ...

    def put(
        self, config: Any, ctx: ConnectorContext, updates: Sequence[WatermarkUpdate]
    ) -> None: ...

    def delete(self, config: Any, ctx: ConnectorContext, task: str | None) -> None: ...


class Connector(ABC):
    """One connector as the engine sees it. Subclasses set the class attributes and override
    what they do; a method a connector does not support raises a DefinitionError naming it."""

    name: ClassVar[str]
    """The registry's key: `connectors.registry.connector(name)`."""
    capabilities: ClassVar[Capabilities]
    source: ClassVar[type[ConfigModel] | None] = None
    """The config of `extract: {from: ...}`, when the connector reads."""
    sink: ClassVar[type[ConfigModel] | None] = None
    """The config of `load: {to: ...}`, when the connector writes."""
    connection: ClassVar[type[ConfigModel] | None] = None
    """The config of a named connection (`connections: {name: {kind: ...}}`), when it has one."""
    reference: ClassVar[tuple[Section, ...]] = ()
    """Its sections of `docs/pipeline-reference.md`."""

    # -- what a config says, without I/O -------------------------------------------------------

    def expand(
        self, config: ConfigModel, task_id: str, pipeline: str
    ) -> list[tuple[str, ConfigModel]] | None:
        """A source standing for several tasks (a change stream of several tables through one
        replication slot): the (task id, config) of each, which replace the task in the
        pipeline. None: it is one task."""
        return None

    def release_group(self, config: ConfigModel, task_id: str) -> tuple[str, ...]:
        """The extract tasks (`task_id` among them) that share what `release` frees (one
        replication slot for several tables): each release frees only up to the least
        position any of them has committed. Empty: the extract releases on its own."""
        return ()

    def table_source(
        self, database: str, connection: Mapping[str, Any] | None, table: str
    ) -> dict[str, Any] | None:
        """How an extract reads `table` of a SQL project's `database` (a dbt source kept in the
        target's warehouse), when that database is this connector's (as `publish_target` says):
        the extract's config. None otherwise."""
        load = self.publish_target(database, connection, table)
        if load is None or self.source is None:
            return None
        load.pop("mode", None)
        return {"from": load.pop("to"), **load}

    def profile_output(self, values: Mapping[str, Any], connection: str) -> ProfileOutput | None:
        """A dbt profile's output of this connector's type (`type: <name>`, its settings in
        `values`, `env_var()` already made `${env:...}`) as a target publishing into it; a
        connection it needs is to be named `connection`. None: no dbt output is of this
        connector's type."""
        return None

    def claims(self, config: ConfigModel, task_id: str, pipeline: str) -> str | None:
        """What the extract holds at its source that no other task may share (a replication
        slot), said as a name; None when it holds nothing. Tasks of one `release_group` share
        theirs."""
        return None

    def connection_name(self, config: ConfigModel) -> str | None:
        """The named connection a source or sink config uses."""
        return None

    def takes_connection(self, given: Connector) -> bool:
        """Whether a connection of `given`'s kind can be this connector's (its own kind; an
        object store's for a table format kept in one)."""
        return given is self

    def incremental(self, config: ConfigModel) -> IncrementalSpec | None:
        """A source's incremental settings, when it reads past a watermark."""
        return None

    def relation(self, config: ConfigModel) -> str | None:
        """A sink's table as SQL run in its target names it (a hook's `{{ this }}`), quoted;
        None when it writes no table."""
        from engine.core.sqltext import quote_table

        table = getattr(config, "table", None)
        return quote_table(table) if isinstance(table, str) else None

    def publish_target(
        self, database: str, connection: Mapping[str, Any] | None, table: str
    ) -> dict[str, Any] | None:
        """How a load puts a table named `table` into a SQL project's `+database`, when that
        database is this connector's: the load config's keys besides `input` and `mode`.
        `connection`: the named connection `database` is, or None when it names none."""
        return None

    @abstractmethod
    def place(self, config: ConfigModel, ctx: NamingContext) -> Place:
        """Where a source reads or a sink writes, for people, lineage and OpenLineage."""

    def check(self, config: ConfigModel, base_dir: Path) -> list[Finding]:
        """What can be found wrong before a run (files not there yet, ...), by key path."""
        return []

    # -- before data moves --------------------------------------------------------------------

    def schema(self, config: ConfigModel, ctx: ConnectorContext) -> pa.Schema | Unknown:
        """A source's output schema before any row is read, or why it cannot be known (with the
        problem a run would fail on, when that is why)."""
        return Unknown(f"a {self.name} source's schema is known once it has run")

    def observe(self, config: ConfigModel, base_dir: Path) -> tuple[FileVersion, ...] | None:
        """What a source would read now, cheaply (file sizes and times), for reuse decisions;
        None when that cannot be told without reading (a database server)."""
        return None

    def key_rows(self, config: ConfigModel, query: str, connection: Any) -> list[tuple[Any, ...]]:
        """The rows a cache key query returns now, on the source's resolved connection (when
        `capabilities.key_queries`): what tells the cache that the source's tables changed."""
        raise DefinitionError(f"the {self.name} connector cannot run a cache key query")

    def rejects(self, config: ConfigModel) -> Any:
        """A collector of malformed rows for one attempt, when the source sets them aside
        instead of failing (it has `.items` and `.table()`), else None."""
        return None

    # -- moving data ---------------------------------------------------------------------------

    def open(self, config: ConfigModel, ctx: ConnectorContext) -> list[pa.RecordBatchReader]:
        """A source's rows: one stream, or several read in parallel (partitions)."""
        raise DefinitionError(f"the {self.name} connector cannot be a source")

    def split(
        self, config: ConfigModel, ctx: ConnectorContext
    ) -> AbstractContextManager[Sequence[Any]] | None:
        """A source that reads in parts which may run on other hosts (`executor: ray`): a
        context that, while it is open, holds what the parts share (PostgreSQL: the snapshot
        they all read) and gives one piece per part, `open_part`'s to read. A piece travels to
        another host, so it is picklable and holds no secret. None: the source reads in one
        piece, or its parts share what cannot leave this process."""
        return None

    def open_part(
        self, config: ConfigModel, piece: Any, ctx: ConnectorContext
    ) -> pa.RecordBatchReader:
        """One part of a split read (`split`), on whichever host it runs; the context `split`
        gave is open meanwhile on the host that split it."""
        raise DefinitionError(f"the {self.name} connector does not read in parts")

    def copy_parts(
        self, config: ConfigModel, ctx: ConnectorContext, folder: Path, name: Callable[[int], str]
    ) -> int | None:
        """When a source's files already are parts as an extract writes them (Parquet), copy
        them byte for byte into `folder` as `name(0)`, `name(1)`, ... (checked as a read
        would check them) and return the rows; None when the rows must be read through
        `open`."""
        return None

    def release(
        self, config: ConfigModel, watermark: Watermark | None, ctx: ConnectorContext
    ) -> None:
        """Every load of an incremental source's rows committed them up to `watermark`: free
        what the source holds until then (a replication slot's WAL). Called after the commits;
        when it fails or the process dies first, nothing is lost, and the source does it on
        its next read. None, for a `release_group` only: none of the group committed or has
        output to load, so each starts from a snapshot of its own: free everything."""
        return

    def source_status(self, config: ConfigModel, ctx: ConnectorContext) -> dict[str, Any] | None:
        """What a source holds at its server between runs (a replication slot: its position,
        lag, retained WAL), for `arrowline cdc status`; None when it holds nothing."""
        return None

    def takes_stream(self, config: ConfigModel) -> bool:
        """Whether this load can start on its input's first batch (`capabilities.sink_streams`)
        rather than wait for its files; a mode that reads its input twice cannot."""
        return self.capabilities.sink_streams

    def write(self, table: InputTable, config: ConfigModel, ctx: ConnectorContext) -> SinkResult:
        """Load one task output into the target."""
        raise DefinitionError(f"the {self.name} connector cannot be a sink")

    def view(self, table: InputTable, config: ConfigModel, ctx: ConnectorContext) -> SinkResult:
        """Make the target a view of one task output (`materialize: view`), when
        `capabilities.views`."""
        raise DefinitionError(f"the {self.name} connector cannot make a view")

    def state(self, config: ConfigModel) -> SinkState | None:
        """Where a transactional sink keeps watermarks beside its data; None when it has no
        transaction to keep them in (its watermarks are final once its output is published)."""
        return None

    def maintain(
        self, config: ConfigModel, job: Maintenance, ctx: ConnectorContext
    ) -> dict[str, Any]:
        """Maintain the table a source reads or a sink writes (when `capabilities.tables`):
        what was done, as figures for people (files removed, bytes, versions)."""
        raise DefinitionError(f"the {self.name} connector keeps no tables to maintain")

    def read_target(self, target: str, details: Mapping[str, Any]) -> pl.LazyFrame | None:
        """A load's target (`SinkResult.target`) as a notebook reads it, lazily, as the load
        left it (its `details`: a table format's version), when the connector can read it
        back; None otherwise."""
        return None

    # -- connections and errors ----------------------------------------------------------------

    def resolve(self, name: str, spec: ConfigModel, base_dir: Path) -> Any:
        """A named connection with its secrets filled in, when a run starts."""
        raise DefinitionError(f"the {self.name} connector has no named connections")

    def check_connection(self, resolved: Any, uses: Sequence[ConfigModel] = ()) -> CheckResult:
        """Try a resolved connection (`arrowline check`), and what the extracts and loads
        that name it (`uses`) need of it beyond a login (change capture's server settings)."""
        raise DefinitionError(f"the {self.name} connector has no named connections")

    def classify(self, exc: BaseException) -> Classification | None:
        """Whether a foreign exception from this connector's libraries is worth retrying;
        None when the connector does not know it."""
        return None


@dataclass(frozen=True)
class Section:
    """One section of the pipeline reference: heading, the model whose keys it lists, prose,
    and an example in YAML."""

    heading: str
    model: type[ConfigModel]
    prose: str
    example: str

"""The pipeline model: one typed, frozen description built from YAML or from Python.

A task is a mapping with an `id` and exactly one kind key (`extract`, `sql`, `udf`, `validate`,
`load`) whose value configures it. Sources and sinks are tagged unions on `from:` and `to:`, so
adding a connector adds a member, not an `if`.

Every model forbids unknown keys. Defaults are written here once and documented in
`docs/pipeline-reference.md`; `arrowline schema` prints the JSON Schema generated from this module.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    Discriminator,
    Field,
    PrivateAttr,
    StrictBool,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import WithJsonSchema

from connectors.base import Connector, IncrementalSpec
from connectors.registry import connection_models, connector_of, sink_models, source_models
from engine.core.config import ConfigModel
from engine.core.durations import Duration
from engine.core.errors import ParameterError
from engine.core.s3 import workspace_setting
from engine.core.secrets import mask_secrets
from engine.spec.hooks import HooksSpec
from engine.spec.params import Param, ParamType, as_type, infer_param
from engine.spec.settings import (
    AlertsSpec,
    ExecutorSpec,
    OpenLineageSpec,
    ResourcesSpec,
    TriggerSpec,
)
from transforms.config import ModelTest, SqlSpec, UdfSpec, ValidateSpec

__all__ = [
    "NAME_PATTERN",
    "AlertsSpec",
    "BreakerPolicy",
    "CacheKey",
    "ExecutorSpec",
    "ExtractSpec",
    "LoadSpec",
    "OpenLineageSpec",
    "ParamSpec",
    "PipelineSpec",
    "ResourcesSpec",
    "RetentionSpec",
    "RetryPolicy",
    "TaskDefaults",
    "TaskKind",
    "TaskSpec",
    "TriggerSpec",
    "pipeline_json_schema",
]

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
"""Pipeline and task ids: usable unquoted as SQL table names and as folder names."""
TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
"""Task tags: what `--select tag:NAME` can name."""


class TaskKind(StrEnum):
    EXTRACT = "extract"
    SQL = "sql"
    UDF = "udf"
    VALIDATE = "validate"
    LOAD = "load"


class RetryPolicy(ConfigModel):
    """How often and how patiently a task is retried after a transient error."""

    attempts: int = Field(3, ge=1, le=100, description="Total attempts, the first included.")
    backoff: Duration = Field(
        timedelta(seconds=1), description="Base delay before the second attempt."
    )
    max_backoff: Duration = Field(timedelta(seconds=60), description="Cap on any single delay.")
    jitter: Literal["full", "none"] = Field(
        "full", description="'full' draws each delay uniformly from [0, backoff * 2^n]."
    )


class TaskDefaults(ConfigModel):
    """Settings every task inherits unless it sets its own."""

    retry: RetryPolicy = Field(
        default_factory=RetryPolicy, description="Retry policy of every task."
    )
    timeout: Duration | None = Field(None, description="Stop a task that runs longer than this.")


class BreakerPolicy(ConfigModel):
    """When a connection's circuit breaker opens, and for how long."""

    failures: int = Field(
        5, ge=1, le=1000, description="Consecutive transient failures that open the breaker."
    )
    cooldown: Duration = Field(
        timedelta(seconds=30),
        description="How long it stays open before one probe task may try the connection.",
    )


class RetentionSpec(ConfigModel):
    """Which task outputs the workspace keeps (see engine.state.retention)."""

    keep_runs: int = Field(
        3,
        ge=0,
        le=100_000,
        description="Keep every output of this many most recent runs. Older outputs are "
        "removed after each run and by `arrowline gc`, except the latest successful output of "
        "each task and what a running or resumable run needs.",
    )


class ParamSpec(ConfigModel):
    """A parameter with a declared type, for when a default alone does not say it: an optional
    value (`default: null`), a date written as text, a float whose default is a whole number."""

    type: ParamType = Field(
        description="str, int, float, bool, date, datetime, list (of scalars) or dict (text "
        "to scalars). Every value given for a run must be of it."
    )
    default: Any = Field(
        description="The value when a run gives none; null makes the parameter optional."
    )
    description: str | None = Field(None, description="What the parameter is for, for people.")

    @field_validator("default")
    @classmethod
    def _of_its_type(cls, value: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("type")  # absent when the type itself is invalid (reported)
        return value if value is None or kind is None else as_type(kind, value)

    def param(self, name: str) -> Param:
        return Param(name, self.type, self.default, self.description)


def _param_form(value: Any) -> str:
    """A mapping with a `type` key declares a parameter; anything else is a plain default."""
    typed = isinstance(value, ParamSpec) or (isinstance(value, dict) and "type" in value)
    return "typed" if typed else "plain"


def _plain_default(value: Any) -> Any:
    """A plain default must have a parameter type and be a value of it (lists hold scalars)."""
    try:
        param = infer_param("default", value)
    except ParameterError as exc:
        raise ValueError(exc.message.removeprefix("parameter 'default': ")) from None
    return value if value is None else as_type(param.type, value)


ParamDeclaration = Annotated[
    Annotated[ParamSpec, Tag("typed")]
    | Annotated[
        Any,
        AfterValidator(_plain_default),
        # exactly one branch must match in JSON Schema too: a plain default is no declaration
        WithJsonSchema({"not": {"type": "object", "required": ["type"]}}),
        Tag("plain"),
    ],
    Discriminator(_param_form),
]
"""`n: 3` (the type is the default's) or `n: {type: int, default: 3}`."""


class CacheKey(ConfigModel):
    """A cache with a key, for a task that reads a database: its tables change without the
    pipeline knowing, so the key says when they did."""

    key: str = Field(
        min_length=1,
        description="A SQL query run against the task's connection when a run is planned, e.g. "
        "`select max(updated_at), count(*) from orders`. Its result joins the task's fingerprint "
        "(hashed, never stored): the task is reused while the key returns the same rows.",
    )


CacheSetting = StrictBool | CacheKey
"""`cache: true`, `cache: false` or `cache: {key: "select ..."}`."""


# ---------------------------------------------------------------------------------------------
# extract and load: the connectors' own config models, tagged by `from:` and `to:`


def _tagged(models: tuple[type[ConfigModel], ...], tag: str) -> Any:
    """One model, or a union of several told apart by their `tag` field (`from:`, `to:`, ...)."""
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator=tag)]  # noqa: UP007 - built at run time


# Sources, sinks and connections are the connectors' own config models, tagged by `from:`,
# `to:` and `kind:`: adding a connector adds a member here without anyone naming it.
if TYPE_CHECKING:
    ExtractSpec = ConfigModel
    LoadSpec = ConfigModel
    ConnectionSpec = ConfigModel
else:
    ExtractSpec = _tagged(source_models(), "from_")
    LoadSpec = _tagged(sink_models(), "to")
    ConnectionSpec = _tagged(connection_models(), "kind")


# ---------------------------------------------------------------------------------------------
# task and pipeline

KIND_FIELDS: dict[TaskKind, str] = {
    TaskKind.EXTRACT: "extract",
    TaskKind.SQL: "sql",
    TaskKind.UDF: "udf",
    TaskKind.VALIDATE: "validate_",
    TaskKind.LOAD: "load",
}


class TaskSpec(ConfigModel):
    """One task: an id, exactly one kind key, and optional scheduling settings."""

    id: str = Field(
        pattern=NAME_PATTERN,
        max_length=63,
        description="Unique identifier (letters, digits, _); the name other tasks read it by.",
    )
    description: str | None = Field(None, description="Free text for people.")
    column_descriptions: dict[str, str] = Field(
        {},
        description="Free text for people about the output's columns, by name (`arrowline "
        "docs` shows them; a SQL project takes them from its property files).",
    )
    tags: tuple[str, ...] = Field(
        (),
        description="Labels to select the task by (`--select tag:nightly`): letters, digits, "
        "_, - and . (up to 63).",
    )
    depends_on: tuple[str, ...] = Field(
        (), description="Extra upstream task ids, beyond those implied by inputs and SQL."
    )
    part_of: str | None = Field(
        None,
        description="The task this one belongs to: a selection that names that task names "
        "this one too (a SQL project's publishing load of its model).",
    )
    tests: tuple[ModelTest, ...] = Field(
        (),
        description="Checks of a sql task's output (dbt's generic tests: unique, not_null, "
        "accepted_values, relationships), run once it is written and before anything reads "
        "it: a failure fails the task (severity error, the default) or is said (warn).",
    )
    retry: RetryPolicy | None = Field(None, description="Overrides defaults.retry.")
    timeout: Duration | None = Field(None, description="Overrides defaults.timeout.")
    resources: ResourcesSpec | None = Field(
        None, description="What an attempt needs where it runs (with `executor: ray`)."
    )
    cache: CacheSetting | None = Field(
        None,
        description="Reuse an earlier output made from the same definition, parameters, code, "
        "input and upstream contents instead of running (overrides the pipeline's `cache`). A "
        "database extract needs `{key: <SQL query>}`; a load is cached only when set here.",
    )
    schema_change: Literal["evolve", "fail_on_breaking", "freeze"] = Field(
        "evolve",
        description="When the task's output schema differs from its last successful run: "
        "evolve records the change; fail_on_breaking fails the task on a dropped, renamed "
        "(as lineage shows it), narrowed or retyped column; freeze fails on any change. "
        "A load's target table follows the load's own schema_change (fail_on_breaking).",
    )
    materialize: Literal["table", "ephemeral", "view"] = Field(
        "table",
        description="table keeps the output in the workspace (resume, notebooks, reuse and "
        "tasks that read files read it); ephemeral keeps nothing. An ephemeral extract, read "
        "only by loads whose sink takes a stream (postgres, parquet), hands its batches to "
        "them as it reads and writes no copy; a failed load cannot retry from a copy then: the "
        "extract and its loads run again together, and `--resume` re-runs the extract. An "
        "ephemeral sql task, read only by sql tasks, is inlined into their statements (a view "
        "DuckDB plans inside each reader's query, like dbt's ephemeral models): its rows are "
        "never written, and a reader that runs again runs it again. view is for loads into "
        "databases that have them (duckdb, postgres), with mode: replace: the target becomes "
        "a view of the input. In DuckDB it reads the workspace's Parquet files by their "
        "absolute paths, so the load copies nothing (retention keeps those files while the "
        "latest view load reads them); the database file is then not self-contained: moving "
        "the project breaks the view, and a view the pipeline no longer loads (its table "
        "renamed, the load removed) stops working once retention removes its files. In "
        "PostgreSQL the rows go to a new table named after the run and the view is switched "
        "to it on commit (grants kept), so readers never see an emptied table or dead rows.",
    )
    pool: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        description="The pipeline's `pools` entry whose slots the task takes while it runs: "
        "it waits, QUEUED, while they are all taken (by this run or any other of the project).",
    )
    pool_slots: int = Field(
        1, ge=1, le=1024, description="How many of its pool's slots the task takes."
    )
    extract: ExtractSpec | None = Field(None, description="Read a source (see extract sections).")
    sql: SqlSpec | None = Field(None, description="Run a DuckDB query over upstream outputs.")
    udf: UdfSpec | None = Field(None, description="Apply a Polars UDF to one input.")
    validate_: ValidateSpec | None = Field(
        None, alias="validate", description="Check one input against a pandera schema."
    )
    load: LoadSpec | None = Field(
        None, description="Write one input to a sink (see load sections)."
    )
    hooks: HooksSpec | None = Field(
        None,
        description="A load's SQL hooks, templates run in its target inside its transaction: "
        "`pre` before it writes, `post` after; `{{ this }}` is its table. One that fails rolls "
        "the load back and fails it (duckdb and postgres targets).",
    )
    _expanded_from: str | None = PrivateAttr(None)
    """The task as written, when this is one of the tasks it stands for (a `cdc` extract of
    several tables): lines and problems point at it."""

    @property
    def expanded_from(self) -> str | None:
        return self._expanded_from

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import re

        for tag in value:
            if not re.fullmatch(TAG_PATTERN, tag) or len(tag) > 63:
                raise ValueError(
                    f"tag {tag!r} must be letters, digits, _, - and . (up to 63, no spaces), "
                    "so that --select tag:NAME can name it"
                )
        return value

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> TaskSpec:
        present = [kind for kind, name in KIND_FIELDS.items() if getattr(self, name) is not None]
        if len(present) != 1:
            names = ", ".join(k.value for k in TaskKind)
            if not present:
                raise ValueError(f"a task needs exactly one kind key: one of {names}")
            given = ", ".join(k.value for k in present)
            raise ValueError(f"a task has exactly one kind, but this one has {given}")
        if self.hooks is not None and self.load is None:
            raise ValueError("hooks run in a load's target around its write: a load takes them")
        return self

    @property
    def kind(self) -> TaskKind:
        for kind, name in KIND_FIELDS.items():
            if getattr(self, name) is not None:
                return kind
        raise AssertionError("validated TaskSpec without a kind")  # pragma: no cover

    @property
    def config(self) -> ConfigModel:
        value = getattr(self, KIND_FIELDS[self.kind])
        assert value is not None
        return value  # type: ignore[no-any-return]

    @property
    def input(self) -> str | None:
        """The one upstream task whose output this task reads, for udf/validate/load."""
        config = self.config
        return getattr(config, "input", None)

    @property
    def connector(self) -> Connector | None:
        """The descriptor of an extract's source or a load's sink."""
        config = self.extract or self.load
        return connector_of(config) if config is not None else None

    @property
    def connection(self) -> str | None:
        """The named connection an extract or load uses, if any."""
        owner = self.connector
        return owner.connection_name(self.config) if owner is not None else None

    @property
    def incremental(self) -> IncrementalSpec | None:
        """An extract's incremental settings, when it reads past a watermark."""
        owner = self.connector
        return owner.incremental(self.extract) if owner and self.extract is not None else None


class PipelineSpec(ConfigModel):
    """A whole pipeline: its name, parameters, defaults and tasks."""

    name: str = Field(
        alias="pipeline",
        pattern=NAME_PATTERN,
        max_length=63,
        description="The pipeline's name (letters, digits, _); runs and outputs are filed by it.",
    )
    description: str | None = Field(None, description="Free text for people.")
    schedule: str | None = Field(None, description="Cron expression (5 fields, or 6 with seconds).")
    timezone: str = Field("UTC", description="IANA time zone the schedule is read in.")
    overlap: Literal["skip", "queue", "allow", "cancel_previous"] = Field(
        "skip",
        description="When a run is due while the previous one still runs: skip the new "
        "interval, queue it, allow both at once, or cancel the previous run.",
    )
    catchup: bool = Field(
        False,
        description="After downtime, run every missed interval (oldest first) instead of only "
        "the latest.",
    )
    max_catchup: int = Field(
        10, ge=1, le=10_000, description="With catchup: run at most this many missed intervals."
    )
    trigger: tuple[TriggerSpec, ...] = Field(
        (), description="Runs started by new files or by another pipeline's success."
    )
    sla: Duration | None = Field(
        None, description="Alert when a scheduled run has not succeeded this long after its time."
    )
    freshness: dict[str, Duration] = Field(
        default_factory=dict,
        description="Incremental extract id -> the most its watermark may lag behind now.",
    )
    alerts: AlertsSpec | None = Field(None, description="Alerts on failure, SLA misses and more.")
    on_restart: Literal["resume", "fail"] = Field(
        "resume",
        description="What the scheduler does with a run its restart interrupted.",
    )
    cache: StrictBool = Field(
        False,
        description="Every task (loads excepted: they opt in themselves) reuses an earlier "
        "output made from the same inputs instead of running; a task's own `cache` overrides.",
    )
    params: dict[str, ParamDeclaration] = Field(
        default_factory=dict,
        description="Parameters: a default (its type is the parameter's) or {type, default}. "
        "Override with ARROWLINE_PARAM_<NAME> or --param.",
    )
    project: str | None = Field(
        None,
        description="A SQL project's folder (holding arrowline_project.yml), relative to this "
        "file: its models, seeds, sources, tests and publishing loads become tasks of this "
        "pipeline, after its own (which may read them); its vars join `params`, its macros "
        "`macros`, its connections and pools this file's. A name both declare is an error.",
    )
    macros: tuple[str, ...] = Field(
        (),
        description="Files of Jinja macros (`{% macro name(args) %}...{% endmacro %}`), relative "
        "to the pipeline file: every macro is callable by name in every template, and a file "
        "can be imported by its path (`{% import 'macros/money.sql' as money %}`). A SQL "
        "project takes every .sql file under its macro-paths.",
    )
    defaults: TaskDefaults = Field(
        default_factory=TaskDefaults, description="Settings every task inherits."
    )
    connections: dict[str, ConnectionSpec] = Field(
        default_factory=dict,
        description="Named database connections that extract and load tasks refer to.",
    )
    pools: dict[str, Annotated[int, Field(ge=1, le=1024)]] = Field(
        default_factory=dict,
        description="Named resource pools and their slots, e.g. {warehouse: 4}. A task with "
        "`pool:` takes a slot while it runs; a pool named like a connection caps the tasks "
        "using that connection. Slots are shared by every run of the project (of the catalog, "
        "when it is shared) that declares the pool: the fifth task of any run wanting a "
        "4-slot pool waits, QUEUED, said in the log, until one is free. A run that dies frees "
        "its slots at once.",
    )
    circuit_breaker: BreakerPolicy = Field(
        default_factory=BreakerPolicy,
        description="One breaker per connection, shared by the tasks of a run.",
    )
    openlineage: OpenLineageSpec | None = Field(
        None, description="Send OpenLineage run events (START, COMPLETE, FAIL) to a file or URL."
    )
    executor: ExecutorSpec = Field(
        default_factory=ExecutorSpec,
        description="Where task attempts run: `local` (default) or `ray` (`{kind: ray, "
        "address: auto}`); `arrowline run --executor` overrides it.",
    )
    retention: RetentionSpec = Field(
        default_factory=RetentionSpec,
        description="How many runs' outputs `.arrowline/workspace/` keeps.",
    )
    workspace: Annotated[str | None, AfterValidator(workspace_setting)] = Field(
        None,
        max_length=1024,
        description="Publish task outputs to an S3-compatible object store, `s3://bucket/prefix` "
        "with optional `?endpoint=http://host:port&region=name&connection=NAME`, instead of "
        "`.arrowline/workspace/` (default: `$ARROWLINE_WORKSPACE`). Endpoint, region and "
        "credentials come from the `kind: s3` connection it names, else from AWS_ENDPOINT_URL, "
        "AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. A notebook reads the outputs "
        "with what the project's pipeline files say.",
    )
    tasks: tuple[TaskSpec, ...] = Field(min_length=1, description="The tasks, in any order.")

    @model_validator(mode="after")
    def _expanded(self) -> PipelineSpec:
        """A task whose source stands for several (`Connector.expand`) becomes those tasks."""
        tasks: list[TaskSpec] = []
        changed = False
        for task in self.tasks:
            owner, config = task.connector, task.extract
            members = owner.expand(config, task.id, self.name) if owner and config else None
            if members is None:
                tasks.append(task)
                continue
            changed = True
            for member_id, config in members:
                made = task.model_copy(update={"id": member_id, "extract": config})
                made._expanded_from = task.id
                tasks.append(made)
        if changed:
            object.__setattr__(self, "tasks", tuple(tasks))  # frozen, and not yet read
        return self

    @field_validator("trigger", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @field_validator("executor", mode="before")
    @classmethod
    def _executor_kind(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value

    @field_validator("params", "connections", "pools")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        import re

        for name in value:
            if not re.fullmatch(NAME_PATTERN, name):
                raise ValueError(f"name {name!r} must be an identifier (letters, digits, _)")
        return value

    @property
    def parameters(self) -> dict[str, Param]:
        """Every parameter with its type, declared or inferred from its default."""
        return {
            name: value.param(name) if isinstance(value, ParamSpec) else infer_param(name, value)
            for name, value in self.params.items()
        }

    @property
    def param_defaults(self) -> dict[str, Any]:
        return {name: param.default for name, param in self.parameters.items()}

    def task(self, task_id: str) -> TaskSpec:
        """The first task with this id; KeyError when none."""
        return self.tasks_by_id[task_id]

    @cached_property
    def tasks_by_id(self) -> dict[str, TaskSpec]:
        """Tasks by id (the first of duplicates, which validation reports): a lookup per task
        must not scan the list, or a 5,000-task pipeline validates in quadratic time."""
        found: dict[str, TaskSpec] = {}
        for task in self.tasks:
            found.setdefault(task.id, task)
        return found

    def document(self) -> str:
        """The definition as YAML (settings left at their defaults omitted), for diffs. Its
        secrets are masked here, where it is made, since runs store it and `--resume` prints it."""
        import yaml

        payload = self.model_dump(
            mode="json", by_alias=True, exclude_defaults=True, fallback=_describe_object
        )
        return yaml.safe_dump(mask_secrets(payload), sort_keys=False, width=100, allow_unicode=True)


def _describe_object(value: Any) -> str:
    """Python objects in a definition (UDF functions, schema classes) by their name, for people
    reading the document; fingerprints describe them by their code (engine.planning.fingerprint)."""
    module = getattr(value, "__module__", type(value).__module__)
    name = getattr(value, "__qualname__", type(value).__qualname__)
    return f"{module}:{name}"


def pipeline_json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of a pipeline file, for editors and linters."""
    schema = PipelineSpec.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "arrowline pipeline"
    task = schema["$defs"]["TaskSpec"]
    # pydantic cannot express "exactly one of these keys"; JSON Schema can.
    task["oneOf"] = [{"required": [kind.value]} for kind in TaskKind]
    return schema

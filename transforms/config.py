"""Configuration of the transform task kinds: `sql`, `udf` and `validate`.

Each model is the value of its kind's key in a task; the code that runs it is beside it in this
package (`transforms.sql`, `transforms.udf`, `transforms.validate`).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, PrivateAttr, Tag, model_validator
from pydantic.json_schema import SkipJsonSchema

from engine.core.config import CODE, SQL, ConfigModel

__all__ = [
    "AcceptedValues",
    "ColumnRule",
    "InlineSchema",
    "ModelTest",
    "OnFail",
    "Relationship",
    "SchemaSpec",
    "SqlSpec",
    "UdfFunction",
    "UdfSpec",
    "ValidateSpec",
]


# ---------------------------------------------------------------------------------------------
# sql


class SqlIncremental(ConfigModel):
    """A sql task whose statement computes only what changed (dbt's incremental models)."""

    unique_key: tuple[str, ...] = Field(
        (),
        description="Columns that identify a row: a new row replaces the kept row of the same "
        "key (strategy merge). Without them rows are appended.",
    )
    strategy: Literal["merge", "append"] | None = Field(
        None,
        description="merge (the default with a unique_key): the last output's rows whose key "
        "the new rows hold are replaced by them; append (the default without): the new rows "
        "are added to the last output's.",
    )

    on_schema_change: Literal["ignore", "append_new_columns", "sync_all_columns", "fail"] = Field(
        "append_new_columns",
        description="When the new rows' columns differ from the kept output's (dbt's setting; "
        "a SQL project's models take dbt's default, ignore): append_new_columns adds new "
        "columns (NULL in kept rows) and keeps dropped ones; ignore keeps the kept columns (a "
        "new column is left out, said in the log; a dropped one is NULL in new rows); "
        "sync_all_columns makes the columns the new rows' (dropped ones leave the kept rows "
        "too); fail fails the task. Columns are compared by name, not by order.",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_key(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("unique_key"), str):
            return {**value, "unique_key": (value["unique_key"],)}
        return value

    @model_validator(mode="after")
    def _merge_needs_keys(self) -> SqlIncremental:
        if self.strategy == "merge" and not self.unique_key:
            raise ValueError("strategy merge needs unique_key: the columns that identify a row")
        return self

    @property
    def merges(self) -> bool:
        return self.strategy == "merge" or (self.strategy is None and bool(self.unique_key))


class SqlSpec(ConfigModel):
    """A DuckDB SELECT over upstream task outputs, referenced by task id as table names."""

    query: str | None = Field(None, description="The SELECT statement (Jinja2 template).")
    file: str | None = Field(None, description="A .sql file holding the statement instead.")
    incremental: SqlIncremental | None = Field(
        None,
        description="Keep the last successful output and add to it what the statement returns "
        "(dbt's incremental models): in the statement, `{{ is_incremental() }}` is true when "
        "there is such an output (not on the first run or with --full-refresh) and `{{ this "
        "}}` reads it, e.g. `where updated_at > (select max(updated_at) from {{ this }})`. "
        "The output is the whole table, so readers and tests see every row.",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"query": value} if isinstance(value, str) else value

    _template_file: str | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _query_or_file(self) -> SqlSpec:
        if (self.query is None) == (self.file is None):
            raise ValueError("set exactly one of 'query' or 'file'")
        return self

    def rendered(self, query: str) -> SqlSpec:
        """This statement rendered for a run as `query`, knowing the file it was read from."""
        made = SqlSpec(query=query, incremental=self.incremental)
        made._template_file = self.file
        return made

    @property
    def template_file(self) -> str | None:
        """The file the statement is written in (as the task names it): its `file`, also once
        rendered; None for one written inline."""
        return self.file or self._template_file


# ---------------------------------------------------------------------------------------------
# udf

UdfFunction = str | SkipJsonSchema[Callable[..., Any]]


class UdfSpec(ConfigModel):
    """A Python function of Polars expressions (or LazyFrame -> LazyFrame) over one input."""

    input: str = Field(description="Id of the upstream task whose output the function reads.")
    function: UdfFunction = Field(
        description="'path/to/file.py:function' (relative to the pipeline file) or "
        "'package.module:function'; in Python, the function itself.",
        json_schema_extra=CODE,
    )
    args: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments passed to the function."
    )
    mode: Literal["auto", "expressions", "frame"] = Field(
        "auto",
        description="'expressions': the function returns Polars expressions; 'frame': it maps "
        "a LazyFrame to a LazyFrame; 'auto' decides from the signature.",
    )
    output: Literal["with_columns", "select"] = Field(
        "with_columns",
        description="For expressions: add them to the input's columns, or select only them.",
    )


# ---------------------------------------------------------------------------------------------
# validate


class OnFail(StrEnum):
    FAIL = "fail"
    QUARANTINE = "quarantine"
    WARN = "warn"


class ColumnRule(ConfigModel):
    """Rules for one column of an inline schema (pandera Column)."""

    type: str | None = Field(None, description="Expected type: int64, float64, string, ...")
    description: str | None = Field(None, description="What the column holds, for people.")
    nullable: bool = Field(False, description="Allow NULLs (pandera's default is not to).")
    unique: bool = Field(False, description="No two rows have the same value.")
    required: bool = Field(True, description="The column must be present.")
    checks: dict[str, Any] = Field(
        default_factory=dict,
        description="pandera built-in checks by name and argument: ge, gt, le, lt, eq, ne, "
        "isin, notin, in_range {min, max}, str_matches, str_length {min, max}, ...",
    )


class InlineSchema(ConfigModel):
    """A pandera schema written in the pipeline file (or a YAML file of the same shape)."""

    columns: dict[str, ColumnRule] = Field(description="Rules by column name.")
    description: str | None = Field(None, description="What the table holds, for people.")
    strict: bool = Field(False, description="Reject columns the schema does not name.")
    coerce: bool = Field(False, description="Cast columns to their declared types first.")
    unique: tuple[str, ...] | None = Field(
        None, description="Columns whose combination must be unique."
    )


def _schema_kind(value: Any) -> str:
    """A mapping is an inline schema and nothing else: in an untagged union, one with an unknown
    key would fall through to the Python-object member and fail late, without naming the key."""
    if isinstance(value, str):
        return "reference"
    return "inline" if isinstance(value, dict | InlineSchema) else "object"


SchemaSpec = Annotated[
    Annotated[str, Tag("reference")]
    | Annotated[InlineSchema, Tag("inline")]
    | Annotated[SkipJsonSchema[Any], Tag("object")],
    Discriminator(_schema_kind),
]
"""A schema file or Python reference, an inline schema, or (from Python) a pandera object."""


class ValidateSpec(ConfigModel):
    """Check one input against a pandera schema and decide what happens to failing rows."""

    input: str = Field(description="Id of the task whose output is checked.")
    schema_: SchemaSpec = Field(
        alias="schema",
        description="A YAML schema file, 'file.py:Model' / 'module:Model' naming a pandera "
        "DataFrameModel or DataFrameSchema, or an inline schema.",
        json_schema_extra=CODE,
    )
    on_fail: OnFail = Field(
        OnFail.FAIL,
        description="fail: the task fails; quarantine: failing rows are set aside with the "
        "column, check and value, the rest go on; warn: all rows go on, failures are logged.",
    )
    max_rejected_fraction: float = Field(
        0.05,
        ge=0,
        le=1,
        description="With quarantine, fail the task when more than this share of rows fails.",
    )
    batch_rows: int | None = Field(
        None,
        ge=1,
        description="Rows validated at a time (default: 131,072 for an inline or YAML schema, "
        "whose rules run in one Polars pass; 1,000,000 for a Python one, which pandera runs "
        "check by check). Uniqueness rules are decided first over their key columns alone "
        "(the whole input at once only when values are coerced).",
    )


# ---------------------------------------------------------------------------------------------
# tests of a model's output (dbt's generic tests)

_THRESHOLD = r"^\s*(==|!=|>=|<=|>|<)\s*\d+\s*$"


class AcceptedValues(ConfigModel):
    column: str = Field(description="The column whose values are checked.")
    values: tuple[Any, ...] = Field(min_length=1, description="The values it may hold.")


class Relationship(ConfigModel):
    column: str = Field(description="The column that refers to another task's rows.")
    to: str = Field(description="The task whose output holds the rows referred to.")
    field: str = Field(description="The column of `to` that the values must be found in.")


class ModelTest(ConfigModel):
    """One check of a task's output, run once the output is written and before anything reads
    it: a failure of severity `error` fails the task (nothing is published, nothing below it
    runs), one of severity `warn` is said. Exactly one of the test keys."""

    unique: str | None = Field(None, description="A column with no value twice (NULLs aside).")
    not_null: str | None = Field(None, description="A column with no NULL.")
    accepted_values: AcceptedValues | None = Field(
        None, description="A column holding only these values (NULLs aside)."
    )
    relationships: Relationship | None = Field(
        None,
        description="Every value of a column found in a column of another task's output "
        "(NULLs aside); the rows that are not, reported.",
    )
    sql: str | None = Field(
        None,
        description="A query whose rows are the failures (dbt's singular and custom generic "
        "tests): a template as the task's statement is, reading the task's own output by its "
        "id and any other task's (which then runs first).",
        json_schema_extra=SQL,
    )
    label: str | None = Field(
        None,
        description="How messages name a `sql` test (a singular test's file, a custom "
        "test's name and column).",
    )
    column: str | None = Field(
        None, description="The column a `sql` test judges, if one (a custom generic test's)."
    )
    store_failures: bool = Field(
        False,
        description="Keep the output's rows that fail a unique, not_null, accepted_values or "
        "relationships test in the task's quarantine (with the column, the test and the "
        "value), where `arrowline quarantine` and the monitor show them, when the output is "
        "published (severity warn, or failures within error_if); a failure that fails the "
        "task is said with examples. Not for a `sql` test, whose rows need not be the "
        "output's.",
    )
    severity: Literal["error", "warn"] = Field(
        "error", description="What a failure does: fail the task, or be said."
    )
    error_if: str = Field(
        "!= 0",
        pattern=_THRESHOLD,
        description="When the failures count as an error, e.g. '> 10' (with severity error).",
    )
    warn_if: str = Field(
        "!= 0", pattern=_THRESHOLD, description="When the failures are said, e.g. '> 0'."
    )

    @model_validator(mode="after")
    def _one_test(self) -> ModelTest:
        given = [name for name in _TESTS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of {', '.join(_TESTS)}" + (f" (got {given})" if given else "")
            )
        if self.store_failures and self.sql is not None:
            raise ValueError("store_failures keeps rows of the output: not for a sql test")
        return self

    @property
    def tested_column(self) -> str | None:
        """The column a generic test judges; None for a `sql` test."""
        if self.unique is not None:
            return self.unique
        if self.not_null is not None:
            return self.not_null
        if self.accepted_values is not None:
            return self.accepted_values.column
        if self.relationships is not None:
            return self.relationships.column
        return self.column

    @property
    def name(self) -> str:
        """`unique(order_id)`, `relationships(customer_id -> customers.id)`: for messages."""
        if self.unique is not None:
            return f"unique({self.unique})"
        if self.not_null is not None:
            return f"not_null({self.not_null})"
        if self.accepted_values is not None:
            return f"accepted_values({self.accepted_values.column})"
        if self.sql is not None:
            return self.label or "sql"
        assert self.relationships is not None
        found = self.relationships
        return f"relationships({found.column} -> {found.to}.{found.field})"


_TESTS = ("unique", "not_null", "accepted_values", "relationships", "sql")

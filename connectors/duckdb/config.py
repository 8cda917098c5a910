"""Configuration of DuckDB sources (`extract: {from: duckdb}`) and sinks (`load: {to: duckdb}`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from connectors.keys import check_load_keys
from engine.core.config import PATH, ConfigModel

__all__ = ["DuckDBSink", "DuckDBSource"]


class DuckDBSource(ConfigModel):
    """Stream a table or query result out of a DuckDB database file (opened read-only)."""

    from_: Literal["duckdb"] = Field(alias="from", description="Selects this source.")
    path: str = Field(
        description="DuckDB database file, relative to the pipeline file.", json_schema_extra=PATH
    )
    table: str | None = Field(None, description="Table name, optionally schema-qualified.")
    query: str | None = Field(None, description="A SELECT run inside that database.")
    batch_size: int = Field(65_536, ge=1, description="Rows per record batch.")

    @model_validator(mode="after")
    def _table_or_query(self) -> DuckDBSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("set exactly one of 'table' or 'query'")
        return self


class DuckDBSink(ConfigModel):
    """Load into a table of a DuckDB database file, in one transaction."""

    input: str = Field(description="Id of the task whose output is loaded.")
    to: Literal["duckdb"] = Field(description="Selects this sink.")
    path: str = Field(
        description="DuckDB database file; created when missing.", json_schema_extra=PATH
    )
    table: str = Field(description="Target table, optionally schema-qualified (main.orders).")
    mode: Literal["append", "replace", "merge", "apply"] = Field(
        "append",
        description="append: insert the rows; replace: the table becomes exactly the input; "
        "merge: update rows whose keys match, insert the others; apply: apply a change "
        "stream (a `cdc` extract's output) in order: inserts, updates (an unchanged TOASTed "
        "value keeps the table's), deletes and truncates.",
    )
    keys: tuple[str, ...] = Field((), description="Merge keys; required for mode: merge and apply.")
    schema_change: Literal["evolve", "fail_on_breaking", "fail", "freeze"] = Field(
        "fail_on_breaking",
        description="When the input differs from an existing table. evolve: add new columns, "
        "widen types, fill missing nullable columns with NULL; fail_on_breaking (or fail): add "
        "new columns and widen types, refuse missing columns and incompatible types; freeze: "
        "refuse any difference. With mode: replace or materialize: view the target "
        "becomes the input whatever its shape, unless the task sets schema_change: then "
        "what it refuses fails the load.",
    )

    @model_validator(mode="after")
    def _keys_fit_the_mode(self) -> DuckDBSink:
        check_load_keys(self.mode, self.keys)
        return self

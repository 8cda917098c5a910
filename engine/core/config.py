"""The base of every configuration model in a pipeline file: frozen, unknown keys rejected.

Pipeline, task, connector and transform configs all derive from it, so a misspelt key is an
error with its file and line wherever it is written.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["CODE", "PATH", "SQL", "ConfigModel", "field_roles", "sql_fields"]

PATH: dict[str, Any] = {"x-arrowline": "path"}
"""`Field(json_schema_extra=PATH)`: the value is a file or folder. A parameter rendered into it
may name something inside the folder the template points into, never climb out of it."""
CODE: dict[str, Any] = {"x-arrowline": "code"}
"""`Field(json_schema_extra=CODE)`: the value names code to import and run (a UDF, a schema
class). No template may choose it: that would let a run's parameters pick the code it runs."""


SQL: dict[str, Any] = {"x-arrowline": "sql"}
"""`Field(json_schema_extra=SQL)`: the value is SQL (a query, a condition). It renders as a sql
task's statement does, and a parameter printed into it without `sql_literal` or
`sql_identifier` must be a number or a boolean, as there."""


class ConfigModel(BaseModel):
    """Base of every configuration model: frozen, unknown keys rejected."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        arbitrary_types_allowed=True,
    )


Role = Literal["path", "code", "sql"]


def field_roles(model: type[BaseModel]) -> dict[str, Role]:
    """Keys (as written in a pipeline file) of a config model that are paths, code or SQL."""
    roles: dict[str, Role] = {}
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra
        role = extra.get("x-arrowline") if isinstance(extra, dict) else None
        if role in ("path", "code", "sql"):
            roles[field.alias or name] = role  # type: ignore[assignment]
    return roles


def sql_fields(config: BaseModel) -> list[tuple[str, str]]:
    """(key, text) of a config's SQL fields that are set."""
    roles = field_roles(type(config))
    found = []
    for key, value in config.model_dump(by_alias=True).items():
        if roles.get(key) == "sql" and isinstance(value, str):
            found.append((key, value))
    return found

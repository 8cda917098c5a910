"""The base of every configuration model in a pipeline file: frozen, unknown keys rejected.

Pipeline, task, connector and transform configs all derive from it, so a misspelt key is an
error with its file and line wherever it is written.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["CODE", "PATH", "ConfigModel", "field_roles"]

PATH: dict[str, Any] = {"x-arrowline": "path"}
"""`Field(json_schema_extra=PATH)`: the value is a file or folder. A parameter rendered into it
may name something inside the folder the template points into, never climb out of it."""
CODE: dict[str, Any] = {"x-arrowline": "code"}
"""`Field(json_schema_extra=CODE)`: the value names code to import and run (a UDF, a schema
class). No template may choose it: that would let a run's parameters pick the code it runs."""


class ConfigModel(BaseModel):
    """Base of every configuration model: frozen, unknown keys rejected."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        arbitrary_types_allowed=True,
    )


def field_roles(model: type[BaseModel]) -> dict[str, Literal["path", "code"]]:
    """Keys (as written in a pipeline file) of a config model that are paths or code."""
    roles: dict[str, Literal["path", "code"]] = {}
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra
        role = extra.get("x-arrowline") if isinstance(extra, dict) else None
        if role in ("path", "code"):
            roles[field.alias or name] = role  # type: ignore[assignment]
    return roles

"""The base of every configuration model in a pipeline file: frozen, unknown keys rejected.

Pipeline, task, connector and transform configs all derive from it, so a misspelt key is an
error with its file and line wherever it is written.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["ConfigModel"]


class ConfigModel(BaseModel):
    """Base of every configuration model: frozen, unknown keys rejected."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        arbitrary_types_allowed=True,
    )

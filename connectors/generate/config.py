"""Configuration of the generate source (`extract: {from: generate}`)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from engine.core.config import ConfigModel
from engine.core.types import parse_type

__all__ = ["GenerateSource", "GeneratedColumn"]

Bound = int | float | Decimal | date | datetime | str


class GeneratedColumn(ConfigModel):
    """How one generated column's values are drawn."""

    type: str = Field(
        description="Arrow type as written elsewhere in a pipeline: int64, float64, "
        "decimal(12,2), bool, string, date, timestamp[us, UTC], ..."
    )
    nulls: float = Field(0.0, ge=0, le=1, description="Share of rows that are NULL.")
    min: Bound | None = Field(
        None, description="Smallest value (numbers, dates, timestamps); type-dependent default."
    )
    max: Bound | None = Field(
        None, description="Largest value (numbers, dates, timestamps); type-dependent default."
    )
    sequence: bool = Field(
        False,
        description="Integers only: row i gets `min + i` (default min 1), so the column is a "
        "unique key.",
    )
    values: tuple[Any, ...] | None = Field(
        None, min_length=1, description="Draw from these values instead of a range."
    )
    weights: tuple[float, ...] | None = Field(
        None, description="With `values`: relative weight of each value (uniform if omitted)."
    )
    cardinality: int | None = Field(
        None,
        ge=1,
        description="Strings without `values`: how many distinct values ('<column>_<n>'); "
        "default one per row.",
    )
    true_share: float = Field(0.5, ge=0, le=1, description="Booleans: share of true values.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        parse_type(value)  # raises ValueError naming the valid types
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GeneratedColumn:
        if self.weights is not None:
            if self.values is None:
                raise ValueError("'weights' needs 'values'")
            if len(self.weights) != len(self.values):
                raise ValueError(
                    f"'weights' has {len(self.weights)} entries for {len(self.values)} values"
                )
            if any(w < 0 for w in self.weights) or not sum(self.weights) > 0:
                raise ValueError("'weights' must be non-negative with a positive sum")
        if self.sequence and self.values is not None:
            raise ValueError("'sequence' and 'values' exclude each other")
        return self


class GenerateSource(ConfigModel):
    """Deterministic synthetic rows: typed columns, NULLs and value ranges, for demos, tests
    and benchmarks. The same seed and columns give the same rows, whatever the batch size."""

    from_: Literal["generate"] = Field(alias="from", description="Selects this source.")
    rows: int = Field(ge=0, le=10**12, description="How many rows to generate.")
    columns: dict[str, GeneratedColumn] = Field(
        min_length=1,
        description="Column name -> a type name (`id: int64`) or a column spec.",
    )
    seed: int = Field(0, ge=0, le=2**62, description="Seed of every random draw.")
    batch_size: int = Field(
        65_536, ge=1, le=16_777_216, description="Rows per record batch; bounds memory."
    )

"""One vocabulary for how a schema changed, whoever compares: a task's output against its last
run's (`lineage.drift`), or a load's input against its target table (`connectors.evolution`).

    added        a column that was not there
    dropped      a column that is gone (from a load: a table column the input does not have)
    renamed      a column dropped and one added that lineage shows computed from the same
                 sources (schemas alone cannot prove a rename)
    widened      the type can hold every old value (int32 -> int64, numeric(10,2) -> (12,2))
    narrowed     the reverse of a widening: old values may not fit
    changed      any other type change (from a load: a type the table's column cannot take)
    nullability  a column became nullable, or stopped being nullable

`breaking` is true for dropped, renamed, narrowed and changed: the changes a downstream reader
or an existing table can trip over. A `schema_change` policy refuses: `freeze` every change,
`fail_on_breaking` (or `fail`) the breaking ones, `evolve` none (a sink may still refuse what it
cannot do, such as filling a NOT NULL column).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = ["BREAKING", "ChangeKind", "SchemaChange", "refused"]

ChangeKind = Literal["added", "dropped", "renamed", "widened", "narrowed", "changed", "nullability"]
BREAKING: frozenset[str] = frozenset({"dropped", "renamed", "narrowed", "changed"})


@dataclass(frozen=True)
class SchemaChange:
    change: ChangeKind
    column: str
    before: str | None = None
    after: str | None = None

    @property
    def breaking(self) -> bool:
        return self.change in BREAKING

    def to_dict(self) -> dict[str, object]:
        """As it is kept with a task run and shown by `arrowline runs RUN_ID`."""
        return {
            "change": self.change,
            "column": self.column,
            "before": self.before,
            "after": self.after,
            "breaking": self.breaking,
        }

    def describe(self) -> str:
        return f"{self.column} {self.change} ({self.before} -> {self.after})"


def refused(changes: Iterable[SchemaChange], policy: str) -> list[SchemaChange]:
    """The changes a `schema_change` policy refuses (`fail` is `fail_on_breaking`)."""
    if policy == "freeze":
        return list(changes)
    if policy in ("fail_on_breaking", "fail"):
        return [change for change in changes if change.breaking]
    return []

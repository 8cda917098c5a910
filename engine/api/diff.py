"""What changed in a task's output between two runs: rows added, removed and changed.

    change = project.diff("orders_enriched", "20241101T0300", "last", keys=["order_id"])
    change.added      # rows of run b whose key run a has not
    change.removed    # rows of run a whose key run b has not
    change.changed    # keys in both with another value somewhere: the key, `_changed` (which
                      # columns), and `COLUMN_a`, `COLUMN_b` for each column that changed
    change            # in a notebook: the counts and the first rows of each

Without keys, rows are compared whole, as sets: a row is added when run a has no row equal to
it, removed when run b has none; nothing is "changed". Columns only one run has are named
(`columns_added`, `columns_removed`) and left out of the comparison; a column whose type
changed is compared as text.

Both outputs are read lazily and the three answers collected together: what is held in memory
is the answers, not the two tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.core.errors import SelectionError, StateError
from engine.core.html import block, heading, number, table
from engine.core.problems import did_you_mean

if TYPE_CHECKING:
    import polars as pl

    from engine.api.reader import ProjectReader

__all__ = ["CHANGED", "TableDiff", "compare", "diff_outputs"]

CHANGED = "_changed"
"""The column of `changed` that names, for each row, the columns whose value changed."""
_SHOWN = 5


@dataclass(frozen=True, eq=False)
class TableDiff:
    """Rows added, removed and changed between a task's outputs in two runs."""

    task: str
    run_a: str
    run_b: str
    keys: tuple[str, ...]
    added: pl.DataFrame
    removed: pl.DataFrame
    changed: pl.DataFrame
    columns_added: tuple[str, ...] = ()
    columns_removed: tuple[str, ...] = ()

    @property
    def same(self) -> bool:
        """Nothing added, removed or changed, and the same columns."""
        return not (
            self.added.height
            or self.removed.height
            or self.changed.height
            or self.columns_added
            or self.columns_removed
        )

    def __repr__(self) -> str:
        by = f"by {', '.join(self.keys)}" if self.keys else "whole rows"
        return (
            f"<TableDiff {self.task} {self.run_a} → {self.run_b} ({by}): "
            f"{self.added.height} added, {self.removed.height} removed, "
            f"{self.changed.height} changed>"
        )

    def _repr_html_(self) -> str:
        counts: list[tuple[str, object, str]] = [
            ("added", number(self.added.height), f"rows of {self.run_b} only"),
            ("removed", number(self.removed.height), f"rows of {self.run_a} only"),
        ]
        if self.keys:
            counts.append(("changed", number(self.changed.height), "same key, another value"))
        if self.columns_added:
            counts.append(("columns added", len(self.columns_added), ", ".join(self.columns_added)))
        if self.columns_removed:
            removed = ", ".join(self.columns_removed)
            counts.append(("columns removed", len(self.columns_removed), removed))
        parts: list[str] = [
            heading(
                f"task {self.task}",
                f"run {self.run_a} → run {self.run_b}",
                f"by {', '.join(self.keys)}" if self.keys else "whole rows compared",
            ),
            table(("", "rows", "which"), counts, right={"rows"}),
        ]
        for name, frame in (
            ("added", self.added),
            ("removed", self.removed),
            ("changed", self.changed),
        ):
            if frame.height:
                shown = f"first {_SHOWN}" if frame.height > _SHOWN else "all"
                parts.append(heading(name, f"{shown} of {frame.height:,}"))
                parts.append(frame.head(_SHOWN)._repr_html_())  # polars escapes its cells
        return block(*parts)


def diff_outputs(
    reader: ProjectReader,
    task: str,
    run_a: str,
    run_b: str,
    *,
    keys: Sequence[str] | None = None,
    pipeline: str | None = None,
) -> TableDiff:
    """`task`'s output in `run_b` against its output in `run_a` (ids, prefixes or 'last')."""
    import polars as pl

    def run_id(run: str) -> str:
        catalog = reader.catalog
        return (catalog.run_of(pipeline, run) if pipeline else catalog.run(run)).run_id

    first, second = run_id(run_a), run_id(run_b)
    a = reader.table(task, run=first, pipeline=pipeline)
    b = reader.table(task, run=second, pipeline=pipeline)
    added, removed, changed, more, fewer = compare(a, b, keys or (), names=(first, second))
    found = pl.collect_all([added, removed, changed])
    changed_frame = _changed_columns(found[2], tuple(keys or ()))
    return TableDiff(
        task, first, second, tuple(keys or ()), found[0], found[1], changed_frame, more, fewer
    )


def compare(
    a: pl.LazyFrame,
    b: pl.LazyFrame,
    keys: Sequence[str],
    *,
    names: tuple[str, str] = ("a", "b"),
) -> tuple[pl.LazyFrame, pl.LazyFrame, pl.LazyFrame, tuple[str, ...], tuple[str, ...]]:
    """The added, removed and changed rows of `b` against `a` (lazily), and the columns `b`
    has that `a` has not and the reverse; `names` name the two in messages."""
    import polars as pl

    schema_a, schema_b = a.collect_schema(), b.collect_schema()
    more = tuple(c for c in schema_b.names() if c not in schema_a)
    fewer = tuple(c for c in schema_a.names() if c not in schema_b)
    for key in keys:
        for schema, name in ((schema_a, names[0]), (schema_b, names[1])):
            if key not in schema:
                raise SelectionError(
                    f"key column {key!r} is not in the output of run {name}."
                    + did_you_mean(key, schema.names()),
                    hint=f"its columns: {', '.join(schema.names())}",
                )
    common = [c for c in schema_a.names() if c in schema_b and c not in keys]
    retyped = sorted(c for c in [*keys, *common] if schema_a[c] != schema_b[c])
    text_a = a.with_columns(pl.col(c).cast(pl.String) for c in retyped)
    text_b = b.with_columns(pl.col(c).cast(pl.String) for c in retyped)
    nothing = pl.LazyFrame()
    on = list(keys) or common
    if not on:  # no column in common: every row of each is its own
        return b, a, nothing, more, fewer
    for frame, name in ((a, names[0]), (b, names[1])) if keys else ():
        _unique(frame, on, name)
    added = text_b.join(text_a.select(on), on=on, how="anti", nulls_equal=True)
    removed = text_a.join(text_b.select(on), on=on, how="anti", nulls_equal=True)
    added, removed = _typed(added, schema_b, retyped), _typed(removed, schema_a, retyped)
    if not keys:
        return added, removed, nothing, more, fewer
    left = text_a.select(*on, *(pl.col(c).alias(f"{c}_a") for c in common))
    right = text_b.select(*on, *(pl.col(c).alias(f"{c}_b") for c in common))
    joined = left.join(right, on=on, how="inner", nulls_equal=True)
    differs = {c: pl.col(f"{c}_a").ne_missing(pl.col(f"{c}_b")) for c in common}
    which = pl.concat_list(
        [pl.when(d).then(pl.lit(c)).otherwise(pl.lit(None, pl.String)) for c, d in differs.items()]
        or [pl.lit(None, pl.String)]
    ).list.drop_nulls()
    changed = (
        joined.filter(pl.any_horizontal(*differs.values()) if differs else pl.lit(False))
        .with_columns(which.alias(CHANGED))
        .select(*on, CHANGED, *(f"{c}_{side}" for c in common for side in "ab"))
    )
    return added, removed, changed, more, fewer


def _typed(frame: pl.LazyFrame, schema: pl.Schema, retyped: list[str]) -> pl.LazyFrame:
    """Rows compared as text in the columns whose type changed, with their own types back."""
    import polars as pl

    return frame.with_columns(pl.col(c).cast(schema[c]) for c in retyped)


def _unique(frame: pl.LazyFrame, keys: list[str], run: str) -> None:
    """Keys that identify one row each, or a StateError saying how many do not."""
    import polars as pl

    repeated = frame.group_by(keys).len().filter(pl.col("len") > 1).collect()
    if repeated.height:
        example = ", ".join(f"{k}={repeated[k][0]!r}" for k in keys)
        raise StateError(
            f"key ({', '.join(keys)}) is not unique in the output of run {run}: "
            f"{repeated.height:,} keys repeat (as {example}, {repeated['len'][0]} times)",
            hint="give keys that name one row each, or none to compare whole rows",
        )


def _changed_columns(changed: pl.DataFrame, keys: tuple[str, ...]) -> pl.DataFrame:
    """The changed rows with only the columns that changed somewhere (both values of each)."""
    if not keys or CHANGED not in changed.columns:
        return changed
    seen = set(changed[CHANGED].explode().drop_nulls().to_list())
    kept = [c for c in changed.columns[len(keys) + 1 :] if c[:-2] in seen]
    return changed.select(*keys, CHANGED, *kept)

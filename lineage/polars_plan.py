"""Column lineage of a frame UDF read from its Polars query plan.

A frame UDF (LazyFrame -> LazyFrame) is opaque Python, but the LazyFrame it returns is a plan.
Serialised, the plan is a tree of nodes over the input's scan; this module walks the nodes it
understands and maps every output column to the input columns it comes from:

    DataFrameScan / Scan   the input: each column is itself
    Filter                 the predicate's columns decide which rows appear (filter)
    HStack (with_columns)  each expression's output from the columns at its leaves
    Select                 the same, keeping only those outputs
    Rename                 a column's sources follow it to its new name
    Sort, Slice            rows reordered or cut by position: nothing new
    Distinct               the subset's columns decide which rows stay (filter)

Inside an expression, columns under a window's `partition_by` / `order_by` and an expression's
`filter` / `sort_by` keys are filters; every other leaf is a value. Any node or expression it
does not know (a join with another frame, a `map_batches`, a pivot...) makes the whole walk give
up, and the caller falls back to comparing schemas, whose edges are flagged `inferred`. Polars
marks the JSON form of a plan as unstable, so the walk also gives up on a shape it does not
recognise rather than guessing.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import Any

import polars as pl

from lineage.columns import ColumnEdge, ColumnLineage, Kind

__all__ = ["plan_lineage"]

_Deps = dict[str, set[Kind]]
"""input column -> kinds"""


_OPAQUE = {
    # column sets picked by pattern or position, Python functions, renames by function
    *("Wildcard", "Nth", "Columns", "DtypeColumn", "IndexColumn", "Selector"),
    *("AnonymousFunction", "RenameAlias", "Field", "KeepName"),
}


class _Unsupported(Exception):
    pass


def plan_lineage(
    frame: pl.LazyFrame,
    input_task: str,
    input_columns: list[str],
    input_paths: list[str] | None = None,
) -> ColumnLineage | None:
    """Edges from the plan of `frame`, or None when the plan cannot be read exactly. The input
    is an in-memory frame of `input_columns`, or a scan of exactly `input_paths`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plan = json.loads(frame.serialize(format="json"))
        columns, rows = _node(plan, _Input(input_columns, input_paths))
        names = frame.collect_schema().names()
    except (_Unsupported, ValueError, TypeError, KeyError, pl.exceptions.PolarsError):
        return None
    if list(columns) != names:
        return None
    lineage = ColumnLineage(names)
    for name, deps in columns.items():
        merged = {source: set(kinds) for source, kinds in deps.items()}
        for source in rows:
            merged.setdefault(source, set()).add("filter")
        for source, kinds in sorted(merged.items()):
            lineage.edges.extend(ColumnEdge(name, input_task, source, k) for k in sorted(kinds))
    return lineage


def _one(node: dict[str, Any]) -> tuple[str, Any]:
    if not isinstance(node, dict) or len(node) != 1:
        raise _Unsupported(str(node)[:80])
    ((kind, body),) = node.items()
    return kind, body


@dataclass(frozen=True)
class _Input:
    columns: list[str]
    paths: list[str] | None


def _node(node: dict[str, Any], source: _Input) -> tuple[dict[str, _Deps], set[str]]:
    """(output column -> input deps, input columns deciding which rows appear)."""
    kind, body = _one(node)
    if kind in ("DataFrameScan", "Scan"):
        fields = list((body.get("schema") or {}).get("fields") or {})
        paths = [
            path.get("inner") if isinstance(path, dict) else path
            for path in (body.get("sources") or {}).get("Paths") or []
        ]
        ours = fields == source.columns or (bool(paths) and paths == source.paths)
        if not ours:
            raise _Unsupported("a scan of something other than the UDF's input")
        return {name: {name: {"value"}} for name in source.columns}, set()
    columns, rows = _node(body["input"], source)
    if kind == "Filter":
        rows |= _leaves_deps(body["predicate"], columns)
        return columns, rows
    if kind in ("HStack", "Select"):
        exprs = body["exprs" if kind == "HStack" else "expr"]
        produced = {_output_name(e): _expr_deps(e, columns) for e in exprs}
        return (produced if kind == "Select" else _restack(columns, produced)), rows
    if kind == "MapFunction":
        function_kind, function = _one(body["function"])
        if function_kind != "Rename":
            raise _Unsupported(function_kind)
        mapping = dict(zip(function["existing"], function["new"], strict=True))
        return {mapping.get(name, name): deps for name, deps in columns.items()}, rows
    if kind in ("Sort", "Slice"):
        sort = body if kind == "Sort" and body.get("slice") else None
        if kind == "Slice" and _one(body["input"])[0] == "Sort":
            sort = _one(body["input"])[1]  # head() after sort(): the order picks the rows
        for expr in (sort or {}).get("by_column", []):
            rows |= set(_expr_deps(expr, columns))
        return columns, rows
    if kind == "Distinct":
        subset = (body.get("options") or {}).get("subset")
        chosen = list(columns) if subset is None else [_output_name(e) for e in subset]
        for name in chosen:
            rows |= set(columns[name])
        return columns, rows
    raise _Unsupported(kind)


def _restack(columns: dict[str, _Deps], produced: dict[str, _Deps]) -> dict[str, _Deps]:
    """with_columns overwriting existing columns keeps their position."""
    result = {name: produced.get(name, deps) for name, deps in columns.items()}
    result.update({name: deps for name, deps in produced.items() if name not in columns})
    return result


def _output_name(expr: Any) -> str:
    kind, body = _one(expr)
    if kind == "Alias":
        return str(body[1])
    if kind == "Column":
        return str(body)
    for leaf, _ in _leaves(expr, "value"):
        return leaf
    raise _Unsupported("an expression without a column or a name")


def _leaves(expr: Any, kind: Kind) -> list[tuple[str, Kind]]:
    found: list[tuple[str, Kind]] = []
    if isinstance(expr, dict):
        for key, value in expr.items():
            if key == "Column" and isinstance(value, str):
                found.append((value, kind))
            elif key in _OPAQUE:
                raise _Unsupported(key)
            elif key in ("partition_by", "order_by", "by"):
                found += _leaves(value, "filter")
            else:
                found += _leaves(value, kind)
    elif isinstance(expr, list):
        for value in expr:
            found += _leaves(value, kind)
    return found


def _expr_deps(expr: Any, columns: dict[str, _Deps]) -> _Deps:
    deps: _Deps = {}
    for name, kind in _leaves(expr, "value"):
        if name not in columns:
            raise _Unsupported(f"column {name} is not in the frame")
        for source, kinds in columns[name].items():
            for known in kinds:
                deps.setdefault(source, set()).add(
                    "filter" if "filter" in (known, kind) else "value"
                )
    return deps


def _leaves_deps(expr: Any, columns: dict[str, _Deps]) -> set[str]:
    return set(_expr_deps(expr, columns))

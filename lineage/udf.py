"""Column lineage of a UDF task.

Expression UDFs are read from their Polars expression trees: each expression's output name
(`meta.output_name`) depends on the columns at its leaves (`meta.root_names`), as `value` edges;
with `output: with_columns` every input column the UDF does not overwrite passes through
unchanged. Frame UDFs (LazyFrame -> LazyFrame) are opaque Python, but the frame they return is a
plan: `lineage.polars_plan` reads it where it can. Where it cannot (or the function is not called
again, for an output a run already wrote), the output schema is compared with the input's: an
output column that keeps an input column's name and type is taken to pass through, an edge
flagged `inferred`; any other output column is reported unresolved rather than guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl

from lineage.columns import ColumnEdge, ColumnLineage, Unresolved
from transforms.config import UdfSpec
from transforms.udf import udf_expressions, udf_mode

__all__ = ["udf_lineage"]


def udf_lineage(
    function: Callable[..., Any],
    spec: UdfSpec,
    input_task: str,
    input_schema: pl.Schema,
    output_schema: pl.Schema | None = None,
) -> ColumnLineage:
    """`output_schema`: the task's output schema when known (a run wrote it, or `plan` computed
    it); a frame UDF is then compared with it instead of being called again."""
    if udf_mode(function, spec) == "frame":
        return _frame_lineage(function, spec, input_task, input_schema, output_schema)
    expressions = udf_expressions(function(**spec.args), function)
    produced: dict[str, list[str]] = {}
    for expression in expressions:
        produced[expression.meta.output_name()] = expression.meta.root_names()
    outputs: list[str] = []
    edges: list[ColumnEdge] = []
    if spec.output == "with_columns":
        for name in input_schema.names():
            outputs.append(name)
            if name not in produced:
                edges.append(ColumnEdge(name, input_task, name, "value"))
    for name, roots in produced.items():
        if name not in outputs:
            outputs.append(name)
        edges.extend(ColumnEdge(name, input_task, root, "value") for root in dict.fromkeys(roots))
    return ColumnLineage(outputs, edges)


def _frame_lineage(
    function: Callable[..., Any],
    spec: UdfSpec,
    input_task: str,
    input_schema: pl.Schema,
    schema: pl.Schema | None,
) -> ColumnLineage:
    if schema is None:
        result = function(pl.LazyFrame(schema=input_schema), **spec.args)
        if isinstance(result, pl.DataFrame):
            result = result.lazy()
        from lineage.polars_plan import plan_lineage

        exact = plan_lineage(result, input_task, list(input_schema.names()))
        if exact is not None:
            return exact
        schema = result.collect_schema()
    lineage = ColumnLineage(list(schema.names()))
    for name, dtype in schema.items():
        if input_schema.get(name) == dtype:
            lineage.edges.append(ColumnEdge(name, input_task, name, "value", inferred=True))
        else:
            lineage.unresolved.append(
                Unresolved(name, "a frame UDF's new or changed column cannot be traced")
            )
    return lineage

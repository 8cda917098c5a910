"""udf: a Python function of Polars expressions (or LazyFrame -> LazyFrame) over one input,
streamed through Polars' engine from the input's files to the output's."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pyarrow as pa

from connectors.base import Unknown
from engine.core.errors import ArrowlineError, UserCodeError, disk_full
from engine.core.problems import Finding
from engine.core.tables import OUTPUT_FILE
from engine.core.types import empty_table
from engine.spec.model import TaskKind, TaskSpec
from engine.tasks.base import (
    CheckContext,
    Inputs,
    RenderedTask,
    SchemaContext,
    TaskContext,
    TaskOutcome,
    dry_run,
)
from lineage.graph import LineageGraph, add_edges, add_unresolved

__all__ = ["KIND", "Udf"]


class Udf:
    kind = TaskKind.UDF
    produces_table = True
    reads_sql_tables = False
    inlines = False
    offers_stream = False

    def takes_stream(self, task: TaskSpec) -> bool:
        return False

    def inputs(self, task: TaskSpec) -> Inputs:
        assert task.udf is not None
        return Inputs((task.udf.input,))

    def check(self, task: TaskSpec, ctx: CheckContext) -> Iterable[Finding]:
        from transforms.udf import load_udf

        assert task.udf is not None
        try:
            load_udf(task.udf, ctx.definition.base_dir)
        except ArrowlineError as exc:
            return [Finding("udf-import", exc.message, ("udf", "function"), hint=exc.hint)]
        return []

    def references(self, task: TaskSpec, base_dir: Path) -> str | None:
        """The UDF's code, when the task names it by reference (a function object given in
        Python is described with the task itself)."""
        from transforms.identity import describe_object
        from transforms.user_code import load_object

        assert task.udf is not None
        function = task.udf.function
        return (
            describe_object(load_object(function, base_dir)) if isinstance(function, str) else None
        )

    def sql_template(self, task: TaskSpec, ctx: CheckContext) -> tuple[str, tuple[str, ...]] | None:
        return None

    def schema(self, task: RenderedTask, ctx: SchemaContext) -> pa.Schema | Unknown | None:
        return dry_run(self, task, ctx)

    def run(self, context: TaskContext) -> TaskOutcome:
        import polars as pl
        import pyarrow.parquet as pq

        from transforms.udf import apply_udf, load_udf, udf_mode

        config = context.task.spec.udf
        assert config is not None
        source = context.input()
        function = load_udf(config, context.base_dir)
        frame = apply_udf(source.lazy(), function, config)
        output = context.staging / OUTPUT_FILE
        try:
            # Polars' streaming engine reads, computes and writes in parallel, bounded memory.
            frame.sink_parquet(output, compression="snappy")
        except pl.exceptions.PolarsError as exc:
            full = disk_full(exc, output)  # the disk under the output, not the UDF, failed
            if full is not None:
                raise full from None
            name = getattr(function, "__qualname__", str(config.function))
            message = str(exc).strip().splitlines()[0]
            raise UserCodeError(
                f"UDF {name} failed on the data: {type(exc).__name__}: {message}"
            ) from None
        rows = pq.ParquetFile(output).metadata.num_rows
        context.progress(rows)
        lineage = None
        if udf_mode(function, config) == "frame":
            from lineage.polars_plan import plan_lineage

            paths = [str(path) for path in source.files]
            lineage = plan_lineage(frame, context.task.inputs[0], source.schema.names, paths)
        return TaskOutcome(rows_in=source.num_rows, rows_out=rows, lineage=lineage)

    def lineage(
        self,
        task: RenderedTask,
        schemas: Mapping[str, pa.Schema],
        base_dir: Path,
        *,
        call_udfs: bool,
    ) -> LineageGraph:
        """Expression trees; a frame UDF by calling it on an empty frame, or (`call_udfs`
        false: a run's record, the function may have side effects) by comparing schemas."""
        import polars as pl

        from lineage.udf import udf_lineage
        from transforms.udf import load_udf

        config = task.spec.udf
        assert config is not None
        (source,) = task.inputs
        frame = pl.from_arrow(empty_table(schemas[source]))
        output = pl.from_arrow(empty_table(schemas[task.id]))
        assert isinstance(frame, pl.DataFrame)
        assert isinstance(output, pl.DataFrame)
        function = load_udf(config, base_dir)
        known = None if call_udfs else output.schema
        result = udf_lineage(function, config, source, frame.schema, known)
        graph = LineageGraph()
        add_edges(graph, task.id, result.edges)
        add_unresolved(graph, task.id, result.unresolved)
        return graph

    def describe_output(self, task: TaskSpec) -> str:
        return "workspace"


KIND = Udf()

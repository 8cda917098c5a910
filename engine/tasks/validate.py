"""validate: check one input against a pandera schema; failing rows are quarantined with the
column, check and value, the rest go on (or the task fails, or only warns)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from connectors.base import Unknown
from engine.core.errors import ArrowlineError
from engine.core.parquet import ParquetBatchWriter, write_parts
from engine.core.problems import Finding
from engine.core.tables import OUTPUT_FILE, QUARANTINE_DIR, part_file
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
from lineage.graph import LineageEdge, LineageGraph, sql_columns

__all__ = ["KIND", "Validate"]


class Validate:
    kind = TaskKind.VALIDATE
    produces_table = True
    reads_sql_tables = False
    inlines = False
    offers_stream = False

    def takes_stream(self, task: TaskSpec) -> bool:
        return False

    def inputs(self, task: TaskSpec) -> Inputs:
        assert task.validate_ is not None
        return Inputs((task.validate_.input,))

    def check(self, task: TaskSpec, ctx: CheckContext) -> Iterable[Finding]:
        from transforms.validate import check_schema

        assert task.validate_ is not None
        try:
            check_schema(task.validate_.schema_, ctx.definition.base_dir)
        except ArrowlineError as exc:
            return [Finding("schema", exc.message, ("validate", "schema"), hint=exc.hint)]
        return []

    def references(self, task: TaskSpec, base_dir: Path) -> str | None:
        """The schema's file contents, or the code of the class it names."""
        from transforms.identity import describe_object, file_digest
        from transforms.user_code import load_object
        from transforms.validate import schema_file

        assert task.validate_ is not None
        schema = task.validate_.schema_
        path = schema_file(schema, base_dir)
        if path is not None:
            return file_digest(path)
        if not isinstance(schema, str):
            return None
        return describe_object(load_object(schema, base_dir))

    def sql_template(self, task: TaskSpec, ctx: CheckContext) -> tuple[str, tuple[str, ...]] | None:
        return None

    def schema(self, task: RenderedTask, ctx: SchemaContext) -> pa.Schema | Unknown | None:
        return dry_run(self, task, ctx)

    def run(self, context: TaskContext) -> TaskOutcome:
        import polars as pl
        from loguru import logger

        from transforms.validate import (
            ValidationOutcome,
            batch_rows,
            duplicate_cases,
            load_rules,
            needs_whole_input,
            split_uniqueness,
            validate_frames,
        )

        config = context.task.spec.validate_
        assert config is not None
        source = context.input()
        schema = load_rules(config.schema_, context.base_dir)
        whole = needs_whole_input(schema)
        duplicates = None
        shape = pl.from_arrow(empty_table(source.schema))  # the input's columns as Polars types
        assert isinstance(shape, pl.DataFrame)
        apart = split_uniqueness(schema, shape.schema) if whole else None
        if apart is not None:  # uniqueness over the key columns, the rest batch by batch
            schema, rules = apart
            duplicates = duplicate_cases(source.lazy(), rules)
            whole = False
        if whole:
            frames: Any = iter([pl.read_parquet([str(f) for f in source.files])])
        else:
            frames = (
                pl.from_arrow(batch)
                for batch in source.batches(batch_rows(schema, config.batch_rows))
            )
        outcome = ValidationOutcome()
        good_writer: ParquetBatchWriter | None = None
        wrote = False
        bad_writer: ParquetBatchWriter | None = None
        quarantine = context.staging / QUARANTINE_DIR
        try:
            for good, bad in validate_frames(frames, schema, config, outcome, duplicates):
                context.cancel.raise_if_cancelled()
                if good is not None and good.height and whole:
                    write_parts(good.to_arrow(), context.staging, part_file)  # one frame: spread
                    wrote = True
                elif good is not None and good.height:
                    table = good.to_arrow()
                    if good_writer is None:
                        path = context.staging / OUTPUT_FILE
                        good_writer = ParquetBatchWriter(path, table.schema)
                    good_writer.write(table)
                if bad is not None and bad.height:
                    table = bad.to_arrow()
                    if bad_writer is None:
                        quarantine.mkdir(exist_ok=True)
                        bad_writer = ParquetBatchWriter(quarantine / OUTPUT_FILE, table.schema)
                    bad_writer.write(table)
                context.progress(outcome.rows_passed)
        finally:
            for writer in (good_writer, bad_writer):
                if writer is not None:
                    writer.close()
        if good_writer is None and not wrote:  # no row passed, or none came: keep the schema
            empty = pl.from_arrow(empty_table(source.schema))
            assert isinstance(empty, pl.DataFrame)
            ParquetBatchWriter(context.staging / OUTPUT_FILE, empty.to_arrow().schema).close()
        if outcome.failures_by_check:
            logger.warning(
                "{} of {} rows failed validation (on_fail: {}): {}",
                outcome.rows_failed,
                outcome.rows_in,
                config.on_fail.value,
                outcome.summary(),
            )
        failures = {f"{c}:{k}": n for (c, k), n in outcome.failures_by_check.items()}
        return TaskOutcome(
            rows_in=outcome.rows_in,
            rows_out=outcome.rows_passed,
            rows_rejected=outcome.rows_rejected,
            details={"failures": failures, "examples": outcome.examples},
        )

    def lineage(
        self,
        task: RenderedTask,
        schemas: Mapping[str, pa.Schema],
        base_dir: Path,
        *,
        call_udfs: bool,
    ) -> LineageGraph:
        """Columns pass through as values, and every column a check reads decides which rows
        pass, so it is a filter of every output (an inline schema's columns; a schema module's
        are not known)."""
        config = task.spec.validate_
        assert config is not None
        columns = getattr(config.schema_, "columns", None)
        checked = list(columns) if isinstance(columns, Mapping) else []
        (source,) = task.inputs
        graph = LineageGraph()
        for column in sql_columns(schemas[source]):
            graph.edges.append(LineageEdge(f"{task.id}.{column}", f"{source}.{column}", "value"))
            for rule in checked:
                edge = LineageEdge(f"{task.id}.{column}", f"{source}.{rule}", "filter")
                graph.edges.append(edge)
        return graph

    def describe_output(self, task: TaskSpec) -> str:
        return "workspace (+ quarantine)"


KIND = Validate()

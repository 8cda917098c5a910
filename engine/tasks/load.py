"""load: one input into a sink (any connector), in one transaction where the target has them,
with the watermarks of the extracts upstream committed beside the rows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pyarrow as pa
from loguru import logger

from connectors.base import NamingContext, Unknown
from engine.core.problems import Finding
from engine.spec.model import TaskKind, TaskSpec
from engine.tasks.base import (
    CheckContext,
    Inputs,
    RenderedTask,
    SchemaContext,
    TaskContext,
    TaskOutcome,
    connection_findings,
)
from lineage.graph import LineageEdge, LineageGraph, sql_columns

__all__ = ["KIND", "Load"]


class Load:
    kind = TaskKind.LOAD
    produces_table = False
    reads_sql_tables = False
    inlines = False
    offers_stream = False

    def takes_stream(self, task: TaskSpec) -> bool:
        """A view reads the input's kept files, never a stream."""
        owner, config = task.connector, task.load
        if owner is None or config is None or task.materialize == "view":
            return False
        return owner.takes_stream(config)

    def inputs(self, task: TaskSpec) -> Inputs:
        assert task.input is not None  # every sink's config names its input
        return Inputs((task.input,))

    def check(self, task: TaskSpec, ctx: CheckContext) -> Iterable[Finding]:
        yield from connection_findings(task, ctx)
        owner, config = task.connector, task.load
        if owner is not None and config is not None:
            for found in owner.check(config, ctx.definition.base_dir):
                key = ("load", *found.key)
                yield Finding(found.code, found.message, key, found.severity, found.hint)
        if task.hooks is not None and owner is not None and not owner.capabilities.hooks:
            yield Finding(
                "not-supported",
                f"hooks: a {owner.name} target does not run SQL hooks (duckdb, postgres do)",
                ("hooks",),
            )
        if task.materialize != "view":
            return
        if owner is not None and not owner.capabilities.views:
            yield Finding(
                "view-sink",
                f"materialize: view makes the target a view of the input, and a {owner.name} "
                "target has no views",
                ("materialize",),
                hint="views are for loads into duckdb and postgres",
            )
        elif getattr(config, "mode", "replace") != "replace":
            mode = getattr(config, "mode", None)
            said = config is not None and "mode" in config.model_fields_set
            yield Finding(
                "view-mode",
                "materialize: view makes the target exactly the input, which is mode: replace, "
                + (f"not {mode}" if said else f"and a load's mode is {mode} unless it says so"),
                ("load", "mode") if said else ("load",),
                hint="set mode: replace",
            )
        elif getattr(config, "truncate", False):
            yield Finding(
                "view-truncate",
                "truncate empties a table the load fills in place; materialize: view fills a "
                "new table each run, so there is nothing to truncate",
                ("load", "truncate"),
                hint="remove truncate: true",
            )

    def references(self, task: TaskSpec, base_dir: Path) -> str | None:
        return None

    def sql_template(self, task: TaskSpec, ctx: CheckContext) -> tuple[str, tuple[str, ...]] | None:
        return None

    def schema(self, task: RenderedTask, ctx: SchemaContext) -> pa.Schema | Unknown | None:
        return None  # it writes outside; the sink checks its input's schema at run time

    def run(self, context: TaskContext) -> TaskOutcome:
        owner, config = context.task.spec.connector, context.task.spec.load
        assert owner is not None
        assert config is not None
        source, resent = context.input(), None
        after = context.watermarks.rows_after(source.task_id) if context.watermarks else None
        if after is not None:  # what its sink committed in an earlier run is not sent again
            resent = after.refusal(source.schema)
            if resent is None:
                source = source.rows_after(after, context.staging)
            else:
                logger.bind(task_id=context.task.id).warning(
                    "the rows up to {} that this load committed in an earlier run are sent "
                    "again: {}",
                    after.watermark.describe(),
                    resent,
                )
        hooks = context.task.spec.hooks
        where = context.connector(
            hooks_before=hooks.hooks("pre") if hooks else (),
            hooks_after=hooks.hooks("post") if hooks else (),
        )

        def settle() -> None:
            if context.watermarks is not None:
                where.pending_watermarks = context.watermarks.pending()

        if source.stream is not None:
            # Streaming from a running extract: its watermark is known once it published, which
            # is when the stream ends, before the sink commits.
            source.stream.on_end(settle)
        else:
            settle()
        if context.task.spec.materialize == "view":
            result = owner.view(source, config, where)
        else:
            result = owner.write(source, config, where)
        context.progress(result.rows)
        # A sink without a transaction commits nothing itself: its watermarks are final once
        # its output is published.
        transactional = owner.state(config) is not None
        committed = result.committed_watermarks if transactional else where.pending_watermarks
        details = dict(result.details)
        if after is not None and resent is None:
            details["rows_after"] = after.watermark.to_json()  # rows up to it were not sent
        elif after is not None:
            details["rows_sent_again"] = resent
        return TaskOutcome(
            rows_in=context.input().rows,
            rows_out=result.rows,
            produces_output=False,
            target=result.target,
            details=details,
            committed=committed,
        )

    def lineage(
        self,
        task: RenderedTask,
        schemas: Mapping[str, pa.Schema],
        base_dir: Path,
        *,
        call_udfs: bool,
    ) -> LineageGraph:
        """The input's columns become the target's columns."""
        (source,) = task.inputs
        owner, config = task.spec.connector, task.spec.load
        assert owner is not None
        assert config is not None
        place = owner.place(config, NamingContext()).label  # a view's dataset is its table's
        graph = LineageGraph(external={task.id: place})
        for column in sql_columns(schemas[source]):
            graph.edges.append(LineageEdge(f"{task.id}.{column}", f"{source}.{column}", "value"))
        return graph

    def describe_output(self, task: TaskSpec) -> str:
        owner, config = task.connector, task.load
        assert owner is not None
        assert config is not None
        label = owner.place(config, NamingContext()).label
        return f"{label} (view)" if task.materialize == "view" else label


KIND = Load()

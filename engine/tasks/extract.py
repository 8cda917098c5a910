"""extract: read a source (any connector) into the task's output, batch by batch.

Several streams (partitioned reads) are written in parallel, one part each. An incremental
source reads past the watermark its loads committed and reports the largest (cursor, key) it
read; malformed rows a source sets aside go to the output's quarantine.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa

from connectors.base import NamingContext, Unknown
from engine.core.faults import fault_point
from engine.core.parquet import ParquetBatchWriter
from engine.core.problems import Finding
from engine.core.tables import OUTPUT_FILE, QUARANTINE_DIR, part_file
from engine.core.watermark import Watermark, WatermarkTracker
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
from lineage.graph import LineageEdge, LineageGraph, add_unresolved, sql_columns

__all__ = ["KIND", "Extract", "extract_outcome", "write_part"]


def _write_stream(
    reader: pa.RecordBatchReader,
    path: Path | None,
    context: TaskContext,
    tracker: WatermarkTracker | None,
    stop: threading.Event,
    counter: list[int],
    lock: threading.Lock,
) -> None:
    """One stream into its part (`path`; None: an ephemeral extract keeps no copy) and to the
    loads riding on the attempt."""
    tee = context.tee
    if tee is not None:
        tee.open(reader.schema)
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(ParquetBatchWriter(path, reader.schema)) if path else None
        for batch in reader:
            if stop.is_set():
                break
            context.cancel.raise_if_cancelled()
            if writer is not None:
                writer.write(batch)
            if tee is not None:
                tee.put(batch, context.cancel)
            fault_point("extract.batch")
            if tracker is not None:
                tracker.update(batch)
            with lock:
                counter[0] += batch.num_rows
                context.progress(counter[0])


def extract_outcome(
    context: TaskContext,
    rows: int,
    rejected: int,
    start: Watermark | None,
    reached: Iterable[Watermark | None],
    details: dict[str, Any],
) -> TaskOutcome:
    """What an extract reports: its rows, and for an incremental source the watermark it read
    from and the largest one any of its streams reached."""
    owner, config = context.task.spec.connector, context.task.spec.extract
    assert owner is not None
    assert config is not None
    found = [w for w in reached if w is not None]
    watermark = max(found, key=lambda w: w.as_tuple()) if found else None
    if owner.incremental(config) is not None:
        details["watermark_from"] = start.describe() if start else None
        details["watermark_to"] = watermark.describe() if watermark else None
    return TaskOutcome(
        rows_in=rows + rejected,
        rows_out=rows,
        produces_output=context.task.spec.materialize == "table",
        rows_rejected=rejected,
        details=details,
        watermark=watermark,
    )


def write_part(context: TaskContext, piece: Any, index: int) -> tuple[Path, int, Watermark | None]:
    """One part of a split extract (`Connector.split`), on whichever host it runs: read and
    written as `Extract.run` writes each of its streams, into `part_file(index)` of the
    attempt's staging. Its file, rows and the largest watermark its rows reached."""
    owner, config = context.task.spec.connector, context.task.spec.extract
    assert owner is not None
    assert config is not None
    incremental = owner.incremental(config)
    tracker = WatermarkTracker(incremental.cursor, incremental.key) if incremental else None
    reader = owner.open_part(config, piece, context.connector())
    path = context.staging / part_file(index)
    counter = [0]
    _write_stream(reader, path, context, tracker, threading.Event(), counter, threading.Lock())
    return path, counter[0], tracker.best if tracker else None


def _claimed(task: TaskSpec, ctx: CheckContext) -> Iterator[Finding]:
    """What the extract holds at its source (a replication slot) must be its own: a second
    task reading the same slot would consume, move or drop what the first still needs."""
    owner, config, spec = task.connector, task.extract, ctx.definition.spec
    assert owner is not None
    assert config is not None
    claim = owner.claims(config, task.id, spec.name)
    if claim is None:
        return
    mine = {task.id, *owner.release_group(config, task.id)}
    for other in spec.tasks:
        theirs, source = other.connector, other.extract
        if other.id in mine or theirs is None or source is None:
            continue
        if theirs.claims(source, other.id, spec.name) == claim:
            yield Finding(
                "shared-source",
                f"{claim} is read by task {other.id!r} too",
                ("extract",),
                hint="give each task a slot of its own, or read several tables through one "
                "slot with cdc.tables",
            )
            return


class Extract:
    kind = TaskKind.EXTRACT
    produces_table = True
    reads_sql_tables = False
    inlines = False
    offers_stream = True

    def takes_stream(self, task: TaskSpec) -> bool:
        return False

    def inputs(self, task: TaskSpec) -> Inputs:
        return Inputs()

    def check(self, task: TaskSpec, ctx: CheckContext) -> Iterable[Finding]:
        owner, config = task.connector, task.extract
        assert owner is not None
        assert config is not None
        yield from connection_findings(task, ctx)
        for found in owner.check(config, ctx.definition.base_dir):
            yield Finding(
                found.code, found.message, ("extract", *found.key), found.severity, found.hint
            )
        yield from _claimed(task, ctx)

    def references(self, task: TaskSpec, base_dir: Path) -> str | None:
        return None

    def sql_template(self, task: TaskSpec, ctx: CheckContext) -> tuple[str, tuple[str, ...]] | None:
        owner, config = task.connector, task.extract
        assert owner is not None
        assert config is not None
        query = owner.place(config, NamingContext(ctx.definition.base_dir)).query
        return (query, ("extract", "query")) if query is not None else None

    def schema(self, task: RenderedTask, ctx: SchemaContext) -> pa.Schema | Unknown | None:
        from connectors.base import ConnectorContext

        owner, config = task.spec.connector, task.spec.extract
        assert owner is not None
        assert config is not None
        where = ConnectorContext(ctx.base_dir, ctx.pipeline, "plan", task.id)
        return owner.schema(config, where)

    def run(self, context: TaskContext) -> TaskOutcome:
        owner, config = context.task.spec.connector, context.task.spec.extract
        assert owner is not None
        assert config is not None
        incremental = owner.incremental(config)
        start = None
        if incremental is not None and context.watermarks is not None:
            start = context.watermarks.start()
        keep = context.task.spec.materialize == "table"
        if keep and incremental is None and context.tee is None:
            copied = owner.copy_parts(config, context.connector(), context.staging, part_file)
            if copied is not None:  # files that already were parts, copied as they are
                context.progress(copied)
                copy_details: dict[str, Any] = {"streams": 1, "copied": True}
                return TaskOutcome(rows_in=copied, rows_out=copied, details=copy_details)
        rejects = owner.rejects(config)
        checkpoint = context.staging_path.parent / f".checkpoint-{context.run_id}"
        where = context.connector(watermark=start, rejects=rejects, checkpoint=checkpoint)
        readers = owner.open(config, where)
        trackers = [
            WatermarkTracker(incremental.cursor, incremental.key) if incremental else None
            for _ in readers
        ]
        counter, lock, stop = [0], threading.Lock(), threading.Event()
        paths = [context.staging / part_file(i) if keep else None for i in range(len(readers))]
        if len(readers) == 1:
            _write_stream(readers[0], paths[0], context, trackers[0], stop, counter, lock)
        else:
            # One thread and one part per stream (partitioned reads); the first failure stops
            # the others at their next batch.
            name = f"{context.task.id}-part"
            with ThreadPoolExecutor(len(readers), thread_name_prefix=name) as pool:
                futures = [
                    pool.submit(_write_stream, reader, path, context, tracker, stop, counter, lock)
                    for reader, path, tracker in zip(readers, paths, trackers, strict=True)
                ]
                try:
                    for future in futures:
                        future.result()
                finally:
                    stop.set()
        reached = [t.best for t in trackers if t is not None]
        if incremental is not None and where.reached is not None:
            reached.append(where.reached)  # read past its last row (a change stream)
        details: dict[str, Any] = {"streams": len(readers), **where.notes}
        rejected = 0
        if rejects is not None and rejects.items:
            import pyarrow.parquet as pq

            quarantine = context.staging / QUARANTINE_DIR
            quarantine.mkdir(exist_ok=True)
            pq.write_table(rejects.table(), quarantine / OUTPUT_FILE)
            rejected = len(rejects.items)
            details["bad_rows"] = rejected
            details["first_bad_row"] = rejects.items[0].describe()
        if not keep:
            details["materialize"] = "ephemeral"
        return extract_outcome(context, counter[0], rejected, start, reached, details)

    def lineage(
        self,
        task: RenderedTask,
        schemas: Mapping[str, pa.Schema],
        base_dir: Path,
        *,
        call_udfs: bool,
    ) -> LineageGraph:
        """Each output column comes from the same column of the source; a source's query is
        traced to the tables it reads: `<source>#<table>::<column>`."""
        from lineage.columns import source_query_lineage

        owner, config = task.spec.connector, task.spec.extract
        assert owner is not None
        assert config is not None
        place = owner.place(config, NamingContext())
        graph = LineageGraph(external={task.id: place.label})
        if place.query is None:
            for column in sql_columns(schemas[task.id]):
                if column in place.generated:
                    continue
                source = f"{place.label}::{column}"
                graph.edges.append(LineageEdge(f"{task.id}.{column}", source, "value"))
            return graph
        outputs = schemas[task.id].names
        result, tables = source_query_lineage(place.query, outputs, place.dialect or "duckdb")
        graph.external[task.id] = place.table_label(",".join(sorted(tables.values())))
        for edge in result.edges:
            source = f"{place.table_label(tables[edge.table])}::{edge.column}"
            graph.edges.append(LineageEdge(f"{task.id}.{edge.output}", source, edge.kind))
        add_unresolved(graph, task.id, result.unresolved)
        return graph

    def describe_output(self, task: TaskSpec) -> str:
        return "workspace"


KIND = Extract()

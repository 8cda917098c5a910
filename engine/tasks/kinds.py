"""What each task kind does in one attempt.

A runner gets a `TaskContext` (its inputs as `InputTable`s, an empty staging folder, a cancel
token, a progress callback) and returns a `TaskOutcome`. It writes its output table into the
staging folder as `part-*.parquet`; the executor publishes the folder when the attempt succeeds
and discards it otherwise, so a runner never needs to clean up after itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, assert_never

import pyarrow as pa

from connectors.base import ConnectorContext
from connectors.registry import connector_of
from engine.core.cancel import CancelToken
from engine.core.errors import UserCodeError, disk_full
from engine.core.faults import fault_point
from engine.core.parquet import ParquetBatchWriter
from engine.core.tables import InputTable
from engine.core.watermark import Watermark, WatermarkTracker, WatermarkUpdate
from engine.execution.watermarks import WatermarkBroker
from engine.planning.build import Plan, PlannedTask
from engine.spec.model import TaskKind
from engine.state.workspace import QUARANTINE_DIR, Workspace
from transforms.sql import DuckDBSettings, run_sql

__all__ = ["TaskContext", "TaskOutcome", "TaskRunner", "run_task"]

OUTPUT_FILE = "part-00000.parquet"


@dataclass
class TaskContext:
    plan: Plan
    task: PlannedTask
    attempt: int
    inputs: dict[str, InputTable]
    staging_path: Path
    cancel: CancelToken
    progress: Callable[[int], None] = lambda rows: None
    duckdb: DuckDBSettings = field(default_factory=DuckDBSettings)
    connections: Mapping[str, Any] = field(default_factory=dict)
    watermarks: WatermarkBroker | None = None
    _staged: bool = field(default=False, repr=False)

    def connector(self, **extra: Any) -> ConnectorContext:
        """What a source or sink of this task gets."""
        return ConnectorContext(
            base_dir=self.plan.base_dir,
            pipeline=self.plan.pipeline,
            run_id=self.plan.run_id,
            task_id=self.task.id,
            cancel=self.cancel,
            connections=self.connections,
            **extra,
        )

    @property
    def staging(self) -> Path:
        """The attempt's empty output folder, created on first use."""
        if not self._staged:
            Workspace.prepare_staging(self.staging_path)
            self._staged = True
        return self.staging_path

    @property
    def base_dir(self) -> Path:
        return self.plan.base_dir

    def input(self) -> InputTable:
        """The single input of a udf, validate or load task."""
        (table,) = self.inputs.values()
        return table


@dataclass
class TaskOutcome:
    rows_in: int
    rows_out: int
    produces_output: bool = True
    rows_rejected: int = 0
    target: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    watermark: Watermark | None = None
    """For an incremental extract: the largest (cursor, key) of the rows it read."""
    committed: tuple[WatermarkUpdate, ...] = ()
    """For a load: the watermarks it committed with its rows."""
    lineage: Any = None
    """For a frame UDF: the column lineage read from the plan it ran (lineage.columns
    .ColumnLineage), so the run's record need not call the function again."""


class TaskRunner(Protocol):
    """Runs one attempt of a task. The executor's default is `run_task`; tests and benchmarks
    pass their own to measure or fake the work."""

    def __call__(self, context: TaskContext) -> TaskOutcome: ...


def _write_stream(
    reader: pa.RecordBatchReader,
    path: Path,
    context: TaskContext,
    tracker: WatermarkTracker | None,
    stop: threading.Event,
    counter: list[int],
    lock: threading.Lock,
) -> None:
    with ParquetBatchWriter(path, reader.schema) as writer:
        for batch in reader:
            if stop.is_set():
                break
            context.cancel.raise_if_cancelled()
            writer.write(batch)
            fault_point("extract.batch")
            if tracker is not None:
                tracker.update(batch)
            with lock:
                counter[0] += batch.num_rows
                context.progress(counter[0])


def _extract(context: TaskContext) -> TaskOutcome:
    config = context.task.spec.extract
    assert config is not None
    owner = connector_of(config)
    incremental = owner.incremental(config)
    start = None
    if incremental is not None and context.watermarks is not None:
        start = context.watermarks.start(context.task)
    rejects = owner.rejects(config)
    readers = owner.open(config, context.connector(watermark=start, rejects=rejects))
    trackers = [
        WatermarkTracker(incremental.cursor, incremental.key) if incremental else None
        for _ in readers
    ]
    counter, lock, stop = [0], threading.Lock(), threading.Event()
    paths = [context.staging / f"part-{i:05d}.parquet" for i in range(len(readers))]
    if len(readers) == 1:
        _write_stream(readers[0], paths[0], context, trackers[0], stop, counter, lock)
    else:
        # One thread and one Parquet part per stream (partitioned reads); the first failure
        # stops the others at their next batch.
        with ThreadPoolExecutor(len(readers), thread_name_prefix=f"{context.task.id}-part") as pool:
            futures = [
                pool.submit(_write_stream, reader, path, context, tracker, stop, counter, lock)
                for reader, path, tracker in zip(readers, paths, trackers, strict=True)
            ]
            try:
                for future in futures:
                    future.result()
            finally:
                stop.set()
    candidates = [t.best for t in trackers if t is not None and t.best is not None]
    watermark = max(candidates, key=lambda w: w.as_tuple()) if candidates else None
    details: dict[str, Any] = {"streams": len(readers)}
    rejected = 0
    if rejects is not None and rejects.items:
        import pyarrow.parquet as pq

        quarantine = context.staging / QUARANTINE_DIR
        quarantine.mkdir(exist_ok=True)
        pq.write_table(rejects.table(), quarantine / OUTPUT_FILE)
        rejected = len(rejects.items)
        details["bad_rows"] = rejected
        details["first_bad_row"] = rejects.items[0].describe()
    if incremental is not None:
        details["watermark_from"] = start.describe() if start else None
        details["watermark_to"] = watermark.describe() if watermark else None
    return TaskOutcome(
        rows_in=counter[0] + rejected,
        rows_out=counter[0],
        rows_rejected=rejected,
        details=details,
        watermark=watermark,
    )


def _sql(context: TaskContext) -> TaskOutcome:
    assert context.task.sql is not None
    rows = run_sql(
        context.task.sql,
        context.inputs,
        context.staging / OUTPUT_FILE,
        settings=context.duckdb,
        cancel=context.cancel,
    )
    context.progress(rows)
    return TaskOutcome(rows_in=sum(t.num_rows for t in context.inputs.values()), rows_out=rows)


def _udf(context: TaskContext) -> TaskOutcome:
    import polars as pl

    from transforms.udf import apply_udf, load_udf, udf_mode

    config = context.task.spec.udf
    assert config is not None
    source = context.input()
    function = load_udf(config, context.base_dir)
    frame = apply_udf(source.lazy(), function, config)
    output = context.staging / OUTPUT_FILE
    try:
        # Polars' streaming engine reads, computes and writes in parallel and bounded memory.
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
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(output).metadata.num_rows
    context.progress(rows)
    lineage = None
    if udf_mode(function, config) == "frame":
        from lineage.polars_plan import plan_lineage

        paths = [str(path) for path in source.files]
        lineage = plan_lineage(frame, context.task.inputs[0], source.schema.names, paths)
    return TaskOutcome(rows_in=source.num_rows, rows_out=rows, lineage=lineage)


def _validate(context: TaskContext) -> TaskOutcome:
    import polars as pl
    from loguru import logger

    from transforms.validate import (
        ValidationOutcome,
        load_schema,
        needs_whole_input,
        validate_frames,
    )

    config = context.task.spec.validate_
    assert config is not None
    source = context.input()
    schema = load_schema(config.schema_, context.base_dir)
    if needs_whole_input(schema):
        frames: Any = iter([pl.read_parquet([str(f) for f in source.files])])
    else:
        frames = (pl.from_arrow(batch) for batch in source.batches(config.batch_rows))
    outcome = ValidationOutcome()
    good_writer: ParquetBatchWriter | None = None
    bad_writer: ParquetBatchWriter | None = None
    quarantine = context.staging / QUARANTINE_DIR
    try:
        for good, bad in validate_frames(frames, schema, config, outcome):
            context.cancel.raise_if_cancelled()
            if good is not None and good.height:
                table = good.to_arrow()
                if good_writer is None:
                    good_writer = ParquetBatchWriter(context.staging / OUTPUT_FILE, table.schema)
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
    if good_writer is None:  # no row passed, or no rows at all: keep the schema downstream
        empty = pl.from_arrow(source.schema.empty_table())
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
    return TaskOutcome(
        rows_in=outcome.rows_in,
        rows_out=outcome.rows_passed,
        rows_rejected=outcome.rows_rejected,
        details={
            "failures": {f"{c}:{k}": n for (c, k), n in outcome.failures_by_check.items()},
            "examples": outcome.examples,
        },
    )


def _load(context: TaskContext) -> TaskOutcome:
    config = context.task.spec.load
    assert config is not None
    source = context.input()
    pending = context.watermarks.pending(context.task) if context.watermarks else ()
    owner = connector_of(config)
    result = owner.write(source, config, context.connector(pending_watermarks=pending))
    context.progress(result.rows)
    # A file sink commits nothing itself: its watermarks are final once its files are published.
    committed = result.committed_watermarks if owner.state(config) is not None else pending
    return TaskOutcome(
        rows_in=source.num_rows,
        rows_out=result.rows,
        produces_output=False,
        target=result.target,
        details=result.details,
        committed=committed,
    )


def run_task(context: TaskContext) -> TaskOutcome:
    """The default runner: dispatch on the task's kind."""
    kind = context.task.kind
    match kind:
        case TaskKind.EXTRACT:
            return _extract(context)
        case TaskKind.SQL:
            return _sql(context)
        case TaskKind.UDF:
            return _udf(context)
        case TaskKind.VALIDATE:
            return _validate(context)
        case TaskKind.LOAD:
            return _load(context)
        case _:
            assert_never(kind)


def schema_json(schema: pa.Schema) -> list[dict[str, str]]:
    from engine.core.types import format_type

    return [
        {"name": f.name, "type": format_type(f.type), "nullable": str(f.nullable).lower()}
        for f in schema
    ]

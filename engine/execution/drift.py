"""Whether a task's staged output may be published: its columns are distinct names to DuckDB,
and its schema's changes since the task's last successful output are ones its `schema_change`
policy accepts. The changes found are kept with the task run; lineage tells renames apart."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
from loguru import logger

from engine.core.errors import DataError
from engine.core.schemachange import SchemaChange
from engine.core.tables import output_parts
from engine.planning.build import Plan, PlannedTask
from engine.state.catalog import CatalogReader
from engine.state.objectstore import output_schema
from engine.tasks.base import StagedElsewhere

__all__ = ["DriftCheck"]


class DriftCheck:
    def __init__(self, plan: Plan, catalog: CatalogReader) -> None:
        self.plan = plan
        self.catalog = catalog

    def check(
        self,
        task: PlannedTask,
        staging: Path,
        schemas: Mapping[str, pa.Schema],
        elsewhere: StagedElsewhere | None = None,
    ) -> list[dict[str, object]]:
        """How the staged output's schema changed since the task's last successful run
        (`schemas`: what its inputs wrote in this run); raises DataError when the task's
        `schema_change` policy refuses the change, or when two columns are one name to DuckDB.
        The output is in `staging`, or was written on another host (`elsewhere`)."""
        import pyarrow.parquet as pq

        from engine.core.schemachange import refused
        from engine.core.sqltext import name_clash

        if elsewhere is not None:
            schema = elsewhere.schema
        else:
            parts = output_parts(staging)
            schema = pq.read_schema(parts[0]) if parts else None
        if schema is None:
            return []
        clash = name_clash(schema.names)
        if clash is not None:  # DuckDB would rename one of them in every task reading it
            raise DataError(
                f"the output names {clash.describe()}",
                hint="give the columns distinct names in the task",
            )
        changes = self._changes(task, schema, schemas)
        policy = task.spec.schema_change
        refusals = refused(changes, policy)
        if refusals:
            listed = "; ".join(change.describe() for change in refusals)
            raise DataError(
                f"output schema changed and schema_change is {policy}: {listed}",
                hint="fix the task, or set schema_change: evolve to accept the new schema",
            )
        return [change.to_dict() for change in changes]

    def _changes(
        self, task: PlannedTask, schema: pa.Schema, schemas: Mapping[str, pa.Schema]
    ) -> list[SchemaChange]:
        """How the output schema changed since the task's last successful run (empty when it
        did not, or there is no earlier output to compare with)."""

        from engine.tasks.lineage import task_drift

        plan = self.plan
        previous = self.catalog.latest_output(plan.pipeline, task.id)
        if previous is None or previous.run_id == plan.run_id or not previous.output_path:
            return []
        before = output_schema(previous.output_path)
        if before is None:
            return []
        inputs = {n: s for n, s in schemas.items() if n in task.inputs}
        recorded = self.catalog.lineage(previous.run_id)
        changes = task_drift(task, before, schema, inputs, recorded, plan.base_dir, call_udfs=False)
        log = logger.bind(pipeline=plan.pipeline, run_id=plan.run_id, task_id=task.id)
        for change in changes:
            (log.warning if change.breaking else log.info)(
                "schema change since run {}: column {!r} {} ({} -> {})",
                previous.run_id,
                change.column,
                change.change,
                change.before,
                change.after,
            )
        return changes

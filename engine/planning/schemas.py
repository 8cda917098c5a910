"""Output schemas before any data moves: every transform run over empty inputs.

`arrowline plan` runs each `sql`, `udf` and `validate` task with the same code a run uses
(the task's kind, `engine.tasks`), over zero-row Parquet inputs of the upstream schemas, in a
scratch folder. DuckDB binds and types the statement, Polars builds and types the lazy plan, pandera
checks the columns it requires; the schema of the (empty) Parquet output is exactly the schema a
real run writes, so comparing it with the last run's is drift with no false alarms from type
mapping. Extracts read the outside world, so their schema is the one their last successful
output had (unknown before the first run; their downstream is then unknown too, and said so).

What it finds, as plan problems with the task and the line of the pipeline file:

- a type error or a missing column in a statement or a UDF (`schema-error`);
- a broken reference: a column a task reads that its upstream will no longer produce
  (`broken-reference`, naming the upstream and the run whose output still had it);
- a schema change the task's `schema_change` policy would refuse at run time
  (`schema-change`), and, as information, every other change (`SchemaReport.changes`).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from engine.core.problems import Problem
from engine.core.tables import THIS, InputTable
from engine.core.types import empty_table
from engine.planning.build import Plan, PlannedTask
from engine.state.catalog import CatalogReader
from transforms.sql import DuckDBSettings

Locate = Callable[..., tuple[str | None, int | None]]
"""(task id, *path in the task) -> the file and line a problem there is reported at."""

__all__ = ["SchemaReport", "plan_schemas"]

_MISSING_COLUMN = re.compile(
    r'(?:Referenced column "(?P<a>[^"]+)" not found'
    r"|(?:unable to find column|ColumnNotFoundError)[^\"']*[\"'](?P<b>[^\"']+)[\"']"
    r"|column[s]? ['\"]?(?P<c>[^'\"]+)['\"]? (?:not in|is not in|not found))",
    re.IGNORECASE,
)


@dataclass
class SchemaReport:
    schemas: dict[str, pa.Schema] = field(default_factory=dict)
    """task -> the Arrow schema its output will have (where it can be known)."""
    unknown: dict[str, str] = field(default_factory=dict)
    """task -> why its schema cannot be known before it runs."""
    previous: dict[str, tuple[str, pa.Schema]] = field(default_factory=dict)
    """task -> (run id, schema) of its last successful output."""
    changes: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    """task -> schema changes against its last successful output (lineage.drift)."""
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def to_dict(self) -> dict[str, Any]:
        from engine.tasks.base import schema_json

        return {
            "schemas": {task: schema_json(schema) for task, schema in self.schemas.items()},
            "unknown": self.unknown,
            "changes": self.changes,
            "problems": [p.to_dict() for p in self.problems],
        }


def previous_schemas(
    catalog: CatalogReader | None, pipeline: str
) -> dict[str, tuple[str, pa.Schema]]:
    """task -> (run id, Arrow schema) of its newest successful output still on disk."""
    found: dict[str, tuple[str, pa.Schema]] = {}
    if catalog is None:
        return found
    for task_id, row in catalog.latest_outputs(pipeline).items():
        schema = _output_schema(row.output_path)
        if schema is not None:
            found[task_id] = (row.run_id, schema)
    return found


def _output_schema(output_path: str | None) -> pa.Schema | None:
    """The Arrow schema of a published output, or None when it is not (or no longer) there."""
    from engine.state.objectstore import output_schema

    return output_schema(output_path) if output_path else None


def _reused_schemas(plan: Plan, catalog: CatalogReader | None) -> dict[str, pa.Schema | None]:
    """task -> the schema of the output a reused task brings from its earlier run (None when
    that output cannot be read): a selection's reused upstream is read, not run again."""
    reused: dict[str, pa.Schema | None] = {}
    for task in plan.tasks:
        if task.action == "reuse" and task.reuse_run is not None:
            row = catalog.task_run(task.reuse_run, task.id) if catalog is not None else None
            reused[task.id] = _output_schema(row.output_path if row is not None else None)
    return reused


def plan_schemas(
    plan: Plan,
    catalog: CatalogReader | None,
    *,
    locate: Locate = lambda task, *path: (None, None),
) -> SchemaReport:
    """Every task's output schema, its drift, and the problems a run would hit because of it.

    `locate(task_id, key)`: the file and line of a task's key (Definition.task_location), for
    problems."""
    report = SchemaReport(previous=previous_schemas(catalog, plan.pipeline))
    with tempfile.TemporaryDirectory(prefix="arrowline-plan-") as scratch:
        root = Path(scratch)
        files: dict[str, Path] = {}  # task -> an empty Parquet file of its output's schema
        reused = _reused_schemas(plan, catalog)
        for task in plan.tasks:
            if task.id in reused:
                _reused_schema(task, reused[task.id], report)
                continue
            _task_schema(plan, task, report, root, files, locate)
        for task in plan.tasks:
            _drift(plan, task, report, catalog, locate)
    return report


def _reused_schema(task: PlannedTask, schema: pa.Schema | None, report: SchemaReport) -> None:
    if schema is not None:
        report.schemas[task.id] = schema
    else:
        report.unknown[task.id] = f"the output it reuses (run {task.reuse_run}) cannot be read"


def _empty_input(task_id: str, schema: pa.Schema, root: Path, files: dict[str, Path]) -> InputTable:
    """An upstream output as a zero-row table: the Parquet file its own dry run wrote, or one
    written here once (an extract whose schema comes from its last run)."""
    if task_id not in files:
        import pyarrow.parquet as pq

        path = root / "inputs" / f"{task_id}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(empty_table(schema), path)
        files[task_id] = path
    return InputTable(task_id, "plan", (files[task_id],), schema, num_rows=0)


def _task_schema(
    plan: Plan,
    task: PlannedTask,
    report: SchemaReport,
    root: Path,
    files: dict[str, Path],
    locate: Locate,
) -> None:
    """Ask the task's kind: transforms run over empty inputs, a source's connector says what
    it knows, a load has no output. Unknown falls back to the last run's output schema."""
    from connectors.base import Unknown
    from engine.tasks import kind_of
    from engine.tasks.base import SchemaContext

    kind = kind_of(task.spec)
    unknown_inputs = [name for name in task.inputs if name not in report.schemas]
    if unknown_inputs:
        if kind.produces_table:
            report.unknown[task.id] = (
                f"reads {', '.join(unknown_inputs)}, whose schema is not known"
            )
        return
    inputs = {name: _empty_input(name, report.schemas[name], root, files) for name in task.inputs}
    if task.adds_to is not None and task.id in report.previous:  # `{{ this }}`: its last output
        inputs[THIS] = _empty_input(task.id + THIS, report.previous[task.id][1], root, files)
    settings = DuckDBSettings(threads=1, temp_directory=root / "duckdb")
    context = SchemaContext(plan.pipeline, plan.base_dir, inputs, root, settings)
    try:
        found = kind.schema(task, context)
    except Exception as exc:  # user SQL and code: report what it raised
        report.problems.append(_schema_problem(plan, task, report, exc, locate))
        report.unknown[task.id] = "its plan-time check failed"
        return
    if found is None:
        return
    if isinstance(found, Unknown):
        if found.problem is not None:  # the run would fail on it: a plan problem
            report.problems.append(
                Problem(
                    found.problem.code,
                    found.problem.message,
                    **_at(plan, locate, task.id, task.kind.value),
                    task_id=task.id,
                    hint=found.problem.hint,
                )
            )
        if task.id in report.previous:
            report.schemas[task.id] = report.previous[task.id][1]
        else:
            report.unknown[task.id] = found.reason
        return
    import pyarrow.parquet as pq

    from engine.core.parquet import ParquetBatchWriter

    path = root / "schemas" / f"{task.id}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    ParquetBatchWriter(path, found).close()  # the schema a run's Parquet output has
    report.schemas[task.id] = pq.read_schema(path)
    files[task.id] = path


def _schema_problem(
    plan: Plan,
    task: PlannedTask,
    report: SchemaReport,
    exc: BaseException,
    locate: Locate,
) -> Problem:
    from engine.core.errors import ArrowlineError

    message = exc.message if isinstance(exc, ArrowlineError) else f"{type(exc).__name__}: {exc}"
    hint = exc.hint if isinstance(exc, ArrowlineError) else None
    text = " ".join(message.split())
    match = _MISSING_COLUMN.search(text)
    column = next((g for g in match.groups() if g), None) if match else None
    key = getattr(exc, "key", None)
    written_at = getattr(exc, "written_at", None)  # a model's line its database error names
    where: dict[str, Any]
    if key is not None:  # a test of the task: where that test is written
        file, line = locate(task.id, *key)
        where = {"file": file or plan.pipeline_file, "line": line}
    elif written_at is not None:
        where = {"file": written_at[0], "line": written_at[1]}
        said = f"{written_at[0]}:{written_at[1]}: " if written_at[1] else f"{written_at[0]}: "
        text = text.removeprefix(said)
    else:
        where = _at(plan, locate, task.id, task.kind.value)
    if column is not None:
        for upstream in task.inputs:
            before = report.previous.get(upstream)
            now = report.schemas.get(upstream)
            if before and now and column in before[1].names and column not in now.names:
                return Problem(
                    "broken-reference",
                    f"reads column {column!r} of {upstream!r}, which {upstream!r} will no longer "
                    f"produce (its output in run {before[0]} had it; its planned output has "
                    f"{', '.join(now.names)})",
                    **where,
                    task_id=task.id,
                    hint=f"change {task.id!r} to stop reading {column!r}, or keep it in "
                    f"{upstream!r}",
                )
    return Problem(
        "schema-error",
        f"fails over empty inputs of its upstream schemas: {text}",
        **where,
        task_id=task.id,
        hint=hint,
    )


def _drift(
    plan: Plan,
    task: PlannedTask,
    report: SchemaReport,
    catalog: CatalogReader | None,
    locate: Locate,
) -> None:
    from engine.core.schemachange import refused
    from engine.tasks.lineage import task_drift

    now = report.schemas.get(task.id)
    before = report.previous.get(task.id)
    # a task that reads no upstream (a source) is compared when it runs: its schema is the
    # outside world's, and plan may know it only from that last run
    if now is None or before is None or not task.inputs:
        return
    recorded = catalog.lineage(before[0]) if catalog is not None else None
    found = task_drift(
        task, before[1], now, report.schemas, recorded, plan.base_dir, call_udfs=True
    )
    # Nullability is left out: over empty inputs every column is nullable, while a real run's
    # Parquet marks columns without nulls not-null (lineage.drift explains why that is noise).
    changes = [change for change in found if change.change != "nullability"]
    if not changes:
        return
    report.changes[task.id] = [change.to_dict() for change in changes]
    policy = task.spec.schema_change
    refusals = refused(changes, policy)
    if refusals:
        listed = "; ".join(change.describe() for change in refusals)
        report.problems.append(
            Problem(
                "schema-change",
                f"its output schema will change and schema_change is {policy}: {listed}",
                **_at(plan, locate, task.id, "schema_change", task.kind.value),
                task_id=task.id,
                hint="fix the task, or set schema_change: evolve to accept the new schema",
            )
        )


def _at(plan: Plan, locate: Locate, task_id: str, *keys: str) -> dict[str, Any]:
    """The file and line of the first of a task's `keys` that has a line, as Problem's
    arguments."""
    file, line = plan.pipeline_file, None
    for key in keys:
        found, line = locate(task_id, key)
        file = found or file
        if line is not None:
            break
    return {"file": file, "line": line}


def schemas_for_lineage(plan: Plan, catalog: CatalogReader | None) -> Mapping[str, pa.Schema]:
    """Planned schemas where they can be computed, else the last run's (for `lineage`)."""
    report = plan_schemas(plan, catalog)
    merged = {task: schema for task, (_, schema) in report.previous.items()}
    merged.update(report.schemas)
    return merged

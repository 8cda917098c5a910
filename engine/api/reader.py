"""The read side of a project: its runs and intermediate tables, for notebooks and the CLI.

    import engine
    project = engine.open(".")
    project.runs()                                  # polars DataFrame, newest first
    project.table("enriched").head().collect()      # latest successful output, lazily
    project.table("enriched", run="20241102T0300")  # a given run (id prefix)
    project.table("to_lake")                        # a load into a table format: the table
                                                    # at the version its run committed
    project.sql("select segment, count(*) from enriched group by 1").pl()
    project.run_info()                              # the last run, drawn (in a notebook)
    project.debug("scored")                         # a failed task again, on its inputs
    project.diff("enriched", "20241101", "last", keys=["order_id"])

Everything reads the catalog read-only and the workspace's published Parquet, so it works while
a pipeline is running and never sees a half-written output. `engine.api.project.Project` adds
the writing side (runs, resumes, watermarks, dead letters) to this.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Self

from engine.core.errors import StateError
from engine.core.problems import did_you_mean
from engine.core.sqltext import quote_identifier, sql_literal
from engine.state.catalog import CatalogReader, TaskRunRow
from engine.state.layout import ProjectLayout
from engine.state.objectstore import is_object_store, local_output
from engine.state.retention import missing_output
from engine.state.workspace import QUARANTINE_DIR

if TYPE_CHECKING:
    from collections.abc import Sequence

    import duckdb
    import polars as pl

    from engine.api.diff import TableDiff
    from engine.api.notebook import RunInfo

__all__ = ["AmbiguousTask", "ProjectReader"]


class ProjectReader:
    """Read access to one project's catalog and workspace. The catalog is opened on first use
    and kept until `close()` (or the end of a `with` block)."""

    def __init__(self, layout: ProjectLayout | str | os.PathLike[str]) -> None:
        self.layout = ProjectLayout.of(layout)
        self._catalog: CatalogReader | None = None
        self._duckdb: duckdb.DuckDBPyConnection | None = None
        self._stores_known = False

    @property
    def path(self) -> Path:
        """The project folder."""
        return self.layout.project_dir

    @property
    def catalog(self) -> CatalogReader:
        if self._catalog is None:
            self._catalog = CatalogReader(self.layout.catalog)
        return self._catalog

    def _local(self, locator: str) -> Path:
        """An output's folder on this disk (an object store's, copied here first)."""
        self._know_store(locator)
        return local_output(locator)

    def _know_store(self, locator: str) -> None:
        """Before the first object-store read, the stores of the project's own pipeline files
        are made known: each read at its endpoint, with its connection resolved here (never a
        store or a connection a catalog row names)."""
        if is_object_store(locator) and not self._stores_known:
            self._stores_known = True
            from loguru import logger

            from engine.core.errors import ArrowlineError
            from engine.core.s3 import ObjectStoreLocation, trust, unresolved
            from engine.scheduling.discover import discover_pipelines
            from engine.spec.settings import effective_workspace, use_workspace_connection
            from engine.tasks.checks import load_definition

            for file in discover_pipelines(self.path).values():
                try:
                    definition = load_definition(file)
                except ArrowlineError as exc:  # a broken file: it says nothing here
                    logger.debug("{}: its workspace is not known here: {}", file, exc.message)
                    continue
                spec = definition.spec
                setting = effective_workspace(spec.workspace)
                if setting is None or not is_object_store(setting):
                    continue
                try:
                    use_workspace_connection(setting, spec.connections, definition.base_dir)
                except ArrowlineError as exc:  # an unset variable: its reads say which
                    logger.warning("{}: its workspace's connection: {}", file, exc.message)
                    unresolved(setting, exc.message)
                try:
                    location = ObjectStoreLocation.parse(setting)
                except ArrowlineError as exc:  # the environment's endpoint or region
                    logger.warning("{}: its workspace: {}", file, exc.message)
                    continue
                trust(location)  # its bucket is read there, with its connection or not at all

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None
        if self._duckdb is not None:
            self._duckdb.close()
            self._duckdb = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def _repr_html_(self) -> str:
        """What a notebook shows: the pipelines, each with its last run (engine.api.notebook)."""
        from engine.api.notebook import project_html

        return project_html(self)

    # -- runs -------------------------------------------------------------------------------------

    def runs(self, pipeline: str | None = None, limit: int = 50) -> pl.DataFrame:
        """Runs, newest first; times are UTC datetimes."""
        import polars as pl

        rows = self.catalog.runs(pipeline, limit)
        when = pl.Datetime("us", "UTC")
        return pl.DataFrame(
            [
                {
                    "run_id": r.run_id,
                    "pipeline": r.pipeline,
                    "state": r.state.value,
                    "logical_date": _datetime(r.logical_date),
                    "started_at": _datetime(r.started_at),
                    "ended_at": _datetime(r.ended_at),
                    "duration_s": r.duration_s,
                    "error": r.error,
                }
                for r in rows
            ],
            schema={
                "run_id": pl.String,
                "pipeline": pl.String,
                "state": pl.String,
                "logical_date": when,
                "started_at": when,
                "ended_at": when,
                "duration_s": pl.Float64,
                "error": pl.String,
            },
        )

    def tasks(self, run: str = "last") -> pl.DataFrame:
        """The task runs of one run (id, prefix or 'last')."""
        import polars as pl

        run_id = self.catalog.run(run).run_id
        return pl.DataFrame(
            [
                {
                    "task_id": t.task_id,
                    "kind": t.kind,
                    "state": t.state.value,
                    "attempts": t.attempts,
                    "rows_in": t.rows_in,
                    "rows_out": t.rows_out,
                    "rows_rejected": t.rows_rejected,
                    "duration_s": t.duration_s,
                    "error": t.error,
                }
                for t in self.catalog.task_runs(run_id)
            ]
        )

    def run_info(self, run: str = "last", pipeline: str | None = None) -> RunInfo:
        """One run as a notebook shows it: its task graph coloured by state, its tasks with rows
        and times, its Gantt chart (`run`: an id, a prefix, or 'last', the catalog's newest
        or, with `pipeline`, that pipeline's). `.row` and `.tasks` hold the data."""
        from engine.api.notebook import run_info

        return run_info(self, run, pipeline)

    # -- tables -----------------------------------------------------------------------------------

    def _output(self, task: str, run: str | None, pipeline: str | None) -> TaskRunRow:
        """The published output to read, which must be on disk: one retention removed is
        reported as such (engine.state.retention), not as a file Parquet cannot find."""
        row = self._find_output(task, run, pipeline)
        if row.output_path is not None:
            self._know_store(row.output_path)
        if not row.output_on_disk:
            raise missing_output(self.catalog, row)
        return row

    def _find_output(self, task: str, run: str | None, pipeline: str | None) -> TaskRunRow:
        catalog = self.catalog
        pipelines = [pipeline] if pipeline else catalog.pipelines()
        if run is not None:
            return self._output_of_run(task, run, pipeline)
        found = [(name, catalog.latest_output(name, task)) for name in pipelines]
        hits = [(name, row) for name, row in found if row is not None]
        if not hits:
            raise self._no_output(task, pipelines)
        if len(hits) > 1:
            names = [name for name, _ in hits]
            raise AmbiguousTask(task, names)
        return hits[0][1]

    def _output_of_run(self, task: str, run: str, pipeline: str | None) -> TaskRunRow:
        catalog = self.catalog
        run_row = catalog.run(run)
        if pipeline and run_row.pipeline != pipeline:
            raise StateError(f"run {run_row.run_id} belongs to pipeline {run_row.pipeline!r}")
        task_run = catalog.task_run(run_row.run_id, task)
        reused_from = catalog.reused(run_row.run_id).get(task)
        if task_run is None and reused_from:
            task_run = catalog.task_run(reused_from, task)
        if task_run is None:
            ran = [t.task_id for t in catalog.task_runs(run_row.run_id)]
            ran += list(catalog.reused(run_row.run_id))
            raise StateError(
                f"run {run_row.run_id} has no task {task!r}.{did_you_mean(task, ran)}",
                hint=f"`arrowline runs {run_row.run_id}` lists its tasks",
            )
        if task_run.output_path is None:
            if task_run.target:
                raise _loaded_elsewhere(task_run, run_row.pipeline, self._load_input(task_run))
            raise StateError(
                f"run {run_row.run_id} has no output of task {task!r}: it is "
                f"{task_run.state.value}",
                hint=f"`arrowline runs {run_row.run_id}` says why",
            )
        return task_run

    def _no_output(self, task: str, pipelines: list[str]) -> StateError:
        """Why a task has no latest output: no such task, a load (its rows are in its target),
        or it never succeeded."""
        catalog = self.catalog
        owners = [name for name in pipelines if task in catalog.task_ids(name)]
        if not owners:
            known = {t for name in pipelines for t in catalog.task_ids(name)}
            where = (
                f"pipeline {pipelines[0]!r}"
                if len(pipelines) == 1
                else f"the runs of {', '.join(repr(p) for p in pipelines)}"
                if pipelines
                else "the catalog (nothing has run yet)"
            )
            return StateError(
                f"no task {task!r} in {where}.{did_you_mean(task, known)}",
                hint="`arrowline runs RUN_ID` lists the tasks of a run",
            )
        for name in owners:
            row = catalog.last_success(name, task)
            if row is not None and row.output_path is None and row.target:
                return _loaded_elsewhere(row, name, self._load_input(row))
        return StateError(
            f"no successful output of task {task!r} yet",
            hint="run the pipeline first; `arrowline runs` shows what ran",
        )

    def _load_input(self, row: TaskRunRow) -> str | None:
        """The task a load read from, as the definition its run recorded says (None when it
        cannot be told)."""
        import yaml

        definition = self.catalog.run(row.run_id).definition
        try:
            data = yaml.safe_load(definition) if definition else None
        except yaml.YAMLError:
            return None
        tasks = data.get("tasks") if isinstance(data, dict) else None
        for task in tasks if isinstance(tasks, list) else []:
            if isinstance(task, dict) and task.get("id") == row.task_id:
                load = task.get("load")
                source = load.get("input") if isinstance(load, dict) else None
                return source if isinstance(source, str) else None
        return None

    def table(self, task: str, run: str | None = None, pipeline: str | None = None) -> pl.LazyFrame:
        """A task's output as a Polars LazyFrame: the latest successful one, or that of `run`."""
        import polars as pl

        try:
            row = self._output(task, run, pipeline)
        except LoadedElsewhere as exc:  # a load: its target, when its connector reads it back
            frame = self._target(exc.row)
            if frame is None:
                raise
            return frame
        assert row.output_path is not None
        return pl.scan_parquet(os.path.join(self._local(row.output_path), "part-*.parquet"))

    def _target(self, row: TaskRunRow) -> pl.LazyFrame | None:
        from connectors.registry import target_connector

        owner = target_connector(row.target) if row.target else None
        if owner is None or row.target is None:
            return None
        return owner.read_target(row.target, row.details or {})

    def quarantine(
        self, task: str, run: str | None = None, pipeline: str | None = None
    ) -> pl.LazyFrame:
        """Rows a task set aside: `_arrowline_row` (where it was), `_arrowline_reasons` (why, in
        words: "column: check (value)"), the row's columns, and `_arrowline_errors` (the same
        reasons as a list of column, check and value structs, to filter and count by)."""
        import polars as pl

        from transforms.validate import (
            QUARANTINE_ERRORS,
            QUARANTINE_REASONS,
            QUARANTINE_ROW,
            reason_texts,
        )

        row = self._output(task, run, pipeline)
        assert row.output_path is not None
        folder = self._local(row.output_path) / QUARANTINE_DIR
        files = sorted(folder.glob("part-*.parquet"))
        if not files:
            raise StateError(f"run {row.run_id} quarantined no rows of task {task!r}")
        frame = pl.scan_parquet([str(f) for f in files])
        reasons = reason_texts(pl.col(QUARANTINE_ERRORS)).list.join("; ")
        return frame.select(
            pl.col(QUARANTINE_ROW),
            reasons.alias(QUARANTINE_REASONS),
            pl.all().exclude(QUARANTINE_ROW, QUARANTINE_ERRORS),
            pl.col(QUARANTINE_ERRORS),
        )

    def quarantine_errors(
        self, task: str, run: str | None = None, pipeline: str | None = None
    ) -> pl.DataFrame:
        """The reasons rows were set aside, one row per failing value: `_arrowline_row` (where
        the row was), `column`, `check` and `value` (as text), to filter and count by.

            project.quarantine_errors("checked").group_by("column", "check").len()
        """
        import polars as pl

        from transforms.validate import QUARANTINE_ERRORS, QUARANTINE_ROW

        errors = self.quarantine(task, run, pipeline).select(QUARANTINE_ROW, QUARANTINE_ERRORS)
        return (
            errors.explode(QUARANTINE_ERRORS)
            .filter(pl.col(QUARANTINE_ERRORS).is_not_null())
            .unnest(QUARANTINE_ERRORS)
            .collect()
        )

    # -- looking closer ---------------------------------------------------------------------------

    def debug(
        self,
        task: str,
        run: str = "last-failed",
        *,
        pipeline: str | None = None,
        current: bool = False,
    ) -> pl.DataFrame:
        """Run one task of an earlier run again, in this process, on the exact inputs that run
        gave it, and return its output; or raise what it raised (a UDF's own error is the
        `__cause__`). `run`: 'last-failed' (the newest run in which the task failed), an id,
        a prefix or 'last'. The definition is the one the run recorded; `current=True` takes
        the pipeline file as it is now, to try a fix. Nothing is recorded (engine.api.debug).

            project.debug("scored")  # the UDF that failed last night, on last night's rows
        """
        from engine.api.debug import debug_task

        return debug_task(self, task, run, pipeline=pipeline, current=current)

    def diff(
        self,
        task: str,
        run_a: str,
        run_b: str,
        *,
        keys: Sequence[str] | None = None,
        pipeline: str | None = None,
    ) -> TableDiff:
        """A task's output in `run_b` against `run_a`: `.added`, `.removed` and, by `keys`,
        `.changed` rows, as polars DataFrames; without keys whole rows are compared
        (engine.api.diff). In a notebook it shows the counts and the first rows.

            project.diff("orders_enriched", "20241101", "last", keys=["order_id"])
        """
        from engine.api.diff import diff_outputs

        return diff_outputs(self, task, run_a, run_b, keys=keys, pipeline=pipeline)

    # -- SQL --------------------------------------------------------------------------------------

    def sql(self, query: str) -> duckdb.DuckDBPyRelation:
        """Run DuckDB SQL over the latest outputs; tasks are views by id (and `pipeline.task`)."""
        import duckdb

        if self._duckdb is None:
            self._duckdb = duckdb.connect()
        connection = self._duckdb
        owners: dict[str, list[str]] = {}
        named = _names_in(query)
        for pipeline in self.catalog.pipelines():
            connection.execute(f"create schema if not exists {quote_identifier(pipeline)}")
            for task_id, row in self.catalog.latest_outputs(pipeline).items():
                assert row.output_path is not None
                if (
                    named is not None
                    and task_id.lower() not in named
                    and is_object_store(row.output_path)
                ):
                    continue  # in an object store: copied here only when the query reads it
                local = self._local(row.output_path)
                files = sql_literal(os.path.join(local, "part-*.parquet"))
                view = f"{quote_identifier(pipeline)}.{quote_identifier(task_id)}"
                connection.execute(
                    f"create or replace view {view} as select * from read_parquet({files})"
                )
                owners.setdefault(task_id, []).append(pipeline)
        for task_id, pipelines in owners.items():
            if len(pipelines) == 1:  # unambiguous: also reachable without the pipeline name
                connection.execute(
                    f"create or replace view {quote_identifier(task_id)} as "
                    f"select * from {quote_identifier(pipelines[0])}.{quote_identifier(task_id)}"
                )
        return connection.sql(query)


def _names_in(query: str) -> set[str] | None:
    """The table names a query reads (lower case), or None when it is not one SELECT that
    parses: then every output is made a view."""
    from lineage.tables import SqlSyntaxError, parse_select, referenced_tables

    statement = parse_select(query)
    if isinstance(statement, SqlSyntaxError):
        return None
    return {table.name.lower() for table in referenced_tables(statement)}


class AmbiguousTask(StateError):
    """A task id that several pipelines have; `pipelines` names them."""

    def __init__(self, task: str, pipelines: list[str]) -> None:
        super().__init__(
            f"task {task!r} exists in several pipelines ({', '.join(pipelines)})",
            hint=f"name the pipeline: pipeline={pipelines[0]!r}",
        )
        self.task = task
        self.pipelines = pipelines


class LoadedElsewhere(StateError):
    """A load keeps no output in the workspace: where its rows went instead."""

    def __init__(self, row: TaskRunRow, message: str, hint: str) -> None:
        super().__init__(message, hint=hint)
        self.row = row


def _loaded_elsewhere(row: TaskRunRow, pipeline: str, source: str | None) -> LoadedElsewhere:
    shown = f"; task {source!r} holds the rows it loaded" if source else ""
    return LoadedElsewhere(
        row,
        f"task {row.task_id!r} of pipeline {pipeline!r} is a load: run {row.run_id} loaded "
        f"its rows into {row.target}",
        hint=f"read them there{shown}",
    )


def _datetime(text: str | None) -> datetime | None:
    """A catalog time (ISO 8601 text with its offset) as an aware datetime."""
    return datetime.fromisoformat(text) if text else None

"""Open a project's runs and intermediate tables from a notebook or a script.

    import engine
    project = engine.open(".")
    project.runs()                                  # polars DataFrame, newest first
    project.table("enriched").head().collect()      # latest successful output, lazily
    project.table("enriched", run="20241102T0300")  # a given run (id prefix)
    project.sql("select segment, count(*) from enriched group by 1").pl()

Everything reads the catalog read-only and the workspace's published Parquet, so it works while
a pipeline is running and never sees a half-written output.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from engine.catalog import CatalogReader, TaskRunRow, catalog_location
from engine.errors import StateError
from engine.problems import did_you_mean
from engine.retention import missing_output
from engine.workspace import QUARANTINE_DIR, STATE_DIR

if TYPE_CHECKING:
    import duckdb
    import polars as pl

__all__ = ["Project", "open"]


class Project:
    """Read access to one project's catalog and workspace."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._catalog: CatalogReader | None = None
        self._duckdb: duckdb.DuckDBPyConnection | None = None

    @property
    def catalog(self) -> CatalogReader:
        if self._catalog is None:
            self._catalog = CatalogReader(catalog_location(self.path))
        return self._catalog

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None
        if self._duckdb is not None:
            self._duckdb.close()
            self._duckdb = None

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Project({str(self.path)!r})"

    # -- runs -------------------------------------------------------------------------------------

    def runs(self, pipeline: str | None = None, limit: int = 50) -> pl.DataFrame:
        import polars as pl

        rows = self.catalog.runs(pipeline, limit)
        return pl.DataFrame(
            [
                {
                    "run_id": r.run_id,
                    "pipeline": r.pipeline,
                    "state": r.state.value,
                    "started_at": r.started_at,
                    "duration_s": r.duration_s,
                    "error": r.error,
                }
                for r in rows
            ],
            schema={
                "run_id": pl.String,
                "pipeline": pl.String,
                "state": pl.String,
                "started_at": pl.String,
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

    # -- tables -----------------------------------------------------------------------------------

    def _output(self, task: str, run: str | None, pipeline: str | None) -> TaskRunRow:
        """The published output to read, which must be on disk: one retention removed is
        reported as such (engine.retention), not as a file Parquet cannot find."""
        row = self._find_output(task, run, pipeline)
        if not row.output_on_disk:
            raise missing_output(self.catalog, row)
        return row

    def _find_output(self, task: str, run: str | None, pipeline: str | None) -> TaskRunRow:
        catalog = self.catalog
        pipelines = [pipeline] if pipeline else catalog.pipelines()
        if run is not None:
            run_row = catalog.run(run)
            if pipeline and run_row.pipeline != pipeline:
                raise StateError(f"run {run_row.run_id} belongs to pipeline {run_row.pipeline!r}")
            task_run = catalog.task_run(run_row.run_id, task)
            reused_from = catalog.reused(run_row.run_id).get(task)
            if task_run is None and reused_from:
                task_run = catalog.task_run(reused_from, task)
            if task_run is None or task_run.output_path is None:
                raise StateError(f"run {run_row.run_id} has no output of task {task!r}")
            return task_run
        found = [(name, catalog.latest_output(name, task)) for name in pipelines]
        hits = [(name, row) for name, row in found if row is not None]
        if not hits:
            known = {
                t.task_id
                for name in pipelines
                for r in catalog.runs(name, 5)
                for t in catalog.task_runs(r.run_id)
            }
            raise StateError(
                f"no successful output of task {task!r} yet.{did_you_mean(task, known)}",
                hint="run the pipeline first; `arrowline runs` shows what ran",
            )
        if len(hits) > 1:
            names = ", ".join(name for name, _ in hits)
            raise StateError(f"task {task!r} exists in several pipelines ({names}); pass pipeline=")
        return hits[0][1]

    def lineage(
        self,
        pipeline_file: str | os.PathLike[str],
        column: str,
        *,
        downstream: bool = False,
        kind: str | None = None,
        run: str | None = None,
    ) -> dict[str, object]:
        """Sources of `column` ("task.column"), or what depends on it, as plain data: the
        same report as `arrowline lineage ... --format json` (`run`: as that run recorded it)."""
        from engine.api import plan
        from lineage.columns import Kind
        from lineage.pipeline import lineage_report

        the_plan = plan(pipeline_file, project_dir=self.path)
        chosen: Kind | None = "filter" if kind == "filter" else "value" if kind == "value" else None
        return lineage_report(
            the_plan, self.catalog, column, downstream=downstream, kind=chosen, run_id=run
        )

    def table(self, task: str, run: str | None = None, pipeline: str | None = None) -> pl.LazyFrame:
        """A task's output as a Polars LazyFrame: the latest successful one, or that of `run`."""
        import polars as pl

        row = self._output(task, run, pipeline)
        assert row.output_path is not None
        return pl.scan_parquet(os.path.join(row.output_path, "part-*.parquet"))

    def quarantine(
        self, task: str, run: str | None = None, pipeline: str | None = None
    ) -> pl.LazyFrame:
        """Rows a validate task set aside, with `_arrowline_row` and `_arrowline_errors`."""
        import polars as pl

        row = self._output(task, run, pipeline)
        assert row.output_path is not None
        files = sorted((Path(row.output_path) / QUARANTINE_DIR).glob("part-*.parquet"))
        if not files:
            raise StateError(f"run {row.run_id} quarantined no rows of task {task!r}")
        return pl.scan_parquet([str(f) for f in files])

    def sql(self, query: str) -> duckdb.DuckDBPyRelation:
        """Run DuckDB SQL over the latest outputs; tasks are views by id (and `pipeline.task`)."""
        import duckdb

        if self._duckdb is None:
            self._duckdb = duckdb.connect()
        connection = self._duckdb
        owners: dict[str, list[str]] = {}
        for pipeline in self.catalog.pipelines():
            connection.execute(f"create schema if not exists {_quote(pipeline)}")
            for task_id, row in self.catalog.latest_outputs(pipeline).items():
                assert row.output_path is not None
                files = os.path.join(row.output_path, "part-*.parquet").replace("'", "''")
                connection.execute(
                    f"create or replace view {_quote(pipeline)}.{_quote(task_id)} as "
                    f"select * from read_parquet('{files}')"
                )
                owners.setdefault(task_id, []).append(pipeline)
        for task_id, pipelines in owners.items():
            if len(pipelines) == 1:  # unambiguous: also reachable without the pipeline name
                connection.execute(
                    f"create or replace view {_quote(task_id)} as "
                    f"select * from {_quote(pipelines[0])}.{_quote(task_id)}"
                )
        return connection.sql(query)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def open(project_dir: str | os.PathLike[str] = ".") -> Project:
    """Open a project (the folder holding `.arrowline/`) for reading."""
    path = Path(project_dir).resolve()
    if not (path / STATE_DIR).is_dir():
        raise StateError(
            f"{path} holds no arrowline state ({STATE_DIR}/ is missing)",
            hint="pass the folder you ran `arrowline run` in",
        )
    return Project(path)

"""The workspace: every task's output as Parquet, one folder per task and run.

    .arrowline/workspace/<pipeline>/<task>/<run_id>/part-00000.parquet
    .arrowline/workspace/<pipeline>/<task>/<run_id>/quarantine/part-00000.parquet   (validate)
    .arrowline/workspace/<pipeline>/<task>/LATEST                                   (a run id)

A task writes into a hidden staging folder and the executor publishes it with one rename when the
task succeeds, so a reader (a notebook, a downstream task) sees a complete output or none. LATEST
names the newest published run for tools that do not read the catalog.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pyarrow.parquet as pq

from engine.core.errors import StateError
from engine.core.files import publish_directory, remove_tree
from engine.core.tables import InputTable
from engine.state.layout import STATE_DIR, ProjectLayout, nearest_project_dir

__all__ = ["QUARANTINE_DIR", "STATE_DIR", "Workspace", "nearest_project_dir"]

QUARANTINE_DIR = "quarantine"


class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def for_project(cls, project_dir: Path) -> Workspace:
        return cls(ProjectLayout(project_dir).workspace_dir)

    def task_dir(self, pipeline: str, task_id: str) -> Path:
        return self.root / pipeline / task_id

    def output_dir(self, pipeline: str, task_id: str, run_id: str) -> Path:
        return self.task_dir(pipeline, task_id) / run_id

    def staging(self, pipeline: str, task_id: str, run_id: str, attempt: int) -> Path:
        """Where one attempt writes its output. Not created here: `prepare_staging` does that
        when the attempt first writes, so tasks that write nothing (loads) touch no folder."""
        return self.task_dir(pipeline, task_id) / f".staging-{run_id}-{attempt}"

    @staticmethod
    def prepare_staging(path: Path) -> Path:
        """Create an empty staging folder, removing what a crashed attempt may have left."""
        remove_tree(path)
        path.mkdir(parents=True)
        return path

    def publish(self, staging: Path, pipeline: str, task_id: str, run_id: str) -> Path:
        """Make a staged output the task's output for `run_id`, atomically."""
        final = self.output_dir(pipeline, task_id, run_id)
        publish_directory(staging, final)
        latest = self.task_dir(pipeline, task_id) / "LATEST"
        # One temporary name per process and thread: runs that overlap in one process (the
        # scheduler's overlap: allow, a parallel backfill) publish at the same moment.
        temporary = latest.with_name(f".LATEST.{os.getpid()}.{threading.get_ident()}")
        temporary.write_text(run_id + "\n", encoding="utf-8")
        os.replace(temporary, latest)
        return final

    def sweep_staging(self, pipeline: str, run_id: str) -> None:
        """Remove every unpublished attempt of a run (one a dead process left behind)."""
        for staging in (self.root / pipeline).glob(f"*/.staging-{run_id}-*"):
            shutil.rmtree(staging, ignore_errors=True)

    def discard(self, staging: Path) -> None:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def table(task_id: str, run_id: str, directory: Path) -> InputTable:
        """A published output as an InputTable (schema and row count from Parquet metadata)."""
        files = tuple(sorted(directory.glob("part-*.parquet")))
        if not files:
            raise StateError(
                f"output of task {task_id!r} from run {run_id} is missing ({directory})",
                hint="the workspace was cleaned or moved; run the task again",
            )
        schema = pq.read_schema(files[0])
        rows = 0
        size = 0
        for path in files:
            rows += pq.ParquetFile(path).metadata.num_rows
            size += path.stat().st_size
        return InputTable(task_id, run_id, files, schema, rows, size)

    def quarantine_files(self, directory: Path) -> tuple[Path, ...]:
        return tuple(sorted((directory / QUARANTINE_DIR).glob("part-*.parquet")))

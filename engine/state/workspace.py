"""The workspace: every task's output as Parquet, one folder per task and run.

    <root>/<pipeline>/<task>/<run_id>/part-00000.parquet
    <root>/<pipeline>/<task>/<run_id>/quarantine/part-00000.parquet   (validate)
    <root>/<pipeline>/<task>/LATEST                                   (a run id)

`Workspace` is the interface the executor, the planner, retention and the notebook use. An
attempt writes its output into a *staging* folder, which is always on this machine's disk (tasks
write Parquet with local writers); publishing makes it the task's output for the run, so a reader
sees a complete output or none. LATEST names the newest published run for tools that do not read
the catalog. Published outputs are paths in the workspace's `filesystem` (pyarrow.fs).

`FileSystemWorkspace` keeps outputs in any pyarrow.fs filesystem. Publishing uploads the staged
folder beside its final place, then moves it there: a reader may find no output for an instant
when a run's output is replaced (a resumed task published again), never half of one. Object
stores, which move no folders at all, need a publish of their own (a marker written last) in the
implementation that adds them. InputTable reads its files from the local disk (Arrow, Polars and
DuckDB all open paths), so the tables of a workspace elsewhere carry its paths but are readable
only where those paths are.

`LocalWorkspace` is the project's folder `.arrowline/workspace/` and what `Workspace.for_project`
returns. Attempts stage inside the task's own folder, on the same filesystem as the outputs, so
publishing is one rename, and replacing an output published before is one atomic exchange
(renameat2, engine.core.files.publish_directory). Notebooks read outputs without locks while a
run writes.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from engine.core.errors import StateError
from engine.core.files import publish_directory, remove_tree
from engine.core.tables import InputTable
from engine.state.folders import STATE_DIR, WORKSPACE_DIR, nearest_project_dir

__all__ = [
    "LATEST",
    "QUARANTINE_DIR",
    "STATE_DIR",
    "FileSystemWorkspace",
    "LocalWorkspace",
    "PublishedOutput",
    "Workspace",
    "nearest_project_dir",
]

QUARANTINE_DIR = "quarantine"
LATEST = "LATEST"

Runner = TypeVar("Runner", bound=Callable[[Any], Any])
"""A task runner (engine.tasks.TaskRunner: a context to an outcome), which this layer does not
import."""


@dataclass(frozen=True)
class PublishedOutput:
    """One task's output of one run, as the workspace holds it."""

    task_id: str
    run_id: str
    path: Path
    """In the workspace's filesystem."""


class Workspace(ABC):
    """Task outputs, one folder per task and run: staged, published, read, removed."""

    root: Path
    """The workspace's top folder, in its filesystem."""
    filesystem: Any
    """The pyarrow.fs.FileSystem that holds the published outputs."""

    @classmethod
    def for_project(cls, project_dir: Path) -> Workspace:
        """The workspace of a project: its local folder `.arrowline/workspace/`."""
        return LocalWorkspace(project_dir / STATE_DIR / WORKSPACE_DIR)

    # -- where things are (the same layout everywhere) ---------------------------------------

    def task_dir(self, pipeline: str, task_id: str) -> Path:
        return self.root / pipeline / task_id

    def output_dir(self, pipeline: str, task_id: str, run_id: str) -> Path:
        """Where the task's output of `run_id` is once published."""
        return self.task_dir(pipeline, task_id) / run_id

    # -- staging: on this machine's disk -----------------------------------------------------

    @abstractmethod
    def staging(self, pipeline: str, task_id: str, run_id: str, attempt: int) -> Path:
        """Where one attempt writes its output, on the local disk. Not created here:
        `prepare_staging` does that when the attempt first writes, so tasks that write nothing
        (loads) touch no folder."""

    @staticmethod
    def prepare_staging(path: Path) -> Path:
        """Create an empty staging folder, removing what a crashed attempt may have left."""
        remove_tree(path)
        path.mkdir(parents=True)
        return path

    def discard(self, staging: Path) -> None:
        """Drop an attempt's unpublished output."""
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)

    def uploading(self, runner: Runner) -> Runner:
        """`runner` (a task runner: context -> outcome), followed, on the attempt's own thread,
        by whatever of publishing can happen before the run decides to publish: a workspace
        elsewhere uploads the output there, so the run's dispatcher only commits it. Here:
        nothing."""
        return runner

    @abstractmethod
    def sweep_staging(self, pipeline: str, run_id: str) -> None:
        """Remove every unpublished attempt of a run (one a dead process left behind)."""

    # -- publishing and reading --------------------------------------------------------------

    @abstractmethod
    def publish(self, staging: Path, pipeline: str, task_id: str, run_id: str) -> Path:
        """Make a staged output the task's output for `run_id` (replacing one published before
        for the same run) and the task's LATEST; the published folder. The staging folder is
        gone afterwards."""

    @abstractmethod
    def latest_run(self, pipeline: str, task_id: str) -> str | None:
        """The run LATEST names: the task's newest published output, or None."""

    @abstractmethod
    def table(self, task_id: str, run_id: str, directory: Path) -> InputTable:
        """A published output as an InputTable (schema and row count from Parquet metadata);
        StateError when it is missing."""

    def kept(self, pipeline: str, task_id: str, run_id: str) -> InputTable:
        """The task's published output of `run_id` (StateError when it is gone)."""
        return self.table(task_id, run_id, self.output_dir(pipeline, task_id, run_id))

    @abstractmethod
    def quarantine_files(self, directory: Path) -> tuple[Path, ...]:
        """The rows a validate task set aside in its output `directory`, as Parquet files."""

    def locator(self, directory: Path) -> str:
        """What the catalog records for a published output: a path, or an object store's URI
        (engine.state.objectstore.local_output reads either)."""
        return str(directory)

    def describe(self) -> str:
        """Where the workspace is, for messages."""
        return str(self.root)

    def holds(self, locator: str) -> bool:
        """Whether an output the catalog records by `locator` is in this workspace."""
        return "://" not in locator and Path(locator).is_relative_to(self.root)

    def dataset(self) -> tuple[str, str]:
        """The workspace's top folder as OpenLineage names a dataset: (namespace, name)."""
        return ("file", str(Path(self.root).resolve()))

    # -- retention ---------------------------------------------------------------------------

    @abstractmethod
    def outputs(self, pipeline: str) -> Iterator[PublishedOutput]:
        """Every published output of the pipeline (staging folders and LATEST are not)."""

    @abstractmethod
    def output_bytes(self, directory: Path) -> int:
        """The size of a published output, its quarantine included."""

    @abstractmethod
    def remove_output(self, directory: Path) -> None:
        """Remove a published output for good."""

    def prune_copies(self, pipeline: str) -> int:
        """Remove this host's copies of the pipeline's outputs that the workspace no longer
        holds (removed by another host's retention, or published again); how many. A local
        workspace keeps no copies."""
        return 0


_PART = "part-*.parquet"


def _unique() -> str:
    """A name part no other process or thread uses at the same moment (runs that overlap in one
    process publish at once: the scheduler's `overlap: allow`, a parallel backfill)."""
    return f"{os.getpid()}.{threading.get_ident()}"


class FileSystemWorkspace(Workspace):
    """Outputs under `root` in `filesystem`; attempts staged under the local folder `scratch`."""

    def __init__(self, filesystem: Any, root: Path, scratch: Path) -> None:
        self.filesystem = filesystem
        self.root = root
        self.scratch = scratch

    # -- staging -----------------------------------------------------------------------------

    def staging(self, pipeline: str, task_id: str, run_id: str, attempt: int) -> Path:
        return self.scratch / pipeline / task_id / f".staging-{run_id}-{attempt}"

    def sweep_staging(self, pipeline: str, run_id: str) -> None:
        for staging in (self.scratch / pipeline).glob(f"*/.staging-{run_id}-*"):
            shutil.rmtree(staging, ignore_errors=True)

    # -- publishing --------------------------------------------------------------------------

    def publish(self, staging: Path, pipeline: str, task_id: str, run_id: str) -> Path:
        final = self.output_dir(pipeline, task_id, run_id)
        self._publish_folder(staging, final)
        self._write_latest(pipeline, task_id, run_id)
        return final

    def _publish_folder(self, staging: Path, final: Path) -> None:
        """Upload `staging` beside `final`, then move it into place."""
        incoming = final.with_name(f".incoming-{final.name}-{_unique()}")
        self.filesystem.create_dir(str(incoming))
        pafs.copy_files(
            str(staging),
            str(incoming),
            source_filesystem=pafs.LocalFileSystem(),
            destination_filesystem=self.filesystem,
        )
        previous = final.with_name(f".previous-{final.name}-{_unique()}")
        replacing = self._is_dir(final)
        if replacing:
            self.filesystem.move(str(final), str(previous))
        self.filesystem.move(str(incoming), str(final))
        if replacing:
            self.filesystem.delete_dir(str(previous))
        remove_tree(staging)

    def _write_latest(self, pipeline: str, task_id: str, run_id: str) -> None:
        """LATEST replaced in one move, so a reader never finds it empty."""
        latest = self.task_dir(pipeline, task_id) / LATEST
        temporary = latest.with_name(f".{LATEST}.{_unique()}")
        with self.filesystem.open_output_stream(str(temporary)) as stream:
            stream.write((run_id + "\n").encode())
        self.filesystem.move(str(temporary), str(latest))

    def latest_run(self, pipeline: str, task_id: str) -> str | None:
        latest = self.task_dir(pipeline, task_id) / LATEST
        try:
            with self.filesystem.open_input_stream(str(latest)) as stream:
                return bytes(stream.read()).decode().strip() or None
        except FileNotFoundError:
            return None

    # -- reading -----------------------------------------------------------------------------

    def table(self, task_id: str, run_id: str, directory: Path) -> InputTable:
        files = self._parts(directory)
        if not files:
            raise StateError(
                f"output of task {task_id!r} from run {run_id} is missing ({directory})",
                hint="the workspace was cleaned or moved; run the task again",
            )
        schema = pq.read_schema(files[0].path, filesystem=self.filesystem)
        rows = 0
        for info in files:
            with self.filesystem.open_input_file(info.path) as handle:
                rows += pq.ParquetFile(handle).metadata.num_rows
        size = sum(info.size for info in files)
        return InputTable(task_id, run_id, tuple(Path(f.path) for f in files), schema, rows, size)

    def quarantine_files(self, directory: Path) -> tuple[Path, ...]:
        return tuple(Path(info.path) for info in self._parts(directory / QUARANTINE_DIR))

    def _parts(self, directory: Path) -> list[Any]:
        """The FileInfo of each `part-*.parquet` directly in `directory`, in name order."""
        found = self._listing(directory)
        parts = [i for i in found if i.is_file and fnmatch.fnmatch(i.base_name, _PART)]
        return sorted(parts, key=lambda info: info.path)

    # -- retention ---------------------------------------------------------------------------

    def outputs(self, pipeline: str) -> Iterator[PublishedOutput]:
        for task in self._folders(self.root / pipeline):
            for run in self._folders(Path(task.path)):
                yield PublishedOutput(task.base_name, run.base_name, Path(run.path))

    def _folders(self, directory: Path) -> list[Any]:
        """Folders directly in `directory`, in name order: not hidden ones (staging, an upload
        in progress), never one reached through a link."""
        found = [
            info
            for info in self._listing(directory)
            if info.type == pafs.FileType.Directory
            and not info.base_name.startswith(".")
            and not self._is_link(Path(info.path))
        ]
        return sorted(found, key=lambda info: info.base_name)

    def output_bytes(self, directory: Path) -> int:
        return sum(info.size or 0 for info in self._listing(directory, recursive=True))

    def remove_output(self, directory: Path) -> None:
        with contextlib.suppress(FileNotFoundError):  # removed meanwhile
            self.filesystem.delete_dir(str(directory))

    # -- what the filesystem says ------------------------------------------------------------

    def _listing(self, directory: Path, *, recursive: bool = False) -> list[Any]:
        """FileInfo of what `directory` holds; nothing when it does not exist (or went while
        being read)."""
        selector = pafs.FileSelector(str(directory), allow_not_found=True, recursive=recursive)
        try:
            return list(self.filesystem.get_file_info(selector))
        except FileNotFoundError:
            return []

    def _is_dir(self, path: Path) -> bool:
        return bool(self.filesystem.get_file_info(str(path)).type == pafs.FileType.Directory)

    def _is_link(self, path: Path) -> bool:
        """pyarrow.fs follows links and does not say; a filesystem that has them says here."""
        return False


class LocalWorkspace(FileSystemWorkspace):
    """Outputs and staging in one local folder: publishing is a rename."""

    def __init__(self, root: Path) -> None:
        super().__init__(pafs.LocalFileSystem(), root, scratch=root)

    def _publish_folder(self, staging: Path, final: Path) -> None:
        publish_directory(staging, final)

    def _is_link(self, path: Path) -> bool:
        # never followed: removing "an output" through a link would delete what it points at
        return path.is_symlink()

    def remove_output(self, directory: Path) -> None:
        remove_tree(directory)

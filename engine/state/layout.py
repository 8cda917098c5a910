"""Where a project keeps its state: one value that answers every "which folder, which catalog"
question, decided once per command, notebook or scheduler.

    <project>/                      the project folder: pipeline files, data, UDFs
    <project>/.arrowline/           the state folder
        catalog.db                  the embedded catalog (unless $ARROWLINE_CATALOG names another)
        workspace/                  task outputs (engine.state.workspace)
        locks/<pipeline>.lock       run locks (engine.state.locks)
        scheduler.lock              the active scheduler's lock
        logs/<pipeline>/<run>.jsonl each run's log lines (engine.execution.runlog)
        tmp/                        DuckDB's spill files

The project folder is, in this order: the one given (`--project-dir`, `engine.run(...,
project_dir=...)`), `$ARROWLINE_PROJECT_DIR`, the nearest folder at or above the working
directory that has a `.arrowline/`, else the working directory (where a first run creates it).
The catalog is the URI given, else `$ARROWLINE_CATALOG`, else the embedded file. The workspace
is the pipeline's `workspace:` setting, else `$ARROWLINE_WORKSPACE`, else `workspace/` below;
an object store's (`s3://bucket/prefix`) stages attempts in `workspace/` all the same.

The environment is read when the value is built and never again, so one command sees one
project however long it runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from engine.state.db import CATALOG_ENV, CatalogLocation, catalog_location
from engine.state.folders import CATALOG_FILE, STATE_DIR, WORKSPACE_DIR, nearest_project_dir
from engine.state.workspace import LocalWorkspace, Workspace

__all__ = ["PROJECT_ENV", "WORKSPACE_ENV", "FoundBy", "ProjectLayout"]

PROJECT_ENV = "ARROWLINE_PROJECT_DIR"
WORKSPACE_ENV = "ARROWLINE_WORKSPACE"

FoundBy = Literal["given", "environment", "nearest", "working directory"]
"""Which source named the project folder: messages say so when a catalog is missing."""


@dataclass(frozen=True)
class ProjectLayout:
    """One project's folders and catalog. Build it with `resolve` (the precedence above) or
    `at` (a folder known already); every path below is derived from `project_dir`."""

    project_dir: Path
    """Absolute."""
    catalog: CatalogLocation
    found_by: FoundBy = "given"
    workspace_uri: str | None = None
    """Where task outputs are published, when not the project's own folder: an object store's
    URI (`s3://bucket/prefix`)."""

    @classmethod
    def at(
        cls,
        project_dir: str | os.PathLike[str],
        *,
        catalog: str | None = None,
        environ: Mapping[str, str] | None = None,
        found_by: FoundBy = "given",
    ) -> ProjectLayout:
        """The layout of this folder: its catalog is `catalog`, else $ARROWLINE_CATALOG, else
        the embedded file."""
        env = os.environ if environ is None else environ
        folder = Path(project_dir).resolve()
        uri = catalog if catalog is not None else env.get(CATALOG_ENV) or None
        location = (
            CatalogLocation(folder / STATE_DIR / CATALOG_FILE)
            if uri is None
            else catalog_location(folder, uri)
        )
        return cls(folder, location, found_by, env.get(WORKSPACE_ENV) or None)

    @classmethod
    def resolve(
        cls,
        project_dir: str | os.PathLike[str] | None = None,
        *,
        start: str | os.PathLike[str] | None = None,
        catalog: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> ProjectLayout:
        """The project for a command: `project_dir` as given, else $ARROWLINE_PROJECT_DIR, else
        the nearest folder at or above `start` (default: the working directory) holding
        `.arrowline/`, else `start` itself."""
        env = os.environ if environ is None else environ
        if project_dir is not None:
            return cls.at(project_dir, catalog=catalog, environ=env)
        named = env.get(PROJECT_ENV)
        if named:
            return cls.at(named, catalog=catalog, environ=env, found_by="environment")
        here = Path(start if start is not None else Path.cwd()).resolve()
        found = cls.nearest(here)
        if found is not None:
            return cls.at(found, catalog=catalog, environ=env, found_by="nearest")
        return cls.at(here, catalog=catalog, environ=env, found_by="working directory")

    @classmethod
    def of(cls, project: ProjectLayout | str | os.PathLike[str]) -> ProjectLayout:
        """A layout given as such, or a project folder's (`at`): for the entry points that
        have always taken the folder (`Scheduler(path)`, `scheduler_running(path)`)."""
        return project if isinstance(project, ProjectLayout) else cls.at(project)

    @staticmethod
    def nearest(start: str | os.PathLike[str]) -> Path | None:
        """The nearest of `start` and its ancestors that holds `.arrowline/`, or None."""
        return nearest_project_dir(Path(start))

    @property
    def state_dir(self) -> Path:
        return self.project_dir / STATE_DIR

    @property
    def logs_dir(self) -> Path:
        """Each run's log lines, `<pipeline>/<run_id>.jsonl` (engine.execution.runlog)."""
        return self.state_dir / "logs"

    def run_log(self, pipeline: str, run_id: str) -> Path:
        """The log file of a run, named by values the catalog holds (a pipeline name and a
        run id), never by text from outside."""
        return self.logs_dir / pipeline / f"{run_id}.jsonl"

    @property
    def workspace_root(self) -> Path:
        return self.state_dir / WORKSPACE_DIR

    @property
    def locks_dir(self) -> Path:
        """Run locks, `<pipeline>.lock` (with the embedded catalog; a shared one locks in its
        database instead)."""
        return self.state_dir / "locks"

    @property
    def scheduler_lock(self) -> Path:
        """The active scheduler's lock. Not under locks/, where `<pipeline>.lock` files live:
        a pipeline may well be called `scheduler`."""
        return self.state_dir / "scheduler.lock"

    @property
    def temp_dir(self) -> Path:
        """Where DuckDB spills what does not fit in memory."""
        return self.state_dir / "tmp"

    def exists(self) -> bool:
        """Whether anything ran here yet (the state folder exists)."""
        return self.state_dir.is_dir()

    def with_workspace(self, setting: str | None) -> ProjectLayout:
        """This layout with a pipeline's `workspace:` setting, which wins over the
        environment's."""
        return self if setting is None else replace(self, workspace_uri=setting)

    def workspace(self) -> Workspace:
        """The workspace task outputs are published in; an object store's bucket is checked
        first (StateError when it does not answer)."""
        if self.workspace_uri is None:
            return LocalWorkspace(self.workspace_root)
        from engine.state.objectstore import ObjectStoreWorkspace

        return ObjectStoreWorkspace.open(self.workspace_uri, scratch=self.workspace_root)

    def catalog_at(self, uri: str | None) -> CatalogLocation:
        """Another catalog named relative to this project (`catalog copy`): a file, a URI, or
        None for this project's own."""
        return self.catalog if uri is None else catalog_location(self.project_dir, uri)

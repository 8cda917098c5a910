"""Where a project keeps its state: one value that names every path under `.arrowline/`.

    <project>/.arrowline/catalog.db             the embedded catalog (engine.state.db)
    <project>/.arrowline/workspace/             task outputs (engine.state.workspace)
    <project>/.arrowline/locks/<pipeline>.lock  run locks (engine.state.locks, which is given
                                                the state folder itself)
    <project>/.arrowline/scheduler.lock         the active scheduler's lock

The folder is also how a project is found from a folder inside it (`nearest_project_dir`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["CATALOG_FILE", "STATE_DIR", "ProjectLayout", "nearest_project_dir"]

STATE_DIR = ".arrowline"
CATALOG_FILE = "catalog.db"


@dataclass(frozen=True)
class ProjectLayout:
    """The state paths of the project in `project` (nothing is created or read here)."""

    project: Path

    @property
    def state_dir(self) -> Path:
        return self.project / STATE_DIR

    @property
    def catalog_file(self) -> Path:
        """The embedded catalog; unused when the catalog is in PostgreSQL."""
        return self.state_dir / CATALOG_FILE

    @property
    def workspace_dir(self) -> Path:
        return self.state_dir / "workspace"

    @property
    def scheduler_lock(self) -> Path:
        """Beside locks/, not in it: a pipeline may well be called `scheduler`."""
        return self.state_dir / "scheduler.lock"


def nearest_project_dir(start: Path) -> Path | None:
    """The nearest of `start` and its ancestors that holds `.arrowline/`, or None: how the
    CLI and the notebook API both find a project from a folder inside it."""
    here = start.resolve()
    for candidate in (here, *here.parents):
        if (candidate / STATE_DIR).is_dir():
            return candidate
    return None

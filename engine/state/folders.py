"""The names of the project's state folder and of what it holds, and how a project is found by
its state folder: the leaf that the catalog's location (engine.state.db), the workspace and the
project layout value (engine.state.layout, built on both) share."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CATALOG_FILE", "STATE_DIR", "WORKSPACE_DIR", "nearest_project_dir"]

STATE_DIR = ".arrowline"
CATALOG_FILE = "catalog.db"
WORKSPACE_DIR = "workspace"


def nearest_project_dir(start: Path) -> Path | None:
    """The nearest of `start` and its ancestors that holds `.arrowline/`, or None."""
    here = Path(start).resolve()
    for candidate in (here, *here.parents):
        if (candidate / STATE_DIR).is_dir():
            return candidate
    return None

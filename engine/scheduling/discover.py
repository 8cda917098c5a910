"""The pipelines of a project: its YAML files with `pipeline:` and `tasks:` and its SQL
projects (`arrowline_project.yml`), found by walking it (state, VCS and virtualenv folders
skipped), and runs requested of them from outside."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from loguru import logger

from engine.scheduling.cron import Schedule
from engine.spec.definition import Definition
from engine.spec.sqlproject import project_file
from engine.state.catalog import Catalog
from engine.state.layout import ProjectLayout
from engine.state.schedules import RequestRow

__all__ = ["Loaded", "discover_pipelines", "request_run"]

_SKIP_DIRS = {".arrowline", ".git", ".venv", "venv", "node_modules", "__pycache__"}
_SKIP_DIRS |= {"dbt_packages", "dbt_modules"}  # dbt's installed packages: not this project's


def _yaml_files(project: Path) -> list[Path]:
    """YAML files of a project, without descending into state, VCS or virtualenv folders."""
    found = []
    for folder, folders, files in os.walk(project):
        folders[:] = sorted(d for d in folders if d not in _SKIP_DIRS and not d.startswith("."))
        found += [Path(folder, f) for f in sorted(files) if f.endswith((".yaml", ".yml"))]
    return found


_NAMES: dict[Path, tuple[int, str | None]] = {}
"""path -> (mtime, pipeline name or None): a file is parsed again only when it changes."""


def _pipeline_name(path: Path) -> str | None:
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return None
    cached = _NAMES.get(path)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    try:
        # libyaml where PyYAML has it: a 5,000-task file is read in a tenth of the time
        data = yaml.load(path.read_bytes(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        data = None
    name = None
    if isinstance(data, dict) and isinstance(data.get("pipeline"), str) and "tasks" in data:
        name = data["pipeline"]
    elif isinstance(data, dict) and project_file(path.parent) == path:  # a SQL project
        found = data.get("name", data.get("pipeline"))
        name = found if isinstance(found, str) else None
    _NAMES[path] = (mtime, name)
    return name


def discover_pipelines(project: Path) -> dict[str, Path]:
    """Pipeline files of a project (YAML with `pipeline:` and `tasks:`), by pipeline name."""
    found: dict[str, Path] = {}
    for path in _yaml_files(project):
        name = _pipeline_name(path)
        if name is None:
            continue
        if name in found:
            logger.warning(
                "pipeline {} is defined twice: {} and {}; using the first", name, found[name], path
            )
            continue
        found[name] = path
    return found


def request_run(
    project: ProjectLayout | Path, name: str, params: dict[str, Any], source: str
) -> RequestRow:
    """Queue a run for the project's scheduler; works from any thread or process. The run is
    planned with its parameters first, so a value that is not of its type, or that a template
    refuses (a path that climbs out of its folder, a table no task produces), fails the request
    (ParameterError, PipelineInvalid) instead of a run later."""
    from engine.planning.build import build_plan
    from engine.spec.params import resolve_params
    from engine.tasks.checks import load_definition

    layout = ProjectLayout.of(project)
    path = discover_pipelines(layout.project_dir).get(name)
    if path is None:
        raise KeyError(name)
    definition = load_definition(path)
    resolve_params(definition.spec.parameters, params, {}, source=f"the {source} request")
    build_plan(definition, params=params)
    with Catalog(layout.catalog) as store:
        return store.request_run(name, str(path), params, source)


@dataclass
class Loaded:
    """A pipeline file as the scheduler last read it."""

    name: str
    path: Path
    mtime_ns: int
    definition: Definition | None
    schedule: Schedule | None
    problem: str | None = None

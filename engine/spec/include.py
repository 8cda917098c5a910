"""`project: FOLDER` in a YAML pipeline: a SQL project's models, seeds, sources, tests and
publishing loads become tasks of the pipeline, beside its own (a UDF or a load reading a model,
say), as `Pipeline.from_project` does for Python.

The project is composed as `arrowline run FOLDER` would compose it, then joined to the file:

- its tasks come after the file's own, their relative paths (model and seed files, DuckDB
  databases, UDF files, schema files) rewritten to start at the pipeline file's folder;
- its vars (and target) join the file's `params`, its macro files its `macros`, its
  `connections` and `pools` the file's; a name both declare is an error at the file's line;
- every problem of an included task is said at the project's file and line (the model's .sql
  file, the property file's test, the project file's own task).

The pipeline keeps its own name and settings; the project's other settings (defaults, schedule,
workspace) are not read, which is said.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from engine.core.files import shown_path
from engine.core.problems import Problem
from engine.core.yaml_source import Elsewhere, SourceMap, read_yaml_file

__all__ = ["include_project"]

_JOINED = ("tasks", "params", "macros", "connections", "pools")
_SKIPPED_QUIETLY = {"pipeline", "description"}
_PATHS = {"sql": ("file",), "extract": ("path",), "load": ("path",), "validate": ("schema",)}
"""The keys of a task's kind config that name a file relative to the pipeline's folder."""
_LOCAL = {
    "extract": ("from", {"files", "delta", "duckdb"}),
    "load": ("to", {"duckdb", "parquet", "delta"}),
}
"""The connectors whose `path` is a local file or folder (an http source's is a URL path)."""
_FILE_SECRET = re.compile(r"\$\{file:([^}]+)\}")


def include_project(
    data: dict[str, Any], source: SourceMap, file: Path
) -> tuple[dict[str, Any], list[Problem]]:
    """`data` (the pipeline file `file`, read with `source`) with the project its `project:`
    names joined in; `source` learns where each included value was written."""
    from engine.spec.sqlproject import PROJECT_FILE, compose, project_file

    problems: list[Problem] = []

    def problem(code: str, message: str, path: tuple[Any, ...], **extra: Any) -> None:
        line = source.line_of(path)
        problems.append(Problem(code, message, file=str(file), line=line, **extra))

    named = data.get("project")
    if named is None:  # `project: null`: none
        return data, problems
    if not isinstance(named, str) or not named.strip():
        problem("invalid-value", "project must be the path of a SQL project's folder", ("project",))
        return data, problems
    for key, kind in (("tasks", list), ("macros", list)):
        if data.get(key) is not None and not isinstance(data[key], kind):
            problem("invalid-value", f"{key} must be a list", (key,))
            return data, problems
    here = file.resolve().parent
    folder = (here / Path(named).expanduser()).resolve()
    found = project_file(folder)
    if found is None:
        problem(
            "file-missing",
            f"project: {named!r} holds no {PROJECT_FILE}",
            ("project",),
            hint=f"name the folder of a SQL project (the one holding {PROJECT_FILE})",
        )
        return data, problems
    included, their_source, read = read_yaml_file(found)
    problems += read
    if not isinstance(included, dict):
        return data, problems
    included, composed = compose(included, their_source, found)
    problems += composed
    if any(p.severity == "error" for p in problems):
        return data, problems

    rebase = _Rebase(found.parent, here)
    tasks = data.get("tasks")
    own: list[Any] = tasks if isinstance(tasks, list) else []
    offset = len(own)
    data["tasks"] = [*own, *(rebase.task(task) for task in included.get("tasks") or [])]
    shown = shown_path(found)
    for at, located in their_source.locations.items():
        if len(at) >= 2 and at[0] == "tasks" and isinstance(at[1], int):
            source.elsewhere[("tasks", offset + at[1], *at[2:])] = Elsewhere(shown, located.line)
    for at, where in their_source.elsewhere.items():
        if len(at) >= 2 and at[0] == "tasks" and isinstance(at[1], int):
            source.elsewhere[("tasks", offset + at[1], *at[2:])] = where
    if isinstance(included.get("connections"), dict):
        included["connections"] = {
            name: rebase.connection(value) for name, value in included["connections"].items()
        }
    for key in ("params", "connections", "pools"):
        theirs = included.get(key) or {}
        mine = data.get(key) or {}
        if not isinstance(theirs, dict) or not isinstance(mine, dict):
            continue
        for clash in sorted(set(theirs) & set(mine)):
            problem(
                "duplicate-key",
                f"{key}: {clash!r} is declared here and by the project {named!r}",
                (key, clash),
                hint="rename one of them",
            )
        if theirs:
            data[key] = {**theirs, **mine}
    macros = [rebase.path(m) for m in included.get("macros") or [] if isinstance(m, str)]
    if macros:
        data["macros"] = [*(data.get("macros") or []), *macros]
    ignored = sorted(k for k in included if k not in (*_JOINED, *_SKIPPED_QUIETLY))
    if ignored:
        problem(
            "not-supported",
            f"project {named!r}: its {', '.join(ignored)} are not read here (this pipeline's "
            "own settings apply)",
            ("project",),
            severity="warning",
        )
    return data, problems


class _Rebase:
    """Paths relative to the project's folder, made relative to the pipeline file's."""

    def __init__(self, project: Path, here: Path) -> None:
        self.project, self.here = project, here

    def path(self, value: str) -> str:
        if not value or "://" in value or "${" in value or Path(value).expanduser().is_absolute():
            return value
        return os.path.relpath(self.project / value, self.here)

    def paths(self, value: Any) -> Any:
        """A path, or a list of them (a files source's `path` may be one)."""
        if isinstance(value, list):
            return [self.path(v) if isinstance(v, str) else v for v in value]
        return self.path(value) if isinstance(value, str) else value

    def module(self, value: Any) -> Any:
        """`file.py:Name` (a UDF's function, a schema class) with its file rebased."""
        if not isinstance(value, str):
            return value
        module, colon, name = value.rpartition(":")
        return f"{self.path(module)}:{name}" if colon and module.endswith(".py") else value

    def connection(self, value: Any) -> Any:
        """A connection's relative paths: `${file:...}` secrets, an Iceberg warehouse and a
        relative SQLite catalog (`sqlite:///catalog.db`)."""
        if isinstance(value, dict):
            found = {k: self.connection(v) for k, v in value.items()}
            if isinstance(found.get("warehouse"), str):
                found["warehouse"] = self.path(found["warehouse"])
            uri = found.get("uri")
            if isinstance(uri, str) and uri.startswith("sqlite:///") and uri[10:11] != "/":
                found["uri"] = "sqlite:///" + self.path(uri[10:])
            return found
        if isinstance(value, str) and "${file:" in value:
            return _FILE_SECRET.sub(lambda m: f"${{file:{self.path(m.group(1))}}}", value)
        return value

    def task(self, task: Any) -> Any:
        if not isinstance(task, dict):
            return task
        task = dict(task)
        for kind, keys in _PATHS.items():
            config = task.get(kind)
            if not isinstance(config, dict):
                continue
            config = dict(config)
            for key in keys:
                if key not in config:
                    continue
                value = config[key]
                if kind == "validate" and isinstance(value, str):
                    local = value.endswith((".yaml", ".yml", ".json"))
                    config[key] = self.path(value) if local else self.module(value)
                elif kind in _LOCAL:
                    chooser, local_ones = _LOCAL[kind]
                    if config.get(chooser) in local_ones:
                        config[key] = self.paths(value)
                else:
                    config[key] = self.paths(value)
            task[kind] = config
        udf = task.get("udf")
        if isinstance(udf, dict):
            task["udf"] = {**udf, "function": self.module(udf.get("function"))}
        return task

"""A pipeline definition together with where it came from.

`PipelineSpec` is pure data. A `Definition` adds what messages and relative paths need: the file
it was read from, the directory relative paths start at, and the line of every value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from engine.core.problems import Problem
from engine.core.yaml_source import PathKey, SourceMap
from engine.spec.model import PipelineSpec

__all__ = ["HTML_VIEWS", "Definition"]

HTML_VIEWS: list[Callable[[Definition], str]] = []
"""How a notebook shows a definition (its task graph), registered by engine.api: drawing the
graph takes the planner, which this package sits below."""


@dataclass(frozen=True)
class Definition:
    spec: PipelineSpec
    base_dir: Path
    """Relative paths in the pipeline (data files, UDF files, schemas, sinks) start here."""
    file: str | None = None
    """The YAML file, or None for a pipeline built in Python."""
    source: SourceMap | None = None
    file_task_ids: tuple[str | None, ...] | None = None
    """Ids of every task in the file, in order, valid or not (None where a task has no id).
    Line lookups and duplicate checks use it, since `spec` holds only the valid tasks."""

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        where = self.file or f"Python, in {self.base_dir}"
        return f"<Definition {self.name} ({where}): {len(self.spec.tasks)} tasks>"

    def task_ids(self) -> tuple[str | None, ...]:
        """Task ids in file order (for a Python pipeline, in definition order)."""
        if self.file_task_ids is not None:
            return self.file_task_ids
        return tuple(task.id for task in self.spec.tasks)

    def _repr_html_(self) -> str | None:
        """A notebook's view: the task graph, when engine.api has registered how to draw it."""
        return HTML_VIEWS[0](self) if HTML_VIEWS else None

    def task_index(self, task_id: str) -> int | None:
        """Position of the first task with this id in the file."""
        return self._task_indexes.get(task_id)

    @cached_property
    def _task_indexes(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for index, candidate in enumerate(self.task_ids()):
            if candidate is not None:
                found.setdefault(candidate, index)
        for task in self.spec.tasks:  # a task written as one of several: the one written
            group = task.expanded_from
            if group is not None and group in found:
                found.setdefault(task.id, found[group])
        return found

    def known_ids(self) -> set[str]:
        """The ids a task can name: every task's, and every id the file gives (a task left
        out of `spec` for its errors), but not a task written as several, which is not one."""
        written = {i for i in self.task_ids() if i}
        return {t.id for t in self.spec.tasks} | (written - self._written_as_several)

    @cached_property
    def _written_as_several(self) -> set[str]:
        return {t.expanded_from for t in self.spec.tasks if t.expanded_from is not None}

    def expansion_clashes(self) -> list[Problem]:
        """Tasks a task written as several became (`TaskSpec.expanded_from`) whose ids are
        taken or too long, said at that task."""
        taken = {i for i in self.file_task_ids or () if i}
        taken |= {task.id for task in self.spec.tasks if task.expanded_from is None}
        found: list[Problem] = []
        for task in self.spec.tasks:
            group = task.expanded_from
            if group is not None and (task.id in taken or len(task.id) > 63):
                wrong = "is taken" if task.id in taken else "is too long (63 at most)"
                file, line = self.task_location(group)
                found.append(
                    Problem(
                        "duplicate-id",
                        f"task {group!r} stands for a task {task.id!r} (one of its tables), "
                        f"whose id {wrong}",
                        file=file,
                        line=line,
                        task_id=group,
                        hint="rename the task, or give that table a task of its own",
                    )
                )
            taken.add(task.id)
        return found

    def line_of(self, path: PathKey) -> int | None:
        return self.source.line_of(path) if self.source else None

    def task_line(self, task_id: str, *path: str | int) -> int | None:
        """Line of a key inside a task (its first line when the key is not found)."""
        index = self.task_index(task_id)
        if index is None or self.source is None:
            return None
        return self.source.line_of(("tasks", index, *path))

    def locate(self, path: PathKey) -> tuple[str | None, int | None]:
        """The file and line of a value: the pipeline file's, or the file a SQL project made it
        from (a model's .sql file, a test's property file)."""
        if self.source is None:
            return self.file, None
        return self.source.locate(path, self.file)

    def task_location(self, task_id: str, *path: str | int) -> tuple[str | None, int | None]:
        """`locate` of a key inside a task (its first line when the key is not found)."""
        index = self.task_index(task_id)
        if index is None:
            return self.file, None
        return self.locate(("tasks", index, *path))

    def content_line(self, path: PathKey) -> int | None:
        """First line of a value's text (a line below `|` for block scalars)."""
        if self.source is None:
            return None
        located = self.source.find(path)
        return located.content_line if located else None

    def resolve_path(self, path: str) -> Path:
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "file": self.file, "base_dir": str(self.base_dir)}

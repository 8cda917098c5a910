"""Pipeline files as the monitor reads them: each definition validated, each drawing made and
each file's masked text parsed once per change of the files it depends on."""

from __future__ import annotations

import os
from pathlib import Path
from threading import Lock
from typing import Any

from engine.api.pictures import task_boxes
from engine.api.project import Project
from engine.core.errors import ArrowlineError
from engine.core.secrets import mask_document
from engine.spec.definition import Definition
from engine.tasks.checks import load_definition
from engine.views.svg import TaskBox, dag_svg

__all__ = ["Definitions"]

SIGNATURE_FILES = 2_000
SIGNATURE_SUFFIXES = (".sql", ".py", ".yaml", ".yml", ".jinja", ".j2", ".json")


class Definitions:
    """Pipeline definitions by file, and the drawing of each as defined, read again only when
    the file changes (its size or mtime): validating and planning a 5,000-task pipeline takes
    seconds, a page must not pay that each time."""

    def __init__(self) -> None:
        self._lock = Lock()
        self._known: dict[Path, tuple[object, Definition | ArrowlineError]] = {}
        self._drawn: dict[Path, tuple[object, list[TaskBox], str | None]] = {}
        self._texts: dict[Path, tuple[tuple[int, int], str, Any]] = {}

    @staticmethod
    def _signature(path: Path) -> tuple[int, int]:
        stat = path.stat()
        return stat.st_mtime_ns, stat.st_size

    def get(self, path: Path) -> Definition:
        """The file's definition, read again when it or a file beside it that a definition
        reads changed (a SQL project's models, a sql task's file, a UDF module)."""
        signature = _folder_signature(path)
        with self._lock:
            known = self._known.get(path)
        if known is None or known[0] != signature:
            try:
                found: Definition | ArrowlineError = load_definition(path)
            except ArrowlineError as exc:
                found = exc
            known = (signature, found)
            with self._lock:
                self._known[path] = known
        if isinstance(known[1], ArrowlineError):
            raise known[1]
        return known[1]

    def _read(self, path: Path) -> tuple[str, Any]:
        """The file's text with its secrets masked, and its parsed YAML (None when it does not
        parse): read once per change of the file, for the page's definition and schedule."""
        import yaml

        signature = self._signature(path)
        with self._lock:
            known = self._texts.get(path)
        if known is None or known[0] != signature:
            text = path.read_text(encoding="utf-8")
            try:
                data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            except yaml.YAMLError:
                data = None
            masked = mask_document(text, data) if data is not None else mask_document(text)
            known = (signature, masked, data)
            with self._lock:
                self._texts[path] = known
        return known[1], known[2]

    def source(self, path: Path) -> str:
        """The file's text with its secrets masked (kept until the file changes)."""
        return self._read(path)[0]

    def schedule(self, path: Path) -> tuple[str, str] | None:
        """The file's `schedule:` and `timezone:` as written, for display: read from the YAML
        alone, so a page that shows them does not validate a 5,000-task pipeline first (an
        invalid file's schedule is shown as written; the run that uses it validates it)."""
        data = self._read(path)[1]
        if isinstance(data, dict) and isinstance(data.get("schedule"), str):
            return data["schedule"], str(data.get("timezone") or "UTC")
        return None

    def drawing(self, path: Path, project: Project) -> tuple[str, int]:
        """The SVG of the pipeline's DAG as its files define it now, and its number of tasks."""
        boxes = self._boxes(path, project)
        return self._svg(path, boxes), len(boxes)

    def edges(self, path: Path, project: Project) -> dict[str, tuple[str, ...]]:
        """Each task's upstream tasks, as the pipeline's files define them now."""
        return {box.id: box.upstream for box in self._boxes(path, project)}

    def _boxes(self, path: Path, project: Project) -> list[TaskBox]:
        signature = _folder_signature(path)
        with self._lock:
            drawn = self._drawn.get(path)
        if drawn is None or drawn[0] != signature:
            boxes = task_boxes(project, self.get(path))
            drawn = (signature, boxes, None)
            with self._lock:
                self._drawn[path] = drawn
        return drawn[1]

    def _svg(self, path: Path, boxes: list[TaskBox]) -> str:
        with self._lock:
            drawn = self._drawn.get(path)
        if drawn is not None and drawn[1] is boxes and drawn[2] is not None:
            return drawn[2]
        svg = dag_svg(boxes)
        with self._lock:
            if drawn is not None and drawn[1] is boxes:
                self._drawn[path] = (drawn[0], boxes, svg)
        return svg


def _folder_signature(path: Path) -> tuple[tuple[str, int, int], ...]:
    """The pipeline file and what a definition can read beside it (SQL files, macros, UDF
    modules, rule files), by name, mtime and size: an edge drawn from a `sql: {file: q.sql}`
    changes when q.sql does. Bounded: at most SIGNATURE_FILES files below the pipeline's folder,
    hidden folders and the state folder skipped."""
    found: list[tuple[str, int, int]] = []
    stat = path.stat()
    found.append((path.name, stat.st_mtime_ns, stat.st_size))
    for folder, subfolders, files in os.walk(path.parent):
        subfolders[:] = [d for d in subfolders if not d.startswith((".", "__"))]
        for name in files:
            if name.endswith(SIGNATURE_SUFFIXES) and len(found) < SIGNATURE_FILES:
                try:
                    info = os.stat(os.path.join(folder, name))
                except OSError:
                    continue
                found.append((os.path.join(folder, name), info.st_mtime_ns, info.st_size))
        if len(found) >= SIGNATURE_FILES:
            break
    return tuple(found)

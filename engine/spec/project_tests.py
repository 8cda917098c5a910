"""A SQL project's tests, in dbt's shapes: the tests property files give models (generic ones,
and the custom ones `{% test name(model, column_name) %}` blocks in macro files define), a
model's settings there (`config:`), and singular tests, the `.sql` files of `tests/` whose
rows are failures.

A test belongs to a model: it runs on the model's output before the output is published, so a
failure keeps the output back and skips what reads it. A singular test belongs to the model it
reads that reads the others it names (or, when none does, the first it names); the others
become inputs of that model, as a relationships test's parent does.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.core.problems import did_you_mean
from engine.spec.dbt_tests import NOT_STORED, property_tests

if TYPE_CHECKING:
    from engine.core.yaml_source import SourceMap

__all__ = ["ProjectTests", "custom_tests", "generic_test_files", "project_files"]

_CUSTOM = re.compile(r"{%-?\s*test\s+(\w+)\s*\(")
_SINGULAR_SETTINGS = {"severity", "warn_if", "error_if", "store_failures", "enabled", "tags"}


def generic_test_files(roots: list[Path]) -> list[Path]:
    """The files under the test folders that define custom generic tests (dbt keeps them in
    tests/generic/): macro files, not singular tests."""
    found = []
    for path in _sql_files(roots):
        try:
            if _CUSTOM.search(path.read_text(encoding="utf-8")):
                found.append(path)
        except (OSError, UnicodeDecodeError):
            continue  # said when the file is read as a test
    return found


def custom_tests(files: Iterable[Path]) -> set[str]:
    """The names of the custom generic tests the macro files define."""
    found: set[str] = set()
    for path in files:
        try:
            found |= set(_CUSTOM.findall(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError):
            continue  # said where the macro files are read
    return found


class ProjectTests:
    """The composer's part that reads tests (engine.spec.sqlproject._Composer)."""

    root: Path
    data: dict[str, Any]
    descriptions: dict[str, str]
    column_descriptions: dict[str, dict[str, str]]
    properties: dict[str, dict[str, Any]]
    custom_tests: set[str]
    model_tests: dict[str, list[dict[str, Any]]]
    tested_at: dict[str, list[tuple[Path, int | None]]]
    property_lines: dict[str, tuple[Path, dict[str, int | None]]]
    problem: Callable[..., None]
    """The composer's: one problem, at its file and line."""
    own_config: Callable[[Path, set[str]], dict[str, Any]]
    """The composer's: what a file's `{{ config(...) }}` sets."""

    def model_properties(
        self, model: dict[str, Any], path: Path, lines: SourceMap, at: tuple[Any, ...]
    ) -> None:
        """A model's description, settings (`config:`) and tests, in dbt's shapes."""
        from engine.spec.sqlproject import SETTINGS

        name = model["name"]
        if isinstance(model.get("description"), str):
            self.descriptions[name] = model["description"]
        for column in model.get("columns") or []:
            described = isinstance(column, dict) and isinstance(column.get("description"), str)
            if described and isinstance(column.get("name"), str):
                self.column_descriptions.setdefault(name, {})[column["name"]] = column[
                    "description"
                ]
        if model.get("versions") is not None:  # not silently dropped
            self.problem(
                "not-supported",
                f"model {name!r}: versions are not read; each version's file is a model of "
                "its own name (stg_orders_v2.sql), read by ref('stg_orders_v2')",
                severity="warning",
                file=str(path),
                line=lines.line_of((*at, "versions")),
            )
        config = model.get("config")
        if isinstance(config, dict):
            for key in sorted(k for k in config if k not in SETTINGS):
                self.problem(
                    "unknown-key",
                    f"model {name!r}: unknown setting {key!r} (known: "
                    f"{', '.join(sorted(SETTINGS))})",
                    file=str(path),
                    line=lines.line_of((*at, "config", key)),
                )
            self.properties[name] = {k: v for k, v in config.items() if k in SETTINGS}
            lines_of = {k: lines.line_of((*at, "config", k)) for k in self.properties[name]}
            self.property_lines[name] = (path, lines_of)
        tests, said = property_tests(model, lines, at, self.custom_tests)
        for made, line in tests:
            self.add_test(name, made, path, line)
        for problem in said:
            self.problem(
                problem.code,
                problem.message,
                severity=problem.severity,
                file=str(path),
                line=problem.line,
            )

    def sql_task_ids(self) -> set[str]:
        """The ids of the project file's own sql tasks, which take tests as models do."""
        tasks = self.data.get("tasks")
        listed = tasks if isinstance(tasks, list) else []
        return {t["id"] for t in listed if isinstance(t, dict) and "sql" in t and "id" in t}

    def add_test(self, model: str, test: dict[str, Any], path: Path, line: int | None) -> None:
        self.model_tests.setdefault(model, []).append(test)
        self.tested_at.setdefault(model, []).append((path, line))

    def singular_tests(self, roots: list[Path], models: list[Path], macros: set[Path]) -> None:
        """Each `.sql` file under `roots` (but the `macros` among them) as a test of the model
        it belongs to."""
        import jinja2

        from engine.spec.templates import ordered_refs

        reads: dict[str, list[str]] = {}
        for path in _sql_files(models):
            try:
                reads[path.stem] = ordered_refs(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, jinja2.TemplateError):
                continue  # said where the model is read
        for model, tests in self.model_tests.items():  # what its tests read, it reads
            parents = [t["relationships"]["to"] for t in tests if "relationships" in t]
            for kept in tests:
                with contextlib.suppress(jinja2.TemplateError):
                    parents += ordered_refs(kept["sql"]) if "sql" in kept else []
            reads[model] = [*reads.get(model, []), *parents]
        for path in _sql_files(roots):
            if path in macros:
                continue
            try:
                text = path.read_text(encoding="utf-8")
                named = ordered_refs(text)
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                self.problem("sql-file", f"cannot read test {path.name}: {reason}", file=str(path))
                continue
            except jinja2.TemplateSyntaxError as exc:
                self.problem(
                    "template",
                    f"template syntax error on line {exc.lineno}: {exc.message}",
                    file=str(path),
                    line=exc.lineno,
                )
                continue
            if not named:
                self.problem(
                    "invalid-value",
                    "a singular test reads the models it tests with {{ ref('model') }}; this "
                    "one names none, so no model would run it",
                    file=str(path),
                    line=1,
                )
                continue
            owners = [name for name in named if name in reads or name in self.sql_task_ids()]
            if not owners:
                known = sorted({*reads, *self.sql_task_ids()})
                self.problem(
                    "unknown-ref",
                    "a singular test runs with a model it reads, and "
                    f"{', '.join(repr(n) for n in named)} "
                    f"{'is' if len(named) == 1 else 'are'} no model of this project."
                    f"{did_you_mean(named[0], known)}",
                    file=str(path),
                    line=1,
                    hint="a seed or source keeps its rows as read: test the models that read it",
                )
                continue
            config = self.own_config(path, _SINGULAR_SETTINGS)
            if config.get("enabled", True) is False:
                continue
            test: dict[str, Any] = {
                "sql": text,
                "label": path.relative_to(self.root).as_posix(),
                **{k: str(v).lower() for k, v in config.items() if k in ("severity",)},
                **{k: str(v) for k, v in config.items() if k in ("warn_if", "error_if")},
            }
            if config.get("store_failures"):
                self.problem(
                    "not-supported", NOT_STORED, file=str(path), line=1, severity="warning"
                )
            owner = _owner(owners, reads)
            self.add_test(owner, test, path, 1)
            reads[owner] = [*reads.get(owner, []), *named]  # the next test sees this one's reads


def _owner(named: list[str], reads: dict[str, list[str]]) -> str:
    """The model a singular test belongs to: one that reads every other it names, else the
    first it names."""

    def upstream(model: str) -> set[str]:
        seen: set[str] = set()
        todo = list(reads.get(model, ()))
        while todo:
            found = todo.pop()
            if found not in seen:
                seen.add(found)
                todo += reads.get(found, ())
        return seen

    for candidate in named:
        if set(named) - {candidate} <= upstream(candidate):
            return candidate
    return named[0]


def project_files(roots: list[Path], pattern: str) -> Iterator[tuple[Path, Path]]:
    """(folder, file) of each file matching `pattern` under the folders, in name order;
    nothing hidden."""
    for root in roots:
        if root.is_dir():
            for path in sorted(root.rglob(pattern)):
                if path.is_file() and not any(part.startswith(".") for part in path.parts):
                    yield root, path


def _sql_files(roots: list[Path]) -> Iterator[Path]:
    return (path for _, path in project_files(roots, "*.sql"))

"""A folder of SQL models as a pipeline, in dbt's shapes.

`arrowline run shop/` (or `shop/arrowline_project.yml`) reads the project file, a pipeline file
that also takes dbt_project.yml's keys:

    name: shop                      # the pipeline's name (or `pipeline:`)
    vars: {start_date: 2024-01-01}  # parameters, read in models as var('start_date')
    model-paths: [models]           # default; every .sql file under them is a sql task
    seed-paths: [seeds]             # default; every .csv file under them is an extract
    macro-paths: [macros]           # default; every macro of their .sql files is callable
    test-paths: [tests]             # default; every .sql file is a singular test
    models:
      shop:                         # the project's name, then folders; `+` marks a setting
        +materialized: table        # table (kept), ephemeral (inlined into its readers) or
                                    # incremental (+unique_key: adds to its last output)
        staging: {+materialized: ephemeral, +tags: [staging]}
    seeds:
      shop:
        raw_orders: {+column_types: {order_date: date}}
    sources:                        # what models read with source('shop', 'orders')
      - name: shop
        tables:
          - {name: orders, extract: {from: files, path: data/orders.csv}}
    tasks: [...]                    # any other task (loads, validations), as in a pipeline

A model is named by its file (`models/staging/stg_orders.sql` is task `stg_orders`), reads
others with `{{ ref('stg_orders') }}` or by name, and may set its own `materialized` and `tags`
with `{{ config(...) }}`; a setting deeper in the folders wins over one above, and the model's
own over both (tags add up). A model's problems are reported at its file's line
(engine.tasks.checks), the project's at the project file's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from engine.core.files import shown_path
from engine.core.problems import Problem
from engine.core.yaml_source import Elsewhere, SourceMap
from engine.spec.dbt_profiles import DBT_PROJECT_FILE, profile_targets, unread_files
from engine.spec.dbt_sources import read_sources, source_extract
from engine.spec.project_hooks import HOOK_SETTINGS, ProjectHooks
from engine.spec.project_tests import (
    ProjectTests,
    custom_tests,
    generic_test_files,
    project_files,
)
from engine.spec.publish import publish_task
from engine.spec.seeds import SEED_SETTINGS, seed_tasks
from engine.spec.targets import project_target
from engine.spec.templates import config_call

__all__ = ["PROJECT_FILE", "PROJECT_FILES", "compose", "project_file"]

PROJECT_FILE = "arrowline_project.yml"
PROJECT_FILES = (PROJECT_FILE, DBT_PROJECT_FILE)
_IGNORED = {"version", "config-version", "profile", "require-dbt-version", "target-path"}
_IGNORED |= {"clean-targets", "log-path", "packages-install-path"}  # mean nothing here
_NOT_YET = {"snapshot-paths", "analysis-paths", "docs-paths"}
SETTINGS = {
    *("materialized", "tags", "enabled", "description"),
    *("unique_key", "incremental_strategy", "on_schema_change", "database", "schema"),
    *HOOK_SETTINGS,
}
"""What a model's folders, property file and `config()` may set."""
_MATERIALIZED = {
    "table": "table",
    "ephemeral": "ephemeral",
    "incremental": "table",
    "view": "table",
}
"""A model's materialization, as its task keeps its output (a view is a load's)."""
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def project_file(path: Path) -> Path | None:
    """The project file `path` names, or the folder's (arrowline's, else dbt's); or None."""
    if path.is_dir():
        found = [path / name for name in PROJECT_FILES if (path / name).is_file()]
        return found[0] if found else None
    return path if path.name in PROJECT_FILES else None


def compose(data: Any, source: SourceMap, file: Path) -> tuple[Any, list[Problem]]:
    """The pipeline the project file `data` (read from `file`) and its folders make: its own
    keys, with dbt's turned into the pipeline's name, parameters and tasks. The generated tasks
    come after the file's own, so the file's lines stay where they were."""
    if not isinstance(data, dict):
        return data, []
    read = profile_targets(data := dict(data), file, source) + unread_files(file)  # dbt's
    project = _Composer(data, source, file)
    return project.compose(), read + project.problems


class _Composer(ProjectTests, ProjectHooks):
    def __init__(self, data: dict[str, Any], source: SourceMap, file: Path) -> None:
        self.data, self.source, self.file, self.root = data, source, file, file.resolve().parent
        self.problems: list[Problem] = []
        self.nested: dict[str, tuple[str, ...]] = {}
        """`models:`/`seeds:` given under the project's name: that key, for lines."""
        self.reported: set[tuple[Any, ...]] = set()
        self.origins: dict[int, tuple[str, int]] = {}
        """The file each generated task comes from, by the task's identity."""
        self.model_tests: dict[str, list[dict[str, Any]]] = {}
        """The tests property files give each model, as a task's `tests:`."""
        self.tested_at: dict[str, list[tuple[Path, int | None]]] = {}
        """Where each of a model's tests is written, in `model_tests`' order (for messages)."""
        self.descriptions: dict[str, str] = {}
        self.column_descriptions: dict[str, dict[str, str]] = {}
        """What property files say of each model's columns."""
        self.properties: dict[str, dict[str, Any]] = {}
        """The settings a property file's `config:` gives each model."""
        self.custom_tests: set[str] = set()
        """The tests the macro files define (`{% test name(...) %}`)."""
        self.published: dict[str, str] = {}
        """The chosen target's database and schema: where models are published by default."""
        self.property_lines: dict[str, tuple[Path, dict[str, int | None]]] = {}
        self.hooks_at: dict[int, dict[tuple[str, int], tuple[Path, int | None]]] = {}

    def problem(self, code: str, message: str, path: tuple[Any, ...] = (), **extra: Any) -> None:
        where = extra.pop("file", None)
        line = extra.pop("line", None)
        if where is None:
            where, line = str(self.file), self.source.line_of(path) if path else None
        else:  # a model's or property file's: named as validation names files
            where = shown_path(Path(where))
        self.problems.append(Problem(code, message, file=where, line=line, **extra))

    def compose(self) -> dict[str, Any]:
        data = self.data
        for key in sorted(set(data) & _NOT_YET):
            self.problem(
                "not-supported",
                f"{key} is not read yet: only models and seeds become tasks",
                (key,),
                severity="warning",
            )
        for key in sorted(set(data) & {"on-run-start", "on-run-end"}):  # not silently dropped
            data.pop(key)
            message = f"{key} is not run yet; a model's pre-hook and post-hook are"
            self.problem("not-supported", message, (key,))
        if data.pop("project", None) is not None:
            self.problem(
                "invalid-value",
                "a SQL project cannot include another (project:); a pipeline file can",
                ("project",),
            )
        name = data.pop("name", None)
        if name is not None:
            if "pipeline" in data:
                self.problem("duplicate-key", "give the name once: `name:` or `pipeline:`")
            data["pipeline"] = name
        variables = data.pop("vars", None) or {}
        if not isinstance(variables, dict):
            self.problem("invalid-value", "vars must be a mapping of names to values", ("vars",))
            variables = {}
        name = data.get("pipeline")
        if isinstance(name, str) and isinstance(variables.get(name), dict):  # vars: {shop: ...}
            variables = {**{k: v for k, v in variables.items() if k != name}, **variables[name]}
        params = data.get("params") or {}
        for clash in sorted(set(variables) & set(params)):
            self.problem("duplicate-key", f"{clash!r} is both a var and a param", ("vars", clash))
        data["params"] = {**params, **variables}
        self.published, wrong = project_target(data)
        for code, message, at, severity in wrong:
            self.problem(code, message, at, severity=severity)
        models = self.settings_tree(data.pop("models", None), "models")
        seeds = self.settings_tree(data.pop("seeds", None), "seeds")
        model_paths = self.paths(data.pop("model-paths", ["models"]), "model-paths")
        macro_paths = self.paths(data.pop("macro-paths", ["macros"]), "macro-paths")
        test_paths = self.paths(data.pop("test-paths", ["tests"]), "test-paths")
        generic = generic_test_files(test_paths)  # dbt's tests/generic: {% test %} blocks
        macro_files = [*(path for _, path in project_files(macro_paths, "*.sql")), *generic]
        macros = [path.relative_to(self.root).as_posix() for path in macro_files]
        self.custom_tests = custom_tests(macro_files)
        data["macros"] = [*(data.get("macros") or []), *macros]
        seed_paths = self.paths(data.pop("seed-paths", ["seeds"]), "seed-paths")
        for key in _IGNORED:
            data.pop(key, None)
        for key in _NOT_YET:
            data.pop(key, None)
        tasks = data.get("tasks") or []
        sources = [*self.declared_sources(data.pop("sources", None), ("sources",), self.source)]
        for found_in, declared, lines in self.property_files(model_paths):
            sources += self.declared_sources(declared, ("sources",), lines, found_in)
        self.singular_tests(test_paths, model_paths, set(generic))
        made_here = [*self.models(model_paths, models), *self.seeds(seed_paths, seeds)]
        files = [*macro_files, *(p for _, p in project_files([*model_paths, *test_paths], "*.sql"))]
        generated = [*read_sources(sources, files, [data, made_here]), *made_here]
        self.unmatched(models, model_paths, SETTINGS, "models")
        made = {t.get("id") for t in generated}
        for name, [(where, line), *_] in sorted(self.tested_at.items()):
            if name not in made:
                self.problem(
                    "not-supported",
                    f"tests of {name!r} are not run: no model of that name",
                    severity="warning",
                    file=str(where),
                    line=line,
                )
        self.unmatched(seeds, seed_paths, SEED_SETTINGS, "seeds")
        data["tasks"] = self.unique([*(tasks if isinstance(tasks, list) else []), *generated])
        self.place(data["tasks"])
        if not data["tasks"]:
            folders = ", ".join(shown_path(p) for p in [*model_paths, *seed_paths]) or "none"
            self.problem(
                "no-tasks",
                f"the project makes no task: no .sql model or .csv seed under {folders}, and "
                "no `tasks:`",
                hint="put a model in models/, e.g. models/orders.sql, or start from "
                "`arrowline init`",
            )
        return data

    def place(self, tasks: list[Any]) -> None:
        """Where the generated tasks were written (a model's file, its tests' property file)."""
        for index, task in enumerate(tasks):
            made_by, at_line = self.origins.get(id(task), (None, 1))
            if made_by is None:
                continue
            self.source.elsewhere[("tasks", index)] = Elsewhere(
                shown_path(self.root / made_by), at_line
            )
            places = self.tested_at.get(task["id"], []) if "tests" in task else []
            for number, (where, line) in enumerate(places):
                self.source.elsewhere[("tasks", index, "tests", number)] = Elsewhere(
                    shown_path(where), line
                )
            for (when, number), (where, line) in self.hooks_at.get(id(task), {}).items():
                at = ("tasks", index, "hooks", when, number)
                self.source.elsewhere[at] = Elsewhere(shown_path(where), line)

    def paths(self, value: Any, key: str) -> list[Path]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem("invalid-value", f"{key} must be a list of folders", (key,))
            return []
        found = []
        for folder in value:
            path = (self.root / folder).resolve()
            if not path.is_relative_to(self.root.resolve()):
                self.problem("invalid-value", f"{key}: {folder!r} is outside the project", (key,))
                continue
            found.append(path)
        return found

    def settings_tree(self, value: Any, key: str) -> dict[str, Any]:
        """`models:`/`seeds:` below the project's name (dbt's shape), or given without it.
        Beside the project's name, dbt configures packages, which are not read: said."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem("invalid-value", f"{key} must be a mapping", (key,))
            return {}
        name = self.data.get("pipeline")
        if isinstance(name, str) and isinstance(value.get(name), dict):
            self.nested[key] = (name,)
            for other in sorted(k for k in value if k != name and isinstance(k, str)):
                if not other.startswith("+") and other not in SETTINGS | SEED_SETTINGS:
                    self.problem(
                        "not-supported",
                        f"{key}: {other!r} is not this project ({name!r}): packages are not "
                        "read, so its settings are not used",
                        (key, other),
                        severity="warning",
                    )
            return dict(value[name])
        return dict(value)

    def settings(
        self, tree: dict[str, Any], parts: tuple[str, ...], allowed: set[str], key: str
    ) -> dict[str, Any]:
        """The settings that apply to a file under the folders `parts` (its own name last),
        deeper ones winning: `+name`, or a known name without `+` (dbt takes both)."""
        found: dict[str, Any] = {}
        node: Any = tree
        for depth in range(len(parts) + 1):
            if not isinstance(node, dict):
                break
            for name, value in node.items():
                if not isinstance(name, str):
                    continue
                if name.startswith("+") or name in allowed:
                    setting = name.removeprefix("+")
                    if setting not in allowed:
                        self.once(
                            "unknown-key",
                            f"{key}: unknown setting {name!r} (known: "
                            f"{', '.join('+' + s for s in sorted(allowed))})",
                            (key, *self.nested.get(key, ()), *parts[:depth], name),
                        )
                        continue
                    found[setting] = value
            node = node.get(parts[depth]) if depth < len(parts) else None
        return found

    def once(self, code: str, message: str, where: tuple[Any, ...], **extra: Any) -> None:
        """A problem of the settings tree, said once however many files it covers."""
        if where not in self.reported:
            self.reported.add(where)
            self.problem(code, message, where, **extra)

    def unmatched(
        self, tree: dict[str, Any], roots: list[Path], allowed: set[str], key: str
    ) -> None:
        """A folder (or file) the settings name that is not there (a typo: applies to none)."""

        def walk(node: dict[str, Any], parts: tuple[str, ...]) -> None:
            for name, value in node.items():
                if not isinstance(name, str) or name.startswith("+") or name in allowed:
                    continue
                here = (*parts, name)
                exists = any(
                    (root.joinpath(*here)).is_dir() or any(root.joinpath(*parts).glob(f"{name}.*"))
                    for root in roots
                )
                if not exists:
                    self.once(
                        "unknown-key",
                        f"{key}: no folder or file {'/'.join(here)!r} under "
                        f"{', '.join(r.name for r in roots) or 'the project'}",
                        (key, *self.nested.get(key, ()), *here),
                        severity="warning",
                    )
                elif isinstance(value, dict):
                    walk(value, here)

        walk(tree, ())

    def property_files(self, roots: list[Path]) -> Iterator[tuple[Path, Any, SourceMap]]:
        """The `sources:` of each YAML file beside the models (dbt's property files); their
        `models:` give descriptions and the columns' tests (`self.model_tests`). A test this
        cannot run is said, so that nobody takes an untested model for a tested one."""
        from engine.core.yaml_source import read_yaml_file

        for pattern in ("*.yml", "*.yaml"):
            for _, path in project_files(roots, pattern):
                data, lines, problems = read_yaml_file(path)
                self.problems += problems
                if not isinstance(data, dict):
                    continue
                for index, model in enumerate(data.get("models") or []):
                    if isinstance(model, dict) and isinstance(model.get("name"), str):
                        self.model_properties(model, path, lines, ("models", index))
                if data.get("sources") is not None:
                    yield path, data["sources"], lines

    def declared_sources(
        self, value: Any, at: tuple[Any, ...], lines: SourceMap, file: Path | None = None
    ) -> list[dict[str, Any]]:
        """A task per source table (`source('s', 't')`), read as engine.spec.dbt_sources says."""
        from engine.spec.params import source_task

        where = str(file or self.file)

        def refuse(message: str, path: tuple[Any, ...]) -> None:
            self.problem("invalid-value", message, file=where, line=lines.line_of(path))

        if value is None:
            return []
        if not isinstance(value, list):
            refuse("sources must be a list of {name, tables}", at)
            return []
        tasks = []
        for index, source in enumerate(value):
            path = (*at, index)
            name = source.get("name") if isinstance(source, dict) else None
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                refuse("a source needs a name of letters, digits and _", path)
                continue
            for number, table in enumerate(source.get("tables") or []):
                table_path = (*path, "tables", number)
                table_name = table.get("name") if isinstance(table, dict) else None
                if not isinstance(table_name, str) or not _NAME.fullmatch(table_name):
                    refuse(
                        f"a table of source {name!r} needs a name of letters, digits and _",
                        table_path,
                    )
                    continue
                extract = source_extract(source, table, self.published, self.data)
                if isinstance(extract, str):  # what is wrong
                    refuse(extract, table_path)
                    continue
                unread = [k for k in ("freshness", "loaded_at_field") if k in table]
                tested = [c for c in table.get("columns") or [] if isinstance(c, dict)]
                if table.get("tests") or any(c.get("tests") or c.get("data_tests") for c in tested):
                    unread.append("tests (test the models that read it)")
                if unread:
                    self.problem(
                        "not-supported",
                        f"source table {name}.{table_name}: {', '.join(unread)} not run",
                        severity="warning",
                        file=where,
                        line=lines.line_of(table_path),
                    )
                task: dict[str, Any] = {"id": source_task(name, table_name), "extract": extract}
                task |= self.labels({"tags": ["source"], "description": table.get("description")})
                tasks.append(self.made(task, where, lines.line_of(table_path)))
        return tasks

    def configured(
        self, roots: list[Path], pattern: str, tree: dict[str, Any], allowed: set[str], key: str
    ) -> Iterator[tuple[Path, Path, dict[str, Any]]]:
        """Each file of a model or seed that can name a task (with the folder it is under),
        with the settings its folders give it."""
        what = key.removesuffix("s")
        for root, path in project_files(roots, pattern):
            if self.named_well(path, what):
                parts = (*path.relative_to(root).parent.parts, path.stem)
                yield root, path, self.settings(tree, parts, allowed, key)

    def models(self, roots: list[Path], tree: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for root, path, folders in self.configured(roots, "*.sql", tree, SETTINGS, "models"):
            own = self.own_config(path)
            listed = self.properties.get(path.stem, {})
            tags = [
                *_listed(folders.get("tags")),
                *_listed(listed.get("tags")),
                *_listed(own.get("tags")),
            ]
            given = folders | listed | own
            kept = given.get("materialized") != "ephemeral"  # the target's, where it keeps one
            target = self.published if kept and "database" not in given else {}
            settings = target | given | ({"tags": list(dict.fromkeys(tags))} if tags else {})
            if target.get("schema") and isinstance(given.get("schema"), str):
                settings["schema"] = f"{target['schema']}_{given['schema']}"  # as dbt names it
            if settings.get("enabled", True) is False:
                continue
            task: dict[str, Any] = {
                "id": path.stem,
                "sql": {"file": path.relative_to(self.root).as_posix()},
            }
            materialized = settings.get("materialized", "table")
            if materialized not in _MATERIALIZED:
                self.problem(
                    "not-supported",
                    f"model {path.stem!r}: materialized {materialized!r} is not supported "
                    "for models yet (table, view, ephemeral or incremental)",
                    file=str(path),
                    line=1,
                )
            elif materialized == "incremental":
                task["sql"]["incremental"] = {
                    "unique_key": _listed(settings.get("unique_key")),
                    **_strategy(settings.get("incremental_strategy")),
                    "on_schema_change": settings.get("on_schema_change", "ignore"),  # dbt's
                }
            elif materialized != "table":
                task["materialize"] = _MATERIALIZED[materialized]
            task |= self.labels(settings)
            if path.stem in self.model_tests:
                if task.get("materialize") == "ephemeral":
                    where, line = self.tested_at[path.stem][0]
                    self.problem(
                        "not-supported",
                        f"the tests of {path.stem!r} are not run: it is ephemeral and keeps "
                        "no output to test (test the models that read it)",
                        severity="warning",
                        file=str(where),
                        line=line,
                    )
                else:
                    task["tests"] = self.model_tests[path.stem]
            if path.stem in self.descriptions and "description" not in task:
                task["description"] = self.descriptions[path.stem]
            if path.stem in self.column_descriptions:
                task["column_descriptions"] = self.column_descriptions[path.stem]
            yield self.made(task, path.relative_to(self.root).as_posix())
            connections = self.data.get("connections")
            published, wrong = publish_task(
                path.stem, settings, connections if isinstance(connections, dict) else {}
            )
            if wrong is None and materialized == "view" and published is None:
                wrong = "a view lives in a database: give it +database (a DuckDB file or a "
                wrong += "postgres connection)"
            if wrong is not None:
                self.problem(
                    "invalid-value", f"model {path.stem!r}: {wrong}", file=str(path), line=1
                )
            parts = (*path.relative_to(root).parent.parts, path.stem)
            hooks = self.model_hooks(path, tree, parts, listed, own)
            self.attach_hooks(path.stem, hooks, published if wrong is None else {})
            if published is not None:
                yield self.made(published, path.relative_to(self.root).as_posix())

    def seeds(self, roots: list[Path], tree: dict[str, Any]) -> Iterator[dict[str, Any]]:
        connections = self.data.get("connections")
        for _, path, given in self.configured(roots, "*.csv", tree, SEED_SETTINGS, "seeds"):
            if given.get("enabled", True) is False:
                continue
            target = self.published if "database" not in given else {}
            settings = target | given
            if target.get("schema") and isinstance(given.get("schema"), str):
                settings["schema"] = f"{target['schema']}_{given['schema']}"  # as dbt names it
            tasks, wrong = seed_tasks(
                path,
                self.root,
                settings,
                connections if isinstance(connections, dict) else {},
                self.labels(settings),
            )
            if wrong is not None:
                self.problem("invalid-value", f"seed {path.stem!r}: {wrong}", file=str(path))
            for task in tasks:
                yield self.made(task, path.relative_to(self.root).as_posix())

    def named_well(self, path: Path, what: str) -> bool:
        """Whether a model's or seed's file name makes a task id (and a table name)."""
        if _NAME.fullmatch(path.stem):
            return True
        self.problem(
            "invalid-name",
            f"a {what} is named by its file, and {path.stem!r} is not a name a table can "
            "have (letters, digits and _, not starting with a digit)",
            file=str(path),
            line=1,
            hint=f"rename the file, e.g. to {re.sub(r'[^A-Za-z0-9_]', '_', path.stem)!r}"
            + ("" if not path.stem[:1].isdigit() else " with a letter first"),
        )
        return False

    def made(self, task: dict[str, Any], by: str, line: int | None = None) -> dict[str, Any]:
        """`task`, remembered as made by the file `by`, at `line` (for messages)."""
        self.origins[id(task)] = (by, line or 1)
        return task

    @staticmethod
    def labels(settings: Mapping[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        tags = settings.get("tags")
        if tags is not None:
            found["tags"] = [tags] if isinstance(tags, str) else tags
        if settings.get("description") is not None:
            found["description"] = settings["description"]
        return found

    def own_config(self, path: Path, allowed: set[str] = SETTINGS) -> dict[str, Any]:
        """What a model's (or a singular test's) `{{ config(materialized=..., tags=...) }}`
        sets (literal values); what is written wrong there is said at its line."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return {}  # reported where the statement is read
        found, wrong = config_call(text, allowed)
        for code, message, line in wrong:
            self.problem(code, message, file=str(path), line=line)
        return found

    def unique(self, tasks: list[Any]) -> list[Any]:
        """The tasks, a second one of an id made by a model or seed left out and reported with
        both files (validation would name only the id)."""
        kept: list[Any] = []
        seen: dict[str, str] = {}
        for index, task in enumerate(tasks):
            task_id = task.get("id") if isinstance(task, dict) else None
            if not isinstance(task_id, str):
                kept.append(task)
                continue
            made_by = self.origins.get(id(task), (None, 1))[0]
            where = made_by or f"{self.file.name} (task {index + 1})"
            folded = task_id.lower()  # DuckDB's names: Orders and orders are one table
            if folded in seen and made_by:
                self.problem(
                    "duplicate-id",
                    f"task id {task_id!r} is made twice (table names ignore case): by "
                    f"{seen[folded]} and by {where}",
                    hint="a model or seed is named by its file: rename one of the files",
                )
                continue
            seen.setdefault(folded, where)
            kept.append(task)
        return kept


def _strategy(value: Any) -> dict[str, Any]:
    """dbt's incremental_strategy as a sql task's: delete+insert replaces rows by key as merge
    does; anything else reaches validation as it is written."""
    if value is None:
        return {}
    return {"strategy": "merge" if value == "delete+insert" else value}


def _listed(value: Any) -> list[Any]:
    """Tags as a list (a single one may be given as text); dbt adds them up level by level."""
    if value is None:
        return []
    return (
        [value] if isinstance(value, str) else list(value) if isinstance(value, list) else [value]
    )

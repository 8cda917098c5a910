"""The checks of a task's templates: parameters that are not declared, tasks and sources that
`ref` and `source` name but nobody makes, undefined names, and parameters printed into SQL as
raw text (an injection risk). A statement in its own file (`sql: {file: ...}`, a SQL project's
model) has its problems named at that file's line.

A mixin of the validator in `engine.tasks.checks`, which gives it `add`, `spec`, `definition`,
`parameters`, `known_ids` and `context`; kept apart so the validator reads as the list of its
passes.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.core.config import sql_fields
from engine.core.errors import DefinitionError
from engine.core.files import shown_path
from engine.core.problems import did_you_mean
from engine.spec.dbt_functions import versioned_ref
from engine.spec.model import TaskKind, TaskSpec
from engine.spec.params import BUILTINS, Param, literal_prints, source_task
from engine.spec.resolve import template_texts
from engine.spec.templates import (
    ANY_PARAM,
    line_with,
    param_spellings,
    referenced_params,
    referenced_sources,
    referenced_tasks,
    template_syntax_error,
    undeclared_names,
    unfiltered_sql_params,
    versioned_refs,
)
from engine.tasks import kind_of

if TYPE_CHECKING:
    from engine.core.yaml_source import PathKey
    from engine.spec.definition import Definition
    from engine.spec.model import PipelineSpec
    from engine.tasks.base import CheckContext

_MACRO_NAME = re.compile(r"{%-?\s*macro\s+(\w+)")
"""A macro's name, found in a file that does not parse."""


class TemplateChecks:
    definition: Definition
    spec: PipelineSpec
    parameters: dict[str, Param]
    known_ids: set[str]
    context: CheckContext

    add: Callable[..., None]
    """The validator's: one problem, with its file:line."""

    task_path: Callable[[TaskSpec], PathKey]
    """The validator's: where a task is in the pipeline file."""

    macro_names: frozenset[str] = frozenset()
    """The macros the pipeline's macro files define (callable in every template)."""

    def macros(self, texts: tuple[tuple[str, str], ...]) -> None:
        """Each macro file checked as a template is (a parameter it prints raw too), at the
        file's line; the macros they define become names every template may use."""
        from jinja2 import nodes

        from engine.spec.params import template_environment

        names: set[str] = set()
        defined_in: dict[str, str] = {}
        for name, text in texts:
            where = shown_path(self.definition.base_dir / name)
            # another file's macros are names it may use: its undefined names are not checked
            self.text(text, None, (), where, names=False)
            if template_syntax_error(text) is None:
                ast = template_environment().parse(text)
                for macro in ast.find_all(nodes.Macro):
                    first = defined_in.setdefault(macro.name, name)
                    if first != name:  # dbt refuses two macros of one name too
                        self.add(
                            "duplicate-macro",
                            f"macro {macro.name!r} is defined in {first!r} and in {name!r}: "
                            "a template calling it could mean either",
                            None,
                            ("macros",),
                            file=where,
                            line=macro.lineno,
                            hint="rename one of them",
                        )
                names |= {macro.name for macro in ast.find_all(nodes.Macro)}
                self.printed_raw(text, file=where)
            else:  # said at its line: what calls its macros is not said again
                names |= set(_MACRO_NAME.findall(text))
        self.macro_names = frozenset(names)

    def templates(self, task: TaskSpec) -> bool:
        """Undefined parameters; returns False when rendering would fail on them."""
        ok = True
        try:
            texts = template_texts(task, self.definition)
        except DefinitionError as exc:
            self.add("sql-file", exc.message, task, ("sql",))
            return False
        sql = kind_of(task).sql_template(task, self.context)
        in_file = self.sql_file(task)
        tests = {t.sql: index for index, t in enumerate(task.tests) if t.sql is not None}
        hooks = _hook_keys(task)
        for text in texts:
            statement = sql if sql is not None and text == sql[0] else None  # its SQL
            # a statement in its own file: problems at that file's line, else the task's key
            place = in_file if statement else None
            test = tests.get(text) if statement is None else None
            where: PathKey = ("tests", test) if test is not None else (task.kind.value,)
            hook = hooks.get(text)
            ok = self.text(text, task, hook or where, place) and ok
            if statement and template_syntax_error(text) is None:  # as it renders
                self.raw_params(task, literal_prints(text), statement[1])
            elif hook and template_syntax_error(text) is None:  # rendered as SQL
                self.printed_raw(literal_prints(text), task, hook)
        config = task.config if task.kind is not TaskKind.SQL else None
        for key, text in sql_fields(config) if config is not None else ():
            if template_syntax_error(text) is None:  # checked as it renders (sql=True)
                self.printed_raw(literal_prints(text), task, (task.kind.value, key))
        return ok

    def text(
        self,
        text: str,
        task: TaskSpec | None,
        key: PathKey,
        place: str | None,
        *,
        names: bool = True,
    ) -> bool:
        """One template's problems: syntax, undefined parameters, refs and sources nobody
        makes, undefined names (`names`). `place`: the file the text is, whose lines problems
        then name; else they name the task's `key`. False when rendering would fail."""

        def add(code: str, message: str, hint: str, *needles: str) -> None:
            line = line_with(text, needles) if place else None
            self.add(code, message, task, key, hint=hint, file=place, line=line)

        syntax = template_syntax_error(text)
        if syntax is not None:  # the checks below need a template that parses
            number = re.search(r"on line (\d+)", syntax)
            line = int(number[1]) if number and place else None
            self.add("template", syntax, task, key, file=place, line=line)
            return False
        ok = True
        through_params = referenced_params(text, var=False)
        for name in sorted(referenced_params(text, required=True) - set(self.spec.params)):
            ok = False
            said = f"'params.{name}'" if name in through_params else f"var({name!r})"
            add(
                "undefined-parameter",
                f"template uses undefined parameter {said}."
                f"{did_you_mean(name, list(self.spec.params))}",
                "declare it under `params:` with a default",
                *param_spellings(name),
            )
        for name in sorted(referenced_tasks(text) - self.known_ids):
            ok = False
            add(
                "unknown-ref",
                f"ref({name!r}) names no task.{did_you_mean(name, sorted(self.known_ids))}",
                "ref() takes the id of a task of this pipeline",
                *(f"ref('{name}')", f'ref("{name}")'),
            )
        for model, version, line in versioned_refs(text):
            ok = False
            message, hint = versioned_ref(model, version, self.known_ids)
            at = line if place else None  # else the task's key, in the pipeline file
            self.add("not-supported", message, task, key, hint=hint, file=place, line=at)
        for source, table in sorted(referenced_sources(text)):
            if source_task(source, table) in self.known_ids:
                continue
            ok = False
            declared = sorted(i.replace("__", ".", 1) for i in self.known_ids if "__" in i)
            add(
                "unknown-source",
                f"source({source!r}, {table!r}) is not declared."
                f"{did_you_mean(f'{source}.{table}', declared)}",
                "declare it under `sources:` in the project file or a models/ .yml",
                *(f"source('{source}'", f'source("{source}"'),
            )
        for name in sorted(undeclared_names(text) - self.macro_names) if names else ():
            ok = False
            add(
                "undefined-variable",
                f"template uses undefined variable {name!r}."
                f"{did_you_mean(name, [*BUILTINS, *self.macro_names])}",
                f"templates see {', '.join(sorted(BUILTINS))}; parameters are params.NAME",
                name,
            )
        return ok

    def raw_params(self, task: TaskSpec, sql: str, path: PathKey) -> None:
        """Parameters printed into SQL without `sql_literal`/`sql_identifier` must be numbers
        or booleans (checked as such wherever a value comes from). Any other value, text, a
        list, a date, null, could change the statement, so the pipeline is refused."""
        in_file = self.sql_file(task) if task.kind is TaskKind.SQL else None
        self.printed_raw(sql, task, path, file=in_file)

    def printed_raw(
        self,
        sql: str,
        task: TaskSpec | None = None,
        path: PathKey = (),
        *,
        file: str | None = None,
    ) -> None:
        """`raw_params` of one text: a statement, or a macro file (`file`: where it is)."""
        risky = unfiltered_sql_params(sql)
        if ANY_PARAM in risky:
            risky = (risky - {ANY_PARAM}) | set(self.parameters)
        for name in sorted(risky):
            param = self.parameters.get(name)
            if param is None or param.prints_as_sql:
                continue  # an undefined one is reported as such
            self.add(
                "unquoted-parameter",
                f"parameter 'params.{name}' ({param.expected}) is printed into SQL as raw text, "
                "where a value could change the statement",
                task,
                path,
                hint=f"write {{{{ params.{name} | sql_literal }}}} for a value, or "
                "| sql_identifier for a name; only int, float and bool parameters (not null) "
                "may be printed as they are",
                file=file,
                line=line_with(sql, param_spellings(name)) if file else None,
            )

    def _declared(self, task: TaskSpec) -> TaskSpec:
        """The task as the pipeline declares it (a resolved one has its `file:` read)."""
        with contextlib.suppress(KeyError):
            return self.spec.task(task.id)
        return task

    def sql_file(self, task: TaskSpec) -> str | None:
        """The file a sql task's statement is in, as problems name it; None when inline."""
        sql = self._declared(task).sql
        if sql is None or not sql.file:
            return None
        return shown_path(self.definition.base_dir / sql.file)

    def sql_line(self, task: TaskSpec, line_in_statement: int | None) -> int | None:
        """The line of a statement's line: in the pipeline file, or in the sql task's `file:`
        (whose problems `sql_file` names)."""
        if self.sql_file(task) is not None:
            return line_in_statement
        base = self.task_path(task)
        start = self.definition.content_line(
            (*base, "sql", "query")
        ) or self.definition.content_line((*base, "sql"))
        if start is None or line_in_statement is None:
            return start
        return start + line_in_statement - 1


def _hook_keys(task: TaskSpec) -> dict[str, PathKey]:
    """Where each of a load's hooks is, by its text (problems name its file and line)."""
    if task.hooks is None:
        return {}
    return {
        text: ("hooks", when, index)
        for when in ("pre", "post")
        for index, text in enumerate(getattr(task.hooks, when))
    }

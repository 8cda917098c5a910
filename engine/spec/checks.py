"""Validate a pipeline and report every problem at once, each with file:line and task id.

Two passes. The structural pass (`engine.spec.shape`) checks the shape against the model, one task
at a time so a broken task does not hide problems in the others. The semantic pass, here,
checks what the shape cannot: duplicate ids, unknown and self dependencies, cycles with their
path, templates that use undefined parameters, SQL that does not parse or reads tables no task
produces, UDFs and schemas that cannot be imported, cron expressions and time zones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.core.errors import ArrowlineError, DefinitionError, ParameterError, PipelineInvalid
from engine.core.graph import find_cycles
from engine.core.problems import Problem, did_you_mean
from engine.core.yaml_source import PathKey, read_yaml_file
from engine.spec.definition import Definition
from engine.spec.model import TaskKind, TaskSpec
from engine.spec.params import (
    ANY_PARAM,
    BUILTINS,
    RenderContext,
    referenced_params,
    template_syntax_error,
    undeclared_names,
    unfiltered_sql_params,
)
from engine.spec.resolve import ResolvedTask, resolve_task, sql_text, template_texts
from engine.spec.shape import structural_check

__all__ = [
    "check_definition",
    "check_file",
    "check_tables",
    "load_definition",
    "structural_check",
    "validate_definition",
]


class _Checker:
    def __init__(self, definition: Definition, params: Mapping[str, Any] | None = None) -> None:
        self.definition = definition
        self.spec = definition.spec
        self.parameters = definition.spec.parameters
        self.params = self.spec.param_defaults if params is None else params
        """The parameter values templates are rendered with: the defaults, or a run's."""
        self.file = definition.file or "<python>"
        self.known_ids = {i for i in definition.task_ids() if i} | {t.id for t in self.spec.tasks}
        self.problems: list[Problem] = []

    def add(
        self,
        code: str,
        message: str,
        task: TaskSpec | None = None,
        path: PathKey = (),
        *,
        line: int | None = None,
        severity: str = "error",
        hint: str | None = None,
    ) -> None:
        if line is None:
            if task is not None:
                line = self.definition.task_line(task.id, *path)
            else:
                line = self.definition.line_of(path)
        self.problems.append(
            Problem(
                code,
                message,
                severity="warning" if severity == "warning" else "error",
                file=self.file,
                line=line,
                task_id=task.id if task else None,
                hint=hint,
            )
        )

    def task_path(self, task: TaskSpec) -> PathKey:
        index = self.definition.task_index(task.id)
        return ("tasks", index if index is not None else -1)

    # -- checks --------------------------------------------------------------------------------

    def duplicates(self) -> None:
        first: dict[str, int] = {}
        for index, task_id in enumerate(self.definition.task_ids()):
            if task_id is None:
                continue
            if task_id in first:
                earlier = self.definition.line_of(("tasks", first[task_id], "id"))
                self.problems.append(
                    Problem(
                        "duplicate-id",
                        f"task id {task_id!r} is used more than once"
                        + (f" (first at line {earlier})" if earlier else ""),
                        file=self.file,
                        line=self.definition.line_of(("tasks", index, "id")),
                        task_id=task_id,
                        hint="task ids name outputs and tables, so each must be unique",
                    )
                )
            else:
                first[task_id] = index

    def schedule(self) -> None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        if self.spec.schedule is not None:
            from croniter import croniter

            fields = self.spec.schedule.split()
            if len(fields) not in (5, 6) or not croniter.is_valid(self.spec.schedule):
                self.add(
                    "invalid-cron",
                    f"schedule {self.spec.schedule!r} is not a valid cron expression",
                    path=("schedule",),
                    hint="five fields (minute hour day-of-month month day-of-week), or six with "
                    "seconds last, e.g. '0 2 * * *' for 02:00 every day",
                )
            elif not _ever_fires(self.spec.schedule):
                self.add(
                    "invalid-cron",
                    f"schedule {self.spec.schedule!r} never fires (no such date in any year)",
                    path=("schedule",),
                    hint="check the day of month against the month, e.g. February has no 30th",
                )
        try:
            ZoneInfo(self.spec.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            self.add(
                "invalid-timezone",
                f"unknown time zone {self.spec.timezone!r}",
                path=("timezone",),
                hint="use an IANA name such as 'UTC', 'Europe/Berlin' or 'America/New_York'",
            )
        incremental = {task.id for task in self.spec.tasks if task.incremental is not None}
        if self.spec.overlap == "allow" and incremental:
            self.add(
                "overlap-allow-incremental",
                "overlap: allow runs the pipeline twice at once, but its incremental extracts "
                f"({', '.join(sorted(incremental))}) keep one watermark that both would move",
                path=("overlap",),
                hint="use overlap: queue (or skip), or drop `incremental` from those extracts",
            )
        for task_id in self.spec.freshness:
            if task_id not in incremental:
                self.add(
                    "freshness-not-incremental",
                    f"freshness names {task_id!r}, which is not an incremental extract",
                    path=("freshness", task_id),
                    hint=f"incremental extracts: {', '.join(sorted(incremental)) or 'none'}",
                )
        for position, trigger in enumerate(self.spec.trigger):
            if trigger.after == self.spec.name:
                self.add(
                    "trigger-self",
                    "trigger: after names this pipeline itself; each run would start the next",
                    path=("trigger", position, "after"),
                )

    def dependencies(self, task: TaskSpec) -> None:
        for position, dep in enumerate(task.depends_on):
            if dep == task.id:
                self.add(
                    "self-dependency", "the task depends on itself", task, ("depends_on", position)
                )
            elif dep not in self.known_ids:
                self.add(
                    "unknown-dependency",
                    f"depends on unknown task {dep!r}."
                    f"{did_you_mean(dep, self.known_ids - {task.id})}",
                    task,
                    ("depends_on", position),
                )

    def templates(self, task: TaskSpec) -> bool:
        """Undefined parameters; returns False when rendering would fail on them."""
        ok = True
        try:
            texts = template_texts(task, self.definition)
        except DefinitionError as exc:
            self.add("sql-file", exc.message, task, ("sql",))
            return False
        kind_key = task.kind.value
        for text in texts:
            syntax = template_syntax_error(text)
            if syntax is not None:  # the checks below need a template that parses
                ok = False
                self.add("template", syntax, task, (kind_key,))
                continue
            for name in sorted(referenced_params(text) - set(self.spec.params)):
                ok = False
                self.add(
                    "undefined-parameter",
                    f"template uses undefined parameter 'params.{name}'."
                    f"{did_you_mean(name, list(self.spec.params))}",
                    task,
                    (kind_key,),
                    hint="declare it under `params:` with a default",
                )
            for name in sorted(undeclared_names(text)):
                ok = False
                self.add(
                    "undefined-variable",
                    f"template uses undefined variable {name!r}."
                    f"{did_you_mean(name, list(BUILTINS))}",
                    task,
                    (kind_key,),
                    hint=f"templates see {', '.join(sorted(BUILTINS))}; parameters are params.NAME",
                )
            if task.kind is TaskKind.SQL:
                self.raw_params(task, text, (kind_key,))
            elif text == self.source_query(task):  # a source's own SQL
                self.raw_params(task, text, (kind_key, "query"))
        return ok

    def source_query(self, task: TaskSpec) -> str | None:
        """The SQL an extract's source runs, if it runs one (its connector says)."""
        from connectors.base import NamingContext

        owner, config = task.connector, task.extract
        if owner is None or config is None:
            return None
        return owner.place(config, NamingContext(self.definition.base_dir)).query

    def raw_params(self, task: TaskSpec, sql: str, path: PathKey) -> None:
        """Parameters printed into SQL without `sql_literal`/`sql_identifier` must be numbers
        or booleans (checked as such wherever a value comes from). Any other value, text, a
        list, a date, null, could change the statement, so the pipeline is refused."""
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
            )

    def sql_line(self, task: TaskSpec, line_in_statement: int | None) -> int | None:
        base = self.task_path(task)
        start = self.definition.content_line(
            (*base, "sql", "query")
        ) or self.definition.content_line((*base, "sql"))
        if start is None or line_in_statement is None or task.sql is None or task.sql.file:
            return start
        return start + line_in_statement - 1

    def resolve(self, task: TaskSpec, context: RenderContext) -> ResolvedTask | None:
        try:
            return resolve_task(task, context, self.definition)
        except ParameterError as exc:
            self.add("template", exc.message, task, (task.kind.value,))
        except DefinitionError as exc:
            from lineage.tables import SqlSyntaxError, parse_select

            if task.kind is TaskKind.SQL:
                from engine.spec.resolve import render_task

                try:
                    rendered = render_task(task, context, self.definition)
                    assert rendered.sql is not None
                    assert rendered.sql.query is not None
                    parsed = parse_select(rendered.sql.query)
                except ArrowlineError:
                    parsed = None
                if isinstance(parsed, SqlSyntaxError):
                    where = (
                        f" (line {parsed.line}, column {parsed.column} of the statement)"
                        if parsed.line
                        else ""
                    )
                    self.add(
                        "sql-parse",
                        f"SQL does not parse: {parsed.message}{where}",
                        task,
                        line=self.sql_line(task, parsed.line),
                    )
                    return None
            self.add("definition", exc.message, task, (task.kind.value,))
        return None

    def lenient_tables(
        self, task: TaskSpec, context: RenderContext, kinds: Mapping[str, TaskKind]
    ) -> None:
        """Check the tables of SQL whose template has undefined names, when it still parses."""
        from engine.spec.params import render_lenient
        from lineage.tables import SqlSyntaxError, parse_select, referenced_tables

        if task.kind is not TaskKind.SQL:
            return
        try:
            text = render_lenient(sql_text(task, self.definition), context, task.id)
        except DefinitionError:
            return
        parsed = parse_select(text) if text is not None else None
        if parsed is None or isinstance(parsed, SqlSyntaxError):
            return  # probably caused by the undefined value, which is already reported
        tables = tuple(referenced_tables(parsed))
        inputs = tuple(ref.name for ref in tables if ref.qualified == ref.name)
        self.inputs(ResolvedTask(task, inputs, inputs, text, tables), kinds)

    def inputs(self, resolved: ResolvedTask, kinds: Mapping[str, TaskKind]) -> None:
        task = resolved.spec
        if task.kind is TaskKind.SQL:
            for ref in resolved.tables:
                unknown = ref.qualified != ref.name or ref.name not in self.known_ids
                if ref.name == task.id and not unknown:
                    self.add(
                        "self-dependency",
                        "the SQL reads the task's own output",
                        task,
                        line=self.sql_line(task, ref.line),
                    )
                elif unknown:
                    self.add(
                        "unknown-table",
                        f"SQL reads table {ref.qualified!r}{self.named_by(task, ref.qualified)}, "
                        "which no task of this pipeline produces."
                        f"{did_you_mean(ref.name, self.known_ids - {task.id})}",
                        task,
                        line=self.sql_line(task, ref.line),
                        hint="a sql task reads upstream outputs by task id, e.g. "
                        "`select * from raw_orders`",
                    )
                elif kinds.get(ref.name) is TaskKind.LOAD:
                    self.add(
                        "load-has-no-output",
                        f"SQL reads {ref.name!r}, a load task, which produces no table",
                        task,
                        line=self.sql_line(task, ref.line),
                    )
            return
        name = task.input
        if name is None:
            return
        path = (task.kind.value, "input")
        if name == task.id:
            self.add("self-dependency", "the task reads its own output", task, path)
        elif name not in self.known_ids:
            self.add(
                "unknown-input",
                f"input {name!r}{self.named_by(task, name)} is not a task of this pipeline."
                f"{did_you_mean(name, self.known_ids - {task.id})}",
                task,
                path,
            )
        elif kinds.get(name) is TaskKind.LOAD:
            self.add(
                "load-has-no-output",
                f"input {name!r} is a load task, which produces no table",
                task,
                path,
            )

    def named_by(self, task: TaskSpec, name: str) -> str:
        """` (the value of parameter 'p')` when a parameter the task's templates read holds
        `name`: a table or input chosen by a parameter is wrong in the value, not the file."""
        try:
            texts = template_texts(self.spec.task(task.id), self.definition)
        except (DefinitionError, KeyError):
            return ""
        used = set().union(*(referenced_params(text) for text in texts))
        names = sorted(p for p in used if self.params.get(p) == name)
        return f" (the value of parameter {names[0]!r})" if names else ""

    def user_code(self, task: TaskSpec) -> None:
        base_dir = self.definition.base_dir
        if task.udf is not None:
            from transforms.udf import load_udf

            try:
                load_udf(task.udf, base_dir)
            except ArrowlineError as exc:
                self.add("udf-import", exc.message, task, ("udf", "function"), hint=exc.hint)
        if task.validate_ is not None:
            from transforms.validate import load_schema

            try:
                load_schema(task.validate_.schema_, base_dir)
            except ArrowlineError as exc:
                self.add("schema", exc.message, task, ("validate", "schema"), hint=exc.hint)

    def connection_of(self, task: TaskSpec) -> None:
        """A source or sink names a connection of the pipeline, of the kind it needs."""
        from connectors.registry import connector_of

        name = task.connection
        if name is None:
            return
        path = (task.kind.value, "connection")
        connections = self.spec.connections
        if name not in connections:
            known = ", ".join(sorted(connections)) or "none are declared"
            self.add(
                "unknown-connection",
                f"connection {name!r} is not declared.{did_you_mean(name, list(connections))}",
                task,
                path,
                hint=f"declare it under `connections:` (declared: {known})",
            )
            return
        needed, given = task.connector, connector_of(connections[name])
        if needed is not given:
            assert needed is not None
            self.add(
                "connection-kind",
                f"connection {name!r} is {given.name}, but this task needs a {needed.name} "
                "connection",
                task,
                path,
            )

    def secrets(self) -> None:
        """References to unset environment variables: a warning, since CI validates without
        production secrets, but a run would fail."""
        import os

        from engine.core.secrets import find_references

        for name, spec in self.spec.connections.items():
            for key, value in spec.model_dump().items():
                if not isinstance(value, str):
                    continue
                for kind, ref in find_references(value):
                    if kind == "env" and ref not in os.environ:
                        self.add(
                            "unset-secret",
                            f"connection {name!r}: {key} uses ${{env:{ref}}}, "
                            "which is not set here",
                            path=("connections", name, key),
                            severity="warning",
                        )

    def sources(self, task: TaskSpec) -> None:
        """What the source's connector can find wrong before a run (files not there yet...)."""
        owner, config = task.connector, task.extract
        if owner is None or config is None:
            return
        for found in owner.check(config, self.definition.base_dir):
            self.add(
                found.code,
                found.message,
                task,
                ("extract", *found.key),
                severity=found.severity,
                hint=found.hint,
            )

    def cycles(self, upstream: Mapping[str, tuple[str, ...]]) -> None:
        for path in find_cycles(upstream):
            if len(path) == 2:
                continue  # a self-loop, already reported as self-dependency
            first = self.spec.task(path[0])
            self.add(
                "cycle",
                f"dependency cycle: {' -> '.join(path)}",
                first,
                hint="'a -> b' means b reads or depends on a; remove one edge of the cycle",
            )

    def run(self) -> list[Problem]:
        self.duplicates()
        self.schedule()
        self.secrets()
        context = RenderContext(
            pipeline=self.spec.name,
            params=self.spec.param_defaults,
            run_id="validation",
            logical_date=datetime.now(UTC),
        )
        kinds = {task.id: task.kind for task in self.spec.tasks}
        upstream: dict[str, tuple[str, ...]] = {}
        for task in self.spec.tasks:
            self.dependencies(task)
            self.connection_of(task)
            self.user_code(task)
            self.sources(task)
            if not self.templates(task):
                self.lenient_tables(task, context, kinds)
                continue
            resolved = self.resolve(task, context)
            if resolved is None:
                continue
            self.inputs(resolved, kinds)
            upstream.setdefault(task.id, tuple(dep for dep in resolved.upstream if dep in kinds))
        self.cycles(upstream)
        return self.problems


def check_definition(definition: Definition) -> list[Problem]:
    """Semantic problems of a structurally valid definition."""
    return _Checker(definition).run()


def check_tables(
    definition: Definition, resolved: Iterable[ResolvedTask], params: Mapping[str, Any]
) -> list[Problem]:
    """Inputs and SQL tables of tasks rendered with a run's parameters: a parameter can name a
    table (`| sql_identifier`) that no task produces, which validating the defaults cannot see."""
    checker = _Checker(definition, params)
    kinds = {task.id: task.kind for task in definition.spec.tasks}
    for task in resolved:
        checker.inputs(task, kinds)
    return checker.problems


def _ever_fires(expression: str) -> bool:
    """croniter gives up after a bounded search: an expression like '0 0 30 2 *' has no date."""
    from croniter import CroniterBadDateError, croniter

    try:
        croniter(expression, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        return False
    return True


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.file or "", p.line or 0, p.severity != "error"))


def check_file(
    path: str | Path, base_dir: Path | None = None
) -> tuple[Definition | None, list[Problem]]:
    """Read and validate a pipeline file. The definition is None when the shape is broken."""
    path = Path(path)
    data, source, problems = read_yaml_file(path)
    if data is None and problems:
        return None, problems
    spec, shape_problems, ids = structural_check(data, source, str(path))
    problems = problems + shape_problems
    if spec is None:
        return None, _sorted(problems)
    definition = Definition(spec, base_dir or path.resolve().parent, str(path), source, ids)
    problems += check_definition(definition)
    complete = not any(p.severity == "error" for p in problems)
    return (definition if complete else None), _sorted(problems)


def load_definition(path: str | Path, base_dir: Path | None = None) -> Definition:
    """Read and validate a pipeline file; raise PipelineInvalid listing every problem."""
    definition, problems = check_file(path, base_dir)
    if definition is None:
        raise PipelineInvalid(problems)
    return definition


def validate_definition(definition: Definition) -> list[Problem]:
    """Validate a definition built in Python; raise PipelineInvalid when there are errors."""
    problems = _sorted(check_definition(definition))
    if any(p.severity == "error" for p in problems):
        raise PipelineInvalid(problems)
    return problems

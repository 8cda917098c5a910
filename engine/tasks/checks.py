"""Validate a pipeline and report every problem at once, each with file:line and task id.

Two passes. The structural pass (`engine.spec.shape`) checks the shape against the model, one task
at a time so a broken task does not hide problems in the others. The semantic pass, here, checks
what the shape cannot: duplicate ids, unknown and self dependencies, cycles with their path,
templates that use undefined parameters, SQL that does not parse or reads tables no task produces,
UDFs and schemas that cannot be imported, cron expressions and time zones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.core.errors import DefinitionError, ParameterError, PipelineInvalid
from engine.core.files import shown_path
from engine.core.graph import find_cycles
from engine.core.problems import Problem, did_you_mean
from engine.core.tables import THIS
from engine.core.yaml_source import PathKey, read_yaml_file
from engine.spec.definition import Definition
from engine.spec.model import TaskKind, TaskSpec
from engine.spec.params import RenderContext
from engine.spec.resolve import macro_texts, template_texts
from engine.spec.shape import structural_check
from engine.spec.templates import referenced_params, referenced_tasks
from engine.tasks import kind_of
from engine.tasks.base import CheckContext
from engine.tasks.output_checks import OutputChecks
from engine.tasks.resolve import ResolvedTask, resolve_task
from engine.tasks.sql import SqlDoesNotParse, statement_inputs
from engine.tasks.template_checks import TemplateChecks

__all__ = [
    "check_definition",
    "check_file",
    "check_tables",
    "load_definition",
    "structural_check",
    "validate_definition",
]


class _Checker(OutputChecks, TemplateChecks):
    def __init__(self, definition: Definition, params: Mapping[str, Any] | None = None) -> None:
        self.definition = definition
        self.spec = definition.spec
        self.parameters = definition.spec.parameters
        self.params = self.spec.param_defaults if params is None else params
        """The parameter values templates are rendered with: the defaults, or a run's."""
        self.file = definition.file or "<python>"
        self.known_ids = definition.known_ids()
        self.problems: list[Problem] = []
        self.context = CheckContext(definition, frozenset(self.known_ids))

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
        file: str | None = None,
    ) -> None:
        """`file`: where the problem is, when not in the pipeline file (a sql task's `file:`;
        `line` is then that file's)."""
        if line is None and file is None:
            if task is not None:
                file, line = self.definition.task_location(task.id, *path)
            else:
                file, line = self.definition.locate(path)
        self.problems.append(
            Problem(
                code,
                message,
                severity="warning" if severity == "warning" else "error",
                file=file or self.file,
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
        self.problems += self.definition.expansion_clashes()

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
        growing = [t.id for t in self.spec.tasks if t.sql is not None and t.sql.incremental]
        if self.spec.overlap == "allow" and growing:
            self.add(
                "overlap-allow-incremental",
                "overlap: allow runs the pipeline twice at once, but its incremental sql tasks "
                f"({', '.join(sorted(growing))}) add to one output that both would replace",
                path=("overlap",),
                hint="use overlap: queue (or skip)",
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
        if task.part_of is not None and task.part_of not in self.known_ids - {task.id}:
            self.add(
                "unknown-dependency",
                f"part_of names no other task: {task.part_of!r}."
                f"{did_you_mean(task.part_of, self.known_ids - {task.id})}",
                task,
                ("part_of",),
            )

    def model_tests(self, task: TaskSpec) -> None:
        """Tests check a kept sql output; one refers to a task that is there."""
        if not task.tests:
            return
        if task.kind is not TaskKind.SQL or task.materialize == "ephemeral":
            self.add(
                "tests-not-here",
                "tests: run on the output a sql task keeps"
                + (" (an ephemeral one keeps none)" if task.kind is TaskKind.SQL else "")
                + "; check other rows with a validate task",
                task,
                ("tests",),
            )
        for index, test in enumerate(task.tests):
            found = test.relationships
            if found is not None and found.to not in self.known_ids:
                self.add(
                    "unknown-dependency",
                    f"test {test.name} refers to unknown task {found.to!r}."
                    f"{did_you_mean(found.to, sorted(self.known_ids))}",
                    task,
                    ("tests", index),
                )

    def workspace_connection(self) -> None:
        """`workspace: s3://...?connection=NAME` names a declared `kind: s3` connection."""
        from connectors.registry import connector_of
        from engine.core.s3 import workspace_connection

        name = workspace_connection(self.spec.workspace)
        connections = self.spec.connections
        if name is None:
            return
        if name not in connections:
            self.add(
                "unknown-connection",
                f"the workspace is read with connection {name!r}, which is not declared."
                f"{did_you_mean(name, list(connections))}",
                path=("workspace",),
                hint="declare it under `connections:` as {kind: s3, endpoint: ..., "
                "access_key_id: ..., secret_access_key: ...}",
            )
        elif not (owner := connector_of(connections[name])).capabilities.object_store:
            self.add(
                "connection-kind",
                f"the workspace is read with connection {name!r}, which is {owner.name}: a "
                "workspace needs a `kind: s3` connection",
                path=("workspace",),
            )

    def pool(self, task: TaskSpec) -> None:
        if task.pool is None:
            return
        slots = self.spec.pools.get(task.pool)
        if slots is None:
            declared = ", ".join(sorted(self.spec.pools)) or "none"
            self.add(
                "unknown-pool",
                f"pool {task.pool!r} is not declared in the pipeline's `pools` (declared: "
                f"{declared}).{did_you_mean(task.pool, list(self.spec.pools))}",
                task,
                ("pool",),
                hint="declare it with its slots, e.g. pools: {" + task.pool + ": 4}",
            )
        elif task.pool_slots > slots:
            self.add(
                "pool-too-small",
                f"the task takes {task.pool_slots} slots of pool {task.pool!r}, which has "
                f"{slots}: it could never start",
                task,
                ("pool_slots",),
            )

    def resolve(self, task: TaskSpec, context: RenderContext) -> ResolvedTask | None:
        try:
            return resolve_task(task, context, self.definition)
        except ParameterError as exc:
            if exc.place is None:
                self.add("template", exc.message, task, (task.kind.value,))
            else:  # in a macro: said once, at the macro's line, whichever tasks call it
                file = shown_path(self.definition.base_dir / exc.place[0])
                line = exc.place[1]
                if not any(p.file == file and p.line == line for p in self.problems):
                    self.add("template", exc.message, task, line=line, file=file)
        except SqlDoesNotParse as exc:
            error = exc.error
            where = (
                f" (line {error.line}, column {error.column} of the statement)"
                if error.line
                else ""
            )
            self.add(
                "sql-parse",
                f"SQL does not parse: {error.message}{where}",
                task,
                line=self.sql_line(task, error.line),
                file=self.sql_file(task),
            )
        except DefinitionError as exc:
            self.add("definition", exc.message, task, (task.kind.value,))
        return None

    def lenient_tables(self, task: TaskSpec, context: RenderContext) -> None:
        """The tables a statement reads when its template has undefined names (as NULL)."""
        from engine.spec.params import render_lenient

        kind = kind_of(task)
        sql = kind.sql_template(task, self.context)
        if sql is None or not kind.reads_sql_tables:
            return
        text = render_lenient(sql[0], context, task.id)
        if text is None:
            return
        try:
            reads = statement_inputs(task.id, text)
        except SqlDoesNotParse:
            return  # probably caused by the undefined value, which is already reported
        said = referenced_tasks(sql[0]) - self.known_ids  # a wrong ref(), said at its line
        tables = tuple(ref for ref in reads.tables if ref.name not in said)
        self.inputs(ResolvedTask(task, reads.tasks, reads.tasks, text, tables))

    def inputs(
        self, resolved: ResolvedTask, seen: ResolvedTask | None = None, *, first_run: bool = True
    ) -> None:
        """The tables a rendered task reads; `seen`: the same task rendered otherwise, whose
        tables were checked already (an incremental task's first and later runs);
        `first_run`: rendered as an incremental task's first run is, with no kept output."""
        task = resolved.spec
        if resolved.tables:  # a statement's tables, each at its line
            # by name: a line moves when the other rendering drops an {% if %} block's lines
            said = {t.qualified for t in seen.tables} if seen is not None else set()
            for ref in resolved.tables:
                if ref.qualified in said:
                    continue
                if ref.name == THIS and ref.qualified == THIS:
                    self.this(task, ref.line, first_run=first_run)
                    continue
                unknown = ref.qualified != ref.name or ref.name not in self.known_ids
                if ref.name == task.id and not unknown:
                    self.add(
                        "self-dependency",
                        "the SQL reads the task's own output",
                        task,
                        line=self.sql_line(task, ref.line),
                        file=self.sql_file(task),
                    )
                elif unknown:
                    self.add(
                        "unknown-table",
                        f"SQL reads table {ref.qualified!r}{self.named_by(task, ref.qualified)}, "
                        "which no task of this pipeline produces."
                        f"{did_you_mean(ref.name, self.known_ids - {task.id})}",
                        task,
                        line=self.sql_line(task, ref.line),
                        file=self.sql_file(task),
                        hint="a sql task reads upstream outputs by task id, e.g. "
                        "`select * from raw_orders`",
                    )
                elif not self.has_output(ref.name):
                    self.add(
                        "load-has-no-output",
                        f"SQL reads {ref.name!r}, a load task, which produces no table",
                        task,
                        line=self.sql_line(task, ref.line),
                        file=self.sql_file(task),
                    )
                elif (producer := self.ephemeral(ref.name)) and not self.ephemeral_reads(
                    producer, task
                ):
                    self.ephemeral_read(producer, task, (), self.sql_line(task, ref.line))
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
        elif not self.has_output(name):
            self.add(
                "load-has-no-output",
                f"input {name!r} is a load task, which produces no table",
                task,
                path,
            )
        elif (producer := self.ephemeral(name)) and not self.ephemeral_reads(producer, task):
            self.ephemeral_read(producer, task, path)

    def has_output(self, task_id: str) -> bool:
        """Whether a known task produces a table others can read (a load does not)."""
        task = self.spec.tasks_by_id.get(task_id)
        return task is None or kind_of(task).produces_table

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

    def kind_checks(self, task: TaskSpec) -> None:
        """What the task's kind finds wrong: code that cannot be imported, a connection that
        is not declared or of the wrong kind, what a source's connector sees before a run."""
        for found in kind_of(task).check(task, self.context):
            self.add(
                found.code, found.message, task, found.key, severity=found.severity, hint=found.hint
            )

    def secrets(self) -> None:
        """Unset environment variables of a connection a task uses (not a dbt profile's other
        targets'): a warning (CI validates without secrets)."""
        import os

        from engine.core.secrets import find_references

        used = {task.connection for task in self.spec.tasks}
        for name, spec in ((n, s) for n, s in self.spec.connections.items() if n in used):
            for key, value in spec.model_dump().items():
                for kind, ref in find_references(value) if isinstance(value, str) else ():
                    if kind == "env" and ref not in os.environ:
                        self.add(
                            "unset-secret",
                            f"connection {name!r}: {key} uses ${{env:{ref}}}, not set here",
                            path=("connections", name, key),
                            severity="warning",
                        )

    def cycles(self, upstream: Mapping[str, tuple[str, ...]]) -> None:
        for path in find_cycles(upstream):
            if len(path) == 2:
                continue  # a self-loop, already reported as self-dependency
            first = self.spec.task(path[0])
            tested = [
                f"the test {test.name} of {task_id}"
                for task_id in dict.fromkeys(path)
                for test in self.spec.task(task_id).tests
                if test.relationships is not None and test.relationships.to in path
            ]
            self.add(
                "cycle",
                f"dependency cycle: {' -> '.join(path)}"
                + (f" (made by {', '.join(tested)})" if tested else ""),
                first,
                hint="a relationships test makes its task read the task it refers to; dbt "
                "runs such a test after both, here it runs before its own output is "
                "published: move it to the other side, or drop it"
                if tested
                else "'a -> b' means b reads or depends on a; remove one edge of the cycle",
            )

    def run(self) -> list[Problem]:
        self.duplicates()
        self.schedule()
        self.secrets()
        self.workspace_connection()
        try:
            macros = macro_texts(self.definition)
        except DefinitionError as exc:
            self.add("macro-file", exc.message, path=("macros",))
            macros = ()
        self.macros(macros)
        context = RenderContext(
            pipeline=self.spec.name,
            params=self.spec.param_defaults,
            run_id="validation",
            logical_date=datetime.now(UTC),
            macros=macros,
            quiet=True,
        )
        ids = {task.id for task in self.spec.tasks}
        upstream: dict[str, tuple[str, ...]] = {}
        reads: dict[str, tuple[str, ...]] = {}
        for task in self.spec.tasks:
            self.dependencies(task)
            self.pool(task)
            self.model_tests(task)
            self.kind_checks(task)
            self.materialization(task)
            self.cache(task)
            if not self.templates(task):
                self.lenient_tables(task, context)
                continue
            resolved = self.resolve(task, context)
            if resolved is None:
                continue
            self.inputs(resolved)
            self.test_tables(resolved.spec)
            if task.sql is not None and task.sql.incremental is not None:  # its later runs too
                adding = replace(context, incremental=frozenset({task.id}))
                if (later := self.resolve(task, adding)) is not None:
                    self.inputs(later, seen=resolved, first_run=False)
            upstream.setdefault(task.id, tuple(dep for dep in resolved.upstream if dep in ids))
            reads[task.id] = resolved.inputs
        self.cycles(upstream)
        self.ephemeral_waits(upstream)
        self.ephemeral_pools(upstream)
        self.shared_targets(upstream)
        if len(reads) == len(self.spec.tasks):  # all known: one that did not render reads more
            self.ephemeral_unread(reads)
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
    for task in resolved:
        checker.inputs(task, first_run=False)  # validation said what a first run reads
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
    from engine.spec.sqlproject import compose, project_file
    from engine.spec.targets import unknown_target

    path = Path(path)
    project = project_file(path)
    path = project or path
    data, source, problems = read_yaml_file(path)
    if data is None and problems:
        return None, problems
    if project is not None:  # a folder of SQL models
        data, found = compose(data, source, path)
        problems = problems + found
        if any(p.code == "no-tasks" for p in found):
            return None, _sorted(problems)  # nothing else to say of an empty project
    elif isinstance(data, dict) and "project" in data:  # a pipeline with a project's models
        from engine.spec.include import include_project

        data, found = include_project(data, source, path)
        problems = problems + found
        if any(p.severity == "error" for p in found):
            return None, _sorted(problems)
    elif (unknown := unknown_target()) is not None and unknown[3] == "error":
        problems = [*problems, Problem(unknown[0], unknown[1], file=str(path))]
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

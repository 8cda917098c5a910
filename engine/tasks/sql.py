"""sql: a DuckDB SELECT over upstream outputs, which it reads by task id as table names."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import pyarrow as pa

from connectors.base import Unknown
from engine.core.errors import DefinitionError
from engine.core.problems import Finding
from engine.core.tables import OUTPUT_FILE, QUARANTINE_DIR, THIS, InlineQuery, InputTable
from engine.spec.model import TaskKind, TaskSpec
from engine.spec.resolve import sql_text
from engine.tasks.base import (
    CheckContext,
    Inputs,
    RenderedTask,
    SchemaContext,
    TaskContext,
    TaskOutcome,
    dry_run,
)
from engine.tasks.sql_errors import said_in_file
from lineage.graph import LineageGraph, add_edges, add_unresolved, sql_columns
from lineage.tables import SqlSyntaxError, parse_select, referenced_tables

__all__ = ["KIND", "Sql", "SqlDoesNotParse", "statement_inputs"]


class SqlDoesNotParse(DefinitionError):
    """A sql task's rendered statement is not SQL; `line`/`column` are within the statement."""

    def __init__(self, task_id: str, error: SqlSyntaxError) -> None:
        where = f" (line {error.line} of the statement)" if error.line else ""
        super().__init__(f"SQL of task {task_id!r} does not parse: {error.message}{where}")
        self.error = error


def statement_inputs(task_id: str, statement: str) -> Inputs:
    """The tables a statement reads: unqualified names are the tasks whose outputs it reads."""
    parsed = parse_select(statement)
    if isinstance(parsed, SqlSyntaxError):
        raise SqlDoesNotParse(task_id, parsed)
    tables = tuple(referenced_tables(parsed))
    reads = tuple(dict.fromkeys(ref.name for ref in tables if ref.qualified == ref.name))
    return Inputs(reads, statement, tables)


def _test_reads(task: TaskSpec) -> Iterator[str]:
    """The tasks a task's sql tests read (one that does not parse is validation's to say)."""
    for test in task.tests:
        if test.sql is not None:
            with contextlib.suppress(SqlDoesNotParse):
                yield from statement_inputs(task.id, test.sql).tasks


class Sql:
    kind = TaskKind.SQL
    produces_table = True
    reads_sql_tables = True
    """Its statement names the tasks it reads (a source's query names tables outside)."""
    offers_stream = False
    inlines = True

    def takes_stream(self, task: TaskSpec) -> bool:
        return False

    def inputs(self, task: TaskSpec) -> Inputs:
        assert task.sql is not None
        assert task.sql.query is not None
        found = statement_inputs(task.id, task.sql.query)
        if THIS in found.tasks:  # `{{ this }}`: its own last output, which no task makes now
            found = replace(found, tasks=tuple(t for t in found.tasks if t != THIS))
        # a relationships test reads the task it refers to, a sql test what its query reads:
        # inputs too (its own id is its output)
        parents = tuple(
            t.relationships.to
            for t in task.tests
            if t.relationships is not None and t.relationships.to != task.id
        ) + tuple(name for name in _test_reads(task) if name != task.id)
        if not parents:
            return found
        return replace(found, tasks=tuple(dict.fromkeys((*found.tasks, *parents))))

    def check(self, task: TaskSpec, ctx: CheckContext) -> Iterable[Finding]:
        return ()  # its tables are checked once rendered, by the checks every input gets

    def references(self, task: TaskSpec, base_dir: Path) -> str | None:
        return None

    def sql_template(self, task: TaskSpec, ctx: CheckContext) -> tuple[str, tuple[str, ...]] | None:
        return sql_text(task, ctx.definition), ("sql",)

    def schema(self, task: RenderedTask, ctx: SchemaContext) -> pa.Schema | Unknown | None:
        return dry_run(self, task, ctx)

    def run(self, context: TaskContext) -> TaskOutcome:
        from transforms.sql import added_to_kept, describe_sql, run_sql

        assert context.task.sql is not None
        rendered = context.task.sql
        if context.task.spec.materialize == "ephemeral":
            # Its readers run the statement inside theirs; binding it here finds what is wrong
            # with it under its own name, and the schema lineage and `plan` show.
            with said_in_file(context.task, context.base_dir, rendered):
                schema = describe_sql(rendered, context.inputs, database=context.duckdb)
            query = InlineQuery(rendered, dict(context.inputs))
            table = InputTable(context.task.id, context.run_id, (), schema, 0, query=query)
            return TaskOutcome(0, 0, produces_output=False, handed_over=table)
        statement = rendered
        incremental = context.task.spec.sql.incremental if context.task.spec.sql else None
        if incremental is not None and THIS in context.inputs:  # add to the kept output
            kept = context.inputs[THIS].schema.names
            with said_in_file(context.task, context.base_dir, rendered):
                new = describe_sql(statement, context.inputs, database=context.duckdb).names
            statement = added_to_kept(statement, incremental, kept, new)
        with said_in_file(context.task, context.base_dir, statement):
            rows = run_sql(
                statement,
                context.inputs,
                context.staging / OUTPUT_FILE,
                database=context.duckdb,
                cancel=context.cancel,
            )
        context.progress(rows)
        stored = 0
        if context.task.spec.tests:  # before the output is published: a failure keeps it back
            from transforms.model_tests import run_tests

            stored = run_tests(
                context.task.spec.tests,
                context.staging / OUTPUT_FILE,
                context.inputs,
                task_id=context.task.id,
                database=context.duckdb,
                cancel=context.cancel,
                quarantine=context.staging / QUARANTINE_DIR,
            )
        rows_in = sum(t.num_rows for t in context.inputs.values())
        details = {"stored_failures": stored} if stored else {}
        return TaskOutcome(rows_in=rows_in, rows_out=rows, details=details)

    def lineage(
        self,
        task: RenderedTask,
        schemas: Mapping[str, pa.Schema],
        base_dir: Path,
        *,
        call_udfs: bool,
    ) -> LineageGraph:
        from lineage.columns import column_lineage

        assert task.sql is not None
        tables = {name: sql_columns(schemas[name]) for name in task.inputs}
        if task.spec.sql is not None and task.spec.sql.incremental is not None:
            tables[THIS] = sql_columns(schemas[task.id])  # `this`: its own columns, kept
        result = column_lineage(task.sql, tables, schemas[task.id].names)
        graph = LineageGraph()
        add_edges(graph, task.id, (e for e in result.edges if e.table != THIS))
        add_unresolved(graph, task.id, result.unresolved)
        return graph

    def describe_output(self, task: TaskSpec) -> str:
        return "inlined into its readers" if task.materialize == "ephemeral" else "workspace"


KIND = Sql()

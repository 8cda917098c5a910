"""The checks of what a task keeps: `materialize: ephemeral` (an extract streamed to its
readers, with no output kept), `cache:` (an output reused while its fingerprint holds), an
incremental sql task's `{{ this }}` (its kept output), and the tables its tests read.

A mixin of the validator in `engine.tasks.checks`, which gives it `add`, `spec` and
`definition`; kept apart so the validator reads as the list of its passes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from engine.core.problems import did_you_mean
from engine.spec.model import CacheKey, TaskSpec
from engine.tasks import kind_of
from engine.tasks.sql import SqlDoesNotParse, statement_inputs

if TYPE_CHECKING:
    from engine.core.problems import Problem
    from engine.core.yaml_source import PathKey
    from engine.spec.definition import Definition
    from engine.spec.model import PipelineSpec


class OutputChecks:
    definition: Definition
    spec: PipelineSpec
    problems: list[Problem]

    add: Callable[..., None]
    """The validator's: one problem, with its file:line."""
    known_ids: set[str]
    sql_file: Callable[[TaskSpec], str | None]
    sql_line: Callable[[TaskSpec, int | None], int | None]

    def ephemeral(self, task_id: str) -> TaskSpec | None:
        """The task `task_id` when it is materialize: ephemeral."""
        task = self.spec.tasks_by_id.get(task_id)
        return task if task is not None and task.materialize == "ephemeral" else None

    def ephemeral_read(
        self, producer: TaskSpec, task: TaskSpec, path: PathKey, line: int | None = None
    ) -> None:
        """`task` reads `producer`'s ephemeral output in a way that cannot work."""
        if kind_of(producer).inlines:
            readers = "only sql tasks can, which run its statement inside theirs"
        elif task.materialize == "view":
            readers = "a load with materialize: view reads kept files, so it cannot"
        else:
            readers = "only loads whose sink takes a stream (postgres, parquet) can"
        self.add(
            "ephemeral-input",
            f"{producer.id!r} is materialize: ephemeral and keeps no output, but this "
            f"{task.kind.value} task reads it; {readers}",
            task,
            path,
            line=line,
            hint=f"remove `materialize: ephemeral` from {producer.id!r}",
        )

    def ephemeral_reads(self, producer: TaskSpec, reader: TaskSpec) -> bool:
        """Whether `reader` can read `producer`'s ephemeral output: a sql task inlines a sql
        task's statement; a load whose sink takes a stream rides on an extract."""
        if kind_of(producer).inlines:
            return kind_of(reader).reads_sql_tables
        return kind_of(reader).takes_stream(reader)

    def materialization(self, task: TaskSpec) -> None:
        """What `materialize: ephemeral` can be said of: an extract that sets no rows aside
        (streamed to its loads), a sql task (inlined into the sql tasks that read it)."""
        path = ("materialize",)
        kind = kind_of(task)
        if (
            task.sql is not None
            and task.sql.incremental is not None
            and task.materialize != "table"
        ):
            self.add(
                "invalid-value",
                "an incremental sql task keeps its output to add to the next run's: it cannot "
                f"be {task.materialize}",
                task,
                path,
            )
        if view_reads_files(task) and _remote(self.spec.workspace):
            self.add(
                "view-workspace",
                "materialize: view makes this target read the workspace's files by their path, "
                f"and the workspace is an object store ({self.spec.workspace!r})",
                task,
                path,
                hint="load a table (remove materialize: view), or keep the workspace local",
            )
        if task.materialize == "view" and task.load is None:
            self.add(
                "view-kind",
                f"materialize: view is for loads (the target becomes a view of the input); a "
                f"{task.kind.value} task keeps its output in the workspace",
                task,
                path,
            )
        if task.materialize != "ephemeral":
            return
        if not (kind.offers_stream or kind.inlines):
            self.add(
                "ephemeral-kind",
                "materialize: ephemeral is for extracts (streamed to their loads) and sql tasks "
                f"(inlined into their readers); a {task.kind.value} task keeps its output in "
                "the workspace",
                task,
                path,
            )
        elif _sets_rows_aside(task):
            self.add(
                "ephemeral-quarantine",
                "materialize: ephemeral keeps no output, so it cannot keep the rows this "
                "extract sets aside either",
                task,
                path,
                hint="set the source's bad-row handling to fail, or keep the output",
            )
        if task.schema_change != "evolve":
            self.add(
                "ephemeral-schema-change",
                f"schema_change: {task.schema_change} compares the output with the last one "
                "kept, and materialize: ephemeral keeps none, so it would never be enforced",
                task,
                ("schema_change",),
                hint="keep the output, or guard the target with the load's schema_change",
            )

    def ephemeral_unread(self, reads: Mapping[str, tuple[str, ...]]) -> None:
        """An ephemeral sql task no task reads: its statement would never run."""
        read = {name for names in reads.values() for name in names}
        for task in self.spec.tasks:
            if task.materialize == "ephemeral" and kind_of(task).inlines and task.id not in read:
                self.add(
                    "ephemeral-unread",
                    "materialize: ephemeral keeps nothing and no task reads this one, so its "
                    "statement never runs",
                    task,
                    ("materialize",),
                    severity="warning",
                    hint="remove `materialize: ephemeral` to keep its output",
                )

    def cache(self, task: TaskSpec) -> None:
        """A cache key needs a source that runs it on a connection; a source that cannot tell
        what it would read (a database server) is never cached without one."""
        owner, setting = task.connector, task.cache
        if isinstance(setting, CacheKey):
            if task.extract is None or owner is None or not owner.capabilities.key_queries:
                what = (
                    f"a {owner.name} extract"
                    if owner and task.extract
                    else f"a {task.kind.value} task"
                )
                self.add(
                    "cache-key",
                    f"cache.key needs a database source to run the query on, but this is {what}",
                    task,
                    ("cache", "key"),
                    hint="use `cache: true`: files are known by their sizes and times, "
                    "transforms by their definition, code and inputs",
                )
            return
        on = setting if setting is not None else self.spec.cache and task.extract is not None
        source = task.extract
        if on and owner and source and owner.observe(source, self.definition.base_dir) is None:
            self.add(
                "cache-unkeyed",
                f"a {owner.name} extract is never cached without a key: its tables change "
                "without the pipeline knowing",
                task,
                ("cache",) if setting is not None else (),
                severity="warning",
                hint='say when they did: `cache: {key: "select max(updated_at), count(*) '
                'from ..."}`',
            )

    def ephemeral_waits(self, upstream: dict[str, tuple[str, ...]]) -> None:
        """A reader of an ephemeral extract streams from it while it runs, so it cannot also
        wait for a task that itself waits for the extract (another of its readers, say): that
        reader could start only after the extract ended, with nothing left to read."""
        by_id = {task.id: task for task in self.spec.tasks}
        for task in self.spec.tasks:
            if task.materialize != "ephemeral" or not kind_of(task).offers_stream:
                continue
            below: set[str] = set()
            frontier = [task.id]
            while frontier:
                current = frontier.pop()
                for child, deps in upstream.items():
                    if current in deps and child not in below:
                        below.add(child)
                        frontier.append(child)
            for reader, deps in upstream.items():
                if task.id not in deps:
                    continue
                late = sorted(dep for dep in deps if dep in below)
                if late:
                    self.add(
                        "ephemeral-reader-waits",
                        f"{reader!r} reads the ephemeral output of {task.id!r} but also waits "
                        f"for {', '.join(map(repr, late))}, which waits for {task.id!r}: it "
                        "could start only once the stream is over",
                        by_id[reader],
                        ("depends_on",),
                        hint=f"remove that dependency, or remove `materialize: ephemeral` from "
                        f"{task.id!r}",
                    )

    def shared_targets(self, upstream: dict[str, tuple[str, ...]]) -> None:
        """Loads that write one table (or file) with no order between them run at once: the
        target ends as the one that commits last (and a lakehouse table's commits race). A
        warning: a pipeline may mean it, but rarely does."""
        from connectors.base import NamingContext

        writes: dict[tuple[str, str], list[TaskSpec]] = {}
        context = NamingContext(self.definition.base_dir, self.spec.connections)
        for task in self.spec.tasks:
            owner = task.connector
            if task.load is None or owner is None:
                continue
            for dataset in owner.place(task.load, context).datasets():
                writes.setdefault(dataset, []).append(task)
        for (namespace, name), loads in writes.items():
            for index, first in enumerate(loads):
                for second in loads[index + 1 :]:
                    if not _ordered(upstream, first.id, second.id):
                        self.add(
                            "unordered-writers",
                            f"{first.id!r} and {second.id!r} both write {name} "
                            f"({namespace}) and nothing orders them: they may run at once, "
                            "and the last to commit decides what it holds",
                            second,
                            severity="warning",
                            hint=f"add depends_on: [{first.id}] to {second.id!r}",
                        )

    def ephemeral_pools(self, upstream: dict[str, tuple[str, ...]]) -> None:
        """An ephemeral extract and the tasks streaming from it start as one unit and take
        their slots of every pool together: a unit needing more slots of a pool than it has
        could never start (it would wait, QUEUED, for ever)."""
        pools = self.spec.pools
        for task in self.spec.tasks:
            if task.materialize != "ephemeral" or not kind_of(task).offers_stream:
                continue
            unit = [task, *(t for t in self.spec.tasks if task.id in upstream.get(t.id, ()))]
            needed: dict[str, list[str]] = {}
            for member in unit:
                for pool in _pools_taken(member, pools):
                    needed.setdefault(pool, []).extend([member.id] * _slots(member, pool))
            for pool, takers in needed.items():
                if len(takers) > pools[pool] and len(unit) > 1:
                    each = ", ".join(f"{t} {takers.count(t)}" for t in dict.fromkeys(takers))
                    self.add(
                        "pool-too-small",
                        f"the ephemeral {task.id!r} starts together with the tasks streaming "
                        f"from it, and together they take {len(takers)} slots of pool "
                        f"{pool!r} ({each}), which has {pools[pool]}: they could never start",
                        task,
                        ("materialize",),
                        hint=f"give pool {pool!r} at least {len(takers)} slots, or remove "
                        f"`materialize: ephemeral` from {task.id!r}",
                    )

    def test_tables(self, task: TaskSpec) -> None:
        """The tables a task's sql tests read (rendered): the task's own output by its id, or
        another task's, which then runs first."""
        for index, test in enumerate(task.tests):
            if test.sql is None:
                continue
            try:
                reads = statement_inputs(task.id, test.sql)
            except SqlDoesNotParse as exc:
                self.add(
                    "sql-parse",
                    f"test {test.name}: SQL does not parse: {exc.error.message}",
                    task,
                    ("tests", index),
                )
                continue
            for ref in reads.tables:
                if ref.qualified == ref.name and ref.name in self.known_ids:
                    continue
                self.add(
                    "unknown-table",
                    f"test {test.name} reads table {ref.qualified!r}, which no task of this "
                    f"pipeline produces.{did_you_mean(ref.name, self.known_ids)}",
                    task,
                    ("tests", index),
                )

    def this(self, task: TaskSpec, line: int | None, *, first_run: bool) -> None:
        """`{{ this }}` is an incremental sql task's own last output; nothing else has one, and
        its first run neither."""
        if task.sql is not None and task.sql.incremental is not None:
            if first_run:
                self.add(
                    "unknown-table",
                    "SQL reads {{ this }} on the task's first run too, when it has no output "
                    "yet (and after --full-refresh)",
                    task,
                    line=self.sql_line(task, line),
                    file=self.sql_file(task),
                    hint="read it inside {% if is_incremental() %} ... {% endif %}",
                )
            return
        self.add(
            "unknown-table",
            "SQL reads {{ this }}, the task's own last output, which only an incremental sql "
            "task has",
            task,
            line=self.sql_line(task, line),
            file=self.sql_file(task),
            hint="set sql: {incremental: {unique_key: [...]}} (in a SQL project, "
            "materialized='incremental'), or read another task",
        )


def _pools_taken(task: TaskSpec, pools: dict[str, int]) -> list[str]:
    """The declared pools a task takes slots of: its `pool`, and one named like its connection."""
    named = [task.pool, task.connection]
    return [pool for pool in dict.fromkeys(named) if pool is not None and pool in pools]


def _slots(task: TaskSpec, pool: str) -> int:
    return task.pool_slots if pool == task.pool else 1


def _sets_rows_aside(task: TaskSpec) -> bool:
    """Whether an extract's source sets malformed rows aside (its collector's policy is not
    to fail on the first)."""
    if task.connector is None or task.extract is None:
        return False
    rejects = task.connector.rejects(task.extract)
    return rejects is not None and getattr(rejects, "policy", None) != "fail"


def view_reads_files(task: TaskSpec) -> bool:
    """A load whose `materialize: view` reads the workspace's files by path (DuckDB's)."""
    owner = task.connector if task.load is not None else None
    return task.materialize == "view" and owner is not None and owner.capabilities.views_read_files


def _remote(workspace: str | None) -> bool:
    from engine.core.s3 import is_object_store

    return workspace is not None and is_object_store(workspace)


def _ordered(upstream: Mapping[str, tuple[str, ...]], a: str, b: str) -> bool:
    """Whether one of the tasks `a` and `b` waits, through its dependencies, for the other."""

    def waits(task: str, on: str) -> bool:
        seen, frontier = set(), [task]
        while frontier:
            for dep in upstream.get(frontier.pop(), ()):
                if dep == on:
                    return True
                if dep not in seen:
                    seen.add(dep)
                    frontier.append(dep)
        return False

    return waits(a, b) or waits(b, a)

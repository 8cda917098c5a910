"""Fingerprints: what a task's output is made of, so that reuse never hands back a stale output.

A task's fingerprint is a hash of everything that decides its output, kept as one digest per
component so that `arrowline plan` can say which one changed:

- `definition`: its definition rendered for the run (templates filled in, a sql task's `file:`
  read), without the settings that only decide how it runs (description, tags, retry, timeout,
  cache); SQL (a statement, a source's query) counts as sqlglot parses it, so layout, keyword
  case and comments do not;
- `params`: the values of the parameters its templates read, in the pipeline or in a SQL file;
- `code`: the code of its UDF or pandera schema: the syntax tree of the definition and of every
  module-level name it reaches in the same file (helpers, constants, imports), so a helper's body
  counts but comments and layout do not; for a function also what its closure, defaults and
  plain global values hold, which source text cannot show; and the contents of the schema file
  it names;
- `libraries`: the major.minor versions of the libraries that compute outputs (DuckDB, Polars,
  PyArrow, pandera);
- `input`: for an extract, the files its source would read now, by size and modification time,
  where the source can tell (its connector's `observe`); what its cache key query returns now
  and the watermarks committed for it (`observed`, from engine.planning.cache);
- upstream: the fingerprints of its upstream tasks (`value`, what `--resume` compares), or the
  contents of their outputs (`key`, what the cache compares: engine.planning.cache).

Not seen: code in other files that a UDF imports (installed packages count by their files' sizes
and times), values a module computes at import from outside (environment, files), and tables of a
database server, which change without the pipeline knowing: an extract from PostgreSQL is cached
only with a key query that tells.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core.errors import error_context
from engine.core.secrets import mask_secrets
from engine.spec.definition import Definition
from engine.spec.model import PipelineSpec, TaskSpec
from engine.spec.resolve import template_texts
from engine.spec.templates import referenced_params
from engine.tasks import kind_of
from engine.tasks.resolve import ResolvedTask
from transforms.identity import describe_object, digest

__all__ = [
    "LIBRARIES",
    "PARTS",
    "Fingerprint",
    "describe_object",
    "library_versions",
    "normalized_sql",
    "pipeline_fingerprint",
    "task_fingerprint",
    "task_fingerprints",
]

_HOW_IT_RUNS = {
    "description",
    "column_descriptions",
    "tags",
    "part_of",
    "retry",
    "timeout",
    "cache",
}
"""Task settings that cannot change its output."""

PARTS = ("params", "definition", "code", "libraries", "input")
"""A task's own components, in the order `arrowline plan` looks for the one that changed (a
parameter first: the rendered definition changes with the values it prints)."""

LIBRARIES = ("duckdb", "polars", "pyarrow", "pandera")
"""The libraries whose version can change what a task computes."""


@dataclass(frozen=True)
class Fingerprint:
    """One task's fingerprint: a digest per own component, and over them and its upstream."""

    parts: Mapping[str, str]
    """PARTS -> digest."""
    value: str
    """Over the parts and the upstream tasks' fingerprints: the plan's, what --resume compares."""

    def key(self, upstream: Mapping[str, str]) -> str:
        """The cache key: the parts and what each upstream task's output holds (`upstream`:
        task id -> its output's content hash)."""
        return digest({"parts": dict(self.parts), "upstream": dict(upstream)})

    def recorded(self, upstream: Mapping[str, str]) -> dict[str, str]:
        """What the catalog keeps: the parts, and one digest of the upstream contents."""
        return {**self.parts, "upstream": digest(dict(upstream))}


@functools.cache
def library_versions() -> dict[str, str]:
    """major.minor of each of LIBRARIES (a patch release fixes, it does not change results)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in LIBRARIES:
        try:
            found[name] = ".".join(version(name).split(".")[:2])
        except PackageNotFoundError:
            found[name] = "absent"
    return found


@functools.lru_cache(maxsize=8192)  # above a big pipeline's statement count (see parse_select)
def normalized_sql(text: str, dialect: str) -> str:
    """SQL as sqlglot writes it back: one layout, no comments. Text sqlglot cannot parse counts
    as written (stripped), which only costs a cache hit, never a stale result."""
    import sqlglot

    try:
        statements = sqlglot.parse(text, read=dialect)
        return ";\n".join(s.sql(dialect=dialect, comments=False) for s in statements if s)
    except Exception:  # any sqlglot failure: the text decides
        return text.strip()


def pipeline_fingerprint(spec: PipelineSpec) -> str:
    """The pipeline version a run records: its definition, Python objects by their code.

    Retention and cache are left out: they decide what is kept afterwards and what is reused,
    not what a run computes, so changing them must not make `--resume` see another pipeline.
    Secrets are masked first: a
    short hash of a known definition would let a password be guessed offline, and a rotated
    password is not a new version of the pipeline."""
    payload = spec.model_dump(
        mode="json",
        by_alias=True,
        fallback=describe_object,
        exclude={"retention": True, "cache": True, "tasks": {"__all__": {"cache"}}},
    )
    return digest(mask_secrets(payload))


def task_fingerprints(
    definition: Definition,
    resolved: Mapping[str, ResolvedTask],
    params: Mapping[str, Any],
    order: Iterable[str],
    observed: Mapping[str, Any] | None = None,
) -> dict[str, Fingerprint]:
    """Every task's fingerprint; `order` lists the tasks upstream first (topological order);
    `observed` holds per task what else says what its source holds now (a key query's digest,
    committed watermarks)."""
    declared = {task.id: task for task in definition.spec.tasks}
    fingerprints: dict[str, Fingerprint] = {}
    for task_id in order:
        task = resolved[task_id]
        upstream = {dep: fingerprints[dep].value for dep in task.upstream if dep in fingerprints}
        with error_context(pipeline=definition.name, task_id=task_id):
            fingerprints[task_id] = task_fingerprint(
                definition,
                declared[task_id],
                task.spec,
                params,
                upstream,
                (observed or {}).get(task_id),
            )
    return fingerprints


def task_fingerprint(
    definition: Definition,
    declared: TaskSpec,
    rendered: TaskSpec,
    params: Mapping[str, Any],
    upstream: Mapping[str, str],
    observed: Any = None,
) -> Fingerprint:
    """The identity of one task's output: `declared` is the task as written, `rendered` the
    same task rendered for the run, `upstream` the fingerprints of the tasks it depends on."""
    read: set[str] = set()
    for text in template_texts(declared, definition):
        read |= referenced_params(text)
    task = rendered.model_dump(
        mode="json", by_alias=True, exclude=_HOW_IT_RUNS, fallback=describe_object
    )
    files = _source_files(rendered, definition.base_dir)
    parts = {
        "definition": digest(_sql_normalized(task, rendered)),
        "params": digest({name: params.get(name) for name in sorted(read)}),
        "code": digest(kind_of(rendered).references(rendered, definition.base_dir)),
        "libraries": digest(library_versions()),
        "input": digest({"files": files, "seen": observed}),
    }
    # What the catalog and the database say (watermarks, key rows) is the cache's alone: a
    # resumed run must keep an extract whose loads committed its watermark meanwhile.
    planned = parts | {"input": digest({"files": files, "seen": None})}
    return Fingerprint(parts, digest({"parts": planned, "upstream": dict(upstream)}))


def _sql_normalized(task: dict[str, Any], rendered: TaskSpec) -> dict[str, Any]:
    """The dumped task with its SQL (a statement, a source's query) as sqlglot writes it."""
    statement = task.get("sql")
    if isinstance(statement, dict) and isinstance(statement.get("query"), str):
        statement["query"] = normalized_sql(statement["query"], "duckdb")
    owner, source = rendered.connector, task.get("extract")
    dialect = owner.capabilities.sqlglot_dialect if owner is not None else None
    if dialect and isinstance(source, dict) and isinstance(source.get("query"), str):
        source["query"] = normalized_sql(source["query"], dialect)
    return task


def _source_files(task: TaskSpec, base_dir: Path) -> list[Any] | None:
    owner = task.connector
    if owner is None or task.extract is None:
        return None
    versions = owner.observe(task.extract, base_dir)
    return list(versions) if versions is not None else None

"""Fingerprints: what a task's output is made of, so that reuse never hands back a stale output.

A task's fingerprint is a hash of everything that decides its output:

- its definition rendered for the run (templates filled in, a sql task's `file:` read), without
  the settings that only decide how it runs (description, retry, timeout);
- the values of the parameters its templates read, in the pipeline or in a SQL file;
- the code of its UDF or pandera schema: the syntax tree of the definition and of every
  module-level name it reaches in the same file (helpers, constants, imports), so a helper's body
  counts but comments and layout do not; for a function also what its closure, defaults and
  plain global values hold, which source text cannot show;
- the contents of the schema file it names;
- for an extract, the files its source would read now, by size and modification time, where the
  source can tell (its connector's `observe`);
- the fingerprints of its upstream tasks, so a change anywhere upstream reaches every task below.

`--select` reuses an upstream output only when the fingerprint its last successful run recorded
equals the one computed now, and `--resume` keeps a task on the same condition.

Not seen: code in other files that a UDF imports (installed packages count by their files' sizes
and times), values a module computes at import from outside (environment, files), and tables of a
database server, which change without the pipeline knowing: an extract from PostgreSQL is reused
while its definition is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from engine.core.errors import error_context
from engine.core.secrets import mask_secrets
from engine.spec.definition import Definition
from engine.spec.model import PipelineSpec, TaskSpec
from engine.spec.params import referenced_params
from engine.spec.resolve import template_texts
from engine.tasks import kind_of
from engine.tasks.resolve import ResolvedTask
from transforms.identity import describe_object, digest

__all__ = ["describe_object", "pipeline_fingerprint", "task_fingerprint", "task_fingerprints"]

_HOW_IT_RUNS = {"description", "retry", "timeout"}
"""Task settings that cannot change its output."""


def pipeline_fingerprint(spec: PipelineSpec) -> str:
    """The pipeline version a run records: its definition, Python objects by their code.

    Retention is left out: it decides what is kept afterwards, not what a run computes, so
    changing it must not make `--resume` see another pipeline. Secrets are masked first: a
    short hash of a known definition would let a password be guessed offline, and a rotated
    password is not a new version of the pipeline."""
    payload = spec.model_dump(
        mode="json", by_alias=True, fallback=describe_object, exclude={"retention"}
    )
    return digest(mask_secrets(payload))


def task_fingerprints(
    definition: Definition,
    resolved: Mapping[str, ResolvedTask],
    params: Mapping[str, Any],
    order: Iterable[str],
) -> dict[str, str]:
    """Every task's fingerprint; `order` lists the tasks upstream first (topological order)."""
    declared = {task.id: task for task in definition.spec.tasks}
    fingerprints: dict[str, str] = {}
    for task_id in order:
        task = resolved[task_id]
        upstream = {dep: fingerprints[dep] for dep in task.upstream if dep in fingerprints}
        with error_context(pipeline=definition.name, task_id=task_id):
            fingerprints[task_id] = task_fingerprint(
                definition, declared[task_id], task.spec, params, upstream
            )
    return fingerprints


def task_fingerprint(
    definition: Definition,
    declared: TaskSpec,
    rendered: TaskSpec,
    params: Mapping[str, Any],
    upstream: Mapping[str, str],
) -> str:
    """The identity of one task's output: `declared` is the task as written, `rendered` the
    same task rendered for the run, `upstream` the fingerprints of the tasks it depends on."""
    read: set[str] = set()
    for text in template_texts(declared, definition):
        read |= referenced_params(text)
    task = rendered.model_dump(
        mode="json", by_alias=True, exclude=_HOW_IT_RUNS, fallback=describe_object
    )
    return digest(
        {
            "task": task,
            "params": {name: params.get(name) for name in sorted(read)},
            "code": kind_of(rendered).references(rendered, definition.base_dir),
            "reads": _source_files(rendered, definition.base_dir),
            "upstream": dict(upstream),
        }
    )


def _source_files(task: TaskSpec, base_dir: Path) -> list[Any] | None:
    owner = task.connector
    if owner is None or task.extract is None:
        return None
    versions = owner.observe(task.extract, base_dir)
    return list(versions) if versions is not None else None

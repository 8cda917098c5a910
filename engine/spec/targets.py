"""A SQL project's targets, dbt's dev and prod: where its models are published, chosen per
process.

    target: dev                                  # the default
    targets:
      dev: {database: out/dev.duckdb, schema: main}
      prod: {database: warehouse, schema: analytics}   # a postgres connection

`ARROWLINE_TARGET=prod arrowline run shop/` (or `--target prod`) picks another. With targets,
every model that keeps an output is published into the chosen target's database and schema
unless its own settings say otherwise (an ephemeral one keeps nothing); templates read the
target as `{{ target.name }}`, `{{ target.schema }}`, `{{ target.database }}`, which is a
parameter of the pipeline, so a model that reads it runs again when the target changes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from engine.core.problems import did_you_mean

__all__ = ["TARGET_ENV", "choose_target"]

TARGET_ENV = "ARROWLINE_TARGET"
_KEYS = {"database", "schema"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def choose_target(
    targets: Any, default: Any, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, str] | None, list[tuple[str, tuple[Any, ...]]]]:
    """The chosen target as `{name, database, schema}`, or None without targets; and what is
    wrong, as (message, path in the project file)."""
    env = os.environ if environ is None else environ
    wrong: list[tuple[str, tuple[Any, ...]]] = []
    if targets is None:
        if default is not None:
            wrong.append(("target names one of `targets:`, and there are none", ("target",)))
        return None, wrong
    if not isinstance(targets, dict) or not targets:
        return None, [("targets must map names to {database, schema}", ("targets",))]
    for name, settings in targets.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            wrong.append((f"target {name!r} is not a name", ("targets", name)))
        elif not isinstance(settings, dict) or not isinstance(settings.get("database"), str):
            wrong.append(
                (
                    f"target {name!r} needs database: a DuckDB file or a connection",
                    ("targets", name),
                )
            )
        else:
            wrong += [
                (
                    f"target {name!r}: unknown key {key!r}.{did_you_mean(str(key), sorted(_KEYS))}",
                    ("targets", name, key),
                )
                for key in settings
                if key not in _KEYS
            ]
    chosen = env.get(TARGET_ENV) or default or next(iter(targets))
    if chosen not in targets:
        where = f"${TARGET_ENV}" if env.get(TARGET_ENV) else "target"
        wrong.append(
            (
                f"{where} names no target: {chosen!r}."
                + did_you_mean(str(chosen), [str(t) for t in targets]),
                ("target",),
            )
        )
        return {"name": str(chosen)}, wrong  # templates still see its name: one error, not two
    settings = targets[chosen] if isinstance(targets[chosen], dict) else {}
    found = {"name": str(chosen), **{k: str(v) for k, v in settings.items() if k in _KEYS}}
    return found, wrong

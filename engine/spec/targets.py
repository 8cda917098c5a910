"""A SQL project's targets, dbt's dev and prod: where its models are published, chosen per
process.

    target: dev                                  # the default
    targets:
      dev: {database: out/dev.duckdb, schema: main}
      prod: {database: warehouse, schema: analytics, threads: 8}   # a postgres connection

`ARROWLINE_TARGET=prod arrowline run shop/` (or `--target prod`) picks another. With targets,
every model that keeps an output is published into the chosen target's database and schema
unless its own settings say otherwise (an ephemeral one keeps nothing).

Templates read the chosen target as dbt's `target` object: `name`, `type` (`duckdb`, or the
kind of the connection named), `database` (as written: the DuckDB file or the connection's
name), `path` (the DuckDB file; None for a connection), `schema` (default `main` in DuckDB,
`public` in PostgreSQL), `threads` (as the target says, else the tasks a run starts at once
by default) and `profile_name` (the pipeline's name). A pipeline that declares no targets has
one, `default`: the embedded DuckDB its sql tasks run in (`type: duckdb`, `database: memory`,
`path: ':memory:'`, `schema: main`), as dbt-duckdb's in-memory profile reads.

The target is a parameter of the pipeline (its threads aside, which depend on the machine),
so a model that reads it runs again when the target changes.

A name given with `--target` must be one of the pipeline's targets (`default` for one without):
another is an error naming them. `$ARROWLINE_TARGET` is set for a whole process (a scheduler
runs many pipelines), so a pipeline without targets only warns of it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Literal

from engine.core.problems import did_you_mean

__all__ = [
    "DEFAULT_TARGET",
    "TARGET_ENV",
    "TARGET_NAME",
    "TARGET_OPTION_ENV",
    "TARGET_PARAM",
    "Wrong",
    "choose_target",
    "chosen_name",
    "default_target",
    "project_target",
    "target_variable",
    "unknown_target",
]

TARGET_ENV = "ARROWLINE_TARGET"
TARGET_OPTION_ENV = "ARROWLINE_TARGET_OPTION"
"""Set (to the name) by the command line's `--target`: the name was asked of this command's
pipeline, so one it does not have is an error, not a warning."""
DEFAULT_TARGET = "default"
TARGET_PARAM = "_arrowline_target"
"""The parameter a SQL project's chosen target is kept in (so that it is in every output's
fingerprint and in the run's record): arrowline's own, which no `--param`, environment
variable or trigger may set (engine.spec.params.resolve_params): the target is chosen by name
(`--target`, `$ARROWLINE_TARGET`) among those the project declares, whose values are the
project's. A pipeline's own parameter `target` is just a parameter."""
_KEYS = {"database", "schema", "threads"}
TARGET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_DEFAULT_SCHEMA = {"duckdb": "main", "postgres": "public"}

Wrong = tuple[str, str, tuple[Any, ...], Literal["error", "warning"]]
"""What is wrong: code, message, path in the project file, severity."""


def default_target() -> dict[str, Any]:
    """The target of a pipeline without `targets:`: the embedded DuckDB its sql tasks run in."""
    return {
        "name": DEFAULT_TARGET,
        "type": "duckdb",
        "database": "memory",
        "path": ":memory:",
        "schema": "main",
    }


def target_variable(target: Any, pipeline: str) -> dict[str, Any]:
    """`{{ target }}` as a template reads it: the chosen target (or the default one) with
    what the machine says (threads) and the pipeline's name as dbt's profile_name."""
    found = dict(target) if isinstance(target, Mapping) else default_target()
    if found.get("threads") is None:
        found["threads"] = max(2, os.cpu_count() or 1)  # the executor's --max-parallel default
    found.setdefault("profile_name", pipeline)
    return found


def chosen_name(env: Mapping[str, str]) -> tuple[str | None, str]:
    """The name asked for, and who asked (for messages)."""
    if env.get(TARGET_OPTION_ENV):
        return env[TARGET_OPTION_ENV], "--target"
    return env.get(TARGET_ENV) or None, f"${TARGET_ENV}"


def unknown_target(environ: Mapping[str, str] | None = None) -> Wrong | None:
    """For a pipeline without targets: what is wrong with the target asked for, if anything
    (only `default` is one)."""
    env = os.environ if environ is None else environ
    name, asked = chosen_name(env)
    if name is None or name == DEFAULT_TARGET:
        return None
    if asked == "--target":
        message = (
            f"--target {name!r}: this pipeline declares no `targets:`, so its only target is "
            f"{DEFAULT_TARGET!r} (the embedded DuckDB)"
        )
        return "invalid-value", message, ("target",), "error"
    message = (
        f"{asked} names {name!r}, but the pipeline has no `targets:`: nothing is published by "
        f"target, and templates read the {DEFAULT_TARGET!r} target"
    )
    return "not-supported", message, (), "warning"


def project_target(data: dict[str, Any]) -> tuple[dict[str, Any], list[Wrong]]:
    """Take `targets:` and `target:` out of a project file's `data` and put the chosen target
    in its parameters. Returns where its models are published by default (the target's
    database and schema as written: dbt's schema prefix is the models' own), and what is
    wrong."""
    targets = data.pop("targets", None)
    connections = data.get("connections")
    target, wrong = choose_target(
        targets, data.pop("target", None), connections if isinstance(connections, dict) else {}
    )
    if target is None:
        return {}, wrong
    if TARGET_PARAM in data["params"]:
        message = f"{TARGET_PARAM!r} is arrowline's own: name the var otherwise"
        wrong.append(("duplicate-key", message, ("vars",), "error"))
    data["params"][TARGET_PARAM] = {"type": "dict", "default": target}
    declared = targets.get(target["name"]) if isinstance(targets, dict) else None
    if declared is None and wrong and isinstance(targets, dict) and targets:
        declared = next(iter(targets.values()))  # a target asked for that is not: said once
    if not isinstance(declared, dict):
        return {}, wrong
    return {k: v for k, v in declared.items() if k in ("database", "schema")}, wrong


def choose_target(
    targets: Any,
    default: Any,
    connections: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any] | None, list[Wrong]]:
    """The chosen target as `{name, type, database, path, schema[, threads]}`, or None
    without targets; and what is wrong. `connections`: the pipeline's, by name (a target's
    database naming one is of its kind)."""
    env = os.environ if environ is None else environ
    wrong: list[Wrong] = []
    if targets is None:
        if default is not None:
            message = "target names one of `targets:`, and there are none"
            wrong.append(("invalid-value", message, ("target",), "error"))
        elif (unknown := unknown_target(env)) is not None:
            wrong.append(unknown)
        return None, wrong
    if not isinstance(targets, dict) or not targets:
        message = "targets must map names to {database, schema}"
        return None, [("invalid-value", message, ("targets",), "error")]
    for name, settings in targets.items():
        wrong += _target_problems(name, settings)
    asked, by = chosen_name(env)
    chosen = asked or default or next(iter(targets))
    if chosen not in targets:
        where = by if asked else "target"
        known = ", ".join(repr(str(t)) for t in targets)
        wrong.append(
            (
                "invalid-value",
                f"{where} names no target: {chosen!r} (the targets: {known})."
                + did_you_mean(str(chosen), [str(t) for t in targets]),
                ("target",),
                "error",
            )
        )
        # templates still read a whole target, named as asked: one error, not one per read
        return {**default_target(), "name": str(chosen)}, wrong
    settings = targets[chosen] if isinstance(targets[chosen], dict) else {}
    return _described(str(chosen), settings, connections or {}), wrong


def _target_problems(name: Any, settings: Any) -> list[Wrong]:
    if not isinstance(name, str) or not TARGET_NAME.fullmatch(name):
        return [("invalid-value", f"target {name!r} is not a name", ("targets", name), "error")]
    if not isinstance(settings, dict) or not isinstance(settings.get("database"), str):
        message = f"target {name!r} needs database: a DuckDB file or a connection"
        return [("invalid-value", message, ("targets", name), "error")]
    wrong: list[Wrong] = [
        (
            "invalid-value",
            f"target {name!r}: unknown key {key!r}.{did_you_mean(str(key), sorted(_KEYS))}",
            ("targets", name, key),
            "error",
        )
        for key in settings
        if key not in _KEYS
    ]
    threads = settings.get("threads")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        message = f"target {name!r}: threads must be a whole number of 1 or more, not {threads!r}"
        wrong.append(("invalid-value", message, ("targets", name, "threads"), "error"))
    return wrong


def _described(
    name: str, settings: Mapping[str, Any], connections: Mapping[str, Any]
) -> dict[str, Any]:
    """A declared target as dbt's `target` reads it (what the machine says aside)."""
    database = str(settings["database"])
    connection = connections.get(database)
    kind = connection.get("kind") if isinstance(connection, Mapping) else None
    kind = str(kind) if kind is not None else "duckdb"
    found: dict[str, Any] = {
        "name": name,
        "type": kind,
        "database": database,
        "path": database if connection is None else None,
        "schema": str(settings.get("schema") or _DEFAULT_SCHEMA.get(kind, "main")),
    }
    if isinstance(settings.get("threads"), int):
        found["threads"] = settings["threads"]
    return found

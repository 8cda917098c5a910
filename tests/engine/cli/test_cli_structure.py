"""The shape of the CLI package: a root that lists its groups, command modules that never import
the root nor each other, and the same commands as ever."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import click

import engine.cli
from engine.cli import main

CLI = Path(engine.cli.__file__).parent
ROOT = "engine.cli"
SUPPORT = {"common", "frames", "logs", "progress"}
"""Modules that hold no commands: what command modules may import from the package."""


def _modules() -> dict[str, ast.Module]:
    return {
        path.stem: ast.parse(path.read_text(encoding="utf-8"), str(path))
        for path in sorted(CLI.glob("*.py"))
        if path.name != "__init__.py"
    }


def _imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    """(module, names) of every import, at the top or inside a function."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ROOT if node.level == 1 else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.append((module, [alias.name for alias in node.names]))
    return found


def test_no_command_module_imports_the_root() -> None:
    offenders = []
    for name, tree in _modules().items():
        for module, names in _imports(tree):
            if module == ROOT or (module == "engine" and "cli" in names):
                offenders.append(f"{name}: from {module} import {', '.join(names) or '*'}")
    assert offenders == []


def test_command_modules_share_only_the_support_modules_and_no_private_names() -> None:
    offenders = []
    for name, tree in _modules().items():
        for module, names in _imports(tree):
            if not module.startswith(f"{ROOT}."):
                continue
            sibling = module.removeprefix(f"{ROOT}.")
            if sibling not in SUPPORT:
                offenders.append(f"{name} imports the command module {sibling}")
            offenders += [f"{name} imports {sibling}.{n}" for n in names if n.startswith("_")]
    assert offenders == []


def test_the_root_lists_each_command_module_and_every_command_once() -> None:
    modules = {n for n in _modules() if n not in SUPPORT}
    listed: list[str] = []
    for name in sorted(modules):
        commands = importlib.import_module(f"{ROOT}.{name}").COMMANDS
        assert all(isinstance(c, click.Command) for c in commands), name
        listed += [c.name for c in commands if c.name]
    assert sorted(listed) == sorted(main.commands)
    assert len(listed) == len(set(listed))


def test_the_same_commands_as_before_the_package() -> None:
    assert sorted(main.commands) == [
        "backfill",
        "bench",
        "catalog",
        "cdc",
        "check",
        "dlq",
        "docs",
        "gc",
        "graph",
        "init",
        "lineage",
        "metrics",
        "plan",
        "quarantine",
        "render",
        "run",
        "runs",
        "schedule",
        "scheduler",
        "schema",
        "show",
        "state",
        "status",
        "table",
        "trigger",
        "ui",
        "validate",
    ]
    groups = {n: c for n, c in main.commands.items() if isinstance(c, click.Group)}
    assert {n: sorted(g.commands) for n, g in groups.items()} == {
        "catalog": ["copy"],
        "cdc": ["status"],
        "dlq": ["list", "requeue", "resolve", "show"],
        "quarantine": ["replay", "show"],
        "runs": ["compare", "list"],
        "schedule": ["list", "pause", "resume"],
        "state": ["reset", "set", "show"],
        "ui": ["export", "serve"],
    }


def test_every_command_that_touches_state_takes_project_dir() -> None:
    without = {"bench", "schema", "init"}  # they read and write no project's state
    missing = []
    for path, command in _leaves(main, ()):
        if path[0] in without:
            continue
        if "--project-dir" not in {o for p in command.params for o in p.opts}:
            missing.append(" ".join(path))
    assert missing == []


def _leaves(
    group: click.Group, prefix: tuple[str, ...]
) -> list[tuple[tuple[str, ...], click.Command]]:
    found: list[tuple[tuple[str, ...], click.Command]] = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _leaves(command, (*prefix, name))
        else:
            found.append(((*prefix, name), command))
    return found

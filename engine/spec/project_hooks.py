"""A SQL project's hooks, in dbt's spellings: `+pre-hook` / `+post-hook` for folders in the
project file, `pre_hook` / `post_hook` (or dbt's dashed keys) in a property file's `config:` and
in a model's `{{ config(...) }}`. Each is one SQL text or a list of them, and they add up, as in
dbt: the folders' from the outermost in, then the property file's, then the model's own.

A model's hooks become the hooks of the load that publishes it (engine.spec.hooks: they run in
its publishing target, inside that load's transaction), so a model with hooks needs a
database to be published into (`+database`, or the project's targets). Each hook keeps the file
and line it is written at, which its problems and its failure name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.core.yaml_source import SourceMap
from engine.spec.templates import line_with

__all__ = ["HOOK_SETTINGS", "ProjectHooks"]

_WHEN = {"pre-hook": "pre", "pre_hook": "pre", "post-hook": "post", "post_hook": "post"}
HOOK_SETTINGS = frozenset(_WHEN)
"""The settings that give a model hooks, as dbt spells them."""

Placed = tuple[str, str, Path, int | None]
"""One hook: pre or post, its SQL, the file and line it is written at."""


class ProjectHooks:
    """The composer's part that reads hooks (engine.spec.sqlproject._Composer)."""

    root: Path
    file: Path
    source: SourceMap
    nested: dict[str, tuple[str, ...]]
    problem: Callable[..., None]
    """The composer's: one problem, at its file and line."""
    property_lines: dict[str, tuple[Path, dict[str, int | None]]]
    """The property file each model's `config:` is in, and the line of each of its keys."""
    hooks_at: dict[int, dict[tuple[str, int], tuple[Path, int | None]]]
    """Where each hook of a generated load is written, by the load's identity."""

    def model_hooks(
        self,
        path: Path,
        tree: dict[str, Any],
        parts: tuple[str, ...],
        listed: dict[str, Any],
        own: dict[str, Any],
    ) -> list[Placed]:
        """The hooks of the model in `path` (under the folders `parts`): the folders' in the
        settings `tree`, its property file's (`listed`), its own `config()`'s (`own`)."""
        found: list[Placed] = []
        node: Any = tree
        for depth in range(len(parts) + 1):
            if not isinstance(node, dict):
                break
            for name, value in node.items():
                when = _WHEN.get(name.removeprefix("+")) if isinstance(name, str) else None
                if when is not None:
                    at = ("models", *self.nested.get("models", ()), *parts[:depth], name)
                    found += self._texts(when, value, self.file, self.source.line_of(at))
            node = node.get(parts[depth]) if depth < len(parts) else None
        where, lines = self.property_lines.get(path.stem, (path, {}))
        for key in sorted(k for k in listed if k in _WHEN):
            found += self._texts(_WHEN[key], listed[key], where, lines.get(key))
        text = path.read_text(encoding="utf-8") if own else ""
        for key in sorted(k for k in own if k in _WHEN):
            found += self._texts(_WHEN[key], own[key], path, line_with(text, [key]))
        return found

    def _texts(self, when: str, value: Any, file: Path, line: int | None) -> list[Placed]:
        """`value` (one SQL text, a list of them, or dbt's `{sql: ...}`) as hooks."""
        items = value if isinstance(value, list) else [value]
        found: list[Placed] = []
        for item in items:
            sql = item.get("sql") if isinstance(item, dict) else item
            if not isinstance(sql, str) or not sql.strip():
                self.problem(
                    "invalid-value",
                    f"a {when}-hook is SQL text (or a list of them), not {item!r}",
                    file=str(file),
                    line=line,
                )
                continue
            if isinstance(item, dict) and item.get("transaction") is False:
                self.problem(
                    "not-supported",
                    f"{when}-hook: transaction: false is not read; every hook runs inside "
                    "its load's transaction",
                    file=str(file),
                    line=line,
                    severity="warning",
                )
            found.append((when, sql, file, line))
        return found

    def attach_hooks(
        self, model: str, hooks: list[Placed], published: dict[str, Any] | None
    ) -> None:
        """Give the load that publishes `model` its hooks; without one, say where they are."""
        if not hooks:
            return
        if published is None:
            _, _, file, line = hooks[0]
            self.problem(
                "invalid-value",
                f"model {model!r} has hooks, which run in the database it is published to, "
                "and it is not published: give it +database (a DuckDB file) or the project "
                "targets:",
                file=str(file),
                line=line,
            )
            return
        places: dict[tuple[str, int], tuple[Path, int | None]] = {}
        texts: dict[str, list[str]] = {"pre": [], "post": []}
        for when, sql, file, line in hooks:
            places[(when, len(texts[when]))] = (file, line)
            texts[when].append(sql)
        published["hooks"] = {when: sql for when, sql in texts.items() if sql}
        self.hooks_at[id(published)] = places

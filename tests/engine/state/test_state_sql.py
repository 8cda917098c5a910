"""engine.state's boundaries. It owns the catalog's SQL: no module outside it holds a statement
over the catalog's tables, everything else asks the catalog (engine.state.catalog) by name, so a
table can change in one package and a query's cost is visible where the tables are defined. And
it builds on engine.core alone, so every layer above can use it."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.state.schema import TABLES

ROOT = Path(__file__).resolve().parents[3]
SCANNED = ("engine", "connectors", "transforms", "lineage", "benchmarks", "examples")
OWNER = ROOT / "engine" / "state"

_TABLE = re.compile(
    r"\b(?:from|join|into|update|exists|table)\s+(?:\w+\.)?("
    + "|".join((*TABLES, "meta"))
    + r")\b",
    re.IGNORECASE,
)
_STATEMENT = re.compile(r"\b(?:select|insert|update|delete|create|alter|drop)\b", re.IGNORECASE)


def catalog_sql(text: str) -> str | None:
    """The catalog table a piece of text runs SQL over, or None."""
    found = _TABLE.search(text)
    return found[1] if found and _STATEMENT.search(text) else None


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string nodes that are docstrings (prose, which may name tables freely)."""
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                found.add(id(value))
    return found


def _strings(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every string literal in a module that is not a docstring; adjacent
    literals arrive joined, as Python joins them."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.lineno, node.value


def _modules() -> list[Path]:
    return sorted(
        path
        for top in SCANNED
        for path in (ROOT / top).rglob("*.py")
        if not path.is_relative_to(OWNER) and ".venv" not in path.parts
    )


def test_no_module_outside_engine_state_runs_sql_over_the_catalogs_tables() -> None:
    modules = _modules()
    assert len(modules) > 100  # the tree was found, not an empty folder
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {table}: {text.strip()[:80]!r}"
        for path in modules
        for line, text in _strings(path)
        if (table := catalog_sql(text))
    ]
    assert offenders == [], "catalog SQL outside engine/state; ask engine.state by name:\n" + (
        "\n".join(offenders)
    )


def test_engine_state_imports_nothing_of_arrowline_but_engine_core() -> None:
    outside = []
    for path in sorted(OWNER.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            outside += [
                f"{path.relative_to(ROOT)}:{node.lineno}: {name}"
                for name in names
                if name.split(".")[0] in {"engine", *SCANNED}
                and not name.startswith(("engine.core", "engine.state"))
            ]
    assert outside == []


@pytest.mark.parametrize(
    ("text", "table"),
    [
        ("select pipeline from intervals where state = 'queued'", "intervals"),
        ("select r.pipeline, t.task_id from task_runs t join runs r using (run_id)", "task_runs"),
        ("insert into dead_letters (run_id) values (?)", "dead_letters"),
        ("UPDATE schedules SET paused = 1", "schedules"),
        ("select value from meta where key = 'schema_version'", "meta"),
        ("select * from arrowline.watermarks", "watermarks"),
    ],
)
def test_catalog_sql_is_recognised(text: str, table: str) -> None:
    assert catalog_sql(text) == table


@pytest.mark.parametrize(
    "text",
    [
        "no runs yet: nothing to collect",
        "select the runs to keep",  # prose: a verb, then no table after from/join/into
        "select * from orders join customers using (id)",  # a pipeline's own SQL
        "insert into arrowline_watermarks values (?)",  # a sink's state table
        "`arrowline runs` lists runs",
    ],
)
def test_other_text_is_not_taken_for_catalog_sql(text: str) -> None:
    assert catalog_sql(text) is None

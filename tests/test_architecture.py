"""The layout holds what the architecture promises, read from the code itself.

- The import contracts of pyproject.toml hold (`lint-imports`), and catch an upward import.
- No module grows past 600 lines (two concepts sharing a file, STYLE.md).
- Outside `connectors/`, no code names a connector: no import of a connector's package, no
  comparison with a connector's name or tag (`from:`, `to:`, `kind:` values), no mention of a
  connector's config classes. The engine asks descriptors (`connectors.registry`) instead.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.registry import CONNECTORS, connectors

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "connectors", "transforms", "lineage")
MAX_LINES = 600


def _modules(*packages: str) -> Iterator[Path]:
    for package in packages:
        yield from sorted((ROOT / package).rglob("*.py"))


def _tag_values() -> set[str]:
    """Every connector's name and the values of the tags that select its configs."""
    values = set(CONNECTORS)
    for descriptor in connectors():
        for model in (descriptor.source, descriptor.sink, descriptor.connection):
            if model is None:
                continue
            for name in ("from_", "to", "kind"):
                field = model.model_fields.get(name)
                if field is not None and field.annotation is not None:
                    values.update(getattr(field.annotation, "__args__", ()))
    return values


def _config_classes() -> set[str]:
    return {
        model.__name__
        for descriptor in connectors()
        for model in (descriptor.source, descriptor.sink, descriptor.connection)
        if model is not None
    }


def _violations(path: Path, tags: set[str], classes: set[str]) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            modules = []
        for module in modules:
            parts = module.split(".")
            if parts[0] == "connectors" and len(parts) > 1 and parts[1] in CONNECTORS:
                yield f"{where}:{node.lineno}: imports the {parts[1]} connector ({module})"
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                if isinstance(operand, ast.Constant) and operand.value in tags:
                    yield f"{where}:{node.lineno}: compares with connector name {operand.value!r}"
        if isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name in classes:
                yield f"{where}:{node.lineno}: names connector config class {name}"


def test_no_code_outside_connectors_names_a_connector() -> None:
    tags, classes = _tag_values(), _config_classes()
    assert {"files", "parquet", "duckdb", "postgres"} <= tags  # what the check looks for
    assert {"FilesSource", "PostgresSink"} <= classes
    found = [
        violation
        for path in _modules("engine", "transforms", "lineage")
        for violation in _violations(path, tags, classes)
    ]
    assert found == []


def test_the_check_finds_a_connector_named_in_engine_code(tmp_path: Path) -> None:
    # planted outside the tree: in engine/, a parallel worker's scan of engine/ would find it
    planted = tmp_path / "_planted_for_test.py"
    planted.write_text(
        "from connectors.postgres.config import PostgresSource\n"
        "def f(config):\n    return config.from_ == 'postgres' or isinstance(config, PostgresSource)\n",
        encoding="utf-8",
    )
    found = list(_violations(planted, _tag_values(), _config_classes()))
    assert len(found) == 4, found  # the import (module and name), the comparison, the class


def _lint_imports() -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"]
    return subprocess.run(
        command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_the_import_contracts_hold_and_catch_an_upward_import() -> None:
    """The layers in pyproject.toml hold today, and an upward import breaks them: a module of
    engine.state importing the CLI is reported by name."""
    kept = _lint_imports()
    assert kept.returncode == 0, kept.stdout + kept.stderr
    planted = ROOT / "engine" / "state" / "_planted_for_test.py"
    planted.write_text("import engine.cli\n", encoding="utf-8")
    try:
        broken = _lint_imports()
    finally:
        planted.unlink()
    assert broken.returncode != 0
    assert "engine.state._planted_for_test -> engine.cli" in broken.stdout


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_is_longer_than_600_lines(package: str) -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in _modules(package)
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_a_run_without_pandas_code_never_imports_pandas(tmp_path: Path) -> None:
    """pandas is installed beside pyarrow, and some pyarrow calls import it on first use
    (`Schema.empty_table` does): 0.3 s and 60 MB on every run that touched one. A pipeline
    of files, SQL, a UDF and a Parquet load has no use for it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [1, 2, 3], "amount": [1.5, None, 3.0]}), tmp_path / "in.parquet")
    (tmp_path / "udfs.py").write_text(
        "import polars as pl\n\ndef double():\n    return {'twice': pl.col('amount') * 2}\n"
    )
    (tmp_path / "p.yaml").write_text(
        "pipeline: light\ntasks:\n"
        "  - id: src\n    extract: {from: files, path: in.parquet}\n"
        "  - id: scored\n    udf: {input: src, function: 'udfs.py:double'}\n"
        "  - id: summed\n    sql: select sum(twice) as total from scored\n"
        "  - id: out\n    load: {input: summed, to: parquet, path: out.parquet}\n"
    )
    script = (
        "import sys\nfrom engine.api.pipeline import run\n"
        "result = run('p.yaml', project_dir='.')\nassert result.ok, result\n"
        "print('pandas' in sys.modules)\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert found.stdout.strip().splitlines()[-1] == "False", found.stderr

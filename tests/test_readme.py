"""The README runs as written. Its two commands are the project's contract with a new user (CI
runs the second); every other code block runs, in the README's order, in a copy of the
quickstart, as a reader would run it after the first command."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

import engine
from tests.conftest import PgSchema

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart"
BIN = Path(sys.executable).parent
"""Where this environment's `python` and `arrowline` are: the README's `.venv/bin`."""

README_CATALOG = "postgresql://arrowline@db.internal/ops?schema=arrowline"
"""The shared catalog the README's shell block names; the walkthrough points it at the test
server, in a schema of its own."""


@dataclass(frozen=True)
class Block:
    language: str
    body: str
    line: int
    """Line of the opening fence in README.md, for messages."""


def blocks() -> list[Block]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [
        Block(found.group(1), found.group(2), text.count("\n", 0, found.start()) + 1)
        for found in re.finditer(r"```(\w*)\n(.+?)\n```", text, flags=re.DOTALL)
    ]


def commands() -> list[str]:
    return [block.body for block in blocks() if block.language == "sh"]


def test_readme_starts_with_exactly_two_commands_quickstart_then_tests() -> None:
    first_section = (ROOT / "README.md").read_text(encoding="utf-8").split("\n## ")[0]
    blocks = re.findall(r"```(\w*)\n(.+?)\n```", first_section, flags=re.DOTALL)
    assert len(blocks) == 2
    quickstart, tests = (body for _, body in blocks)
    assert "arrowline run examples/quickstart/pipeline.yaml" in quickstart
    for tool in ("pytest", "mypy", "ruff check", "ruff format --check"):
        assert tool in tests


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands()[1] in ci.splitlines()


def test_every_block_is_of_a_kind_the_walkthrough_runs() -> None:
    found = blocks()
    assert [b.language for b in found[:2]] == ["sh", "sh"]
    unknown = [f"README.md:{b.line} ({b.language})" for b in found[2:] if b.language not in RUNNERS]
    assert not unknown, f"blocks the walkthrough cannot run: {unknown}"
    assert {b.language for b in found[2:]} == set(RUNNERS)  # and it runs every kind it knows


def test_the_two_commands_set_up_a_venv_then_use_only_what_it_installs() -> None:
    """The commands' venv steps cannot run inside a test; what they install is checked here,
    the quickstart's other steps run in the walkthrough, and CI runs the test command."""
    quickstart, tests = (block.body.split(" && ") for block in blocks()[:2])
    assert quickstart[:2] == ["python3.11 -m venv .venv", ".venv/bin/pip install -e ."]
    assert tests[:2] == ["python3.11 -m venv .venv", ".venv/bin/pip install -e '.[dev]'"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "arrowline" in project["scripts"]
    dev = {
        re.split(r"[\[<>=~ ]", requirement)[0]
        for requirement in project["optional-dependencies"]["dev"]
    }
    for step in quickstart[2:] + tests[2:]:
        program = shlex.split(step)[0]
        assert program.startswith(".venv/bin/"), step
        name = program.removeprefix(".venv/bin/")
        assert _provider(name) in {"python", "arrowline"} | dev, f"{step}: nothing installs {name}"


def _provider(program: str) -> str:
    """The distribution whose console script `program` is (`lint-imports`: import-linter), or
    the program's own name when no installed distribution declares it."""
    from importlib.metadata import entry_points

    for script in entry_points(group="console_scripts", name=program):
        if script.dist is not None:
            return script.dist.name
    return program


@pytest.mark.slow
def test_every_readme_block_runs_as_written_in_a_copy_of_the_quickstart(
    tmp_path: Path, pg_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ARROWLINE_PROJECT_DIR", raising=False)
    checkout = tmp_path / "checkout"
    shutil.copytree(
        QUICKSTART,
        checkout / "examples" / "quickstart",
        ignore=shutil.ignore_patterns("data", "out", ".arrowline", "__pycache__"),
    )
    quickstart, _, *rest = blocks()
    for step in quickstart.body.split(" && ")[2:]:  # after the venv: generate, then run
        _run(
            shlex.split(step.replace(".venv/bin/", f"{BIN}/")),
            checkout,
            f"README.md:{quickstart.line}",
        )
    catalog = PgSchema(pg_uri, "readme_" + str(os.getpid()))
    catalog.execute(f"drop schema if exists {catalog.schema} cascade")
    try:
        for block in rest:
            RUNNERS[block.language](block, checkout, catalog)
        copied = catalog.rows(f"select pipeline, state from {catalog.schema}.runs order by 1")
    finally:
        catalog.execute(f"drop schema if exists {catalog.schema} cascade")
    assert copied == [("large_orders", "SUCCESS"), ("quickstart", "SUCCESS")]
    with engine.open(checkout) as project:
        assert project.runs("quickstart")["state"].to_list() == ["SUCCESS"]  # nothing else in it
        assert project.runs("large_orders")["state"].to_list() == ["SUCCESS"]


def _run(argv: list[str], cwd: Path, where: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, (
        f"{where}: {shlex.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
    )
    return done


def _yaml(block: Block, checkout: Path, catalog: PgSchema) -> None:
    """The YAML tour is the quickstart's pipeline file, which the first command ran."""
    assert block.body + "\n" == (QUICKSTART / "pipeline.yaml").read_text(encoding="utf-8"), (
        f"README.md:{block.line}: the YAML block differs from examples/quickstart/pipeline.yaml"
    )
    ran = checkout / "examples" / "quickstart" / "pipeline.yaml"
    assert ran.read_text(encoding="utf-8") == block.body + "\n"


def _python(block: Block, checkout: Path, catalog: PgSchema) -> None:
    script = checkout / f"readme_{block.line}.py"
    script.write_text(block.body + "\n", encoding="utf-8")
    _run([sys.executable, str(script)], checkout, f"README.md:{block.line}")


def _sh(block: Block, checkout: Path, catalog: PgSchema) -> None:
    """A shell block, with the shared catalog it names pointed at the test server. A block
    ending in `arrowline scheduler` runs until SIGTERM: it has to lead, then stop cleanly."""
    assert README_CATALOG in block.body, (
        f"README.md:{block.line}: a shell block the test cannot aim"
    )
    separator = "&" if "?" in catalog.uri else "?"
    script = block.body.replace(README_CATALOG, f"{catalog.uri}{separator}schema={catalog.schema}")
    environment = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    shell = subprocess.Popen(
        ["bash", "-ec", script],
        cwd=checkout,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    if not block.body.splitlines()[-1].startswith("arrowline scheduler"):
        stdout, stderr = shell.communicate(timeout=300)
        assert shell.returncode == 0, f"README.md:{block.line}:\n{stdout}\n{stderr}"
        return
    assert shell.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(" leads the catalog " in s for s in seen):
        line = shell.stderr.readline()
        if not line:
            break
        seen.append(line)
    os.killpg(shell.pid, signal.SIGTERM)
    stdout, stderr = shell.communicate(timeout=120)
    output = "".join(seen) + stderr
    assert any(" leads the catalog " in s for s in seen), (
        f"README.md:{block.line}:\n{stdout}\n{output}"
    )
    assert shell.returncode == 0, f"README.md:{block.line}: exit {shell.returncode}\n{output}"


RUNNERS = {"yaml": _yaml, "python": _python, "sh": _sh}

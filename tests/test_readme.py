"""The README's two commands are the project's contract with a new user; CI runs the second."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```sh\n(.+?)\n```", text, flags=re.DOTALL)


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

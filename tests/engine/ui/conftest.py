from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.engine.ui.monitor import FLAKY, RULES, SHOP, UDFS


def arrowline(*args: str) -> str:
    from engine.cli import main

    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.stdout


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A project where `shop` ran once (10 of 100 rows quarantined) and `flaky` failed after
    two attempts (one open dead letter). The working directory is the project's."""
    folder = tmp_path_factory.mktemp("shop")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.delenv("ARROWLINE_PROJECT_DIR", raising=False)
        patch.delenv("ARROWLINE_CATALOG", raising=False)
        for name, text in (
            ("shop.yaml", SHOP),
            ("flaky.yaml", FLAKY),
            ("udfs.py", UDFS),
            ("rules.yaml", RULES),
        ):
            (folder / name).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        arrowline("run", "shop.yaml", "--no-progress")
        arrowline("run", "flaky.yaml", "--no-progress")
        yield folder

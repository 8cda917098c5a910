"""`arrowline status`: the next fire time of scheduled pipelines, and an invalid one's problems."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import Result

from tests.conftest import WritePipeline

Cli = Callable[..., Result]

SCHEDULED = """
pipeline: daily
schedule: "30 2 * * *"
tasks:
  - id: t
    sql: select 1 as n
"""

BROKEN = """
pipeline: broken
tasks:
  - id: first_task
    sql: select 1 as x
  - id: second_task
    depends_on: [frist_task]
    sql: select * from first_task
"""


def _squeezed(text: str) -> str:
    """Text without whitespace and table borders: what rich printed, however it wrapped."""
    return "".join(c for c in text if not c.isspace() and c not in "│┃")


def test_status_shows_the_next_fire_time_of_a_scheduled_pipeline(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    write("daily.yaml", SCHEDULED)
    (row,) = json.loads(cli("status", project, "--format", "json").stdout)
    next_run = datetime.fromisoformat(row["next_run"])
    assert (next_run.hour, next_run.minute) == (2, 30)
    assert timedelta(0) < next_run - datetime.now(UTC) <= timedelta(days=1)
    shown = cli("status", project)
    assert shown.exit_code == 0
    assert next_run.strftime("%Y-%m-%d %H:%M") in shown.stdout


def test_status_shows_an_invalid_pipelines_problems_whole(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    path = write("broken.yaml", BROKEN)
    (row,) = json.loads(cli("status", project, "--format", "json").stdout)
    expected = (
        f"{path}:6: error [task second_task]: depends on unknown task 'frist_task'. "
        "Did you mean 'first_task'? (unknown-dependency)"
    )
    assert expected in row["problem"]
    shown = cli("status", project)
    assert shown.exit_code == 0
    assert _squeezed(expected) in _squeezed(shown.stdout)
    assert "…" not in shown.stdout

"""What `arrowline run` logs look like: short on a terminal, every id in full in a file or JSON.

The terminal is a real pseudo-terminal and the runs real processes: whether stderr is a TTY is
exactly what decides the form."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

from tests.conftest import WritePipeline

PIPELINE = """
pipeline: orders_daily_refresh
tasks:
  - id: raw_customer_orders
    sql: select range as id from range(10)
  - id: enriched_customer_orders
    sql: select * from raw_customer_orders
"""
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _arrowline(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine", *args]


def _run_on_a_terminal(project: Path, *args: str, columns: int = 100) -> str:
    """Run arrowline with stderr and stdout on a pseudo-terminal `columns` wide; what it wrote."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "NO_COLOR", "TERM")}
    process = subprocess.Popen(
        _arrowline(*args),
        cwd=project,
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=child,
        env=env | {"TERM": "xterm-256color"},
    )
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError as exc:  # EIO: the terminal's other side is closed
            if exc.errno != errno.EIO:
                raise
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert process.wait(timeout=120) == 0
    return b"".join(chunks).decode()


def _log_lines(text: str) -> list[str]:
    plain = _ANSI.sub("", text).replace("\r", "\n")
    return [line for line in plain.splitlines() if re.match(r"\d\d:\d\d:\d\d", line)]


def _last_run_id(project: Path) -> str:
    from engine.state.catalog import CatalogReader, catalog_location

    with CatalogReader(catalog_location(project)) as catalog:
        return catalog.run("last").run_id


def test_a_terminal_gets_the_task_and_a_short_run_id_coloured_by_level(
    write: WritePipeline, project: Path
) -> None:
    path = write("p.yaml", PIPELINE)
    for progress in ("--no-progress", "--progress"):  # straight to stderr, or via the live view
        text = _run_on_a_terminal(project, "run", str(path), progress)
        run_id = _last_run_id(project)
        lines = _log_lines(text)
        assert "\x1b[" in text  # coloured
        assert not any("run_id=" in line or "task_id=" in line for line in lines), lines
        task_lines = [line for line in lines if "succeeded in" in line]
        assert len(task_lines) == 2, lines
        for line in task_lines:
            prefix = line.split(" | ")[0]
            assert prefix.split()[2:] in (
                [run_id[-6:], "raw_customer_orders"],
                [run_id[-6:], "enriched_customer_orders"],
            ), line
            assert len(prefix) <= 50, line
        # the run's own lines name it once in full, so the short id can be told apart
        (started,) = [line for line in lines if "run started" in line]
        assert f"orders_daily_refresh {run_id} |" in started


def test_a_log_file_and_json_lines_keep_every_id_in_full(
    write: WritePipeline, project: Path
) -> None:
    path = write("p.yaml", PIPELINE)
    log = project / "run.log"
    with log.open("w") as stderr:
        subprocess.run(
            _arrowline("run", str(path)),
            cwd=project,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            check=True,
            timeout=120,
        )
    run_id = _last_run_id(project)
    text = log.read_text()
    assert "\x1b[" not in text
    assert (
        f"pipeline=orders_daily_refresh run_id={run_id} task_id=enriched_customer_orders | "
        "succeeded in"
    ) in text

    # JSON on a terminal is still JSON, with the ids as they are
    text = _run_on_a_terminal(project, "run", str(path), "--log-format", "json", "--no-progress")
    run_id = _last_run_id(project)
    records = [
        json.loads(line)["record"]
        for line in text.replace("\r", "").splitlines()
        if line.startswith("{")
    ]
    succeeded = [r["extra"] for r in records if "succeeded" in r["message"]]
    assert {(e["pipeline"], e["run_id"]) for e in succeeded} == {("orders_daily_refresh", run_id)}
    assert {e["task_id"] for e in succeeded} == {"raw_customer_orders", "enriched_customer_orders"}


def test_a_logged_traceback_shows_no_local_values_that_could_hold_secrets() -> None:
    import io

    from loguru import logger

    from engine.cli.logs import configure_logging

    for fmt in ("text", "json"):
        stream = io.StringIO()
        configure_logging(fmt, "DEBUG", stream=stream, colorize=False)  # type: ignore[arg-type]

        def connect(password: str) -> None:
            raise ConnectionError("refused")

        secret = "-".join(["s3cret", "local", "value"])  # not in the source lines a trace shows
        try:
            connect(secret)
        except ConnectionError:
            logger.opt(exception=True).error("connect failed")
        logger.remove()
        written = stream.getvalue()
        assert "ConnectionError: refused" in written
        assert "s3cret-local-value" not in written, fmt

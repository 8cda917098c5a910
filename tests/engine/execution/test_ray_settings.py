"""`--executor ray` with an address where no Ray cluster answers: a clear error before any
task runs (apart from test_ray_executor.py, whose process is a running cluster's driver)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from click.testing import Result

from tests.conftest import WritePipeline
from tests.s3_server import S3Bucket

Cli = Callable[..., Result]


def test_an_address_that_does_not_answer_is_a_clear_error(
    s3: S3Bucket, write: WritePipeline, project: Path, cli: Cli
) -> None:
    text = f"pipeline: far\nworkspace: {s3.uri('far')}\ntasks:\n  - id: a\n    sql: select 1 as x\n"
    path = write("p.yaml", text)
    result = cli(
        "run", str(path), "--executor", "ray", "--address", "ray://127.0.0.1:9", "--no-progress"
    )
    assert result.exit_code != 0
    assert "does not answer" in result.output


def test_a_head_address_that_does_not_answer_is_a_clear_error_not_a_hang(
    s3: S3Bucket, write: WritePipeline, project: Path, cli: Cli
) -> None:
    import time

    text = f"pipeline: far\nworkspace: {s3.uri('far')}\ntasks:\n  - id: a\n    sql: select 1 as x\n"
    path = write("p.yaml", text)
    started = time.monotonic()
    result = cli("run", str(path), "--executor", "ray", "--address", "127.0.0.1:9", "--no-progress")
    assert time.monotonic() - started < 30
    assert result.exit_code != 0
    assert "does not answer" in result.output


def test_an_address_where_something_else_listens_is_refused_not_waited_on(
    s3: S3Bucket, write: WritePipeline, project: Path, cli: Cli
) -> None:
    """A port that takes connections but is no Ray cluster (a Redis, say): Ray's driver would
    wait there for ever; arrowline says so within seconds."""
    import socket
    import threading
    import time

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                connection.recv(64)
                connection.sendall(b"-ERR unknown command 'PRI'\r\n")

    threading.Thread(target=answer, daemon=True).start()
    text = f"pipeline: far\nworkspace: {s3.uri('far')}\ntasks:\n  - id: a\n    sql: select 1 as x\n"
    path = write("p.yaml", text)
    started = time.monotonic()
    try:
        result = cli(
            "run", str(path), "--executor", "ray", "--address", f"127.0.0.1:{port}", "--no-progress"
        )
    finally:
        server.close()
    assert time.monotonic() - started < 30
    assert result.exit_code != 0
    assert "answers, but not as a Ray cluster" in result.output, result.output
    assert "-ERR" in result.output

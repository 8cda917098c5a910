"""Each run's log lines kept beside the catalog, so the monitor's task page can show the lines
of one task: `<state>/logs/<pipeline>/<run_id>.jsonl`, one JSON object per line (time, level,
task, message, and the error's type and text when the line carries one).

Only what arrowline logs reaches it, and only while its logging is on (the CLI and the
scheduler turn it on; a notebook keeps the library quiet unless `logger.enable("engine")`).
Messages are masked on the way in (engine.core.secrets.redact), whatever configured the other
sinks. A resumed run appends to its file. The newest KEEP_LOGS runs of a pipeline keep theirs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loguru import logger

from engine.core.secrets import redact

__all__ = ["KEEP_LOGS", "LEVEL", "run_log"]

KEEP_LOGS = 200
"""Runs per pipeline whose log files are kept."""
LEVEL = "INFO"


@contextmanager
def run_log(folder: Path, pipeline: str, run_id: str) -> Iterator[Path]:
    """Keep the run's log lines in `folder/<pipeline>/<run_id>.jsonl` while the block runs."""
    target = folder / pipeline / f"{run_id}.jsonl"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        stream = target.open("a", encoding="utf-8")
    except OSError as exc:  # a read-only state folder costs the run its log file, not the run
        logger.bind(pipeline=pipeline, run_id=run_id).warning("no run log at {}: {}", target, exc)
        yield target
        return
    lock = threading.Lock()

    def sink(message: Any) -> None:
        record = message.record
        line: dict[str, Any] = {
            "at": record["time"].isoformat(),
            "level": record["level"].name,
            "task_id": record["extra"].get("task_id"),
            "message": redact(str(record["message"])),
        }
        if record["exception"] is not None and record["exception"].type is not None:
            line["error"] = f"{record['exception'].type.__name__}: " + redact(
                str(record["exception"].value)
            )
        with lock:
            stream.write(json.dumps(line) + "\n")
            stream.flush()

    handler = logger.add(
        sink,
        level=LEVEL,
        filter=lambda record: record["extra"].get("run_id") == run_id,
        catch=True,
    )
    try:
        yield target
    finally:
        logger.remove(handler)
        stream.close()
        _prune(target.parent)


def _prune(folder: Path) -> None:
    """Keep the newest KEEP_LOGS files (run ids sort by their start time)."""
    try:
        files = sorted(folder.glob("*.jsonl"))
        for old in files[:-KEEP_LOGS]:
            old.unlink(missing_ok=True)
    except OSError:
        pass

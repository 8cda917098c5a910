"""Logging for the command line. The library only emits records (loguru, disabled until enabled);
the CLI decides where they go and how they look.

Every record carries `pipeline`, `run_id` and `task_id` when they are known: the executor binds
the first two and `logger.contextualize` adds the task inside each attempt.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Literal, TextIO

from loguru import logger

__all__ = ["PACKAGES", "configure_logging"]

PACKAGES = ("engine", "connectors", "transforms", "lineage")
_CONTEXT = ("pipeline", "run_id", "task_id")


def _text_format(record: Any) -> str:
    extra = record["extra"]
    context = " ".join(f"{key}={extra[key]}" for key in _CONTEXT if extra.get(key))
    context = context.replace("{", "{{").replace("}", "}}").replace("<", r"\<")
    return (
        "<dim>{time:HH:mm:ss.SSS}</dim> <level>{level: <7}</level> "
        + (f"<cyan>{context}</cyan> " if context else "")
        + "| <level>{message}</level>\n{exception}"
    )


def configure_logging(
    fmt: Literal["text", "json"] = "text",
    level: str = "INFO",
    stream: TextIO | Callable[[str], Any] | None = None,
    colorize: bool | None = None,
) -> None:
    """Send arrowline's records to `stream` (stderr by default) as text or JSON lines."""
    from engine.secrets import redact

    logger.remove()
    for package in PACKAGES:
        logger.enable(package)

    # Secrets are masked in every record, whatever produced its message.
    def mask(record: Any) -> None:
        record["message"] = redact(record["message"])

    logger.configure(patcher=mask)
    sink: Any = stream if stream is not None else sys.stderr
    if fmt == "json":
        logger.add(sink, level=level, serialize=True, colorize=False)
    else:
        logger.add(sink, level=level, format=_text_format, colorize=colorize)

"""Logging for the command line. The library only emits records (loguru, disabled until enabled);
the CLI decides where they go and how they look.

Every record carries `pipeline`, `run_id` and `task_id` when they are known: the executor binds
the first two and `logger.contextualize` adds the task inside each attempt.

Where the lines go decides how much of that they show. JSON lines and text read by a program or
kept in a file (`2> run.log`, a service's journal) carry every id in full, `key=value`, so they
can be searched and joined. A person at a terminal gets a short form that fits one line: the
task and the random part of the run id (`a1b2c3 enriched | ...`), with the pipeline and the whole
run id only on the run's own lines (started, finished), coloured by level.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Literal, TextIO

from loguru import logger

from engine.spec.params import short_run_id

__all__ = ["PACKAGES", "configure_logging"]

PACKAGES = ("engine", "connectors", "transforms", "lineage")
_CONTEXT = ("pipeline", "run_id", "task_id")


def _escape(text: str) -> str:
    """Context values go into the format itself: braces and tags must stay text."""
    return text.replace("{", "{{").replace("}", "}}").replace("<", r"\<")


def _text_format(record: Any) -> str:
    extra = record["extra"]
    context = _escape(" ".join(f"{key}={extra[key]}" for key in _CONTEXT if extra.get(key)))
    return (
        "<dim>{time:HH:mm:ss.SSS}</dim> <level>{level: <7}</level> "
        + (f"<cyan>{context}</cyan> " if context else "")
        + "| <level>{message}</level>\n{exception}"
    )


def _compact_context(extra: dict[str, Any]) -> str:
    """`a1b2c3 enriched` inside a task; `orders 20241102T030000Z-a1b2c3` for the run itself
    (its start and end name it once in full); whatever is known otherwise."""
    pipeline, run_id, task_id = (str(extra.get(key) or "") for key in _CONTEXT)
    if task_id:
        return f"{short_run_id(run_id)} {task_id}" if run_id else task_id
    return " ".join(part for part in (pipeline, run_id) if part)


def _compact_format(record: Any) -> str:
    context = _escape(_compact_context(record["extra"]))
    return (
        "<dim>{time:HH:mm:ss}</dim> <level>{level: <7}</level> "
        + (f"<cyan>{context}</cyan> " if context else "")
        + "| <level>{message}</level>\n{exception}"
    )


def _is_terminal(sink: object) -> bool:
    isatty = getattr(sink, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # a closed or detached stream
        return False


def configure_logging(
    fmt: Literal["text", "json"] = "text",
    level: str = "INFO",
    stream: TextIO | Callable[[str], Any] | None = None,
    colorize: bool | None = None,
    compact: bool | None = None,
) -> None:
    """Send arrowline's records to `stream` (stderr by default) as text or JSON lines.

    `compact`: the short text form for a terminal; by default, when `stream` is one. `colorize`
    likewise. A callable stream (the live progress display's console) is no terminal to loguru,
    so its caller says what it is."""
    from engine.core.secrets import redact

    logger.remove()
    for package in PACKAGES:
        logger.enable(package)

    # Secrets are masked in every record, whatever produced its message.
    def mask(record: Any) -> None:
        record["message"] = redact(record["message"])

    logger.configure(patcher=mask)
    # Tracebacks go out without loguru's `diagnose` (every frame's local values, where a
    # resolved password may sit); messages are masked by the patcher above.
    sink: Any = stream if stream is not None else sys.stderr
    if fmt == "json":
        logger.add(sink, level=level, serialize=True, colorize=False, diagnose=False)
        return
    terminal = _is_terminal(sink)
    short = terminal if compact is None else compact
    logger.add(
        sink,
        level=level,
        format=_compact_format if short else _text_format,
        colorize=terminal if colorize is None else colorize,
        diagnose=False,  # loguru would print every frame's local values: passwords among them
    )

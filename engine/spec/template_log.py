"""dbt's `{{ log(message, info=False) }}` for templates (engine.spec.params)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from loguru import logger

from engine.core.secrets import MASK, is_secret_name, redact

__all__ = ["template_log"]


def template_log(
    task_id: str | None, params: Mapping[str, Any], *, quiet: bool = False
) -> Callable[..., str]:
    """dbt's `{{ log(message, info=False) }}`: the message to loguru at debug (info with
    `info=True`), bound to the task; it prints nothing. Secrets are masked here, not only by
    the CLI's log sink: a notebook's sink has no mask, and a template may print a parameter
    named like a secret (`params.api_token`) before any run has registered it."""
    hidden = sorted(
        (str(v) for k, v in params.items() if is_secret_name(k) and v is not None and str(v)),
        key=len,
        reverse=True,
    )

    def log(message: Any, info: bool = False) -> str:
        if quiet:
            return ""
        text = str(message)
        for secret in hidden:
            text = text.replace(secret, MASK)
        logger.bind(task_id=task_id).log("INFO" if info else "DEBUG", "{}", redact(text))
        return ""

    return log

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
    found: set[str] = set()
    for name, value in params.items():
        _secrets_in(value, is_secret_name(name), found)
    hidden = sorted(found, key=len, reverse=True)

    def log(message: Any, info: bool = False) -> str:
        if quiet:
            return ""
        text = str(message)
        for secret in hidden:
            text = text.replace(secret, MASK)
        logger.bind(task_id=task_id).log("INFO" if info else "DEBUG", "{}", redact(text))
        return ""

    return log


def _secrets_in(value: Any, secret: bool, found: set[str]) -> None:
    """Every text a secret parameter holds (its list's items, its mapping's values) and, in a
    mapping, every value under a key named like a secret; each also as `repr` writes it, which
    escapes quotes and backslashes (a list printed whole)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            _secrets_in(item, secret or is_secret_name(str(key)), found)
    elif isinstance(value, list | tuple | set):
        for item in value:
            _secrets_in(item, secret, found)
    elif secret and value is not None and str(value):
        found |= {str(value), repr(str(value))[1:-1]}

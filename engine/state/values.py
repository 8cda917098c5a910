"""How the catalog writes the values it stores besides plain columns: times, who acted, notes
from outside, parameters."""

from __future__ import annotations

import json
import os
import socket
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from engine.core.errors import ParameterError
from engine.core.secrets import mask_secrets, redact

__all__ = ["NOTE_MAX", "checked_note", "current_actor", "iso", "now_text", "params_text", "parse"]

NOTE_MAX = 2000


def now_text() -> str:
    """Now, as the catalog stores times: ISO 8601 in UTC, to the microsecond (text sorts as
    time does)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def iso(when: datetime) -> str:
    """A time the scheduler decided (a fire time, a logical date) as the catalog stores it."""
    return when.astimezone(UTC).isoformat()


def parse(text: str) -> datetime:
    """A stored time back as an aware datetime in UTC."""
    return datetime.fromisoformat(text).astimezone(UTC)


def current_actor() -> str:
    """Who is making a change by hand, for the audit: user@host."""
    return f"{os.environ.get('USER', 'unknown')}@{socket.gethostname()}"


def checked_note(note: str) -> str:
    """A note from outside (the command line, an API caller) as the catalog stores it: not
    blank, not past NOTE_MAX characters, free of control characters (they would rewrite a
    terminal that shows it), registered secrets masked."""
    text = note.strip()
    if not text:
        raise ParameterError("the note is empty; say why, e.g. 'source fixed, reloaded by hand'")
    if len(text) > NOTE_MAX:
        raise ParameterError(f"the note is {len(text):,} characters; at most {NOTE_MAX:,}")
    bad = next((c for c in text if unicodedata.category(c) == "Cc" and c not in "\t\n"), None)
    if bad is not None:
        raise ParameterError(
            f"the note contains the control character {bad!r} at position {text.index(bad) + 1}"
        )
    return redact(text)


def params_text(params: Mapping[str, Any]) -> str:
    """Parameters as stored: secret ones masked (a resume takes those from the environment)."""
    return json.dumps(mask_secrets(params), default=str, sort_keys=True)

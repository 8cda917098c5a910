"""Secrets in connection settings, and keeping them out of every message.

A connection value may be, or contain, `${env:NAME}` (an environment variable) or
`${file:PATH}` (a file's content, trailing newline removed; relative to the pipeline file).
References are resolved when a run or check starts, never at import or validation, and every
resolved secret is registered with the redactor, so log lines, errors stored in the catalog and
printed messages show `***` in its place. Passwords inside URIs are masked even when they did not
come from a reference.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path

from engine.errors import DefinitionError

__all__ = ["MASK", "find_references", "redact", "register_secret", "resolve_secrets"]

MASK = "***"
_REFERENCE = re.compile(r"\$\{(env|file):([^}]+)\}")
_URI_PASSWORD = re.compile(
    r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<password>[^@\s]+)(?=@)", re.I
)
_KEYWORD_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<password>'[^']*'|\S+)", re.I)

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Remember a secret so `redact` hides it. Very short values are not registered: masking
    every 'a' in every message would hide more than it protects."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """`text` with registered secrets and URI/keyword passwords replaced by `***`."""
    if not text:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _URI_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    return _KEYWORD_PASSWORD.sub(lambda m: m.group("head") + MASK, text)


def find_references(text: str) -> list[tuple[str, str]]:
    """The `(kind, name)` references in a value, without resolving them."""
    return [(kind, name.strip()) for kind, name in _REFERENCE.findall(text)]


def resolve_secrets(
    text: str, *, where: str, base_dir: Path, environ: Mapping[str, str] | None = None
) -> str:
    """Replace every reference with its value and register the values as secrets."""
    environ = os.environ if environ is None else environ

    def value_of(match: re.Match[str]) -> str:
        kind, name = match.group(1), match.group(2).strip()
        if kind == "env":
            if name not in environ:
                raise DefinitionError(
                    f"{where}: environment variable {name} is not set",
                    hint=f"export {name}=... before the run, or put the value in a file and "
                    "use ${file:PATH}",
                )
            value = environ[name]
        else:
            path = Path(name).expanduser()
            path = path if path.is_absolute() else base_dir / path
            try:
                value = path.read_text(encoding="utf-8").rstrip("\n")
            except OSError as exc:
                raise DefinitionError(
                    f"{where}: cannot read secret file {path}: {exc.strerror}"
                ) from None
        register_secret(value)
        for part in _URI_PASSWORD.finditer(value):  # a URI in an env var carries its password
            register_secret(part.group("password"))
        return value

    return _REFERENCE.sub(value_of, text)

"""Secrets in connection settings, and keeping them out of every message.

A connection value may be, or contain, `${env:NAME}` (an environment variable) or
`${file:PATH}` (a file's content, trailing newline removed; relative to the pipeline file).
References are resolved when a run or check starts, never at import or validation, and every
resolved secret is registered with the redactor, so log lines, errors stored in the catalog and
printed messages show `***` in its place.

A secret written into the pipeline itself never reaches the catalog or any output either: the
definition document, the recorded parameters and what `plan`/`render` print are masked when they
are produced (`mask_secrets`), by what a value is rather than by searching logs afterwards:

- the value of a key named like a secret (`password`, `api_key`, `token`, `Authorization`,
  `client_secret`, ...), anywhere: connection settings, libpq `options`, UDF args, headers,
  parameters. A `${env:...}`/`${file:...}` reference in it stays, since it is not the secret;
- the password in a URI's userinfo (`postgresql://user:PASSWORD@host`);
- `key=value` pairs whose key is named like a secret, in URI query strings (`?password=`,
  `&token=`, also percent-encoded inside `options=`) and libpq conninfo/`options` strings
  (`password='...'`, `-c password=...`);
- a header line written into text (`Authorization: Bearer ...`).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engine.core.errors import DefinitionError

__all__ = [
    "MASK",
    "find_references",
    "is_secret_name",
    "mask_document",
    "mask_secrets",
    "mask_text",
    "redact",
    "register_secret",
    "register_secrets_in",
    "resolve_secrets",
    "without_masked",
]

MASK = "***"
_REFERENCE = re.compile(r"\$\{(env|file):([^}]+)\}")
_URI_PASSWORD = re.compile(
    # greedy up to the last '@' before the path: libpq and urlsplit both end userinfo there
    r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s'\"]*:)(?P<password>[^\s'\"/]*)(?=@)",
    re.I,
)
_KEY_VALUE = re.compile(
    # `key=value` in conninfo, query strings and command lines; '%3D'/'%20' when percent-encoded
    r"(?P<head>(?:(?<=%20)|(?<=%26)|(?<![\w.]))(?P<key>[a-z_][\w.-]*)\s*(?:=|%3d)\s*)"
    r"(?P<password>'(?:[^'\\]|\\.)*'|\"[^\"]*\"|(?:[^\s'\"&#%;,)]|%(?!20|26|2c)[0-9a-f]{2})+)",
    re.I,
)
_HEADER = re.compile(
    # `Authorization: Bearer x`, `"api_key": "x"` written into a text
    r"(?P<head>(?<!\w)(?P<key>[a-z][\w-]*)[\"']?\s*:\s*[\"']?(?:(?:bearer|basic|token|digest)\s+)?)"
    r"(?P<password>[^\s'\"]+)",
    re.I,
)
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")
_SECRET_PARTS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "apikey",
    "credential",
    "authorization",
    "privatekey",
    "accesskey",
)
"""A name containing one of these (its words joined, lower case) names a secret."""
_SECRET_WORDS = frozenset({"pwd", "token", "auth", "cookie", "bearer"})
"""A name with one of these as a whole word names a secret (`access_token`, not `tokenizer`)."""

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Remember a secret so `redact` hides it. Very short values are not registered: masking
    every 'a' in every message would hide more than it protects."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """`text` with registered secrets, and the secrets `mask_text` finds, replaced by `***`.
    For messages, whose origin is unknown; values of a known shape go through `mask_secrets`."""
    if not text:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return mask_text(text)


_WHERE_WORDS = frozenset({"url", "uri", "endpoint", "path"})
"""A name ending in one of these says where a secret is found (`token_url`, `secret_path`),
not the secret itself."""


def is_secret_name(name: str) -> bool:
    """Whether a setting, parameter or header called `name` holds a secret."""
    words = [word.lower() for word in _WORD.findall(name)]
    if len(words) > 1 and words[-1] in _WHERE_WORDS:
        return False
    joined = "".join(words)
    return any(part in joined for part in _SECRET_PARTS) or not _SECRET_WORDS.isdisjoint(words)


def _is_header_name(name: str) -> bool:
    """`is_secret_name`, but a lone weak word is not enough in running text, where "unexpected
    token: ')'" is a parser's message, not a header."""
    words = _WORD.findall(name)
    joined = "".join(words).lower()
    return any(part in joined for part in _SECRET_PARTS) or (
        len(words) > 1 and is_secret_name(name)
    )


def _masked_value(value: str, found: list[str] | None) -> str:
    """`value` with everything but its `${env:...}`/`${file:...}` references replaced by `***`."""
    kept = [match.group(0) for match in _REFERENCE.finditer(value)]
    literal = _REFERENCE.sub("", value)
    if not literal.strip(" \t'\""):
        return value  # only references (perhaps quoted): nothing secret is written here
    if found is not None:
        found.extend(part for part in _REFERENCE.split(value)[::3] if part.strip())
    return MASK + "".join(kept)


def mask_text(text: str, found: list[str] | None = None) -> str:
    """`text` with URI userinfo passwords, secret `key=value` pairs and secret header lines
    masked (references kept). What was removed is appended to `found`."""
    text = _URI_PASSWORD.sub(
        lambda match: match.group("head") + _masked_value(match.group("password"), found), text
    )
    text = _mask_matches(_KEY_VALUE, text, is_secret_name, found)
    return _mask_matches(_HEADER, text, _is_header_name, found)


def _mask_matches(
    pattern: re.Pattern[str], text: str, secret: Callable[[str], bool], found: list[str] | None
) -> str:
    """Mask the `password` group of each match whose `key` is `secret`. A match whose key is
    not secret consumes nothing, so `note: Authorization: Bearer x` still finds the header."""
    parts: list[str] = []
    done = start = 0
    while (match := pattern.search(text, start)) is not None:
        if not secret(match.group("key")):
            start = match.start() + 1
            continue
        parts += [text[done : match.start()], match.group("head")]
        parts.append(_masked_value(match.group("password"), found))
        done = start = match.end()
    return "".join(parts) + text[done:]


def mask_secrets(value: Any, found: list[str] | None = None) -> Any:
    """A JSON-like value (a definition, parameters, a task's config) with its secrets masked:
    the value of every key named like a secret, and what `mask_text` finds in every text.
    Tuples come back as lists. What was removed is appended to `found`."""
    if isinstance(value, str):
        return mask_text(value, found)
    if isinstance(value, Mapping):
        return {
            key: _mask_secret(item, found)
            if isinstance(key, str) and is_secret_name(key)
            else mask_secrets(item, found)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_secrets(item, found) for item in value]
    return value


def _mask_secret(value: Any, found: list[str] | None) -> Any:
    """The value of a key named like a secret: masked whole, unless it is a settings block
    that names its own secrets (`auth: {type: bearer, token: ...}`), whose other settings
    (the scheme, a header's name, a duration) are no secrets and would otherwise be hidden
    from every message as if they were."""
    if isinstance(value, Mapping) and any(
        isinstance(key, str) and is_secret_name(key) for key in value
    ):
        return mask_secrets(value, found)
    return _mask_all(value, found)


def _mask_all(value: Any, found: list[str] | None) -> Any:
    """Every text in a secret's value, masked whole. Numbers and flags are left: a secret is
    text, and `token_limit: 100` is not one."""
    if isinstance(value, str):
        return _masked_value(value, found)
    if isinstance(value, Mapping):
        return {key: _mask_all(item, found) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_all(item, found) for item in value]
    return value


def register_secrets_in(value: Any) -> None:
    """Register every secret `mask_secrets` would remove from `value` with the redactor, so a
    password written into a pipeline is masked in messages too, like a resolved reference."""
    found: list[str] = []
    mask_secrets(value, found)
    for secret in found:
        register_secret(secret.strip("'\""))


def without_masked(params: Mapping[str, Any]) -> dict[str, Any]:
    """Recorded parameters without those that were masked when recorded: a resume or replay
    takes them from the pipeline's defaults and the environment again."""
    return {
        name: value
        for name, value in params.items()
        if not (isinstance(value, str) and MASK in value)
    }


_UNREAD: Any = object()


def mask_document(text: str, payload: Any = _UNREAD) -> str:
    """A definition document (YAML) with its secrets masked: stored ones (documents are masked
    when they are produced; this is for ones stored before that) and pipeline files shown to
    others. `payload`: the document already parsed, when the caller has it."""
    import yaml

    if payload is _UNREAD:
        try:  # libyaml's loader where PyYAML has it: a 5,000-task file in 0.2 s, not 2.5 s
            payload = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError:
            return redact(text)
    masked = mask_secrets(payload)
    if masked == payload:
        return text
    return yaml.safe_dump(masked, sort_keys=False, width=100, allow_unicode=True)


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

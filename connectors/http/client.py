"""One HTTP API as a run uses it: its resolved settings, its rate budget and concurrency cap
(shared by every task of the run), its authentication, and requests retried within its limits.

A request waits for a token of the connection's bucket before it goes (limits are budgeted
ahead, not learnt from 429s), and for a slot of its concurrency cap. A 429 or 5xx answer, a
timeout or a lost connection is retried with full-jitter backoff, the server's Retry-After
first; what the server says of its budget (`Retry-After`, `X-RateLimit-Remaining/Reset`,
`RateLimit-Remaining/Reset`) pauses the whole bucket, so the run's other requests wait too.
Any other 4xx fails at once with the body's message. Secrets are registered with the redactor
when they are resolved, and URLs are shown without the query parameter that carries a key.
"""

from __future__ import annotations

import base64
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import httpx

from connectors.http.config import (
    ApiKeyAuth,
    BasicAuth,
    BearerAuth,
    HttpConnection,
    OAuth2ClientCredentials,
)
from engine.core.cancel import CancelToken
from engine.core.errors import DataError, TransientTaskError, retry_after_seconds
from engine.core.secrets import MASK, redact, resolve_secrets

__all__ = ["Api", "TokenBucket", "resolve"]

_BACKOFF_BASE = 0.5
_BACKOFF_CAP = 30.0


class TokenBucket:
    """`rate` requests a second, up to `burst` at once, as virtual scheduling (GCRA): each
    request has a theoretical time, one interval after the one before, and may go at most
    half an interval early. The early margin absorbs the sleep and scheduling jitter that
    would otherwise be lost on every request (a plain bucket of one token kept 88% of the
    rate); the interval is 2% longer than the rate asks, so no second-long window ever holds
    more than `rate` requests. `pause` holds every taker until a time the server named."""

    MARGIN = 0.98

    def __init__(self, rate: float | None, burst: int = 1, clock: Any = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self._interval = 1.0 / (rate * self.MARGIN) if rate else 0.0
        self._tolerance = (burst - 1 + 0.5) * self._interval
        self._due = clock()
        """The theoretical time of the next request."""
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, self.clock() + seconds)

    def take(self, cancel: CancelToken | None = None) -> None:
        while True:
            with self._lock:
                now = self.clock()
                wait = self._paused_until - now
                if wait <= 0 and self.rate is None:
                    return
                if wait <= 0:
                    wait = self._due - self._tolerance - now
                    if wait <= 0:
                        self._due = max(now, self._due) + self._interval
                        return
            _sleep(min(wait, 0.5), cancel)


def _sleep(seconds: float, cancel: CancelToken | None) -> None:
    if cancel is not None:
        cancel.raise_if_cancelled()
    time.sleep(max(0.0, seconds))
    if cancel is not None:
        cancel.raise_if_cancelled()


@dataclass
class Api:
    """A resolved `kind: http` connection, for one run."""

    name: str
    base_url: str
    headers: dict[str, str]
    auth: Any
    timeout: float
    retries: int
    verify: bool
    max_concurrency: int
    bucket: TokenBucket
    key_param: str | None = None
    """The query parameter carrying an API key, hidden when a URL is shown."""
    _slots: threading.BoundedSemaphore = field(init=False, repr=False)
    _token: tuple[str, float] | None = field(default=None, init=False, repr=False)
    _token_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self._slots = threading.BoundedSemaphore(self.max_concurrency)

    def __repr__(self) -> str:  # headers and auth hold secrets
        return f"<Api {self.name} {self.base_url}>"

    def describe(self) -> str:
        return self.base_url

    def client(self) -> httpx.Client:
        return httpx.Client(
            timeout=self.timeout, verify=self.verify, follow_redirects=True, headers=self.headers
        )

    def url(self, path: str) -> str:
        """`path` under the base URL; an absolute URL (a next link) as it is."""
        if urlsplit(path).scheme:
            return path
        return urljoin(self.base_url.rstrip("/") + "/", path.lstrip("/"))

    def shown(self, url: str) -> str:
        """`url` fit for messages: the key parameter masked, registered secrets redacted."""
        parts = urlsplit(url)
        query = [(k, MASK if k == self.key_param else v) for k, v in parse_qsl(parts.query)]
        return redact(urlunsplit(parts._replace(query=urlencode(query, safe="*"))))

    # -- requests -------------------------------------------------------------------------------

    def request(
        self,
        client: httpx.Client,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        cancel: CancelToken | None = None,
    ) -> httpx.Response:
        """Send one request within the connection's limits, retried as the module says."""
        refreshed = False
        for attempt in range(self.retries + 1):
            self.bucket.take(cancel)
            sent_headers, sent_params = self._authenticated(client, headers, params, cancel)
            target = httpx.URL(url).copy_merge_params(sent_params)  # keeps a next link's query
            shown = self.shown(str(target))
            try:
                with self._slots:
                    response = client.request(method, target, json=json, headers=sent_headers)
            except httpx.TimeoutException:
                if attempt == self.retries:
                    raise TransientTaskError(
                        f"{method} {shown} took longer than {self.timeout:g}s {attempt + 1} times",
                        hint="raise the connection's timeout, or ask for smaller pages",
                    ) from None
                _sleep(_backoff(attempt), cancel)
                continue
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise TransientTaskError(
                        f"{method} {shown} failed: {redact(str(exc))}"
                    ) from None
                _sleep(_backoff(attempt), cancel)
                continue
            self._heed_budget(response)
            status = response.status_code
            if status == 401 and isinstance(self.auth, OAuth2ClientCredentials) and not refreshed:
                refreshed = True
                with self._token_lock:
                    self._token = None  # the server ended it early: fetch another, once
                continue
            if status == 429 or status >= 500:
                wait = retry_after_seconds(response)
                if attempt == self.retries:
                    raise TransientTaskError(
                        f"{method} {shown} answered {status} {attempt + 1} times: "
                        f"{_said(response)}",
                        retry_after=wait,
                    )
                _sleep(wait if wait is not None else _backoff(attempt), cancel)
                continue
            if status >= 400:
                raise DataError(
                    f"{method} {shown} answered {status} "
                    f"{response.reason_phrase}: {_said(response)}",
                    hint=_hint(status),
                )
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _heed_budget(self, response: httpx.Response) -> None:
        """Pause the bucket for what the server says is left of its budget."""
        headers = response.headers
        remaining = headers.get("x-ratelimit-remaining") or headers.get("ratelimit-remaining")
        reset = headers.get("x-ratelimit-reset") or headers.get("ratelimit-reset")
        if response.status_code == 429:
            wait = retry_after_seconds(response)
            self.bucket.pause(wait if wait is not None else 1.0)
        if remaining is not None and reset is not None:
            try:
                left, when = int(float(remaining)), float(reset)
            except ValueError:
                return
            if left <= 0:
                # seconds to wait, or (above ~a year of seconds) an epoch time
                self.bucket.pause(when - time.time() if when > 1e8 else when)

    def _authenticated(
        self,
        client: httpx.Client,
        headers: Mapping[str, str] | None,
        params: Mapping[str, Any] | None,
        cancel: CancelToken | None,
    ) -> tuple[dict[str, str], dict[str, Any]]:
        sent_headers, sent_params = dict(headers or {}), dict(params or {})
        auth = self.auth
        if isinstance(auth, ApiKeyAuth):
            if auth.location == "header":
                sent_headers[auth.name] = auth.api_key
            else:
                sent_params[auth.name] = auth.api_key
        elif isinstance(auth, BearerAuth):
            sent_headers["Authorization"] = f"Bearer {auth.token}"
        elif isinstance(auth, BasicAuth):
            pair = base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()
            sent_headers["Authorization"] = f"Basic {pair}"
        elif isinstance(auth, OAuth2ClientCredentials):
            sent_headers["Authorization"] = f"Bearer {self._oauth_token(client, auth, cancel)}"
        return sent_headers, sent_params

    def _oauth_token(
        self, client: httpx.Client, auth: OAuth2ClientCredentials, cancel: CancelToken | None
    ) -> str:
        with self._token_lock:
            now = time.monotonic()
            if self._token is not None and now < self._token[1]:
                return self._token[0]
            form = {"grant_type": "client_credentials", "client_id": auth.client_id}
            form["client_secret"] = auth.client_secret
            if auth.scope:
                form["scope"] = auth.scope
            url = self.url(auth.token_url)
            try:
                response = client.post(url, data=form)
            except httpx.TransportError as exc:
                raise TransientTaskError(
                    f"cannot reach the token endpoint {self.shown(url)}: {redact(str(exc))}"
                ) from None
            if response.status_code >= 400:
                error = TransientTaskError if response.status_code >= 500 else DataError
                raise error(
                    f"the token endpoint {self.shown(url)} answered {response.status_code}: "
                    f"{_said(response)}",
                    hint="check client_id, client_secret and scope",
                )
            try:
                body = response.json()
                token, lifetime = str(body["access_token"]), float(body.get("expires_in", 3600))
            except (ValueError, KeyError, TypeError):
                raise DataError(
                    f"the token endpoint {self.shown(url)} sent no access_token: {_said(response)}"
                ) from None
            from engine.core.secrets import register_secret

            register_secret(token)
            margin = min(auth.refresh_before.total_seconds(), lifetime / 2)
            self._token = (token, now + lifetime - margin)
            return token


def _backoff(attempt: int) -> float:
    """Full jitter: a random delay up to an exponentially growing cap."""
    return random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt))


def _said(response: httpx.Response) -> str:
    """What an error response says, briefly: a JSON body's message, else the start of its
    text (an HTML error page: its title)."""
    text = response.text
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("message", "error_description", "error", "detail", "title"):
            value = body.get(key)
            if isinstance(value, str | int | float) and str(value):
                return redact(str(value))[:300]
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return redact(value["message"])[:300]
    lowered = text.lower()
    if "<title>" in lowered:
        start = lowered.index("<title>") + len("<title>")
        end = lowered.find("</title>", start)
        return redact(text[start : end if end > 0 else start + 200].strip())[:300]
    return redact(" ".join(text.split()))[:300] or "(empty body)"


def _hint(status: int) -> str | None:
    return {
        401: "the API did not accept the credentials: check the connection's auth",
        403: "the credentials are not allowed this resource",
        404: "check the path and the connection's base_url",
    }.get(status)


def _resolved(value: Any, where: str, base_dir: Path) -> Any:
    """Every `${env:...}`/`${file:...}` reference in a config value, resolved (and the
    values registered as secrets)."""
    if isinstance(value, str):
        return resolve_secrets(value, where=where, base_dir=base_dir)
    if isinstance(value, dict):
        return {k: _resolved(v, where, base_dir) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_resolved(v, where, base_dir) for v in value)
    return value


def resolve(name: str, spec: HttpConnection, base_dir: Path) -> Api:
    where = f"connection {name!r}"
    data = _resolved(spec.model_dump(mode="json", by_alias=True), where, base_dir)
    resolved = HttpConnection.model_validate(data)
    limit = resolved.rate_limit
    bucket = TokenBucket(limit.per_second if limit else None, (limit.burst or 1) if limit else 1)
    auth = resolved.auth
    return Api(
        name=name,
        base_url=resolved.base_url,
        headers=dict(resolved.headers),
        auth=auth,
        timeout=resolved.timeout.total_seconds(),
        retries=resolved.retries,
        verify=resolved.verify,
        max_concurrency=resolved.max_concurrency,
        bucket=bucket,
        key_param=auth.name if isinstance(auth, ApiKeyAuth) and auth.location == "query" else None,
    )

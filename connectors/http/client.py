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

__all__ = ["Api", "TokenBucket", "resolve", "resolved_references"]

_BACKOFF_BASE = 0.5
_BACKOFF_CAP = 30.0
MAX_WAIT = 300.0
"""Seconds a request waits for a server's Retry-After or rate-limit reset; a longer wait
fails the attempt (transient, with the server's delay) for the task's own retry to wait."""
MAX_REDIRECTS = 5


class TokenBucket:
    """`rate` requests a second, up to `burst` at once, as virtual scheduling (GCRA): each
    request has a theoretical time, one interval after the one before, and may go a quarter
    of an interval early, which absorbs the sleep and scheduling jitter a plain one-token
    bucket loses on every request (it kept 88% of the rate). The interval is that of half a
    request less per `window` (the server's counting period) than the rate allows, so no
    window ever holds more than the rate's requests: 49.5 a second of 50, 15.5 of 16.
    `pause` holds every taker until a time the server named."""

    def __init__(
        self,
        rate: float | None,
        burst: int = 1,
        clock: Any = time.monotonic,
        window: float = 1.0,
    ) -> None:
        self.rate = rate
        self.clock = clock
        count = (rate or 0.0) * window
        self._interval = window / (count - 0.5) if count > 1 else (window / count if count else 0.0)
        self._tolerance = (burst - 1 + 0.25) * self._interval if count > 1 else 0.0
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
    """Wait, in slices, so a cancel (Ctrl-C, the task's timeout) ends the wait at once."""
    end = time.monotonic() + max(0.0, seconds)
    while True:
        if cancel is not None:
            cancel.raise_if_cancelled()
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.2))


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
        """Redirects are followed by `request`, which decides what credentials go along."""
        return httpx.Client(
            timeout=self.timeout, verify=self.verify, follow_redirects=False, headers=self.headers
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

    def unkeyed(self, url: str) -> str:
        """`url` without the key parameter (a next link that echoes it): what a checkpoint
        keeps. `request` adds the key to every request anyway."""
        if self.key_param is None:
            return url
        parts = urlsplit(url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        kept = [(k, v) for k, v in query if k != self.key_param]
        if len(kept) == len(query):
            return url
        return urlunsplit(parts._replace(query=urlencode(kept)))

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
        refreshed, attempt = False, 0
        while True:
            self.bucket.take(cancel)
            sent_headers, sent_params = self._authenticated(client, headers, params, cancel)
            target = httpx.URL(url).copy_merge_params(sent_params)  # keeps a next link's query
            shown = self.shown(str(target))
            try:
                with self._slots:
                    response = self._send(client, method, target, json, sent_headers)
            except httpx.TimeoutException:
                if attempt >= self.retries:
                    raise TransientTaskError(
                        f"{method} {shown} took longer than {self.timeout:g}s {attempt + 1} times",
                        hint="raise the connection's timeout, or ask for smaller pages",
                    ) from None
                _sleep(_backoff(attempt), cancel)
                attempt += 1
                continue
            except httpx.TransportError as exc:
                if attempt >= self.retries:
                    raise TransientTaskError(
                        f"{method} {shown} failed: {redact(str(exc))}"
                    ) from None
                _sleep(_backoff(attempt), cancel)
                attempt += 1
                continue
            self._heed_budget(response)
            status = response.status_code
            if status == 401 and isinstance(self.auth, OAuth2ClientCredentials) and not refreshed:
                refreshed = True  # the server ended the token early: fetch another, once
                with self._token_lock:
                    self._token = None
                continue
            if status == 429 or status >= 500:
                wait = retry_after_seconds(response)
                if attempt >= self.retries or (wait is not None and wait > MAX_WAIT):
                    raise TransientTaskError(
                        f"{method} {shown} answered {status} {attempt + 1} times: "
                        f"{_said(response)}",
                        retry_after=wait,
                    )
                _sleep(wait if wait is not None else _backoff(attempt), cancel)
                attempt += 1
                continue
            if status >= 400:
                raise DataError(
                    f"{method} {shown} answered {status} "
                    f"{response.reason_phrase}: {_said(response)}",
                    hint=_hint(status),
                )
            return response

    def _send(
        self,
        client: httpx.Client,
        method: str,
        target: httpx.URL,
        json: Any,
        headers: dict[str, str],
    ) -> httpx.Response:
        """One request, following redirects: to the same origin with the credentials, to
        another without any header or parameter of the connection's (httpx itself keeps
        every header but Authorization, which would hand an API key to the other host)."""
        own = (target.scheme, target.host, target.port)
        response = client.request(method, target, json=json, headers=headers)
        for _ in range(MAX_REDIRECTS):
            location = response.headers.get("location")
            if not response.is_redirect or not location:
                return response
            target = target.join(location)
            if (target.scheme, target.host, target.port) != own:
                if self.key_param is not None:
                    target = target.copy_remove_param(self.key_param)
                headers = {}
                response = httpx.request(
                    "GET", target, timeout=self.timeout, verify=self.verify, follow_redirects=False
                )
                continue
            if response.status_code in (301, 302, 303):
                method, json = "GET", None
            response = client.request(method, target, json=json, headers=headers)
        raise DataError(f"{self.shown(str(target))}: more than {MAX_REDIRECTS} redirects")

    def _heed_budget(self, response: httpx.Response) -> None:
        """Pause the bucket for what the server says is left of its budget."""
        headers = response.headers
        remaining = headers.get("x-ratelimit-remaining") or headers.get("ratelimit-remaining")
        reset = headers.get("x-ratelimit-reset") or headers.get("ratelimit-reset")
        if response.status_code == 429:
            wait = retry_after_seconds(response)
            self.bucket.pause(min(wait if wait is not None else 1.0, MAX_WAIT))
        if remaining is not None and reset is not None:
            try:
                left, when = int(float(remaining)), float(reset)
            except ValueError:
                return
            if left <= 0:
                # seconds to wait, or an epoch time in seconds or milliseconds
                if when > 1e11:
                    when /= 1000
                wait = when - time.time() if when > 1e8 else when
                self.bucket.pause(min(max(wait, 0.0), MAX_WAIT))

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
                token = str(body["access_token"])
                lifetime = float(body.get("expires_in") or 3600)
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


def resolved_references(value: Any, where: str, base_dir: Path) -> Any:
    """`_resolved`, for a resource's own headers and params."""
    return _resolved(value, where, base_dir)


def _resolved(value: Any, where: str, base_dir: Path) -> Any:
    """Every `${env:...}`/`${file:...}` reference in a config value, resolved (and the
    values registered as secrets)."""
    if isinstance(value, str):
        return resolve_secrets(value, where=where, base_dir=base_dir) if "${" in value else value
    if isinstance(value, dict):
        return {k: _resolved(v, where, base_dir) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_resolved(v, where, base_dir) for v in value)
    return value


def _register_encoded(auth: Any) -> None:
    """The forms a secret travels in, so an echo of them is masked too: a basic pair as
    base64, a key as it is percent-encoded in a query string."""
    from urllib.parse import quote, quote_plus

    from engine.core.secrets import register_secret

    if isinstance(auth, BasicAuth):
        register_secret(base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode())
    for secret in (getattr(auth, "api_key", None), getattr(auth, "token", None)):
        if secret:
            register_secret(quote(secret, safe=""))
            register_secret(quote_plus(secret))


def resolve(name: str, spec: HttpConnection, base_dir: Path) -> Api:
    where = f"connection {name!r}"
    data = _resolved(spec.model_dump(mode="json", by_alias=True), where, base_dir)
    resolved = HttpConnection.model_validate(data)
    limit = resolved.rate_limit
    bucket = TokenBucket(limit.per_second if limit else None, (limit.burst or 1) if limit else 1)
    auth = resolved.auth
    _register_encoded(auth)
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

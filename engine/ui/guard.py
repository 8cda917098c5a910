"""Who may use the monitor, and which requests may change anything.

The policy is the scheduler API's (engine.scheduling.http): bound to loopback, anyone on the
machine may look; bound anywhere else, every request needs the token, given once as
`?token=...` (kept in an HttpOnly, SameSite=Strict cookie) or as `Authorization: Bearer ...`.

Actions are POSTs and the attacker to keep out is a web page in the user's own browser, which
can send a form to loopback but cannot read our pages. So a POST must carry the form token (an
HMAC of the server's secret, rendered into our own forms), must not come from another origin
(`Origin`, `Sec-Fetch-Site`), and every request must name a host this server answers as (a
page that rebinds its own name to 127.0.0.1 still sends its own name as `Host`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from engine.scheduling.serving import host_of, is_loopback

__all__ = ["COOKIE", "Guard", "Refusal"]

COOKIE = "arrowline_token"


class Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Guard:
    host: str
    port: int
    token: str | None = None
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def __post_init__(self) -> None:
        if not is_loopback(self.host) and not self.token:
            raise ValueError(
                f"the monitor binds {self.host}, which is not loopback: give it a token "
                "(--token, or $ARROWLINE_UI_TOKEN) so that only those who have it can use it"
            )

    @property
    def cookie(self) -> str:
        """The token's cookie: named by port, as cookies are shared by every port of a host."""
        return f"{COOKIE}_{self.port}"

    def form_token(self) -> str:
        """The token our forms carry: one per server run, so a page elsewhere cannot know it."""
        return hmac.new(self.secret, b"arrowline-ui-form", hashlib.sha256).hexdigest()

    def check_host(self, host_header: str | None) -> None:
        """The Host header names this server: loopback, or the address it was bound to."""
        hostname = host_of(host_header or "")
        if is_loopback(hostname) or hostname == self.host.strip("[]").lower():
            return
        if self.token and self.host in ("0.0.0.0", "::"):
            return  # bound to every address: any name may reach it, and the token decides
        raise Refusal(403, f"this server does not answer to the host {hostname!r}")

    def check_token(self, *, bearer: str | None, cookie: str | None, query: str | None) -> None:
        if self.token is None:
            return
        for given in (bearer, cookie, query):
            if given is not None and hmac.compare_digest(given.encode(), self.token.encode()):
                return
        raise Refusal(401, "this monitor needs its token: open it as /?token=... once")

    def check_post(
        self,
        *,
        host_header: str | None,
        origin: str | None,
        fetch_site: str | None,
        form_token: str | None,
    ) -> None:
        """A change comes from one of our own pages: same origin, with our form's token."""
        if fetch_site is not None and fetch_site not in ("same-origin", "none"):
            raise Refusal(403, f"a {fetch_site} request cannot change anything here")
        if origin is not None:
            try:
                netloc = urlsplit(origin).netloc
            except ValueError:  # "http://[::1" and the like
                netloc = None
            if netloc != (host_header or ""):
                raise Refusal(403, f"a request from {origin[:100]!r} cannot change anything here")
        if form_token is None or not hmac.compare_digest(form_token, self.form_token()):
            raise Refusal(403, "the form's token is missing or stale: reload the page and retry")

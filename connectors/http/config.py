"""Configuration of HTTP API sources (`extract: {from: http}`) and their named connections
(`connections: {name: {kind: http}}`)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from connectors.base import IncrementalSpec
from engine.core.config import ConfigModel
from engine.core.durations import Duration

__all__ = [
    "ApiKeyAuth",
    "BasicAuth",
    "BearerAuth",
    "HttpConnection",
    "HttpIncremental",
    "HttpSource",
    "OAuth2ClientCredentials",
    "Paginator",
    "ParentResource",
    "RateLimit",
]


class ApiKeyAuth(ConfigModel):
    """A key sent with every request, in a header or the query string."""

    type: Literal["api_key"] = Field(description="Selects this scheme.")
    name: str = Field("X-API-Key", description="Header or query parameter name.")
    api_key: str = Field(description="The key, e.g. '${env:SHOP_API_KEY}'.")
    location: Literal["header", "query"] = Field("header", description="Where the key goes.")


class BearerAuth(ConfigModel):
    """`Authorization: Bearer <token>`."""

    type: Literal["bearer"] = Field(description="Selects this scheme.")
    token: str = Field(description="The token, e.g. '${file:/run/secrets/api_token}'.")


class BasicAuth(ConfigModel):
    """HTTP basic authentication."""

    type: Literal["basic"] = Field(description="Selects this scheme.")
    username: str = Field(description="User name.")
    password: str = Field(description="Password, e.g. '${env:API_PASSWORD}'.")


class OAuth2ClientCredentials(ConfigModel):
    """OAuth2 client credentials: a token fetched from `token_url`, fetched again before it
    expires and once when the API answers 401."""

    type: Literal["oauth2_client_credentials"] = Field(description="Selects this scheme.")
    token_url: str = Field(description="The token endpoint (absolute, or relative to base_url).")
    client_id: str = Field(description="Client id.")
    client_secret: str = Field(description="Client secret, e.g. '${env:API_CLIENT_SECRET}'.")
    scope: str | None = Field(None, description="Space-separated scopes to ask for.")
    refresh_before: Duration = Field(
        timedelta(seconds=60), description="Fetch a new token this long before it expires."
    )


Auth = Annotated[
    ApiKeyAuth | BearerAuth | BasicAuth | OAuth2ClientCredentials, Field(discriminator="type")
]


class RateLimit(ConfigModel):
    """Requests allowed, budgeted ahead with a token bucket shared by every task of a run that
    uses the connection; what the server announces (Retry-After, X-RateLimit-*, RateLimit-*)
    slows it further."""

    requests: float = Field(gt=0, description="Requests allowed per `per`.")
    per: Literal["second", "minute"] = Field("second", description="The period of `requests`.")
    burst: int | None = Field(
        None, ge=1, description="Requests that may go at once after a pause (default: 1)."
    )

    @property
    def per_second(self) -> float:
        return self.requests / (60.0 if self.per == "minute" else 1.0)


class HttpConnection(ConfigModel):
    """A named HTTP API. Secrets come from `${env:VAR}` or `${file:path}` references, resolved
    when a run starts and never printed."""

    kind: Literal["http"] = Field(description="Selects this connection type.")
    base_url: str = Field(description="https://api.example.com/v1: paths are relative to it.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Headers sent with every request."
    )
    auth: Auth | None = Field(None, description="How requests authenticate.")
    timeout: Duration = Field(
        timedelta(seconds=30),
        description="How long a request may wait for the server (to connect, or between two "
        "pieces of an answer) before it is retried.",
    )
    rate_limit: RateLimit | None = Field(None, description="Requests allowed, budgeted ahead.")
    max_concurrency: int = Field(
        4, ge=1, le=64, description="Requests in flight at once on this connection."
    )
    retries: int = Field(
        5,
        ge=0,
        le=20,
        description="Times a request answered 429 or 5xx, or timed out, is sent "
        "again (full-jitter backoff, the server's Retry-After first).",
    )
    verify: bool = Field(True, description="Verify the server's TLS certificate.")

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0:
            raise ValueError("timeout must be longer than 0s")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if "${" in value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"base_url must be an http:// or https:// URL, not {value!r}")
        return value


_PARALLEL = (
    "Pages requested at once: the next ones the paginator will ask for, fetched while the "
    "current one is read (each within the connection's rate limit and concurrency cap). "
    "Pages are still read in order, as one at a time would read them; a page that moves the "
    "pages after it (a short one) drops what was fetched ahead of it, which is asked for again."
)


class OffsetPaginator(ConfigModel):
    """`?offset=0&limit=100`, then offset 100, 200, ..."""

    type: Literal["offset"] = Field(description="Selects this style.")
    limit: int = Field(100, ge=1, description="Records asked for per page.")
    offset_param: str = Field("offset", description="Query parameter of the offset.")
    limit_param: str = Field("limit", description="Query parameter of the page size.")
    total_path: str | None = Field(
        None, description="Where the response says how many records there are (e.g. meta.total)."
    )
    parallel: int = Field(1, ge=1, le=16, description=_PARALLEL + " Needs total_path.")

    @model_validator(mode="after")
    def _parallel_needs_a_total(self) -> OffsetPaginator:
        if self.parallel > 1 and self.total_path is None:
            raise ValueError("parallel pages need total_path: no page past the end is asked for")
        return self


class PageNumberPaginator(ConfigModel):
    """`?page=1`, then 2, 3, ..."""

    type: Literal["page_number"] = Field(description="Selects this style.")
    page_param: str = Field("page", description="Query parameter of the page number.")
    start: int = Field(1, ge=0, description="The first page's number.")
    size: int | None = Field(None, ge=1, description="Records asked for per page, if any.")
    size_param: str = Field("per_page", description="Query parameter of the page size.")
    total_pages_path: str | None = Field(
        None, description="Where the response says how many pages there are."
    )
    parallel: int = Field(1, ge=1, le=16, description=_PARALLEL + " Needs total_pages_path.")

    @model_validator(mode="after")
    def _parallel_needs_a_total(self) -> PageNumberPaginator:
        if self.parallel > 1 and self.total_pages_path is None:
            raise ValueError(
                "parallel pages need total_pages_path: no page past the end is asked for"
            )
        return self


class CursorPaginator(ConfigModel):
    """A cursor from each response (`cursor_path`) sent with the next request."""

    type: Literal["cursor"] = Field(description="Selects this style.")
    cursor_path: str = Field(description="Where the next cursor is in the body: meta.next_cursor.")
    cursor_param: str = Field("cursor", description="Query parameter (or JSON body key).")
    location: Literal["query", "body"] = Field("query", description="Where the cursor goes.")


class LinkHeaderPaginator(ConfigModel):
    """The next page's URL in the `Link: <...>; rel="next"` header (GitHub's style)."""

    type: Literal["link_header"] = Field(description="Selects this style.")


class NextUrlPaginator(ConfigModel):
    """The next page's URL in the body (`next_path`)."""

    type: Literal["next_url"] = Field(description="Selects this style.")
    next_path: str = Field("next", description="Where the next URL is in the body.")


class SinglePage(ConfigModel):
    """One request, one page."""

    type: Literal["single_page"] = Field(description="Selects this style.")


class AutoPaginator(ConfigModel):
    """Detected from the first response: a Link header, a next URL (`next`, `next_url`,
    `links.next`), a cursor (`next_cursor`, `cursor`, `meta.next_cursor`), else one page. The
    log says which it chose; a response whose style it cannot tell fails the task rather
    than stop after page one."""

    type: Literal["auto"] = Field(description="Selects this style.")


Paginator = Annotated[
    OffsetPaginator
    | PageNumberPaginator
    | CursorPaginator
    | LinkHeaderPaginator
    | NextUrlPaginator
    | SinglePage
    | AutoPaginator,
    Field(discriminator="type"),
]


class HttpIncremental(IncrementalSpec):
    """Read only what changed: the committed watermark of `cursor` (a field of the records)
    goes into a request parameter, less `lookback`; records at or before it that come back
    anyway are dropped by the same (cursor, key) comparison as database extracts, when the
    cursor's type allows it exactly (declare it in `columns`: a timestamp, a number)."""

    param: str = Field(description="Query parameter (or JSON body key) of the start: since.")
    location: Literal["query", "body"] = Field("query", description="Where the start goes.")
    initial: str | None = Field(
        None, description="Start of the first run, with nothing committed (none: everything)."
    )
    format: Literal["iso", "epoch", "epoch_ms", "date"] = Field(
        "iso",
        description="How the start is written: ISO 8601, seconds or milliseconds since 1970, "
        "or a date.",
    )


class ParentResource(ConfigModel):
    """The resource whose records a child path names (`/orders/{parent.id}/items`): read
    first, page by page, each record's children fetched with the connection's concurrency."""

    path: str = Field(description="Path of the parent resource: /orders.")
    params: dict[str, Any] = Field(default_factory=dict, description="Query parameters.")
    data_path: str | None = Field(None, description="Where the parent's records are.")
    paginate: Paginator = Field(
        default_factory=lambda: AutoPaginator(type="auto"), description="How its pages follow."
    )
    has_more_path: str | None = Field(None, description="As for the resource itself.")
    fields: tuple[str, ...] = Field(
        (), description="Parent fields every child row carries, as parent_<field>."
    )


_PARENT_FIELD = re.compile(r"\{parent\.([A-Za-z_]\w*)\}")


class HttpSource(ConfigModel):
    """Records of a JSON API, page by page, straight into Arrow."""

    from_: Literal["http"] = Field(alias="from", description="Selects this source.")
    connection: str = Field(description="Name of a `kind: http` connection.")
    path: str = Field(description="Path under the connection's base_url: /orders.")
    method: Literal["GET", "POST"] = Field("GET", description="GET, or POST with `json`.")
    params: dict[str, Any] = Field(default_factory=dict, description="Query parameters.")
    json_: dict[str, Any] | None = Field(
        None, alias="json", description="JSON body of a POST request."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Headers for this resource, beside the connection's."
    )
    data_path: str | None = Field(
        None,
        description="Where the records are in the body (data, result.items, $.data.items); "
        "a body that is a list needs none, and an object holding one list is found.",
    )
    columns: dict[str, str] | None = Field(
        None,
        description="Types by field (int64, float64, string, timestamp[us, UTC], ...); these "
        "win over what the first page suggests.",
    )
    primary_key: tuple[str, ...] = Field((), description="Fields that identify a record.")
    paginate: Paginator = Field(
        default_factory=lambda: AutoPaginator(type="auto"), description="How pages follow."
    )
    has_more_path: str | None = Field(
        None, description="Where the body says whether more pages follow (has_more)."
    )
    max_pages: int | None = Field(
        None, ge=1, description="Stop after this many pages (a sample; a run says so)."
    )
    incremental: HttpIncremental | None = Field(None, description="Read only what changed.")
    parent: ParentResource | None = Field(
        None,
        description="Fan out over a parent resource's records: `path` names its fields as "
        "{parent.<field>}.",
    )

    @property
    def parent_fields(self) -> list[str]:
        """The parent fields `path` names."""
        return _PARENT_FIELD.findall(self.path)

    @field_validator("columns")
    @classmethod
    def _known_types(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        from engine.core.types import parse_type

        for name, kind in (value or {}).items():
            try:
                parse_type(kind)
            except ValueError as exc:
                raise ValueError(f"columns.{name}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _body_with_post(self) -> HttpSource:
        if self.json_ is not None and self.method != "POST":
            raise ValueError("a json body needs method: POST")
        if bool(self.parent_fields) != (self.parent is not None):
            raise ValueError(
                "a path naming {parent.<field>} needs a parent resource, and a parent needs "
                "the path to name one of its fields"
            )
        in_body = isinstance(self.paginate, CursorPaginator) and self.paginate.location == "body"
        if in_body and self.method != "POST":
            raise ValueError("a cursor in the body needs method: POST")
        return self

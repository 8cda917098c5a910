"""The HTTP connector's sections of `docs/pipeline-reference.md`."""

from __future__ import annotations

from connectors.base import Section
from connectors.http.config import HttpConnection, HttpSource

__all__ = ["SECTIONS"]

SECTIONS = (
    Section(
        "connections: kind: http",
        HttpConnection,
        "A JSON API. `auth` is `api_key` (a header or query parameter), `bearer`, `basic` or "
        "`oauth2_client_credentials` (a token fetched before it expires, and again once on "
        "401). `rate_limit` is budgeted ahead with a token bucket every task of a run shares; "
        "the server's `Retry-After`, `X-RateLimit-*` and `RateLimit-*` headers pause it further. "
        "429 and 5xx answers and timeouts are retried with full-jitter backoff; other 4xx fail "
        "at once with the body's message. Secrets come from `${env:...}`/`${file:...}` and "
        "never reach logs, the catalog or any output; a key in the query string is shown as "
        "`***` in every URL arrowline prints. `arrowline check` sends one request with the "
        "connection's auth.",
        """\
connections:
  shop:
    kind: http
    base_url: https://api.shop.example/v1
    auth: {type: bearer, token: "${env:SHOP_TOKEN}"}
    rate_limit: {requests: 10, per: second, burst: 5}""",
    ),
    Section(
        "extract: from: http",
        HttpSource,
        "Pages of records, each parsed into Arrow in one step (nested objects become structs, "
        "arrays lists) and spilled to disk, so memory is bounded by a page. Types may widen "
        "across pages (a field NULL at first, integers that later hold fractions: said in the "
        "log); a field whose types cannot meet fails the task naming page and field, and "
        "`columns` fixes types outright. `paginate` is `offset`, `page_number`, `cursor` (from "
        "a body path into a query parameter or the JSON body), `link_header`, `next_url`, "
        "`single_page`, or `auto` (the default), which detects the style from the first "
        "response and says in the log which it chose. `offset` and `page_number` with a "
        "total path take `parallel: N`: the next N pages are requested at once while the "
        "current one is read, and still read in order (a short page drops what was fetched "
        "ahead of it). After the first page, a body that is plainly JSON (one object, valid "
        "UTF-8, no NaN, not nested past 512 levels) is read by Arrow's JSON reader in the "
        "types the pages before had, never guessing a date or time; any other page is "
        "parsed by orjson. Pages end on an empty page, a total "
        "reached, no next link or cursor; a cursor or URL that repeats fails the task, and so "
        "does an end while the response still says there is more (`has_more`, a total, a "
        "`Link: rel=next`): never a silent partial load. `incremental` sends the committed "
        "watermark of a record field as a request parameter (less `lookback`) and drops "
        "records at or before it that come back. `parent` fans out: a path naming "
        "`{parent.<field>}` is fetched for every record of the parent resource, on the "
        "connection's concurrency, each row carrying the parent's `fields` as parent_<field>. "
        "Each page's body is checkpointed as soon as it is fetched: a retry, or `--resume` "
        "after a crash or a kill -9, converts the bodies it kept and goes on from the page "
        "after the last one fetched, so only the request in flight is sent again; a fan-out "
        "goes on from the parent page being worked on, past the parents whose children were "
        "all kept, with the child pages it kept (one request in flight per worker is sent "
        "again).",
        """\
extract:
  from: http
  connection: shop
  path: /orders
  params: {status: paid}
  data_path: data
  paginate: {type: cursor, cursor_path: meta.next_cursor, cursor_param: cursor}
  columns: {id: int64, total: "decimal(12,2)", created_at: "timestamp[us, UTC]"}""",
    ),
)

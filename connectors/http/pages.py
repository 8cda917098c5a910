"""The pages of one HTTP resource, in order, as its paginator leads: requests, the records
of each page, style detection, stop rules and the checks that no page ends a load early."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import orjson
import pyarrow as pa
from loguru import logger

from connectors.base import ConnectorContext
from connectors.http.client import Api
from connectors.http.config import (
    AutoPaginator,
    CursorPaginator,
    HttpSource,
    LinkHeaderPaginator,
    NextUrlPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    SinglePage,
)
from connectors.http.parse import PageParser, path_parts, records_table
from engine.core.errors import DataError

__all__ = ["Page", "Pages", "at", "incremental_start", "records_at"]

_STYLES: dict[str, Any] = {
    "offset": OffsetPaginator,
    "page_number": PageNumberPaginator,
    "cursor": CursorPaginator,
    "link_header": LinkHeaderPaginator,
    "next_url": NextUrlPaginator,
    "single_page": SinglePage,
    "auto": AutoPaginator,
}

_NEXT_URLS = ("next", "next_url", "links.next", "next_page_url", "paging.next")
_CURSORS = ("next_cursor", "meta.next_cursor", "cursor", "next_page_token", "nextPageToken")
_HAS_MORE = ("has_more", "hasMore", "meta.has_more")
_TOTALS = ("total", "total_count", "meta.total", "count")


@dataclass
class Page:
    number: int
    url: str
    records: list[Any]
    body: Any
    response: httpx.Response
    progress: dict[str, Any] | None = None
    """Where the pages stand once this one is kept: the next request, counts and the style."""
    table: pa.Table | None = None
    """Its records as a table, made as the page was fetched (`connectors.http.parse`). When
    Arrow's reader made it, `records` is empty and `body` holds the body's other fields."""

    @property
    def count(self) -> int:
        return self.table.num_rows if self.table is not None else len(self.records)


_MISSING = object()


def _lookup(body: Any, path: str) -> Any:
    """The value at `path`, or `_MISSING` when a key on the way is absent (not null)."""
    value = body
    for part in path_parts(path):
        if isinstance(value, dict):
            if part not in value:
                return _MISSING
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def at(body: Any, path: str) -> Any:
    """The value at a dotted path (`meta.next`, `$.data.items`, `items.0.id`), or None."""
    value = body
    for part in path_parts(path):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def records_at(body: Any, data_path: str | None, url: str, number: int = 0) -> list[Any]:
    """The records of one page: at `data_path`, the body itself when it is a list, or the one
    list an object holds. A page without its `data_path` (an error object answered with 200,
    a typo) fails rather than read as empty; a later page that holds no list likewise."""
    if data_path is not None:
        found = _lookup(body, data_path)
        if found is _MISSING:
            keys = ", ".join(body) if isinstance(body, dict) else type(body).__name__
            raise DataError(
                f"page {number + 1} of {url} has no {data_path!r} (it holds: {keys[:200]})",
                hint="check data_path, or what the API answered",
            )
        if found is None:
            return []
        if not isinstance(found, list):
            raise DataError(
                f"{url}: data_path {data_path!r} holds a {type(found).__name__}, not a list"
            )
        return found
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        lists = [key for key, value in body.items() if isinstance(value, list)]
        if len(lists) == 1:
            return list(body[lists[0]])
        if not lists and number == 0:
            return [body]  # one record
        if not lists:
            raise DataError(
                f"page {number + 1} of {url} holds no list of records "
                f"(it holds: {', '.join(body)[:200]})",
                hint="say which key holds the records with data_path",
            )
        raise DataError(
            f"{url}: the response holds several lists ({', '.join(lists)})",
            hint="say which one holds the records with data_path",
        )
    raise DataError(f"{url}: the response is a JSON {type(body).__name__}, not records")


class Pages:
    """The pages of one resource, in order, as the paginator leads."""

    def __init__(
        self,
        config: HttpSource,
        api: Api,
        ctx: ConnectorContext,
        resume: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.api = api
        self.ctx = ctx
        self.style: Any = config.paginate
        self.resume = resume
        self.parser: PageParser | None = None
        """Set: each page's records are made a table as it is fetched (`Page.table`), by
        Arrow's JSON reader where the page allows."""
        if resume is not None:
            self.style = _STYLES[resume["style"]["type"]].model_validate(resume["style"])

    def parse_with_arrow(self) -> None:
        """Parse pages with Arrow's JSON reader where they allow (`connectors.http.parse`):
        bodies that hold their records under one key."""
        path = self.config.data_path
        parts = path_parts(path) if path is not None else []
        if path is None or len(parts) == 1:
            self.parser = PageParser(parts[0] if parts else None, self._reads())

    def _reads(self) -> list[str]:
        """The body paths the paginator and the stop rules read."""
        style, config = self.style, self.config
        paths = [config.has_more_path or "", *_HAS_MORE, *_TOTALS]
        for name in ("cursor_path", "next_path", "total_path", "total_pages_path"):
            paths.append(getattr(style, name, None) or "")
        if isinstance(style, AutoPaginator):
            paths += [*_NEXT_URLS, *_CURSORS]
        return [path for path in paths if path]

    def __iter__(self) -> Iterator[Page]:
        config, api = self.config, self.api
        resumed = self.resume
        if resumed is not None:  # a resumed run: on from the page after the last one kept
            url, params, body_json = resumed["next"]
            number, fetched, last = resumed["number"], resumed["fetched"], resumed["last"]
            seen: set[str] = set(resumed["seen"])
        else:
            params = dict(config.params)
            body_json = dict(config.json_) if config.json_ is not None else None
            start, spec = incremental_start(config, self.ctx), config.incremental
            if start is not None and spec is not None and spec.location == "body":
                body_json = {**(body_json or {}), spec.param: start}
            url = api.url(urlsplit(config.path)._replace(query="").geturl())  # query: params
            number, fetched, last, seen = 0, 0, "", set()
        with api.client() as client, _Ahead(self, client) as ahead:
            while True:
                page = ahead.take(url, params, body_json, number)
                if self.parser is not None and page.records and page.table is not None:
                    self.parser.learn(page.body, page.table)  # a page kept: its types
                digest = hashlib.sha1(page.response.content).hexdigest()
                if page.count and digest == last:
                    raise DataError(
                        f"page {number + 1} of {api.shown(page.url)} is page {number} again: "
                        "the API repeats its last page past the end",
                        hint="set total_pages_path, has_more_path or max_pages",
                    )
                last = digest
                fetched += page.count
                if isinstance(self.style, AutoPaginator):
                    self.style = self._detect(page)
                    if self.parser is not None:
                        self.parser.reads(self._reads())
                capped = config.max_pages is not None and number + 1 >= config.max_pages
                following = None if capped else self._next(page, params, body_json, fetched)
                if following is not None:  # kept in the checkpoint: never with the API key
                    following = (api.unkeyed(following[0]), *following[1:])
                    key = _request_key(*following)
                    if key in seen:
                        raise DataError(
                            f"the paginator of {api.shown(page.url)} asked for the same page "
                            f"again ({self._described(*following)}) after page {number + 1}",
                            hint="the API repeats its cursor: check paginate and its paths",
                        )
                    seen.add(key)
                elif not capped:  # before the page is kept: a journal that says "no next
                    self._complete(page, fetched)  # page" is a load that did end whole
                if following is not None:  # fetched while this page is read
                    ahead.plan(self._predicted(page, following, number + 1))
                page.progress = {
                    "next": following,
                    "number": number + 1,
                    "fetched": fetched,
                    "last": last,
                    "seen": sorted(seen),
                    "style": self.style.model_dump(),
                }
                yield page
                if following is None:
                    if capped:
                        logger.bind(task_id=self.ctx.task_id).warning(
                            "stopped after max_pages ({}) at {}", config.max_pages, api.shown(url)
                        )
                    return
                url, params, body_json = following
                number += 1

    def _predicted(self, page: Page, following: Request, number: int) -> list[Planned]:
        """The request after `page` (page `number`, from 0) and, with `parallel` pages, the
        ones after it as offsets or page numbers will make them if the pages stay full, up
        to the total the page gives and `max_pages`."""
        style, config = self.style, self.config
        url, params, body = following
        planned: list[Planned] = [(url, params, body, number)]
        width = getattr(style, "parallel", 1)
        if isinstance(style, OffsetPaginator) and style.total_path and page.count:
            total = _whole_number(at(page.body, style.total_path))
            first = int(params[style.offset_param])
            for k in range(1, width):
                if total is None or first + page.count * k >= total:
                    break
                moved = {**params, style.offset_param: first + page.count * k}
                planned.append((url, moved, body, number + k))
        if isinstance(style, PageNumberPaginator) and style.total_pages_path:
            pages = _whole_number(at(page.body, style.total_pages_path))
            first = int(params[style.page_param])
            for k in range(1, width):
                if pages is None or first + k - style.start + 1 > pages:
                    break
                planned.append((url, {**params, style.page_param: first + k}, body, number + k))
        cap = config.max_pages
        return [request for request in planned if cap is None or request[3] < cap]

    def _fetch(
        self, client: httpx.Client, url: str, params: dict[str, Any], body: Any, number: int
    ) -> Page:
        config, api = self.config, self.api
        self.ctx.raise_if_cancelled()
        response = api.request(
            client,
            config.method,
            url,
            params=params,
            json=body,
            headers=config.headers,
            cancel=self.ctx.cancel,
        )
        shown = api.shown(str(response.url))
        parser = self.parser
        if parser is not None and (parsed := parser.parse(response.content)) is not None:
            meta, table = parsed
            return Page(number, str(response.url), [], meta, response, table=table)
        try:
            decoded = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            kind = response.headers.get("content-type", "no content-type")
            snippet = " ".join(response.text[:120].split())
            raise DataError(
                f"page {number + 1} of {shown} is not JSON ({kind}): {snippet!r}"
            ) from None
        records = records_at(decoded, config.data_path, shown, number)
        page = Page(number, str(response.url), records, decoded, response)
        if parser is not None and not parser.off and records:  # to learn from, once kept
            page.table = records_table(records, number, shown)
        return page

    def _detect(self, page: Page) -> Any:
        """The style a first response shows, said in the log."""
        body = page.body if isinstance(page.body, dict) else {}
        chosen: Any
        if page.response.links.get("next"):
            chosen = LinkHeaderPaginator(type="link_header")
        elif any(_linkish(at(body, p)) for p in _NEXT_URLS):
            path = next(p for p in _NEXT_URLS if _linkish(at(body, p)))
            chosen = NextUrlPaginator(type="next_url", next_path=path)
        elif any(at(body, p) not in (None, "") for p in _CURSORS):
            path = next(p for p in _CURSORS if at(body, p) not in (None, ""))
            name = path.split(".")[-1].removeprefix("next_").removeprefix("next")
            chosen = CursorPaginator(
                type="cursor", cursor_path=path, cursor_param=name[:1].lower() + name[1:]
            )
        elif self._more(page) or self._short(page, page.count):
            raise DataError(
                f"{self.api.shown(page.url)} says more records follow, but paginate: auto "
                "found no next link, next URL or cursor in its first response",
                hint="set paginate (offset, page_number, cursor, link_header, next_url)",
            )
        else:
            chosen = SinglePage(type="single_page")
        logger.bind(task_id=self.ctx.task_id).info(
            "paginate: auto chose {} for {}", _name(chosen), self.api.shown(page.url)
        )
        return chosen

    def _next(
        self, page: Page, params: dict[str, Any], body: Any, fetched: int
    ) -> tuple[str, dict[str, Any], Any] | None:
        """The next request (url, params, json), or None when the pages end."""
        style, count = self.style, page.count
        url = page.response.request.url
        base = str(url.copy_with(query=None))
        if isinstance(style, SinglePage):
            return None
        if isinstance(style, LinkHeaderPaginator):
            link = page.response.links.get("next", {}).get("url")
            return (str(url.join(link)), {}, body) if link else None
        if isinstance(style, NextUrlPaginator):
            link = at(page.body, style.next_path)
            return (str(url.join(str(link))), {}, body) if link else None
        if isinstance(style, CursorPaginator):
            cursor = at(page.body, style.cursor_path)
            if cursor in (None, ""):
                return None
            if style.location == "body":
                return base, params, {**(body or {}), style.cursor_param: cursor}
            return base, {**params, style.cursor_param: cursor}, body
        if count == 0:  # a short page may be the server's cap, not the end: only none is
            return None
        if isinstance(style, OffsetPaginator):
            total = at(page.body, style.total_path) if style.total_path else None
            if total is not None and fetched >= int(total):
                return None
            offset = int(params.get(style.offset_param, 0)) + count
            return (
                base,
                {**params, style.offset_param: offset, style.limit_param: style.limit},
                body,
            )
        if isinstance(style, PageNumberPaginator):
            pages = at(page.body, style.total_pages_path) if style.total_pages_path else None
            current = int(params.get(style.page_param, style.start))
            if pages is not None and current - style.start + 1 >= int(pages):
                return None
            following = {**params, style.page_param: current + 1}
            if style.size is not None:
                following[style.size_param] = style.size
            return base, following, body
        raise AssertionError(f"unknown paginator {style!r}")  # pragma: no cover

    def first_params(self) -> dict[str, Any]:
        """The first request's parameters: a query written into `path`, the configured ones,
        what the style adds, and an incremental start."""
        style = self.style
        params = {**dict(parse_qsl(urlsplit(self.config.path).query)), **self.config.params}
        start = incremental_start(self.config, self.ctx)
        spec = self.config.incremental
        if start is not None and spec is not None and spec.location == "query":
            params[spec.param] = start
        if isinstance(style, OffsetPaginator):
            params.setdefault(style.offset_param, 0)
            params.setdefault(style.limit_param, style.limit)
        if isinstance(style, PageNumberPaginator):
            params.setdefault(style.page_param, style.start)
            if style.size is not None:
                params.setdefault(style.size_param, style.size)
        return params

    def _more(self, page: Page) -> bool:
        body = page.body if isinstance(page.body, dict) else {}
        paths = (self.config.has_more_path,) if self.config.has_more_path else _HAS_MORE
        return any(at(body, p) is True for p in paths)

    def _short(self, page: Page, fetched: int) -> bool:
        """The response names a total the records read fall short of."""
        body = page.body if isinstance(page.body, dict) else {}
        style = self.style
        configured = getattr(style, "total_path", None)
        if isinstance(style, PageNumberPaginator) and style.total_pages_path:
            pages = at(body, style.total_pages_path)
            current = page.number + 1
            if isinstance(pages, int) and current < pages:
                return True
        for path in (configured, *_TOTALS) if configured else _TOTALS:
            total = at(body, path)
            if isinstance(total, int) and not isinstance(total, bool) and fetched < total:
                return True
        return False

    def _complete(self, page: Page, fetched: int) -> None:
        """The pages ended: refuse when the last response says there is more."""
        shown = self.api.shown(page.url)
        if self._more(page):
            raise DataError(
                f"the pages ended at {shown} although it says more follow (has_more)",
                hint="check paginate: the API's next page is not where it looks",
            )
        if page.response.links.get("next") and not isinstance(self.style, LinkHeaderPaginator):
            raise DataError(
                f"the pages ended at {shown} although its Link header names a next page",
                hint="set paginate: {type: link_header}",
            )
        if self._short(page, fetched) and not isinstance(self.style, SinglePage):
            raise DataError(
                f"the pages ended after {fetched} records at {shown}, fewer than the total "
                "the response gives",
                hint="check paginate: the API's next page is not where it looks",
            )

    def _described(self, url: str, params: dict[str, Any], body: Any) -> str:
        text = self.api.shown(str(httpx.URL(url, params=params)))
        return text + (f" with body {body}" if body else "")


Request = tuple[str, dict[str, Any], Any]
"""A request: its URL, query parameters and JSON body."""
Planned = tuple[str, dict[str, Any], Any, int]
"""A request and the number (from 0) of the page it asks for."""


class _Ahead:
    """Pages fetched before the paginator asks for them (`parallel` on an offset or page
    number paginator): the request the last page led to and the ones predicted after it, on
    as many threads. The paginator stays the judge: `take` hands over a page only when its
    request is exactly the one the paginator asks for, else fetches it then; predictions
    that no longer hold are dropped (their pages are never read)."""

    def __init__(self, pages: Pages, client: httpx.Client) -> None:
        self.pages, self.client = pages, client
        self.width = getattr(pages.style, "parallel", 1)
        self.pool: ThreadPoolExecutor | None = None
        self.planned: dict[str, Future[Page]] = {}

    def __enter__(self) -> _Ahead:
        return self

    def __exit__(self, *exc: object) -> None:
        for future in self.planned.values():
            future.cancel()
        if self.pool is not None:  # waits for the requests in flight (bounded by the timeout)
            self.pool.shutdown(wait=True, cancel_futures=True)

    def take(self, url: str, params: dict[str, Any], body: Any, number: int) -> Page:
        future = self.planned.pop(_request_key(url, params, body), None)
        if future is None:
            return self.pages._fetch(self.client, url, params, body, number)
        return future.result()

    def plan(self, requests: list[Planned]) -> None:
        if self.width < 2:
            return
        keys = [_request_key(url, params, body) for url, params, body, _ in requests]
        for key in [key for key in self.planned if key not in keys]:
            self.planned.pop(key).cancel()  # a prediction that no longer holds
        if self.pool is None:
            self.pool = ThreadPoolExecutor(self.width, thread_name_prefix="http-ahead")
        for key, (url, params, body, number) in zip(keys, requests, strict=True):
            if key not in self.planned:
                fetch = self.pages._fetch
                self.planned[key] = self.pool.submit(fetch, self.client, url, params, body, number)


def _request_key(url: str, params: dict[str, Any], body: Any) -> str:
    return f"{url}?{sorted(params.items())!r}{body!r}"


def _whole_number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def incremental_start(config: HttpSource, ctx: ConnectorContext) -> Any:
    """The value the request's incremental parameter gets: the committed watermark less the
    lookback, written as `format` says; `initial` on a first run; None for everything."""
    spec = config.incremental
    if spec is None:
        return None
    if ctx.watermark is None:
        return spec.initial
    value = ctx.watermark.cursor
    if spec.lookback is not None and isinstance(value, datetime | date):
        value = value - spec.lookback
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # a naive timestamp is read as UTC
    if spec.format == "date":
        return (value.date() if isinstance(value, datetime) else value).isoformat()
    if spec.format in ("epoch", "epoch_ms") and isinstance(value, datetime):
        seconds = value.timestamp()
        return int(seconds) if spec.format == "epoch" else int(seconds * 1000)
    return value.isoformat() if isinstance(value, datetime | date) else value


def _linkish(value: Any) -> bool:
    """A body value that is a URL or a path (a next link), not an opaque token."""
    return isinstance(value, str) and value.startswith(("http://", "https://", "/", "?"))


def _name(style: Any) -> str:
    details = {k: v for k, v in style.model_dump().items() if k != "type"}
    return str(style.type) + (f" {details}" if details else "")

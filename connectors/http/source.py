"""An HTTP source: pages of a JSON API, followed by the configured paginator, into Arrow.

Each page's records become one Arrow table in C++ (`pa.Table.from_pylist`: nested objects
become structs, arrays lists), never a Python loop per row. Pages are spilled to an Arrow IPC
file as they come, each with the types it suggests, and the schemas are unified page by page
(`promote_options="permissive"`): a field NULL on the first pages takes its type when values
come, an integer field that later holds fractions becomes float64, both said in the log, and
a field whose types cannot meet (text and numbers) fails the task naming the page and field.
Declared `columns` win over all of it. The reader then streams the spill in the final schema,
so memory stays bounded by a page, whatever the number of pages.

Pagination never stops silently: a cursor or next URL that repeats fails the task naming it,
and so does a stop while the response still says there is more (`has_more`, a total, a next
link), since a partial load that looks complete is the worst outcome.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
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
from engine.core.errors import DataError
from engine.core.files import remove_tree
from engine.core.types import parse_type
from engine.core.watermark import RowsAfter

__all__ = ["at", "open_http", "records_at"]

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


def _path(text: str) -> list[str]:
    text = text.strip().removesuffix("[*]").removesuffix(".*")  # JSONPath's "every element"
    if text.startswith("$"):
        text = text[1:].lstrip(".")
    return [part for part in text.replace("[", ".").replace("]", "").split(".") if part]


_MISSING = object()


def _lookup(body: Any, path: str) -> Any:
    """The value at `path`, or `_MISSING` when a key on the way is absent (not null)."""
    value = body
    for part in _path(path):
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
    for part in _path(path):
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


class _Pages:
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
        if resume is not None:
            self.style = _STYLES[resume["style"]["type"]].model_validate(resume["style"])

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
        with api.client() as client:
            while True:
                page = self._fetch(client, url, params, body_json, number)
                digest = hashlib.sha1(page.response.content).hexdigest()
                if page.records and digest == last:
                    raise DataError(
                        f"page {number + 1} of {api.shown(page.url)} is page {number} again: "
                        "the API repeats its last page past the end",
                        hint="set total_pages_path, has_more_path or max_pages",
                    )
                last = digest
                fetched += len(page.records)
                if isinstance(self.style, AutoPaginator):
                    self.style = self._detect(page)
                capped = config.max_pages is not None and number + 1 >= config.max_pages
                following = None if capped else self._next(page, params, body_json, fetched)
                if following is not None:
                    key = f"{following[0]}?{sorted(following[1].items())!r}{following[2]!r}"
                    if key in seen:
                        raise DataError(
                            f"the paginator of {api.shown(page.url)} asked for the same page "
                            f"again ({self._described(*following)}) after page {number + 1}",
                            hint="the API repeats its cursor: check paginate and its paths",
                        )
                    seen.add(key)
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
                    else:
                        self._complete(page, fetched)
                    return
                url, params, body_json = following
                number += 1

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
        try:
            decoded = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            kind = response.headers.get("content-type", "no content-type")
            snippet = " ".join(response.text[:120].split())
            raise DataError(
                f"page {number + 1} of {shown} is not JSON ({kind}): {snippet!r}"
            ) from None
        records = records_at(decoded, config.data_path, shown, number)
        return Page(number, str(response.url), records, decoded, response)

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
        elif self._more(page) or self._short(page, len(page.records)):
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
        style, count = self.style, len(page.records)
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


class _Spill:
    """Pages as Arrow, spilled to an IPC stream file page by page with the schema each one
    suggests, unified as they come; read back in the final schema."""

    def __init__(
        self, config: HttpSource, folder: Path, after: RowsAfter | None, task_id: str = ""
    ) -> None:
        self.task_id = task_id
        self.after = after
        """Records at or before the committed watermark, which the API sent again, are
        dropped when the comparison can be made exactly (not with a lookback)."""
        self.declared = {name: parse_type(kind) for name, kind in (config.columns or {}).items()}
        self.folder = folder
        self.schema: pa.Schema | None = None
        self.files: list[tuple[Path, int, str]] = []
        """Each page's spill file, its number and URL (for messages)."""
        self.rows = 0

    def add(self, page: Page, shown: str, carried: dict[str, Any] | None = None) -> None:
        """One page's records; `carried`: values every row of it gets (a parent's fields)."""
        if not page.records:
            return
        if not all(isinstance(r, dict) for r in page.records):
            kinds = sorted({type(r).__name__ for r in page.records})
            raise DataError(f"page {page.number + 1} of {shown}: records are {kinds}, not objects")
        try:  # a struct array takes every record's keys (from_pylist: the first record's)
            table = pa.Table.from_struct_array(pa.array(page.records))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            field = _mixed(page.records)
            raise DataError(
                f"page {page.number + 1} of {shown}: field {field!r} holds values of more "
                f"than one type: {exc}",
                hint="declare the field's type in columns",
            ) from None
        for name, value in (carried or {}).items():
            table = table.append_column(name, pa.array([value] * table.num_rows))
        table = self._declared(table, page, shown)
        if self.after is not None and self.after.refusal(table.schema) is None:
            table = table.filter(self.after.mask(table))  # what the watermark had committed
        self._unify(table.schema, page, shown)
        path = self.folder / f"page-{len(self.files):06d}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as out:
            out.write_table(table)
        self.files.append((path, page.number, shown))
        self.rows += table.num_rows

    def _declared(self, table: pa.Table, page: Page, shown: str) -> pa.Table:
        for name, kind in self.declared.items():
            if name not in table.column_names:
                continue
            index = table.column_names.index(name)
            try:
                column = table.column(index).cast(kind)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise DataError(
                    f"page {page.number + 1} of {shown}: field {name!r} does not fit the "
                    f"declared {kind}: {exc}"
                ) from None
            table = table.set_column(index, name, column)
        return table

    def _unify(self, schema: pa.Schema, page: Page, shown: str) -> None:
        if self.schema is None:
            self.schema = schema
            return
        try:
            merged = pa.unify_schemas([self.schema, schema], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            field = _clash(self.schema, schema)
            raise DataError(
                f"page {page.number + 1} of {shown}: field {field!r} holds "
                f"{schema.field(field).type if field else '?'} where earlier pages held "
                f"{self.schema.field(field).type if field else '?'}: {exc}",
                hint="declare the field's type in columns",
            ) from None
        for field in merged:
            before = self.schema.field(field.name) if field.name in self.schema.names else None
            if before is not None and before.type != field.type and before.type != pa.null():
                logger.info(
                    "field {!r} widened from {} to {} at page {}",
                    field.name,
                    before.type,
                    field.type,
                    page.number + 1,
                )
        self.schema = merged

    def batches(self) -> Iterator[pa.RecordBatch]:
        assert self.schema is not None
        for path, number, shown in self.files:
            with pa.memory_map(str(path)) as source:
                table = pa.ipc.open_stream(source).read_all()
            try:
                table = _conform(table, self.schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                raise DataError(
                    f"page {number + 1} of {shown}: its values do not fit the type later pages "
                    f"gave their field: {exc}",
                    hint="declare the field's type in columns",
                ) from None
            yield from table.to_batches()  # the folder goes once all are read


def _mixed(records: list[dict[str, Any]]) -> str | None:
    """The first field whose values Arrow cannot give one type."""
    for key in dict.fromkeys(k for record in records for k in record):
        try:
            pa.array([record.get(key) for record in records])
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return key
    return None


def _clash(before: pa.Schema, after: pa.Schema) -> str | None:
    for field in after:
        if field.name in before.names:
            try:
                pa.unify_schemas(
                    [pa.schema([before.field(field.name)]), pa.schema([field])],
                    promote_options="permissive",
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                return str(field.name)
    return None


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` in `schema`: missing fields as nulls, every column cast to its final type."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def open_http(config: HttpSource, ctx: ConnectorContext) -> list[pa.RecordBatchReader]:
    from connectors.http.client import resolved_references

    api: Api = ctx.connection(config.connection)
    where = f"task {ctx.task_id!r}"
    config = config.model_copy(  # ${env:...}/${file:...} in its headers and params, resolved
        update={
            "headers": resolved_references(config.headers, where, ctx.base_dir),
            "params": resolved_references(config.params, where, ctx.base_dir),
        }
    )
    spec = config.incremental
    after = None
    if spec is not None and ctx.watermark is not None and spec.lookback is None:
        after = RowsAfter(spec.cursor, spec.key, ctx.watermark)
    resumable = config.parent is None and ctx.checkpoint is not None
    checkpoint = _Checkpoint(ctx.checkpoint, config, ctx) if resumable else None
    scratch = None if checkpoint else tempfile.TemporaryDirectory(prefix="arrowline-http-")
    folder = checkpoint.folder if checkpoint else Path(scratch.name)  # type: ignore[union-attr]

    def cleanup() -> None:
        if checkpoint is not None:
            checkpoint.remove()
        elif scratch is not None:
            scratch.cleanup()

    spill = _Spill(config, folder, after, ctx.task_id)
    try:
        if config.parent is not None:
            _fan_out(config, api, ctx, spill)
        else:
            resume = checkpoint.restore(spill) if checkpoint else None
            if resume is None or resume["next"] is not None:
                pages = _Pages(config, api, ctx, resume)
                if resume is None:
                    pages.config = config.model_copy(update={"params": pages.first_params()})
                _read_ahead(pages, spill, api, checkpoint)
    except BaseException:
        if checkpoint is None and scratch is not None:
            scratch.cleanup()  # a checkpoint stays for the resume
        raise
    for name, kind in spill.declared.items():  # declared, in no record: typed NULLs
        if spill.schema is not None and name not in spill.schema.names:
            spill.schema = spill.schema.append(pa.field(name, kind))
    schema = spill.schema
    if schema is None:  # no record at all: the declared columns, else nothing
        schema = pa.schema([(name, kind) for name, kind in spill.declared.items()])

    def batches() -> Iterator[pa.RecordBatch]:
        if spill.schema is not None:
            yield from spill.batches()
        cleanup()  # every row read: the next attempt starts afresh

    return [pa.RecordBatchReader.from_batches(schema, batches())]


class _Checkpoint:
    """A resource's progress in a folder that outlives the attempt: its spilled pages and,
    after each one is kept, `progress.json` (the next request, the counts, the style, the
    pages and their schema). A resumed run of the same config and start goes on from the
    page after the last one kept; anything else starts afresh."""

    def __init__(self, folder: Path | None, config: HttpSource, ctx: ConnectorContext) -> None:
        assert folder is not None
        self.folder = folder
        self.file = folder / "progress.json"
        start = ctx.watermark.to_json() if ctx.watermark is not None else None
        identity = config.model_dump_json(by_alias=True) + (start or "")
        self.identity = hashlib.sha256(identity.encode()).hexdigest()

    def restore(self, spill: _Spill) -> dict[str, Any] | None:
        """The saved progress, its pages put back into `spill`; None to start afresh."""
        import base64

        try:
            saved = orjson.loads(self.file.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            saved = None
        if not saved or saved.get("identity") != self.identity:
            remove_tree(self.folder)
            self.folder.mkdir(parents=True)
            return None
        kept = {name for name, _, _ in saved["files"]}
        for leftover in self.folder.glob("page-*.arrow"):  # spilled, not recorded: again
            if leftover.name not in kept:
                leftover.unlink()
        spill.files = [
            (self.folder / name, number, shown) for name, number, shown in saved["files"]
        ]
        spill.rows = saved["rows"]
        if saved["schema"]:
            buffer = pa.py_buffer(base64.b64decode(saved["schema"]))
            spill.schema = pa.ipc.read_schema(buffer)
        logger.bind(task_id=spill.task_id).info(
            "resuming after page {} ({} records kept)", saved["progress"]["number"], spill.rows
        )
        progress: dict[str, Any] = saved["progress"]
        return progress

    def save(self, spill: _Spill, progress: dict[str, Any]) -> None:
        import base64

        schema = spill.schema.serialize().to_pybytes() if spill.schema is not None else b""
        payload = {
            "identity": self.identity,
            "progress": progress,
            "files": [(path.name, number, shown) for path, number, shown in spill.files],
            "rows": spill.rows,
            "schema": base64.b64encode(schema).decode(),
        }
        partial = self.file.with_suffix(".tmp")
        partial.write_bytes(orjson.dumps(payload))
        partial.replace(self.file)

    def remove(self) -> None:
        remove_tree(self.folder)


def _read_ahead(
    pages: _Pages, spill: _Spill, api: Api, checkpoint: _Checkpoint | None = None
) -> None:
    """Each page made Arrow and spilled on a thread of its own while the next is fetched (its
    cursor is known once the body is parsed): a rate-limited run keeps its rate, the others
    overlap conversion with the server's time. At most `_AHEAD` pages wait. Once a page is
    kept, the checkpoint says so."""
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    def keep(page: Page) -> None:
        spill.add(page, api.shown(page.url))
        if checkpoint is not None and page.progress is not None:
            checkpoint.save(spill, page.progress)

    with ThreadPoolExecutor(1, thread_name_prefix="http-pages") as adder:
        waiting: deque[Future[None]] = deque()
        for page in pages:
            waiting.append(adder.submit(keep, page))
            while len(waiting) > _AHEAD or (waiting and waiting[0].done()):
                waiting.popleft().result()
        while waiting:
            waiting.popleft().result()


_AHEAD = 2


def _pages(config: HttpSource, api: Api, ctx: ConnectorContext) -> _Pages:
    pages = _Pages(config, api, ctx)
    pages.config = config.model_copy(update={"params": pages.first_params()})
    return pages


def _fan_out(config: HttpSource, api: Api, ctx: ConnectorContext, spill: _Spill) -> None:
    """The parent's records, page by page; each one's children fetched on the connection's
    concurrency (the bucket and the cap still bound every request), added in parent order,
    each row carrying the parent's `fields` as parent_<field>."""
    from concurrent.futures import Future, ThreadPoolExecutor

    assert config.parent is not None
    parent = config.parent
    parent_config = HttpSource.model_validate(
        {
            "from": "http",
            "connection": config.connection,
            "path": parent.path,
            "params": parent.params,
            "data_path": parent.data_path,
            "paginate": parent.paginate.model_dump(),
            "has_more_path": parent.has_more_path,
        }
    )
    window = api.max_concurrency * 2

    def fetch(child: HttpSource) -> list[Page]:
        return list(_pages(child, api, ctx))

    with ThreadPoolExecutor(api.max_concurrency, thread_name_prefix="http-child") as pool:
        pending: list[tuple[dict[str, Any], Future[list[Page]]]] = []

        def settle(keep: int) -> None:
            while len(pending) > keep:
                record, future = pending.pop(0)
                carried = {f"parent_{name}": record.get(name) for name in parent.fields}
                for page in future.result():
                    spill.add(page, api.shown(page.url), carried)

        for page in _pages(parent_config, api, ctx):
            for index, record in enumerate(page.records):
                if not isinstance(record, dict):
                    raise DataError(
                        f"parent record {index + 1} of {api.shown(page.url)} is no object"
                    )
                child = config.model_copy(
                    update={"path": _child_path(config, record, page, index, api), "parent": None}
                )
                pending.append((record, pool.submit(fetch, child)))
                settle(window)
        settle(0)


def _child_path(
    config: HttpSource, record: dict[str, Any], page: Page, index: int, api: Api
) -> str:
    from urllib.parse import quote

    path = config.path
    for name in config.parent_fields:
        value = record.get(name)
        if value is None or isinstance(value, dict | list):
            raise DataError(
                f"parent record {index + 1} of page {page.number + 1} of {api.shown(page.url)} "
                f"has no usable {name!r} for {config.path}: {value!r}"
            )
        path = path.replace(f"{{parent.{name}}}", quote(str(value), safe=""))
    return path

"""An HTTP source: pages of a JSON API, followed by the configured paginator, into Arrow.

Each page's records become one Arrow table (a struct array of every record's keys: nested
objects become structs, arrays lists), never a Python loop per row: read by Arrow's own JSON
reader, with the GIL released, in the types the earlier pages showed, or by orjson and
`pa.array` where the reader cannot be trusted with the page (`connectors.http.parse`), on the
fetching thread; each is spilled on a thread of its own while the next page is fetched (a
fan-out's pages are converted there too). Pages are spilled to Arrow IPC
files as they come (`connectors.http.spill`), each with the types it suggests, and the
schemas are unified page by page (`promote_options="permissive"`): a field NULL on the first
pages takes its type when values come, an integer field that later holds fractions becomes
float64, both said in the log, and a field whose types cannot meet (text and numbers) fails
the task naming the page and field. Declared `columns` win over all of it. The reader then
streams the spill in the final schema, so memory stays bounded by a page, whatever the number
of pages.

Pagination (`connectors.http.pages`) never stops silently: a cursor or next URL that repeats
fails the task naming it, and so does a stop while the response still says there is more
(`has_more`, a total, a next link), since a partial load that looks complete is the worst
outcome. A parent resource's records fan out to a child path on the connection's concurrency,
checkpointed parent by parent.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from loguru import logger

from connectors.base import ConnectorContext
from connectors.http.client import Api
from connectors.http.config import HttpSource
from connectors.http.pages import Page, Pages
from connectors.http.spill import Checkpoint, Child, Spill
from engine.core.errors import DataError
from engine.core.faults import fault_point
from engine.core.watermark import RowsAfter

__all__ = ["open_http"]


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
    checkpoint = Checkpoint(ctx.checkpoint, config, ctx) if ctx.checkpoint is not None else None
    scratch = None if checkpoint else tempfile.TemporaryDirectory(prefix="arrowline-http-")
    folder = checkpoint.folder if checkpoint else Path(scratch.name)  # type: ignore[union-attr]

    def cleanup() -> None:
        if checkpoint is not None:
            checkpoint.remove()
        elif scratch is not None:
            scratch.cleanup()

    spill = Spill(config, folder, after, ctx.task_id)
    try:
        resume = checkpoint.restore(spill) if checkpoint else None
        if config.parent is not None:
            _fan_out(config, api, ctx, spill, checkpoint, resume)
        elif resume is None or resume["next"] is not None:
            pages = Pages(config, api, ctx, resume)
            pages.parse_with_arrow()
            if resume is None:
                pages.config = config.model_copy(update={"params": pages.first_params()})
            _read_ahead(pages, spill, api, checkpoint)
    except BaseException:
        if checkpoint is None and scratch is not None:
            scratch.cleanup()  # a checkpoint stays for the resume
        raise
    if spill.widened:
        ctx.notes["widened"] = spill.widened
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


def _read_ahead(pages: Pages, spill: Spill, api: Api, checkpoint: Checkpoint | None = None) -> None:
    """Each page made Arrow and spilled on a thread of its own while the next is fetched (its
    cursor is known once the body is parsed): a rate-limited run keeps its rate, the others
    overlap conversion with the server's time. At most `_AHEAD` pages wait. The checkpoint
    keeps each page's body as soon as it is fetched, and says so again once it is converted,
    so a kill costs only the request in flight. A page whose conversion fails keeps nothing
    after it, and its body goes: the next attempt fetches it again.

    The first conversion of a Python list pays pyarrow's lazy imports (pandas among them,
    ~0.3 s); paid while pages wait, it stalled the requests behind them and cost a
    rate-limited run 5% of its rate. It is paid before the first request instead."""
    import threading
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    pa.array([{"warm": 1}])

    failed = threading.Event()

    def keep(page: Page, raw: list[str]) -> None:
        if failed.is_set():  # a page before it failed: nothing after it may be kept
            return
        fault_point("http.convert")
        try:
            spill.add(page, api.shown(page.url))
            if checkpoint is not None and page.progress is not None:
                checkpoint.save(spill, page.progress, raw=raw)
        except BaseException:
            failed.set()
            if checkpoint is not None:
                checkpoint.drop(raw)
            raise

    with ThreadPoolExecutor(1, thread_name_prefix="http-pages") as adder:
        waiting: deque[Future[None]] = deque()
        for page in pages:
            raw = []
            if checkpoint is not None and page.progress is not None:
                raw.append(checkpoint.fetched(page, api.shown(page.url)))
            waiting.append(adder.submit(keep, page, raw))
            while len(waiting) > _AHEAD or (waiting and waiting[0].done()):
                waiting.popleft().result()
        while waiting:
            waiting.popleft().result()


_AHEAD = 2

Fetched = tuple[int, list[Any], str, str]
"""A child page: its number, its records, its URL as shown, its body's file in the checkpoint
("" when there is none)."""


def _pages(config: HttpSource, api: Api, ctx: ConnectorContext) -> Pages:
    pages = Pages(config, api, ctx)
    pages.config = config.model_copy(update={"params": pages.first_params()})
    return pages


def _fan_out(
    config: HttpSource,
    api: Api,
    ctx: ConnectorContext,
    spill: Spill,
    checkpoint: Checkpoint | None = None,
    resume: dict[str, Any] | None = None,
) -> None:
    """The parent's records, page by page; each one's children fetched on the connection's
    concurrency (the bucket and the cap still bound every request), added in parent order,
    each row carrying the parent's `fields` as parent_<field>.

    Each child page's body is kept in the checkpoint as soon as it is fetched, and once a
    parent's children are all added, the checkpoint says so: the request that fetches its
    parent page again (the page before's progress) and how many of that page's records are
    done. A resume fetches that parent page again, skips the records done, takes the child
    pages it kept (a child cut short goes on from its last page) and goes on: only the
    requests in flight when the run stopped (one per worker) are sent twice."""
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
    before = resume["parent"] if resume is not None else None
    """Where the parent's pages stood before the page being worked on (None: the first)."""
    skip = resume["done"] if resume is not None else 0
    expected = resume.get("digest") if resume is not None else None
    """The records of the parent page being worked on, as they were: if the API now answers
    that page with other records, skipping the first `done` could skip the wrong ones."""

    def fetch(child: HttpSource, key: Child) -> list[Fetched]:
        kept = checkpoint.prefetched.pop(key, []) if checkpoint is not None else []
        out = (
            [
                (line["number"], checkpoint.replayed(line), line["shown"], line["fetched"])
                for line in kept
            ]
            if checkpoint is not None
            else []
        )
        if kept and kept[-1]["child_progress"]["next"] is None:
            return out  # every page of it was fetched before the run stopped
        pages = (
            Pages(child, api, ctx, kept[-1]["child_progress"]) if kept else _pages(child, api, ctx)
        )
        for page in pages:
            shown = api.shown(page.url)
            name = ""
            if checkpoint is not None and page.progress is not None:
                name = checkpoint.fetched(page, shown, key)
            out.append((page.number, page.records, shown, name))
        return out

    Pending = tuple[dict[str, Any], Future[list[Fetched]], dict[str, Any], int]
    with ThreadPoolExecutor(api.max_concurrency, thread_name_prefix="http-child") as pool:
        pending: list[Pending] = []

        def settle(keep: int) -> None:
            while len(pending) > keep:
                fault_point("http.settle")
                record, future, progress, index = pending.pop(0)
                carried = {f"parent_{name}": record.get(name) for name in parent.fields}
                fetched = future.result()
                raw = [name for _, _, _, name in fetched if name]
                try:
                    for number, records, shown, _ in fetched:
                        spill.add_records(number, records, shown, carried)
                    if checkpoint is not None:
                        checkpoint.save(spill, progress | {"done": index + 1}, raw=raw)
                except BaseException:
                    if checkpoint is not None:
                        checkpoint.drop(raw)  # fetched again, not converted from the same
                    raise

        if before is None:
            pages = _pages(parent_config, api, ctx)
        else:
            pages = Pages(parent_config, api, ctx, before)
        for page in pages:
            digest = _digest(page)  # once a page: per parent it would cost the page squared
            if expected is not None and digest != expected:
                break  # nothing is pending yet: start afresh below
            expected = None
            at_page = {"parent": before, "number": page.number + 1, "digest": digest}
            for index, record in enumerate(page.records):
                if index < skip:
                    continue  # its children were kept before the run stopped
                if not isinstance(record, dict):
                    raise DataError(
                        f"parent record {index + 1} of {api.shown(page.url)} is no object"
                    )
                child = config.model_copy(
                    update={"path": _child_path(config, record, page, index, api), "parent": None}
                )
                key = (page.number + 1, digest, index)
                pending.append((record, pool.submit(fetch, child, key), at_page, index))
                settle(window)
            skip, before = 0, page.progress
        settle(0)
    if expected is not None and checkpoint is not None:
        logger.bind(task_id=ctx.task_id).warning(
            "the parent page being worked on came back with other records than before the run "
            "stopped: the fan-out starts afresh"
        )
        checkpoint.reset(spill)
        _fan_out(config, api, ctx, spill, checkpoint, None)


def _digest(page: Page) -> str:
    import hashlib

    import orjson

    return hashlib.sha1(orjson.dumps(page.records, option=orjson.OPT_SORT_KEYS)).hexdigest()


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

"""The http connector against a real HTTP server on loopback: every pagination style and its
detection, every auth scheme, the API's limits (429, Retry-After, 5xx, timeouts, a declared
rate), what bad answers get, and Arrow types across pages."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

import engine
from engine.api.pipeline import resume, run
from engine.execution.results import RunResult
from engine.state.catalog import CatalogReader
from tests.conftest import WritePipeline
from tests.http_api import Api, Reply, Request, serve

RECORDS = [{"id": i, "name": f"n{i}", "price": i * 1.5} for i in range(1, 251)]


@pytest.fixture
def api() -> Iterator[Api]:
    yield from serve()


@pytest.fixture
def caplog_lines() -> Iterator[list[str]]:
    """What the run logged (loguru), line by line."""
    from loguru import logger

    lines: list[str] = []
    logger.enable("connectors")  # tests keep arrowline's packages quiet otherwise
    handler = logger.add(lambda message: lines.append(str(message)), level="INFO")
    yield lines
    logger.remove(handler)
    logger.disable("connectors")


def pipeline(api: Api, source: str, connection: str = "") -> str:
    limits = "" if "retries" in connection else ", retries: 3, timeout: 2s"
    return f"""
        pipeline: rest
        connections:
          shop: {{kind: http, base_url: "{api.base_url}"{limits}{connection}}}
        tasks:
          - id: t
            extract: {{from: http, connection: shop, {source}}}
    """


def to_parquet(api: Api, source: str, target: str, connection: str = "") -> str:
    """`pipeline(api, source, connection)` with a load of its output into the Parquet file
    `target`."""
    return (
        pipeline(api, source, connection)
        + f"""
          - id: out
            load: {{input: t, to: parquet, path: {target}}}
    """
    )


def extract(write: WritePipeline, api: Api, source: str, connection: str = "") -> RunResult:
    return run(write("p.yaml", pipeline(api, source, connection)))


def rows(result: RunResult) -> pl.DataFrame:
    assert result.ok, {k: t.error for k, t in result.tasks.items() if t.error}
    output = result.tasks["t"].output
    assert output is not None
    return pl.read_parquet([str(f) for f in output.files])


def error(result: RunResult) -> str:
    assert not result.ok
    return result.tasks["t"].error or ""


# -- pagination ------------------------------------------------------------------------------


@pytest.mark.parametrize("cap", [100, 40])
def test_offset_pages_until_an_empty_page(write: WritePipeline, api: Api, cap: int) -> None:
    """A page shorter than the limit is no end: the server may cap its pages (40 here)."""

    @api.route("/items")
    def items(request: Request) -> Any:
        offset, limit = int(request.query["offset"]), int(request.query["limit"])
        return {"data": RECORDS[offset : offset + min(limit, cap)]}

    found = rows(
        extract(write, api, "path: /items, data_path: data, paginate: {type: offset, limit: 100}")
    )
    assert found["id"].to_list() == list(range(1, 251))
    offsets = [int(r.query["offset"]) for r in api.hits("/items")]
    assert offsets == [*range(0, 250, cap), 250]


def test_page_numbers_until_the_total_pages(write: WritePipeline, api: Api) -> None:
    @api.route("/items")
    def items(request: Request) -> Any:
        page = int(request.query["page"])
        return {"items": RECORDS[(page - 1) * 100 : page * 100], "pages": 3}

    source = "path: /items, paginate: {type: page_number, total_pages_path: pages}"
    found = rows(extract(write, api, source))
    assert found.height == 250
    assert len(api.hits("/items")) == 3


def test_a_cursor_from_the_body_into_the_query(write: WritePipeline, api: Api) -> None:
    @api.route("/items")
    def items(request: Request) -> Any:
        start = int(request.query.get("cursor", 0))
        following = start + 100 if start + 100 < len(RECORDS) else None
        return {"data": RECORDS[start : start + 100], "meta": {"next_cursor": following}}

    source = (
        "path: /items, data_path: data, paginate: {type: cursor, cursor_path: meta.next_cursor}"
    )
    assert rows(extract(write, api, source)).height == 250


def test_a_cursor_in_a_post_body(write: WritePipeline, api: Api) -> None:
    @api.route("/search")
    def search(request: Request) -> Any:
        assert request.method == "POST"
        start = int(request.body.get("after", 0))
        following = start + 100 if start + 100 < len(RECORDS) else None
        return {"hits": RECORDS[start : start + 100], "after": following, "q": request.body["q"]}

    source = (
        "path: /search, method: POST, json: {q: shoes}, data_path: hits, "
        "paginate: {type: cursor, cursor_path: after, cursor_param: after, location: body}"
    )
    assert rows(extract(write, api, source)).height == 250


def test_link_headers_and_next_urls(write: WritePipeline, api: Api) -> None:
    @api.route("/linked")
    def linked(request: Request) -> Reply:
        page = int(request.query.get("page", 1))
        headers = {}
        if page < 3:
            headers["link"] = f'<{api.base_url}/linked?page={page + 1}>; rel="next"'
        return Reply(200, RECORDS[(page - 1) * 100 : page * 100], headers)

    @api.route("/nexted")
    def nexted(request: Request) -> Any:
        page = int(request.query.get("page", 1))
        following = f"{api.base_url}/nexted?page={page + 1}" if page < 3 else None
        return {"results": RECORDS[(page - 1) * 100 : page * 100], "next": following}

    assert rows(extract(write, api, "path: /linked, paginate: {type: link_header}")).height == 250
    assert rows(extract(write, api, "path: /nexted, paginate: {type: next_url}")).height == 250


@pytest.mark.parametrize("style", ["link", "next", "cursor", "single"])
def test_auto_detects_the_style_from_the_first_response(
    write: WritePipeline, api: Api, style: str, caplog_lines: list[str]
) -> None:
    @api.route("/auto")
    def auto(request: Request) -> Reply:
        page = int(request.query.get("page", request.query.get("cursor", 1)))
        chunk = RECORDS[(page - 1) * 100 : page * 100]
        more = page < 3
        if style == "link":
            link = f'<{api.base_url}/auto?page={page + 1}>; rel="next"' if more else None
            return Reply(200, chunk, {"link": link} if link else {})
        if style == "next":
            return Reply(
                200, {"data": chunk, "next_url": f"/auto?page={page + 1}" if more else None}
            )
        if style == "cursor":
            return Reply(200, {"data": chunk, "next_cursor": page + 1 if more else None})
        return Reply(200, {"data": RECORDS})

    found = rows(extract(write, api, "path: /auto"))
    assert found.height == 250
    chosen = [line for line in caplog_lines if "paginate: auto chose" in line]
    expected = {
        "link": "link_header",
        "next": "next_url",
        "cursor": "cursor",
        "single": "single_page",
    }
    assert chosen
    assert expected[style] in chosen[0]


def test_auto_refuses_a_first_page_that_says_more_follow_without_saying_how(
    write: WritePipeline, api: Api
) -> None:
    api.routes["/vague"] = lambda request: {"data": RECORDS[:100], "has_more": True}
    said = error(extract(write, api, "path: /vague"))
    assert "says more records follow" in said
    assert "set paginate" in said or "paginate" in said


def test_pages_that_end_while_the_api_says_more_fail(write: WritePipeline, api: Api) -> None:
    """The paginator looks for a cursor the API does not send: it would stop after page one
    while the response says has_more and a total of 250."""
    api.routes["/more"] = lambda request: {"data": RECORDS[:100], "has_more": True, "total": 250}
    source = "path: /more, data_path: data, paginate: {type: cursor, cursor_path: meta.cursor}"
    assert "although it says more follow" in error(extract(write, api, source))


def test_a_repeating_cursor_fails_naming_it(write: WritePipeline, api: Api) -> None:
    api.routes["/stuck"] = lambda request: {
        "data": RECORDS[: 10 + len(api.hits("/stuck"))],
        "next_cursor": "abc",
    }
    source = "path: /stuck, data_path: data, paginate: {type: cursor, cursor_path: next_cursor}"
    said = error(extract(write, api, source))
    assert "asked for the same page again" in said
    assert "cursor=abc" in said
    assert len(api.hits("/stuck")) == 2


# -- auth ------------------------------------------------------------------------------------


def test_an_api_key_in_the_query_never_shows(
    write: WritePipeline, api: Api, monkeypatch: pytest.MonkeyPatch, project: Path
) -> None:
    monkeypatch.setenv("SHOP_KEY", "k-very-secret-1")

    @api.route("/keyed")
    def keyed(request: Request) -> Reply:
        if request.query.get("key") != "k-very-secret-1":
            return Reply(401, {"message": "bad key"})
        return Reply(500, {"message": "database on fire"})

    auth = ', auth: {type: api_key, name: key, api_key: "${env:SHOP_KEY}", location: query}'
    result = extract(write, api, "path: /keyed", auth)
    said = error(result)
    assert "key=***" in said
    assert "database on fire" in said
    assert "k-very-secret-1" not in said
    with engine.open(project) as opened:
        stored = [str(t.error) for t in opened.catalog.task_runs(result.run_id)]
    assert not any("k-very-secret-1" in text for text in stored)


def test_a_next_link_that_echoes_the_api_key_leaves_no_key_in_the_checkpoint(
    write: WritePipeline, api: Api, monkeypatch: pytest.MonkeyPatch, project: Path
) -> None:
    """Some APIs put the caller's key in their next links. The pages are followed (the key is
    sent with every request), but the checkpoint left by a failed run holds no copy of it."""
    monkeypatch.setenv("SHOP_KEY", "k-very-secret-2")

    @api.route("/echo")
    def echo(request: Request) -> Reply:
        if request.query.get("key") != "k-very-secret-2":
            return Reply(401, {"message": "bad key"})
        page = int(request.query.get("page", 0))
        if page == 3:
            return Reply(400, {"message": "no page 3 today"})
        following = f"/echo?page={page + 1}&key=k-very-secret-2"
        return Reply(200, {"data": [{"id": page}], "next": following})

    auth = ', auth: {type: api_key, name: key, api_key: "${env:SHOP_KEY}", location: query}'
    source = "path: /echo, data_path: data, paginate: {type: next_url, next_path: next}"
    assert "no page 3 today" in error(extract(write, api, source, auth))
    assert [r.query.get("page", "0") for r in api.hits("/echo")] == ["0", "1", "2", "3"]
    (folder,) = (project / ".arrowline").rglob(".checkpoint-*")
    journal = (folder / "progress.jsonl").read_text()
    assert "/echo?page=3" in journal  # where the resume goes on from, without the key
    for kept in folder.iterdir():
        assert b"k-very-secret-2" not in kept.read_bytes(), kept.name


@pytest.mark.parametrize(
    ("auth", "header"),
    [
        ('{type: api_key, api_key: "${env:SHOP_KEY}"}', ("x-api-key", "k1")),
        ('{type: bearer, token: "${env:SHOP_KEY}"}', ("authorization", "Bearer k1")),
        (
            '{type: basic, username: u, password: "${env:SHOP_KEY}"}',
            ("authorization", "Basic dTprMQ=="),
        ),
    ],
)
def test_keys_tokens_and_passwords_are_sent(
    write: WritePipeline,
    api: Api,
    monkeypatch: pytest.MonkeyPatch,
    auth: str,
    header: tuple[str, str],
) -> None:
    monkeypatch.setenv("SHOP_KEY", "k1")

    @api.route("/private")
    def private(request: Request) -> Reply:
        if request.headers.get(header[0]) != header[1]:
            return Reply(401, {"message": "who are you"})
        return Reply(200, RECORDS[:5])

    assert rows(extract(write, api, "path: /private", f", auth: {auth}")).height == 5


def test_oauth2_tokens_are_fetched_again_before_they_expire_and_once_on_401(
    write: WritePipeline, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIENT_SECRET", "s3cret")
    issued: list[str] = []

    @api.route("/token")
    def token(request: Request) -> Reply:
        assert request.body["client_secret"] == "s3cret"
        issued.append(f"t{len(issued) + 1}")
        return Reply(200, {"access_token": issued[-1], "expires_in": 1})

    @api.route("/orders")
    def orders(request: Request) -> Reply:
        page = int(request.query.get("page", 1))
        if request.headers.get("authorization") != f"Bearer {issued[-1]}":
            return Reply(401, {"message": "token expired"})
        if page == 2 and len(issued) < 3:
            return Reply(401, {"message": "revoked"})  # the server ends it early, once
        time.sleep(0.6)  # the token's 1 s life runs out over the pages
        following = f"/orders?page={page + 1}" if page < 3 else None
        return {"data": RECORDS[(page - 1) * 10 : page * 10], "next": following}

    auth = (
        ", auth: {type: oauth2_client_credentials, token_url: /token, client_id: c, "
        'client_secret: "${env:CLIENT_SECRET}", refresh_before: 0.5s}'
    )
    found = rows(extract(write, api, "path: /orders, paginate: {type: next_url}", auth))
    assert found.height == 30
    assert len(issued) >= 3


# -- the API's limits ------------------------------------------------------------------------


@pytest.mark.parametrize("as_date", [False, True])
def test_429_waits_as_long_as_retry_after_says(
    write: WritePipeline, api: Api, as_date: bool
) -> None:
    answered: list[float] = []

    @api.route("/busy")
    def busy(request: Request) -> Reply:
        answered.append(time.monotonic())
        if len(answered) == 1:
            later = email.utils.formatdate(time.time() + 2, usegmt=True) if as_date else "1"
            return Reply(429, {"message": "slow down"}, {"retry-after": later})
        return Reply(200, RECORDS[:3])

    assert rows(extract(write, api, "path: /busy")).height == 3
    assert answered[1] - answered[0] >= (0.9 if not as_date else 0.5)


def test_5xx_bursts_are_retried_and_other_4xx_fail_at_once(write: WritePipeline, api: Api) -> None:
    calls: list[int] = []

    @api.route("/flaky")
    def flaky(request: Request) -> Reply:
        calls.append(1)
        return (
            Reply(503, raw=b"<html><title>Service Unavailable</title></html>")
            if len(calls) < 3
            else Reply(200, RECORDS[:2])
        )

    assert rows(extract(write, api, "path: /flaky")).height == 2
    api.routes["/gone"] = lambda request: Reply(410, {"error": {"message": "resource retired"}})
    said = error(extract(write, api, "path: /gone"))
    assert "answered 410 Gone: resource retired" in said
    assert len(api.hits("/gone")) == 1


def test_slow_answers_are_retried_then_fail_naming_the_url(write: WritePipeline, api: Api) -> None:
    api.routes["/slow"] = lambda request: Reply(200, RECORDS[:1], delay=3.0)
    said = error(extract(write, api, "path: /slow", ", retries: 1, timeout: 0.3s"))
    assert "took longer than 0.3s 2 times" in said
    assert "/slow" in said


def test_html_and_broken_json_say_what_came_back(write: WritePipeline, api: Api) -> None:
    api.routes["/html"] = lambda request: Reply(
        200, raw=b"<html><body>Log in</body></html>", headers={"content-type": "text/html"}
    )
    api.routes["/broken"] = lambda request: Reply(200, raw=b'{"data": [1, 2')
    said = error(extract(write, api, "path: /html"))
    assert "is not JSON (text/html)" in said
    assert "/html" in said
    assert "is not JSON" in error(extract(write, api, "path: /broken"))


def test_a_declared_rate_is_kept_without_a_single_429(write: WritePipeline, api: Api) -> None:
    """The server answers 429 to a request that finds 16 others in the second before it; a
    rate limit of 16/s keeps every second within it, and the pages still come at close to
    that rate."""
    last: list[float] = []
    refused: list[int] = []

    @api.route("/metered")
    def metered(request: Request) -> Reply:
        now = time.monotonic()
        if len([t for t in last if now - t < 1.0]) >= 16:
            refused.append(1)
            return Reply(429, {"message": "too fast"}, {"retry-after": "1"})
        last.append(now)
        page = int(request.query.get("page", 1))
        following = f"/metered?page={page + 1}" if page < 20 else None
        return {"data": [{"id": page}], "next": following}

    started = time.monotonic()
    found = rows(extract(write, api, "path: /metered", ", rate_limit: {requests: 16, per: second}"))
    took = time.monotonic() - started
    assert found.height == 20
    assert refused == []
    assert took >= 19 / 16 * 0.9


# -- Arrow -----------------------------------------------------------------------------------


def test_text_that_looks_like_a_time_stays_text_on_every_page(
    write: WritePipeline, api: Api
) -> None:
    """A reader left to guess (Arrow's JSON reader) would make these timestamps (shifted to
    UTC, the offset lost) and dates; a field that first comes later, and one that turns from a
    number to a fraction, are typed as on any page."""
    when = ["2024-01-01T00:00:00+02:00", "2024-01-02T10:30:00Z", "2024-01-03", "2024-01-04"]

    @api.route("/times")
    def times(request: Request) -> Any:
        page = int(request.query.get("page", 1))
        record: dict[str, Any] = {"id": page, "when": when[page - 1], "n": 1}
        if page >= 3:
            record |= {"day": "2024-02-0" + str(page), "n": 1.5}
        following = f"/times?page={page + 1}" if page < 4 else None
        return {"data": [record], "next": following, "as_of": "2024-01-01T00:00:00Z"}

    output = rows(extract(write, api, "path: /times"))
    assert output["when"].to_list() == when
    assert output["day"].to_list() == [None, None, "2024-02-03", "2024-02-04"]
    assert output.schema["n"] == pl.Float64
    assert output["n"].to_list() == [1.0, 1.0, 1.5, 1.5]


@pytest.mark.parametrize(
    ("second", "said"),
    [
        (b"null", "is a JSON NoneType, not records"),  # Arrow's reader crashes on it
        (b'{"data": [{"id": 2, "v": NaN}], "next": null}', "is not JSON"),
        (b'\xef\xbb\xbf{"data": [{"id": 2, "v": 1.5}], "next": null}', "is not JSON"),
        (b'{"data": [{"id": 2, "v": "a\xffb"}], "next": null}', "is not JSON"),
        (b'{"data": [{"id": 2, "v": 9007199254740993}], "next": null}', "9007199254740993"),
        (b'{"data": [{"id": 2, "v": 2.5}, null], "next": null}', "not objects"),
        (b'{"data": [{"id": 2, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}]}", "is not JSON"),
    ],
)
def test_a_later_page_is_judged_as_the_first_would_be(
    write: WritePipeline, api: Api, second: bytes, said: str
) -> None:
    """What the first page would fail on fails on the second, with the same message, and no
    body crashes the process (Arrow's JSON reader, tried for speed, crashed on `null` and on
    deep nesting, and took NaN, a byte-order mark and invalid UTF-8)."""

    @api.route("/later")
    def later(request: Request) -> Any:
        if request.query.get("page") == "2":
            return Reply(200, raw=second)
        return {"data": [{"id": 1, "v": 1.5}], "next": "/later?page=2"}

    assert said in error(extract(write, api, "path: /later"))


def test_a_paginator_reading_into_the_records_sees_every_page_whole(
    write: WritePipeline, api: Api
) -> None:
    @api.route("/ids")
    def ids(request: Request) -> Any:
        after = int(request.query.get("after", 0))
        data = [{"id": after + 1}, {"id": after + 2}] if after < 8 else []
        return {"data": data}

    source = "path: /ids, paginate: {type: cursor, cursor_path: data.1.id, cursor_param: after}"
    assert rows(extract(write, api, source))["id"].to_list() == list(range(1, 9))


def test_types_widen_across_pages_and_nested_records_keep_their_shape(
    write: WritePipeline, api: Api, caplog_lines: list[str]
) -> None:
    pages = [
        [{"id": 1, "score": None, "amount": 1, "tags": ["a"], "who": {"name": "x"}}],
        [
            {
                "id": 2,
                "score": 7,
                "amount": 2.5,
                "extra": "late field",
                "who": {"name": "y", "age": 3},
            }
        ],
    ]

    @api.route("/shapes")
    def shapes(request: Request) -> Any:
        page = int(request.query.get("page", 1))
        return {"data": pages[page - 1], "next": "/shapes?page=2" if page == 1 else None}

    result = extract(write, api, "path: /shapes, columns: {id: int32}")
    output = rows(result)
    assert output.schema["id"] == pl.Int32
    assert output.schema["score"] == pl.Int64
    assert output.schema["amount"] == pl.Float64
    assert output["extra"].to_list() == [None, "late field"]
    assert output["who"].struct.field("age").to_list() == [None, 3]
    assert output["tags"].to_list() == [["a"], None]
    notes = [line for line in caplog_lines if "widened" in line]
    assert any("field 'amount' widened from int64 to double at page 2" in n for n in notes)
    with CatalogReader(result.project_dir / ".arrowline" / "catalog.db") as catalog:
        task = catalog.task_run(result.run_id, "t")
    assert task is not None
    assert task.details is not None
    assert {"field": "amount", "from": "int64", "to": "double", "page": 2} in task.details[
        "widened"
    ]  # the run's record says it, not only the log


def test_a_field_whose_types_cannot_meet_fails_naming_page_and_field(
    write: WritePipeline, api: Api
) -> None:
    pages = [[{"id": 1, "code": 10}], [{"id": 2, "code": "X-10"}]]

    @api.route("/clash")
    def clash(request: Request) -> Any:
        page = int(request.query.get("page", 1))
        return {"data": pages[page - 1], "next": "/clash?page=2" if page == 1 else None}

    said = error(extract(write, api, "path: /clash"))
    assert "page 2 of" in said
    assert "field 'code'" in said
    declared = rows(extract(write, api, "path: /clash, columns: {code: string}"))
    assert declared["code"].to_list() == ["10", "X-10"]


def test_the_source_is_named_in_lineage_by_its_url(write: WritePipeline, api: Api) -> None:
    from connectors.base import NamingContext
    from connectors.http import CONNECTOR
    from connectors.http.config import HttpConnection, HttpSource

    source = HttpSource.model_validate({"from": "http", "connection": "shop", "path": "/orders"})
    spec = HttpConnection.model_validate({"kind": "http", "base_url": "https://api.example.com/v1"})
    place = CONNECTOR.place(source, NamingContext(connections={"shop": spec}))
    assert (place.namespace, place.table) == ("https://api.example.com", "/v1/orders")


def test_check_reaches_the_api_with_its_auth(api: Api, tmp_path: Path) -> None:
    from connectors.http import CONNECTOR
    from connectors.http.config import HttpConnection

    api.routes["/v1"] = lambda request: (
        Reply(200, {"ok": True})
        if request.headers.get("authorization") == "Bearer good"
        else Reply(401, {"message": "no"})
    )
    for token, ok in (("good", True), ("bad", False)):
        spec = HttpConnection.model_validate(
            {
                "kind": "http",
                "base_url": f"{api.base_url}/v1",
                "retries": 0,
                "auth": {"type": "bearer", "token": token},
            }
        )
        result = CONNECTOR.check_connection(CONNECTOR.resolve("shop", spec, tmp_path))
        assert result.ok is ok, result.detail
    assert "answered 401" in result.detail


# -- incremental -----------------------------------------------------------------------------


def test_an_incremental_pull_sends_the_committed_watermark_and_drops_what_it_had(
    write: WritePipeline, api: Api, project: Path
) -> None:
    """The API answers `updated_since` inclusively, so the record at the watermark comes back;
    the (cursor, key) comparison drops it, and the two records sharing the watermark's time
    with a higher id (late ties) are kept. The watermark is committed with the Parquet load."""
    store = [{"id": i, "updated_at": f"2024-01-01T10:0{i}:00+00:00", "v": i} for i in range(1, 6)]

    @api.route("/changes")
    def changes(request: Request) -> Any:
        since = request.query.get("updated_since")
        picked = [
            r for r in store if since is None or r["updated_at"] >= since.replace("Z", "+00:00")
        ]
        return {"data": picked}

    source = (
        "path: /changes, data_path: data, paginate: {type: single_page}, "
        'columns: {updated_at: "timestamp[us, UTC]"}, '
        "incremental: {cursor: updated_at, key: [id], param: updated_since}"
    )
    text = (
        pipeline(api, source)
        + """
          - id: out
            load: {input: t, to: parquet, path: out/changes, mode: append}
    """
    )
    path = write("p.yaml", text)
    first = run(path)
    assert first.ok, {k: t.error for k, t in first.tasks.items() if t.error}
    assert "updated_since" not in api.hits("/changes")[0].query
    store.append({"id": 6, "updated_at": "2024-01-01T10:05:00+00:00", "v": 6})  # a tie, late
    store.append({"id": 7, "updated_at": "2024-01-01T10:07:00+00:00", "v": 7})
    second = run(path)
    assert second.ok, {k: t.error for k, t in second.tasks.items() if t.error}
    assert api.hits("/changes")[-1].query["updated_since"] == "2024-01-01T10:05:00+00:00"
    assert second.tasks["t"].rows_out == 2
    published = pl.read_parquet(str(project / "out" / "changes" / "*.parquet"))
    assert sorted(published["id"].to_list()) == [1, 2, 3, 4, 5, 6, 7]


def test_the_start_is_written_as_the_api_wants_it(api: Api) -> None:
    from datetime import UTC, datetime

    from connectors.base import ConnectorContext
    from connectors.http.config import HttpSource
    from connectors.http.pages import incremental_start
    from engine.core.watermark import Watermark

    mark = Watermark(datetime(2024, 3, 1, 12, 0, tzinfo=UTC))
    ctx = ConnectorContext(Path("."), "p", "r", "t", watermark=mark)
    cases = {
        ("iso", None): "2024-03-01T12:00:00+00:00",
        ("epoch", None): 1709294400,
        ("epoch_ms", "1h"): 1709290800000,
        ("date", "1d"): "2024-02-29",
    }
    for (kind, lookback), expected in cases.items():
        spec: dict[str, Any] = {"cursor": "u", "param": "since", "format": kind}
        if lookback:
            spec["lookback"] = lookback
        config = HttpSource.model_validate(
            {"from": "http", "connection": "c", "path": "/x", "incremental": spec}
        )
        assert incremental_start(config, ctx) == expected, kind


# -- parent and child ------------------------------------------------------------------------


def test_children_fan_out_over_the_parent_within_the_connection_s_concurrency(
    write: WritePipeline, api: Api
) -> None:
    import threading

    orders = [{"id": i, "ref": f"o/{i}"} for i in range(1, 8)]
    in_flight, most = [0], [0]
    lock = threading.Lock()

    @api.route("/orders")
    def parents(request: Request) -> Any:
        page = int(request.query.get("page", 1))
        following = "/orders?page=2" if page == 1 else None
        return {"data": orders[(page - 1) * 4 : page * 4], "next": following}

    def items(request: Request) -> Reply:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        order = int(request.path.split("/")[2])
        page = int(request.query.get("page", 1))
        following = f"/orders/{order}/items?page=2" if page == 1 else None
        return Reply(200, {"data": [{"sku": f"s{order}-{page}"}], "next": following})

    for order in orders:
        api.routes[f"/orders/{order['id']}/items"] = items

    source = (
        "path: '/orders/{parent.id}/items', data_path: data, paginate: {type: next_url}, "
        "parent: {path: /orders, data_path: data, paginate: {type: next_url}, fields: [id, ref]}"
    )
    found = rows(extract(write, api, source, ", max_concurrency: 2"))
    assert found.height == 14
    assert found["parent_id"].to_list() == [i for i in range(1, 8) for _ in (1, 2)]
    assert found["parent_ref"][0] == "o/1"
    assert found["sku"].to_list()[:2] == ["s1-1", "s1-2"]
    assert most[0] == 2


def test_a_parent_without_the_field_its_children_need_fails_naming_it(
    write: WritePipeline, api: Api
) -> None:
    api.routes["/orders"] = lambda request: [{"id": 1}, {"number": 2}]
    api.routes["/orders/1/items"] = lambda request: [{"sku": "a"}]
    source = "path: '/orders/{parent.id}/items', parent: {path: /orders}"
    said = error(extract(write, api, source))
    assert "parent record 2 of page 1" in said
    assert "has no usable 'id'" in said


def _numbered_api(api: Api, total: int, short_at: int | None = None) -> dict[str, int]:
    """/numbers: `total` records by offset and limit (at `short_at`, 3 fewer than asked), each
    answer taking 0.1 s; returns the most requests it ever served at once."""
    import threading

    lock, busy, most = threading.Lock(), [0], {"at_once": 0}

    @api.route("/numbers")
    def numbers(request: Request) -> Any:
        offset, limit = int(request.query["offset"]), int(request.query["limit"])
        with lock:
            busy[0] += 1
            most["at_once"] = max(most["at_once"], busy[0])
        time.sleep(0.1)
        with lock:
            busy[0] -= 1
        if offset == short_at:
            limit -= 3
        data = [{"id": i} for i in range(offset, min(offset + limit, total))]
        return {"data": data, "meta": {"total": total}}

    return most


def test_parallel_pages_are_fetched_at_once_and_read_in_order(
    write: WritePipeline, api: Api
) -> None:
    most = _numbered_api(api, 43)
    source = (
        "path: /numbers, paginate: {type: offset, limit: 5, total_path: meta.total, parallel: 4}"
    )
    assert rows(extract(write, api, source))["id"].to_list() == list(range(43))
    assert most["at_once"] >= 3  # the server saw pages asked for together
    offsets = sorted(int(r.query["offset"]) for r in api.hits("/numbers"))
    assert offsets == list(range(0, 45, 5))  # none past the total, none twice


def test_a_short_page_drops_the_pages_fetched_ahead_and_reads_on_as_one_at_a_time(
    write: WritePipeline, api: Api
) -> None:
    """The page at offset 10 holds 2 records, not 5: the next offset is 12, so the pages
    fetched ahead at 15, 20, ... are never read (they would have skipped 12-14)."""
    _numbered_api(api, 30, short_at=10)
    source = (
        "path: /numbers, paginate: {type: offset, limit: 5, total_path: meta.total, parallel: 3}"
    )
    assert rows(extract(write, api, source))["id"].to_list() == list(range(30))
    asked = [int(r.query["offset"]) for r in api.hits("/numbers")]
    assert {12, 17, 22, 27} <= set(asked)  # read on from where the short page led


def test_parallel_page_numbers_follow_the_total_pages(write: WritePipeline, api: Api) -> None:
    @api.route("/paged")
    def paged(request: Request) -> Any:
        page = int(request.query.get("page", 1))
        return {"items": [{"page": page, "k": k} for k in range(3)], "pages": 7}

    source = (
        "path: /paged, data_path: items, "
        "paginate: {type: page_number, total_pages_path: pages, parallel: 3}"
    )
    found = rows(extract(write, api, source))
    assert found["page"].to_list() == [p for p in range(1, 8) for _ in range(3)]
    assert sorted(int(r.query["page"]) for r in api.hits("/paged")) == list(range(1, 8))


def _checked(write: WritePipeline, source: str) -> list[Any]:
    """The problems `arrowline check` finds in a pipeline whose task `t` (line 6) extracts
    `source` from a connection no test server answers."""
    from engine.tasks.checks import check_file

    path = write(
        "p.yaml",
        f"""
        pipeline: rest
        connections:
          shop: {{kind: http, base_url: "http://127.0.0.1:9"}}
        tasks:
          - id: t
            extract: {{from: http, connection: shop, {source}}}
        """,
    )
    return list(check_file(path)[1])


def test_parallel_pages_without_a_total_are_refused_at_their_line(write: WritePipeline) -> None:
    problems = _checked(write, "path: /x, paginate: {type: offset, parallel: 4}")
    assert any("parallel pages need total_path" in p.message and p.line == 6 for p in problems)


def test_a_child_path_needs_its_parent_and_says_so_before_a_run(write: WritePipeline) -> None:
    problems = _checked(write, "path: '/orders/{parent.id}/items'")
    assert any("needs a parent resource" in p.message and p.line == 6 for p in problems)


def test_the_bucket_keeps_every_second_within_the_rate_and_loses_no_time_to_jitter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fake clock: every sleep overshoots by up to 5 ms and every request takes up to 8 ms,
    as on a busy machine. No sliding second holds more than 50 requests, and 95% of 50/s is
    kept."""
    import random

    from connectors.http import client

    now = [0.0]
    rng = random.Random(7)

    def sleep(seconds: float, cancel: object) -> None:
        now[0] += seconds + rng.uniform(0, 0.005)

    monkeypatch.setattr(client, "_sleep", sleep)
    bucket = client.TokenBucket(50, clock=lambda: now[0])
    sent: list[float] = []
    for _ in range(1_000):
        bucket.take()
        sent.append(now[0])
        now[0] += rng.uniform(0, 0.008)
    most = max(sum(1 for t in sent[i:] if t - start < 1.0) for i, start in enumerate(sent))
    assert most <= 50
    assert (len(sent) - 1) / (sent[-1] - sent[0]) >= 0.95 * 50


# -- what a review found ---------------------------------------------------------------------


def test_a_redirect_to_another_host_gets_no_credentials(
    write: WritePipeline, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = serve()
    elsewhere = next(other)
    try:
        monkeypatch.setenv("SHOP_KEY", "sk_live_abcdef")
        elsewhere.routes["/landing"] = lambda request: [{"id": 1}]
        api.routes["/moved"] = lambda request: Reply(
            302, {}, {"location": f"{elsewhere.base_url}/landing"}
        )
        auth = ', headers: {X-Tenant: t1}, auth: {type: api_key, api_key: "${env:SHOP_KEY}"}'
        assert rows(extract(write, api, "path: /moved", auth)).height == 1
        (landed,) = elsewhere.hits("/landing")
        assert "x-api-key" not in landed.headers
        assert "x-tenant" not in landed.headers
        assert api.hits("/moved")[0].headers["x-api-key"] == "sk_live_abcdef"
    finally:
        next(other, None)


@pytest.mark.parametrize("scheme", ["basic", "query"])
def test_credentials_echoed_back_encoded_are_masked(
    write: WritePipeline, api: Api, monkeypatch: pytest.MonkeyPatch, project: Path, scheme: str
) -> None:
    import base64
    from urllib.parse import quote

    monkeypatch.setenv("SHOP_KEY", "sk+live/abc=")
    encoded = (
        base64.b64encode(b"bob:sk+live/abc=").decode()
        if scheme == "basic"
        else quote("sk+live/abc=", safe="")
    )
    api.routes["/echo"] = lambda request: Reply(400, {"message": f"rejected {encoded}"})
    auth = (
        ', auth: {type: basic, username: bob, password: "${env:SHOP_KEY}"}'
        if scheme == "basic"
        else ', auth: {type: api_key, name: key, api_key: "${env:SHOP_KEY}", location: query}'
    )
    result = extract(write, api, "path: /echo", auth)
    said = error(result)
    assert "rejected ***" in said
    with engine.open(project) as opened:
        stored = " ".join(str(t.error) for t in opened.catalog.task_runs(result.run_id))
    assert encoded not in stored


def test_references_in_a_resource_s_headers_and_params_are_resolved(
    write: WritePipeline, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TENANT_KEY", "tk-123456")
    api.routes["/tenant"] = lambda request: (
        [{"ok": request.headers.get("x-tenant-key") == "tk-123456"}]
        if request.query.get("sig") == "tk-123456"
        else Reply(401, {"message": "no"})
    )
    source = (
        'path: /tenant, headers: {X-Tenant-Key: "${env:TENANT_KEY}"}, '
        'params: {sig: "${env:TENANT_KEY}"}'
    )
    assert rows(extract(write, api, source))["ok"].to_list() == [True]


def test_an_empty_page_with_a_cursor_is_no_end_and_a_configured_total_is_checked(
    write: WritePipeline, api: Api
) -> None:
    pages = {"0": (RECORDS[:5], "1"), "1": ([], "2"), "2": (RECORDS[5:9], None)}

    @api.route("/sparse")
    def sparse(request: Request) -> Any:
        data, following = pages[request.query.get("cursor", "0")]
        return {"data": data, "next": following}

    source = "path: /sparse, data_path: data, paginate: {type: cursor, cursor_path: next}"
    assert rows(extract(write, api, source)).height == 9
    api.routes["/short"] = lambda request: {"data": RECORDS[:3], "meta": {"count": 10}}
    source = (
        "path: /short, data_path: data, paginate: {type: offset, limit: 3, total_path: meta.count}"
    )
    said = error(extract(write, api, source))
    assert "page 2" in said or "fewer than the total" in said


def test_a_page_without_its_data_path_fails_and_jsonpath_stars_are_read(
    write: WritePipeline, api: Api
) -> None:
    @api.route("/flaky_body")
    def flaky_body(request: Request) -> Any:
        page = int(request.query.get("page", 1))
        if page == 3:
            return {"ok": False, "error": "ratelimited"}
        return {
            "items": RECORDS[(page - 1) * 10 : page * 10],
            "next": f"/flaky_body?page={page + 1}",
        }

    said = error(extract(write, api, "path: /flaky_body, data_path: items"))
    assert "page 3 of" in said
    assert "has no 'items'" in said
    api.routes["/starred"] = lambda request: {"items": RECORDS[:4]}
    assert rows(extract(write, api, "path: /starred, data_path: '$.items[*]'")).height == 4


def test_a_query_in_the_path_stays_on_every_page_and_relative_links_follow_the_request(
    write: WritePipeline, api: Api
) -> None:
    @api.route("/v1/orders")
    def orders(request: Request) -> Reply:
        assert request.query.get("status") == "open"
        page = int(request.query.get("page", 1))
        headers = {"link": f'<?status=open&page={page + 1}>; rel="next"'} if page < 3 else {}
        return Reply(200, RECORDS[(page - 1) * 10 : page * 10], headers)

    source = "path: '/v1/orders?status=open', paginate: {type: link_header}"
    assert rows(extract(write, api, source)).height == 30


def test_an_api_that_repeats_its_last_page_fails_instead_of_looping(
    write: WritePipeline, api: Api
) -> None:
    api.routes["/clamped"] = lambda request: {
        "data": RECORDS[(min(int(request.query["page"]), 2) - 1) * 10 :][:10]
    }
    said = error(
        extract(write, api, "path: /clamped, data_path: data, paginate: {type: page_number}")
    )
    assert "is page 2 again" in said
    assert len(api.hits("/clamped")) == 3


def test_declared_columns_no_record_holds_are_typed_nulls(write: WritePipeline, api: Api) -> None:
    api.routes["/thin"] = lambda request: [{"id": 1}, {"id": 2}]
    found = rows(extract(write, api, "path: /thin, columns: {discount: float64}"))
    assert found.schema["discount"] == pl.Float64
    assert found["discount"].to_list() == [None, None]


def test_an_oauth_401_on_the_last_attempt_is_a_clear_error(write: WritePipeline, api: Api) -> None:
    api.routes["/token"] = lambda request: {"access_token": "t-abcdef", "expires_in": None}
    api.routes["/locked"] = lambda request: Reply(401, {"message": "account locked"})
    auth = (
        ", retries: 0, auth: {type: oauth2_client_credentials, token_url: /token, "
        "client_id: c, client_secret: s3cret}"
    )
    said = error(extract(write, api, "path: /locked", auth))
    assert "answered 401 Unauthorized: account locked" in said
    assert len(api.hits("/token")) == 2  # fetched again once on the 401


def test_a_wait_longer_than_five_minutes_is_left_to_the_task_s_retry(
    write: WritePipeline, api: Api
) -> None:
    api.routes["/later"] = lambda request: Reply(
        429, {"message": "come back"}, {"retry-after": "3600"}
    )
    started = time.monotonic()
    text = pipeline(api, "path: /later").rstrip() + "\n            retry: {attempts: 1}\n"
    said = error(run(write("p.yaml", text)))
    assert time.monotonic() - started < 10
    assert "answered 429" in said


def test_a_number_beyond_int64_names_its_field(write: WritePipeline, api: Api) -> None:
    """(Beyond 64 bits, a JSON number is read as a float, as JavaScript reads it.)"""
    api.routes["/big"] = lambda request: [{"id": 1, "count": 2**63 + 5}]
    said = error(extract(write, api, "path: /big"))
    assert "field 'count'" in said


def test_an_unknown_column_type_is_refused_before_a_run(write: WritePipeline) -> None:
    problems = _checked(write, "path: /x, columns: {id: int65}")
    assert any("int65" in p.message and p.line == 6 for p in problems)


def test_an_unknown_paginator_is_named_by_its_own_key(write: WritePipeline) -> None:
    problems = _checked(write, "path: /x, paginate: {type: offest}")
    (problem,) = problems
    assert (problem.code, problem.line) == ("unknown-value", 6)
    assert "unknown 'type' value 'offest'. Did you mean 'offset'?" in problem.message


# -- resumable -------------------------------------------------------------------------------


def test_kill_9_mid_pages_then_resume_fetches_only_what_was_not_kept(
    write: WritePipeline, api: Api, project: Path
) -> None:
    """The run is killed while it reads page 6 of 12; the resume (same run) goes on from the
    page after the last one its checkpoint kept, and the output equals a clean run's."""
    import signal

    @api.route("/slow")
    def slow(request: Request) -> Reply:
        page = int(request.query.get("cursor", 0))
        following = page + 1 if page < 11 else None
        data = [{"id": page * 10 + i, "page": page} for i in range(10)]
        return Reply(200, {"data": data, "next": following}, delay=0.15)

    source = "path: /slow, data_path: data, paginate: {type: cursor, cursor_path: next}"
    text = to_parquet(api, source, "out/slow.parquet")
    path = write("p.yaml", text)
    process = _run_process(path, project)
    deadline = time.monotonic() + 60
    while len(api.hits("/slow")) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    served = len(api.hits("/slow"))
    assert 6 <= served < 12
    checkpoints = list((project / ".arrowline").rglob(".checkpoint-*/progress.jsonl"))
    assert checkpoints, "the killed run kept its progress"

    resumed = resume(path)
    assert resumed.ok, {k: t.error for k, t in resumed.tasks.items() if t.error}
    again = [int(r.query.get("cursor", 0)) for r in api.hits("/slow")[served:]]
    fetched_twice = served - again[0]
    assert again == list(range(again[0], 12))
    assert fetched_twice <= 1  # the page in flight: each fetched body was kept at once
    found = pl.read_parquet(str(project / "out" / "slow.parquet"))
    assert sorted(found["id"].to_list()) == list(range(120))
    assert not list((project / ".arrowline").rglob(".checkpoint-*"))


def test_pages_fetched_while_conversion_lagged_are_not_fetched_again_after_a_kill(
    write: WritePipeline, api: Api, project: Path
) -> None:
    """Conversion held (fault point `http.convert`) while pages are fetched ahead of it: killed
    then, the run had fetched three pages and converted none. The resume converts their bodies
    from the checkpoint, asks the API only for the pages after them, and the output is whole."""
    import signal

    @api.route("/held")
    def held(request: Request) -> Any:
        page = int(request.query.get("cursor", 0))
        following = page + 1 if page < 11 else None
        return {"data": [{"id": page * 10 + i, "page": page} for i in range(10)], "next": following}

    source = "path: /held, data_path: data, paginate: {type: cursor, cursor_path: next}"
    text = to_parquet(api, source, "o.parquet")
    path = write("p.yaml", text)
    process = _run_process(path, project, fault="http.convert")
    deadline = time.monotonic() + 60
    while len(api.hits("/held")) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # the fetching thread now waits for a conversion that does not come
    served = [int(r.query.get("cursor", 0)) for r in api.hits("/held")]
    assert served == [0, 1, 2]
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    (journal,) = (project / ".arrowline").rglob(".checkpoint-*/progress.jsonl")
    lines = [orjson.loads(line) for line in journal.read_bytes().splitlines()[1:]]
    assert [line.get("fetched", "")[:10] for line in lines] == [f"raw-00000{n}" for n in range(3)]

    resumed = resume(path)
    assert resumed.ok, {k: t.error for k, t in resumed.tasks.items() if t.error}
    again = [int(r.query.get("cursor", 0)) for r in api.hits("/held")[3:]]
    assert again == list(range(3, 12))  # none of the three fetched twice
    found = pl.read_parquet(str(project / "o.parquet"))
    assert found["id"].to_list() == list(range(120))  # in page order, none missing or twice
    assert not list((project / ".arrowline").rglob(".checkpoint-*"))


def _eight_pages(api: Api, bad: set[int]) -> str:
    """/held: 8 pages of 10 ids; a page in `bad` holds ids that are text, once (the page
    converts, and fails where pages are kept, when its types meet the earlier pages')."""

    @api.route("/held")
    def held(request: Request) -> Any:
        page = int(request.query.get("cursor", 0))
        data: list[dict[str, Any]] = [{"id": page * 10 + i} for i in range(10)]
        if page in bad:
            bad.discard(page)
            data = [{"id": f"id {page * 10 + i}"} for i in range(10)]
        return {"data": data, "next": page + 1 if page < 7 else None}

    return to_parquet(
        api,
        "path: /held, data_path: data, paginate: {type: cursor, cursor_path: next}",
        "o.parquet",
    )


@pytest.mark.parametrize("bad_page", [3, 6])
def test_a_page_that_fails_conversion_is_fetched_again_and_nothing_after_it_is_kept(
    write: WritePipeline, api: Api, project: Path, monkeypatch: pytest.MonkeyPatch, bad_page: int
) -> None:
    """Conversion slowed (fault point `http.convert`, held 0.2 s a page) so that pages after
    the bad one are fetched and wait while it fails: none of them may be journaled as kept
    (the resume would put the bad page's rows after theirs, or find a request it 'saw'), and
    the bad page's body goes, so the resume asks the API for it again."""
    bad = {bad_page}
    path = write("p.yaml", _eight_pages(api, bad))
    monkeypatch.setenv("ARROWLINE_FAULT", "http.convert")
    monkeypatch.setenv("ARROWLINE_FAULT_HOLD", "0.2")
    said = error(run(path))
    assert f"page {bad_page + 1} of" in said
    assert "field 'id'" in said
    assert len(api.hits("/held")) > bad_page + 1  # pages after it were fetched meanwhile
    monkeypatch.delenv("ARROWLINE_FAULT")
    served = len(api.hits("/held"))
    resumed = resume(path)
    assert resumed.ok, {k: t.error for k, t in resumed.tasks.items() if t.error}
    again = [int(r.query.get("cursor", 0)) for r in api.hits("/held")[served:]]
    assert again == list(range(bad_page, 8))
    found = pl.read_parquet(str(project / "o.parquet"))
    assert found["id"].to_list() == list(range(80))


@pytest.mark.parametrize("loss", ["gone", "cut short"])
def test_a_body_lost_after_its_line_was_written_is_fetched_again(
    write: WritePipeline, api: Api, project: Path, loss: str
) -> None:
    """Killed with three pages fetched and none converted; the second body is then lost or
    cut short (a power cut: neither file is synced). The resume converts the first, fetches
    the rest again, and does not take a request it had journaled past that point for a
    repeat."""
    import signal

    path = write("p.yaml", _eight_pages(api, set()))
    process = _run_process(path, project, fault="http.convert")
    deadline = time.monotonic() + 60
    while len(api.hits("/held")) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    (lost,) = (project / ".arrowline").rglob(".checkpoint-*/raw-000001-*")
    assert lost.suffix == ".arrow"  # read by Arrow's reader: its records as an Arrow file
    if loss == "gone":
        lost.unlink()
    else:
        lost.write_bytes(lost.read_bytes()[: lost.stat().st_size // 2])
    resumed = resume(path)
    assert resumed.ok, {k: t.error for k, t in resumed.tasks.items() if t.error}
    again = [int(r.query.get("cursor", 0)) for r in api.hits("/held")[3:]]
    assert again == list(range(1, 8))
    found = pl.read_parquet(str(project / "o.parquet"))
    assert found["id"].to_list() == list(range(80))


def _fan_out_api(api: Api, delay: float) -> None:
    """20 orders in 4 parent pages of 5; each order has 2 pages of items, served slowly."""

    @api.route("/orders")
    def parents(request: Request) -> Any:
        page = int(request.query.get("page", 1))
        following = f"/orders?page={page + 1}" if page < 4 else None
        return {
            "data": [{"id": i} for i in range((page - 1) * 5 + 1, page * 5 + 1)],
            "next": following,
        }

    def items(request: Request) -> Reply:
        order = int(request.path.split("/")[2])
        page = int(request.query.get("page", 1))
        following = f"/orders/{order}/items?page=2" if page == 1 else None
        data = [{"sku": f"s{order}-{page}-{k}"} for k in range(3)]
        return Reply(200, {"data": data, "next": following}, delay=delay)

    for order in range(1, 21):
        api.routes[f"/orders/{order}/items"] = items


FAN_OUT = (
    "path: '/orders/{parent.id}/items', data_path: data, paginate: {type: next_url}, "
    "parent: {path: /orders, data_path: data, paginate: {type: next_url}, fields: [id]}"
)


def test_kill_9_mid_fan_out_then_resume_fetches_only_the_children_in_flight(
    write: WritePipeline, api: Api, project: Path, caplog_lines: list[str]
) -> None:
    """Killed while the children of order 9 or so are read; the resume fetches the parent page
    being worked on again, skips the orders whose children were kept, and ends row for row
    equal to a clean run."""
    import signal

    from polars.testing import assert_frame_equal

    _fan_out_api(api, delay=0.05)
    text = to_parquet(api, FAN_OUT, "out/items.parquet", ", max_concurrency: 2")
    path = write("p.yaml", text)
    process = _run_process(path, project)

    def children() -> list[Request]:
        return [r for r in api.requests if r.path.endswith("/items")]

    deadline = time.monotonic() + 60
    while len(children()) < 18 and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    served = len(children())
    assert 18 <= served < 40
    journal = list((project / ".arrowline").rglob(".checkpoint-*/progress.jsonl"))
    assert journal, "the killed run kept its progress"
    fetched_before = {(r.path, r.query.get("page", "1")) for r in children()}
    parents_before = len(api.hits("/orders"))

    resumed = resume(path)
    assert resumed.ok, {k: t.error for k, t in resumed.tasks.items() if t.error}
    again = [(r.path, r.query.get("page", "1")) for r in children()[served:]]
    twice = [request for request in again if request in fetched_before]
    assert len(twice) <= 2  # a request in flight per worker: every body fetched was kept
    assert len({path for path, _ in again}) < 20  # it did not start over
    assert len(api.hits("/orders")) - parents_before <= 4  # the page being worked on, then on
    assert any("resuming after parent page" in line for line in caplog_lines)
    found = pl.read_parquet(str(project / "out" / "items.parquet"))
    expected = sorted(f"s{o}-{p}-{k}" for o in range(1, 21) for p in (1, 2) for k in range(3))
    assert sorted(found["sku"].to_list()) == expected  # none missing, none twice
    assert found.filter(pl.col("sku").str.starts_with("s7-"))["parent_id"].unique().to_list() == [7]
    assert not list((project / ".arrowline").rglob(".checkpoint-*"))

    clean = write("clean.yaml", text.replace("out/items.parquet", "out/clean.parquet"))
    assert run(clean).ok
    assert_frame_equal(found, pl.read_parquet(str(project / "out" / "clean.parquet")))  # in order


def test_children_fetched_while_the_parent_order_waited_are_not_fetched_again_after_a_kill(
    write: WritePipeline, api: Api, project: Path
) -> None:
    """Adding children held (fault point `http.settle`) while the workers fetch ahead: killed
    then, five orders' children (the window of 2 x concurrency, and the one that waits for
    room) were fetched and none added. The resume adds them from the checkpoint and asks the
    API only for the others; the output equals a clean run's, in order."""
    import signal

    from polars.testing import assert_frame_equal

    _fan_out_api(api, delay=0.0)
    text = to_parquet(api, FAN_OUT, "out/items.parquet", ", max_concurrency: 2")
    path = write("p.yaml", text)

    def children() -> list[tuple[str, str]]:
        return [(r.path, r.query.get("page", "1")) for r in api.requests if "/items" in r.path]

    process = _run_process(path, project, fault="http.settle")
    deadline = time.monotonic() + 60
    while len(children()) < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # the workers are idle: the window is full and nothing is added
    before = children()
    assert sorted({path for path, _ in before}) == [f"/orders/{o}/items" for o in range(1, 6)]
    assert len(before) == 10
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    resumed = resume(path)
    assert resumed.ok, {k: t.error for k, t in resumed.tasks.items() if t.error}
    again = children()[len(before) :]
    assert not set(again) & set(before)  # none of the children fetched before
    assert len(again) == 30  # the other 15 orders, 2 pages each
    found = pl.read_parquet(str(project / "out" / "items.parquet"))
    clean = write("clean.yaml", text.replace("out/items.parquet", "out/clean.parquet"))
    assert run(clean).ok
    assert_frame_equal(found, pl.read_parquet(str(project / "out" / "clean.parquet")))


def test_a_child_cut_short_goes_on_from_its_last_page_on_resume(
    write: WritePipeline, api: Api, project: Path
) -> None:
    """Order 3's items have three pages and the second fails: the resume does not ask for
    order 3's first page again, nor for the children fetched before, and every row is there
    once, in order."""
    broken = {True}

    @api.route("/orders")
    def parents(request: Request) -> Any:
        return {"data": [{"id": i} for i in range(1, 6)], "next": None}

    def items(request: Request) -> Reply:
        order = int(request.path.split("/")[2])
        page = int(request.query.get("page", 1))
        if order == 3 and page == 2 and broken:
            return Reply(400, {"message": "not now"})
        last = 3 if order == 3 else 1
        following = f"/orders/{order}/items?page={page + 1}" if page < last else None
        return Reply(200, {"data": [{"sku": f"s{order}-{page}"}], "next": following})

    for order in range(1, 6):
        api.routes[f"/orders/{order}/items"] = items
    text = to_parquet(api, FAN_OUT, "out/items.parquet", ", max_concurrency: 1")
    path = write("p.yaml", text)
    assert not run(path).ok
    broken.clear()
    served = len(api.requests)
    resumed = resume(path)
    assert resumed.ok, {k: t.error for k, t in resumed.tasks.items() if t.error}
    again = [(r.path, r.query.get("page", "1")) for r in api.requests[served:]]
    assert ("/orders/3/items", "1") not in again
    assert ("/orders/3/items", "2") in again
    assert not [r for r in again if r[0] in ("/orders/1/items", "/orders/2/items")]
    found = pl.read_parquet(str(project / "out" / "items.parquet"))
    expected = ["s1-1", "s2-1", "s3-1", "s3-2", "s3-3", "s4-1", "s5-1"]
    assert found["sku"].to_list() == expected


def test_a_checkpoint_is_resumed_only_by_its_own_config_and_survives_a_cut_line(
    tmp_path: Path,
) -> None:
    """The journal's identity is the resource's whole config (its parent included) and the
    start watermark: another config starts afresh rather than mixing two configs' rows. A
    line cut short by a kill is ignored; the lines before it stand."""
    import pyarrow as pa

    from connectors.base import ConnectorContext
    from connectors.http.config import HttpSource
    from connectors.http.pages import Page
    from connectors.http.spill import Checkpoint, Spill
    from engine.core.watermark import Watermark

    def config(fields: list[str]) -> HttpSource:
        return HttpSource.model_validate(
            {
                "from": "http",
                "connection": "shop",
                "path": "/orders/{parent.id}/items",
                "parent": {"path": "/orders", "fields": fields},
            }
        )

    folder = tmp_path / ".checkpoint-r1"
    ctx = ConnectorContext(tmp_path, "p", "r1", "t", checkpoint=folder)
    first = config(["id"])
    checkpoint, spill = Checkpoint(folder, first, ctx), Spill(first, folder, None, "t")
    assert checkpoint.restore(spill) is None  # nothing yet: afresh
    for number in range(3):
        page = Page(number, f"/o/{number}", [{"sku": f"s{number}", "qty": number}], {}, None)  # type: ignore[arg-type]
        spill.add(page, page.url)
        checkpoint.save(spill, {"parent": None, "done": number + 1, "number": 1})
    with checkpoint.file.open("ab") as journal:
        journal.write(b'{"files": [["page-000003.arrow", 3, "/o/3"]], "ro')  # the kill

    again = Spill(first, folder, None, "t")
    resumed = Checkpoint(folder, first, ctx)
    progress = resumed.restore(again)
    assert progress == {"parent": None, "done": 3, "number": 1}
    assert again.rows == 3
    assert [path.name for path, _, _ in again.files] == [f"page-{n:06d}.arrow" for n in range(3)]
    assert again.schema == pa.schema([("sku", pa.string()), ("qty", pa.int64())])

    page = Page(3, "/o/3", [{"sku": "s3", "qty": 3}], {}, None)  # type: ignore[arg-type]
    again.add(page, page.url)  # the resumed run goes on, appending to the journal
    resumed.save(again, {"parent": None, "done": 4, "number": 1})
    third = Spill(first, folder, None, "t")
    assert Checkpoint(folder, first, ctx).restore(third) == {"parent": None, "done": 4, "number": 1}
    assert third.rows == 4  # the cut line was cut off the file, not glued to what came next

    marked = ConnectorContext(tmp_path, "p", "r1", "t", checkpoint=folder, watermark=Watermark(5))
    assert Checkpoint(folder, first, marked).identity != resumed.identity  # another start
    other = config(["id", "ref"])
    assert Checkpoint(folder, other, ctx).restore(Spill(other, folder, None, "t")) is None
    assert not list(folder.iterdir())  # the other config's pages are gone


def test_a_resumed_fan_out_whose_parent_page_changed_starts_afresh(
    write: WritePipeline, api: Api, project: Path, caplog_lines: list[str]
) -> None:
    """The run fails at order 8; before the resume the API lists a new order first, so the
    parent page being worked on holds other records. Skipping its first `done` records then
    would skip the wrong ones: the fan-out starts afresh and every child comes once."""
    listed = list(range(1, 21))
    broken = {8}

    @api.route("/orders")
    def parents(request: Request) -> Any:
        page = int(request.query.get("page", 1))
        following = f"/orders?page={page + 1}" if page < 4 else None
        return {"data": [{"id": i} for i in listed[(page - 1) * 5 : page * 5]], "next": following}

    def items(request: Request) -> Reply:
        order = int(request.path.split("/")[2])
        if order in broken:
            return Reply(400, {"message": "not today"})
        return Reply(200, {"data": [{"sku": f"s{order}"}], "next": None})

    for order in [*range(1, 21), 100]:
        api.routes[f"/orders/{order}/items"] = items
    text = to_parquet(api, FAN_OUT, "out/items.parquet", ", max_concurrency: 1")
    path = write("p.yaml", text)
    assert not run(path).ok
    assert list((project / ".arrowline").rglob(".checkpoint-*/progress.jsonl"))
    broken.clear()
    listed[:] = [100, *range(1, 20)]  # a new order first: every page shifts by one
    resumed = resume(path)
    assert resumed.ok, {k: t.error for k, t in resumed.tasks.items() if t.error}
    found = pl.read_parquet(str(project / "out" / "items.parquet"))
    assert sorted(found["sku"].to_list()) == sorted(f"s{o}" for o in listed)
    assert any("starts afresh" in line for line in caplog_lines)


def test_a_kept_page_file_cut_short_by_a_power_cut_is_fetched_again(
    write: WritePipeline, api: Api, project: Path
) -> None:
    """Killed with pages kept; the second page's spill file is then cut short (a power cut:
    spill files are not synced). The resume reads the journal only up to the page before it,
    fetches from that page on, and loses and repeats nothing."""
    import signal

    @api.route("/slow")
    def slow(request: Request) -> Reply:
        page = int(request.query.get("cursor", 0))
        data = [{"id": page * 10 + i} for i in range(10)]
        return Reply(200, {"data": data, "next": page + 1 if page < 7 else None}, delay=0.3)

    source = "path: /slow, data_path: data, paginate: {type: cursor, cursor_path: next}"
    path = write("p.yaml", to_parquet(api, source, "o.parquet"))
    process = _run_process(path, project)
    deadline = time.monotonic() + 60
    kept: list[Path] = []
    while len(kept) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
        kept = sorted((project / ".arrowline").rglob(".checkpoint-*/page-*.arrow"))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert len(kept) >= 3, "the run was not caught with pages kept"
    second = kept[1]
    second.write_bytes(second.read_bytes()[: second.stat().st_size // 2])
    served = len(api.hits("/slow"))
    resumed = resume(path)
    assert resumed.ok, {k: t.error for k, t in resumed.tasks.items() if t.error}
    again = [int(r.query.get("cursor", 0)) for r in api.hits("/slow")[served:]]
    assert again == list(range(1, 8))  # from the page whose file was cut
    found = pl.read_parquet(str(project / "o.parquet"))
    assert found["id"].to_list() == list(range(80))


def _run_process(path: Path, project: Path, fault: str | None = None) -> Any:
    """`arrowline run` of the pipeline file in a process of its own, to be killed; with
    `fault`, it stops at that fault point until killed."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("ARROWLINE_FAULT")}
    if fault is not None:
        env["ARROWLINE_FAULT"] = fault
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "run", str(path), "--no-progress"],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# -- resumable, continued ---------------------------------------------------------------------


def test_a_resume_after_pages_that_ended_while_the_api_said_more_fails_again(
    write: WritePipeline, api: Api, project: Path
) -> None:
    """The last page says has_more but gives no cursor: the run fails. A resume of the run,
    the API unchanged, must fail the same way rather than load the partial pages as whole."""

    @api.route("/short")
    def short(request: Request) -> Any:
        page = int(request.query.get("cursor", 0))
        following = page + 1 if page < 2 else None
        data = [{"id": page * 10 + i} for i in range(10)]
        return {"data": data, "next": following, "has_more": True}

    source = "path: /short, data_path: data, paginate: {type: cursor, cursor_path: next}"
    path = write("p.yaml", pipeline(api, source))
    first = run(path)
    assert "although it says more follow" in error(first)
    resumed = resume(path)
    assert not resumed.ok, f"a partial load of {rows(resumed).height} rows passed as whole"
    assert "although it says more follow" in error(resumed)


def test_the_journal_grows_by_a_bounded_line_per_page(
    write: WritePipeline, api: Api, project: Path
) -> None:
    """A journal line per kept page costs the same at page 300 as at page 2: the set of
    requests seen (for the repeated-cursor check) is not written whole in every line."""

    @api.route("/many")
    def many(request: Request) -> Any:
        page = int(request.query.get("cursor", 0))
        if page == 300:
            return Reply(400, {"message": "stop here"})
        return {"data": [{"id": page}], "next": page + 1}

    source = "path: /many, data_path: data, paginate: {type: cursor, cursor_path: next}"
    assert not extract(write, api, source).ok
    (journal,) = (project / ".arrowline").rglob(".checkpoint-*/progress.jsonl")
    lines = journal.read_bytes().splitlines()
    assert len(lines) == 601  # the identity, then a line per page fetched and one per kept
    first, last = max(map(len, lines[1:5])), max(map(len, lines[-4:]))
    assert last < 2 * first, (first, last)

    api.routes["/many"] = lambda request: {"data": [{"id": 300}], "next": 5}  # seen before
    said = error(resume(project / "p.yaml"))
    assert "asked for the same page again" in said  # the requests seen came back whole


def test_a_fan_out_failed_at_the_last_parent_of_a_page_resumes_every_row_once(
    write: WritePipeline, api: Api, project: Path
) -> None:
    """Parent pages of 5, 5 and an empty last page; failures on the last record of a page, on
    the first of a page (the page before all done) and on the very first parent."""
    broken: set[int] = set()

    @api.route("/orders")
    def parents(request: Request) -> Any:
        page = int(request.query.get("page", 1))
        following = f"/orders?page={page + 1}" if page < 3 else None
        data = [{"id": i} for i in range((page - 1) * 5 + 1, page * 5 + 1)] if page < 3 else []
        return {"data": data, "next": following}

    def items(request: Request) -> Reply:
        order = int(request.path.split("/")[2])
        if order in broken:
            return Reply(400, {"message": "not today"})
        return Reply(200, {"data": [{"sku": f"s{order}"}], "next": None})

    for order in range(1, 11):
        api.routes[f"/orders/{order}/items"] = items
    text = to_parquet(api, FAN_OUT, "out/items.parquet", ", max_concurrency: 1")
    path = write("p.yaml", text)
    for fail in (10, 6, 2):
        broken.add(fail)
        assert not run(path).ok
        broken.clear()
        resumed = resume(path)
        assert resumed.ok, {k: t.error for k, t in resumed.tasks.items() if t.error}
        found = pl.read_parquet(str(project / "out" / "items.parquet"))
        assert found["sku"].to_list() == [f"s{o}" for o in range(1, 11)], fail

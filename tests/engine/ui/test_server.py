"""The web monitor over real HTTP (uvicorn on loopback): every page with what it must show, bad
input answered with 400/404 and the reason, the access and cross-site rules tried the way an
attacker would, and every action carried out in the catalog."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from engine.state.catalog import CatalogReader, catalog_location
from engine.ui.guard import Guard
from tests.engine.ui.conftest import arrowline
from tests.engine.ui.monitor import Monitor, serve_monitor


@pytest.fixture(scope="module")
def monitor(shop: Path) -> Monitor:  # type: ignore[misc]
    with serve_monitor(shop) as served:
        yield served


def _reader(shop: Path) -> CatalogReader:
    return CatalogReader(catalog_location(shop))


def _last_run(shop: Path, pipeline: str) -> str:
    with _reader(shop) as catalog:
        run = catalog.last_run(pipeline)
        assert run is not None
        return run.run_id


def test_the_overview_lists_each_pipeline_with_its_last_run_and_what_needs_attention(
    monitor: Monitor, shop: Path
) -> None:
    page = monitor.client.get("/")
    assert page.status_code == 200
    html = page.text
    shop_row = re.search(r'<tr data-pipeline="shop">(.*?)</tr>', html, re.S)
    flaky_row = re.search(r'<tr data-pipeline="flaky">(.*?)</tr>', html, re.S)
    assert shop_row
    assert flaky_row
    assert "SUCCESS" in shop_row[1]
    assert "0 3 * * *" in shop_row[1]  # its schedule, with the next run
    assert re.search(r'<td class="num"><span class="warn">10</span></td>', shop_row[1])
    assert "FAILED" in flaky_row[1]
    assert re.search(r'<a class="warn" href="/dead-letters\?pipeline=flaky">1</a>', flaky_row[1])
    assert page.headers["content-security-policy"].startswith("default-src 'self'")


def test_a_pipeline_page_draws_its_dag_with_the_last_runs_states_and_its_definition(
    monitor: Monitor, shop: Path
) -> None:
    html = monitor.client.get("/pipelines/shop").text
    for task in ("orders", "checked", "slow", "out"):
        assert f'data-task="{task}"' in html
    assert 'data-task="checked" data-kind="validate" data-state="SUCCESS"' in html
    assert "on_fail: quarantine" in html  # the definition, escaped text
    as_defined = monitor.client.get("/pipelines/shop?as=defined").text
    assert 'data-task="out" data-kind="load"' in as_defined
    assert 'data-state="SUCCESS"' not in as_defined


def test_a_pipelines_documentation_page_lists_each_tasks_columns_and_their_sources(
    monitor: Monitor, shop: Path
) -> None:
    assert 'href="/pipelines/shop/docs"' in monitor.client.get("/pipelines/shop").text
    page = monitor.client.get("/pipelines/shop/docs")
    assert page.status_code == 200
    for task in ("orders", "checked", "slow", "out"):
        assert f'id="task-{task}"' in page.text
    assert "orders.amount (value)" in page.text  # a column's source, from column lineage
    assert monitor.client.get("/pipelines/nothing/docs").status_code == 404


def test_the_runs_list_filters_and_pages_without_repeating_a_run(
    monitor: Monitor, shop: Path
) -> None:
    failed = monitor.client.get("/runs", params={"state": "FAILED"}).text
    assert "flaky" in failed
    assert ">shop</a>" not in failed
    future = monitor.client.get("/runs", params={"since": "2999-01-01"}).text
    assert "No runs match." in future
    run_links = re.findall(r'<td><a href="/runs/([^"]+)">', monitor.client.get("/runs").text)
    assert len(run_links) == len(set(run_links)) >= 2


def test_a_run_page_has_the_graph_the_gantt_of_attempts_and_the_errors(
    monitor: Monitor, shop: Path
) -> None:
    run_id = _last_run(shop, "flaky")
    html = monitor.client.get(f"/runs/{run_id}").text
    assert 'class="gantt"' in html
    # two attempts of fussy, both failed, and the wait between them
    attempts = re.findall(r'class="bar attempt" data-task="fussy" data-state="(\w+)"', html)
    assert attempts == ["RETRYING", "FAILED"]
    assert 'class="bar backoff" data-task="fussy"' in html
    # the error is shown as text: the UDF's markup is escaped, never rendered
    assert "upstream &lt;b&gt;service&lt;/b&gt; is not ready" in html
    assert "<b>service</b>" not in html
    task = monitor.client.get(f"/runs/{run_id}/tasks/fussy").text
    log = re.search(r'id="log">(.*?)</table>', task, re.S)
    assert log, "the task page shows the task's log lines"
    assert "attempt 1/2 failed" in log[1]
    assert "<b>" not in log[1]


def test_a_task_page_shows_transitions_schema_preview_and_quarantine_by_check(
    monitor: Monitor, shop: Path
) -> None:
    run_id = _last_run(shop, "shop")
    html = monitor.client.get(f"/runs/{run_id}/tasks/checked").text
    assert 'id="transitions"' in html
    assert re.search(r"<td>amount</td><td><code>double</code></td>", html)
    assert 'id="preview"' in html
    quarantine = re.search(r'id="quarantine">(.*?)</table>', html, re.S)
    assert quarantine
    assert re.search(
        r"<td>amount</td><td>greater_than\(0\)</td><td class=\"num\">10</td>", quarantine[1]
    )


def test_the_lineage_explorer_draws_a_columns_sources(monitor: Monitor) -> None:
    html = monitor.client.get("/lineage", params={"pipeline": "shop", "column": "slow.amount"}).text
    assert 'data-task="slow.amount"' in html
    assert 'data-task="checked.amount"' in html
    assert 'data-task="orders.amount"' in html
    assert '<option value="checked.amount">' in html  # the columns to pick from
    missing = monitor.client.get("/lineage", params={"pipeline": "shop", "column": "slow.nope"})
    assert missing.status_code == 404
    assert "has no column" in missing.text


def test_two_runs_side_by_side(monitor: Monitor, shop: Path) -> None:
    run_id = _last_run(shop, "shop")
    html = monitor.client.get("/compare", params={"a": run_id, "b": run_id}).text
    table = re.search(r'id="task-compare">(.*?)</table>', html, re.S)
    assert table
    assert re.findall(r'<tr data-task="(\w+)"', table[1]) == ["orders", "checked", "slow", "out"]
    assert '<td class="num">90</td>' in table[1]  # rows out of checked
    missing = monitor.client.get("/compare", params={"a": "nope", "b": "last"})
    assert missing.status_code == 404
    assert "nope" in missing.text


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/runs/no-such-run", 404, "no run"),
        ("/pipelines/nope", 404, "no pipeline"),
        ("/runs?state=DONE", 400, "DONE"),
        ("/runs?since=yesterday", 400, "since must be a date"),
        ("/runs?after=1%27%20or%201=1--", 400, "not a page position"),
        ("/dead-letters?status=%3Cscript%3E", 400, "&lt;script&gt;"),
        ("/lineage?pipeline=shop&column=nodot", 400, "task.column"),
        ("/compare?a=last&b=last&threshold=abc", 400, "threshold must be a number"),
        ("/static/..%2Fserver.py", 404, "not found"),
        ("/static/server.py", 404, "not found"),
    ],
)
def test_bad_input_gets_a_clear_error_page(
    monitor: Monitor, path: str, status: int, says: str
) -> None:
    page = monitor.client.get(path)
    assert page.status_code == status
    assert says.lower() in page.text.lower()
    assert "<script>" not in page.text


def test_a_host_this_server_does_not_answer_to_is_refused(monitor: Monitor) -> None:
    """DNS rebinding: a page at evil.example resolved to 127.0.0.1 sends its own Host."""
    page = monitor.client.get("/", headers={"Host": "evil.example"})
    assert page.status_code == 403


def test_an_action_needs_our_forms_token_and_our_origin(monitor: Monitor, shop: Path) -> None:
    form = {"reason": "maintenance", "csrf": monitor.form_token()}
    no_token = monitor.client.post("/pipelines/shop/pause", data={"reason": "x"})
    assert no_token.status_code == 403
    cross_site = monitor.client.post(
        "/pipelines/shop/pause", data=form, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert cross_site.status_code == 403
    for origin in ("http://evil.example", "null", "http://[::1"):
        other_origin = monitor.client.post(
            "/pipelines/shop/pause", data=form, headers={"Origin": origin}
        )
        assert other_origin.status_code == 403
    with _reader(shop) as catalog:
        schedule = catalog.schedule("shop")
        assert schedule is None or not schedule.paused


def test_pause_and_resume_a_schedule_with_a_reason(monitor: Monitor, shop: Path) -> None:
    origin = {"Origin": monitor.url}
    paused = monitor.client.post(
        "/pipelines/shop/pause",
        data={"reason": "warehouse migration", "csrf": monitor.form_token()},
        headers=origin,
    )
    assert paused.status_code == 303
    with _reader(shop) as catalog:
        schedule = catalog.schedule("shop")
        assert schedule is not None
        assert schedule.paused
        assert schedule.reason == "warehouse migration"
    assert "warehouse migration" in monitor.client.get("/pipelines/shop").text
    blank = monitor.client.post(
        "/pipelines/shop/pause", data={"reason": "  ", "csrf": monitor.form_token()}
    )
    assert blank.status_code == 400
    resumed = monitor.client.post(
        "/pipelines/shop/resume", data={"csrf": monitor.form_token()}, headers=origin
    )
    assert resumed.status_code == 303
    with _reader(shop) as catalog:
        schedule = catalog.schedule("shop")
        assert schedule is not None
        assert not schedule.paused


def test_trigger_starts_a_run_whose_page_follows_it(monitor: Monitor, shop: Path) -> None:
    before = _last_run(shop, "shop")
    started = monitor.client.post("/pipelines/shop/trigger", data={"csrf": monitor.form_token()})
    assert started.status_code == 303
    run_id = started.headers["location"].rsplit("/", 1)[1]
    assert run_id != before
    deadline = time.monotonic() + 60
    while True:
        with _reader(shop) as catalog:
            if catalog.has_run(run_id) and catalog.run(run_id).ended_at:
                assert catalog.run(run_id).state.value == "SUCCESS"
                break
        assert time.monotonic() < deadline, "the triggered run did not finish"
        time.sleep(0.2)
    assert monitor.client.get(f"/runs/{run_id}").status_code == 200


def test_resolve_a_dead_letter_with_a_note(monitor: Monitor, shop: Path) -> None:
    with _reader(shop) as catalog:
        (letter,) = catalog.dead_letters("flaky")
    empty = monitor.client.post(
        f"/dead-letters/{letter.id}/resolve", data={"note": "", "csrf": monitor.form_token()}
    )
    assert empty.status_code == 400
    done = monitor.client.post(
        f"/dead-letters/{letter.id}/resolve",
        data={"note": "fixed the source by hand", "csrf": monitor.form_token()},
    )
    assert done.status_code == 303
    with _reader(shop) as catalog:
        settled = catalog.dead_letter(letter.id)
    assert settled.status == "resolved"
    assert settled.resolution_note == "fixed the source by hand"
    assert "fixed the source by hand" in monitor.client.get("/dead-letters?status=resolved").text


def test_the_monitor_refuses_to_bind_beyond_loopback_without_a_token() -> None:
    with pytest.raises(ValueError, match="not loopback: give it a token"):
        Guard("0.0.0.0", 8765, None)


def test_with_a_token_every_page_needs_it_and_the_token_becomes_a_cookie(shop: Path) -> None:
    with serve_monitor(shop, token="s3cret-token") as served:
        assert served.client.get("/").status_code == 401
        assert served.client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        bearer = served.client.get("/", headers={"Authorization": "Bearer s3cret-token"})
        assert bearer.status_code == 200
        login = served.client.get("/runs?token=s3cret-token&state=FAILED")
        assert login.status_code == 303
        assert login.headers["location"] == "/runs?state=FAILED"  # the token left the address
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "samesite=strict" in cookie.lower()
        assert served.client.get("/runs").status_code == 200  # the cookie now
        assert "s3cret-token" not in served.client.get("/").text


def test_an_action_reads_only_a_small_urlencoded_form(monitor: Monitor) -> None:
    token = monitor.form_token()
    as_json = monitor.client.post("/pipelines/shop/pause", json={"csrf": token, "reason": "x"})
    assert as_json.status_code == 415
    huge = monitor.client.post(
        "/pipelines/shop/pause", data={"csrf": token, "reason": "x" * 100_000}
    )
    assert huge.status_code == 413


def test_requeue_a_dead_letter_runs_its_task_again(monitor: Monitor, shop: Path) -> None:
    arrowline("run", "flaky.yaml", "--no-progress")  # fails again: a letter of its own
    with _reader(shop) as catalog:
        letter = catalog.dead_letters("flaky")[0]
    (shop / "ready.flag").write_text("ok")  # what the task waited for is there now
    try:
        requeued = monitor.client.post(
            f"/dead-letters/{letter.id}/requeue", data={"csrf": monitor.form_token()}
        )
        assert requeued.status_code == 303
        assert requeued.headers["location"] == f"/runs/{letter.run_id}"
        deadline = time.monotonic() + 60
        while True:
            with _reader(shop) as catalog:
                run = catalog.run(letter.run_id)
                if run.state.value == "SUCCESS":
                    break
            assert time.monotonic() < deadline, f"the requeued run is {run.state.value}"
            time.sleep(0.2)
    finally:
        (shop / "ready.flag").unlink()


SECRETIVE = """
pipeline: secretive
connections:
  wh: {kind: postgres, uri: "postgresql://admin:Hunter2Secret@db.internal/sales"}
tasks:
  - id: a
    sql: select 1 as x
"""


def test_no_password_of_a_pipeline_file_reaches_the_page_or_a_report(
    monitor: Monitor, shop: Path
) -> None:
    (shop / "secretive.yaml").write_text(SECRETIVE.lstrip())
    try:
        page = monitor.client.get("/pipelines/secretive")
        assert page.status_code == 200
        assert "db.internal" in page.text  # the definition is shown...
        assert "Hunter2Secret" not in page.text  # ...without its password
        done = arrowline("ui", "export", "secretive", "-o", str(shop / "report.html"))
        assert "wrote" in done
        assert "Hunter2Secret" not in (shop / "report.html").read_text()
    finally:
        (shop / "secretive.yaml").unlink()


def test_a_run_drawn_before_its_resume_is_drawn_again_after_it(
    monitor: Monitor, shop: Path
) -> None:
    arrowline("run", "flaky.yaml", "--no-progress")
    run_id = _last_run(shop, "flaky")
    before = monitor.client.get(f"/runs/{run_id}").text
    assert 'data-task="fussy" data-kind="udf" data-state="FAILED"' in before
    (shop / "ready.flag").write_text("ok")
    try:
        arrowline("run", "flaky.yaml", "--resume", run_id, "--no-progress")
    finally:
        (shop / "ready.flag").unlink()
    after = monitor.client.get(f"/runs/{run_id}").text
    assert 'data-task="fussy" data-kind="udf" data-state="SUCCESS"' in after
    assert "since its last resume" in after


def test_a_run_queued_with_the_scheduler_has_a_page_that_waits_for_it(
    monitor: Monitor, shop: Path
) -> None:
    from engine.api.project import Project

    with Project.find(shop) as project:
        request = project.request_run("shop", {}, "manual")
    page = monitor.client.get(f"/runs/{request.run_id}")
    assert page.status_code == 200
    assert "Queued with the scheduler" in page.text
    assert f'data-live="/runs/{request.run_id}/events"' in page.text


def test_the_drawing_as_defined_follows_the_sql_files_it_reads(
    monitor: Monitor, shop: Path
) -> None:
    (shop / "q.sql").write_text("select x from a")
    (shop / "filed.yaml").write_text(
        "pipeline: filed\ntasks:\n  - id: a\n    sql: select 1 as x\n"
        "  - id: b\n    sql: select 2 as x\n  - id: c\n    sql: {file: q.sql}\n"
    )
    try:
        first = monitor.client.get("/pipelines/filed").text
        assert first.count('class="task"') == 3
        assert first.count('marker-end="url(#arrow)"') == 1  # a -> c
        time.sleep(0.01)
        (shop / "q.sql").write_text("select x from a union all select x from b")
        second = monitor.client.get("/pipelines/filed").text
        assert second.count('marker-end="url(#arrow)"') == 2  # a -> c and b -> c
    finally:
        (shop / "filed.yaml").unlink()
        (shop / "q.sql").unlink()


def test_numbers_past_every_limit_are_bad_input_not_a_crash(monitor: Monitor) -> None:
    assert monitor.client.get("/runs?until=9999-12-31").status_code == 400
    huge = monitor.client.post(
        "/dead-letters/99999999999999999999999/resolve",
        data={"note": "x", "csrf": monitor.form_token()},
    )
    assert huge.status_code == 404


def test_a_background_fetch_from_another_site_is_refused_and_a_link_is_followed(
    monitor: Monitor,
) -> None:
    image = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
    assert monitor.client.get("/lineage", headers=image).status_code == 403
    link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    assert monitor.client.get("/", headers=link).status_code == 200


def _raw_get(url: str, target: str) -> bytes:
    """A request line sent as written (an HTTP client would resolve `//host/x` itself)."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_without_a_token_nothing_redirects_and_with_one_only_to_this_server(shop: Path) -> None:
    with serve_monitor(shop) as served:
        assert b" 303 " not in _raw_get(served.url, "//evil.example/x?token=t").split(b"\r\n")[0]
    with serve_monitor(shop, token="s3cret-token") as served:
        answer = _raw_get(served.url, "//evil.example/x?token=s3cret-token")
        head = answer.split(b"\r\n\r\n")[0].decode()
        assert " 303 " in head.splitlines()[0]
        assert "\r\nlocation: /evil.example/x" in head.lower()
        assert f"arrowline_token_{served.guard.port}=" in head


def test_a_client_that_never_finishes_its_request_is_hung_up_on(
    shop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from engine.ui import background

    monkeypatch.setattr(background, "REQUEST_TIMEOUT", 1.0)
    with serve_monitor(shop) as served:
        host, port = served.url.removeprefix("http://").split(":")
        stalled = socket.create_connection((host, int(port)))
        stalled.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line: never ends
        assert served.client.get("/runs").status_code == 200  # others are answered meanwhile
        stalled.settimeout(5)  # past it, recv raises: the server did not hang up
        try:
            assert stalled.recv(1024) == b""  # hung up on, with nothing sent
        finally:
            stalled.close()


def test_a_pipeline_paused_before_its_first_run_shows_it(monitor: Monitor, shop: Path) -> None:
    (shop / "nightly.yaml").write_text(
        'pipeline: nightly\nschedule: "0 2 * * *"\ntasks:\n  - id: a\n    sql: select 1 as x\n'
    )
    try:
        paused = monitor.client.post(
            "/pipelines/nightly/pause",
            data={"reason": "not before the migration", "csrf": monitor.form_token()},
        )
        assert paused.status_code == 303
        page = monitor.client.get("/pipelines/nightly").text
        assert "not before the migration" in page
        assert ">Resume</button>" in page
        overview = re.search(
            r'<tr data-pipeline="nightly">(.*?)</tr>', monitor.client.get("/").text, re.S
        )
        assert overview
        assert "paused" in overview[1]
    finally:
        (shop / "nightly.yaml").unlink()


def test_run_now_while_it_runs_says_so_and_links_to_the_run(monitor: Monitor, shop: Path) -> None:
    (shop / "sleepy.yaml").write_text(
        "pipeline: sleepy\ntasks:\n  - id: src\n    sql: select 1 as x\n"
        '  - id: nap\n    udf: {input: src, function: "udfs.py:slow", args: {seconds: 3}}\n'
    )
    try:
        first = monitor.client.post(
            "/pipelines/sleepy/trigger", data={"csrf": monitor.form_token()}
        )
        assert first.status_code == 303
        again = monitor.client.post(
            "/pipelines/sleepy/trigger", data={"csrf": monitor.form_token()}
        )
        assert again.status_code == 409
        assert "already running" in again.text
        assert f'<a href="{first.headers["location"]}">Follow the run in progress</a>' in again.text
        assert "--if-running" not in again.text  # a command-line hint means nothing here
    finally:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # let the run end before the file goes
            with _reader(shop) as catalog:
                last = catalog.last_run("sleepy")
                if last is not None and last.ended_at:
                    break
            time.sleep(0.2)
        (shop / "sleepy.yaml").unlink()


def test_a_dead_letter_shows_its_last_error_and_a_run_links_to_the_one_before(
    monitor: Monitor, shop: Path
) -> None:
    arrowline("run", "flaky.yaml", "--no-progress")
    letters = monitor.client.get("/dead-letters", params={"pipeline": "flaky"}).text
    assert "upstream &lt;b&gt;service&lt;/b&gt; is not ready" in letters
    with _reader(shop) as catalog:
        newest, older = catalog.runs("flaky", limit=2)
    page = monitor.client.get(f"/runs/{newest.run_id}").text
    assert f"/compare?a={older.run_id}&amp;b={newest.run_id}" in page

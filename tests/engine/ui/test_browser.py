"""The monitor in a real browser (headless Debian chromium driven by playwright): follow a
pipeline to a run and a task, start a run and watch its page follow it live, pause and resume a
schedule; no page may log a JavaScript error."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.ui.monitor import Monitor, serve_monitor

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
INSTALL = "apt-get install -y chromium chromium-driver"

SLOWPOKE = """
pipeline: slowpoke
tasks:
  - id: src
    sql: select range as id from range(10)
  - id: wait
    udf: {input: src, function: "udfs.py:slow", args: {seconds: 3}}
  - id: after
    sql: select count(*) as n from wait
"""


@pytest.fixture(scope="module")
def monitor(shop: Path) -> Iterator[Monitor]:
    (shop / "slowpoke.yaml").write_text(textwrap.dedent(SLOWPOKE).lstrip(), encoding="utf-8")
    with serve_monitor(shop) as served:
        yield served


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if shutil.which("chromium") is None and not Path(CHROMIUM).exists():
        pytest.fail(f"the browser tests need Debian's chromium: {INSTALL}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need playwright: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    opened = browser.new_page()  # type: ignore[attr-defined]
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    opened.on(
        "console",
        lambda message: (
            errors.append(f"console {message.type}: {message.text}")
            if message.type == "error"
            else None
        ),
    )
    yield opened
    opened.close()
    assert errors == [], errors


def test_follow_a_pipeline_to_its_run_and_a_task(monitor: Monitor, page: object) -> None:
    from playwright.sync_api import expect

    page.goto(monitor.url + "/")  # type: ignore[attr-defined]
    page.get_by_role("link", name="shop", exact=True).click()  # type: ignore[attr-defined]
    expect(page.locator("#dag svg.dag")).to_be_visible()  # type: ignore[attr-defined]
    expect(page.locator('#dag g.task[data-task="checked"]')).to_have_attribute(  # type: ignore[attr-defined]
        "data-state", "SUCCESS"
    )
    page.locator('#dag g.task[data-task="checked"]').click()  # type: ignore[attr-defined]
    expect(page.locator("h1")).to_contain_text("checked")  # type: ignore[attr-defined]
    expect(page.locator("#quarantine")).to_contain_text("greater_than(0)")  # type: ignore[attr-defined]
    page.locator("h1 a").click()  # type: ignore[attr-defined]  # to the run
    expect(page.locator("#gantt svg.gantt")).to_be_visible()  # type: ignore[attr-defined]
    expect(page.locator("#tasks")).to_contain_text("slow")  # type: ignore[attr-defined]


def test_a_running_runs_page_updates_itself_without_a_reload(
    monitor: Monitor, page: object
) -> None:
    from playwright.sync_api import expect

    page.goto(monitor.url + "/pipelines/slowpoke")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Run now").click()  # type: ignore[attr-defined]
    page.wait_for_url("**/runs/*")  # type: ignore[attr-defined]
    expect(page.locator("#live-status")).to_have_text("live")  # type: ignore[attr-defined]
    page.evaluate("window.__same_document = true")  # type: ignore[attr-defined]
    expect(page.locator('#dag g.task[data-task="wait"]')).to_have_attribute(  # type: ignore[attr-defined]
        "data-state", "RUNNING", timeout=15_000
    )
    expect(page.locator("#run-state")).to_have_text("SUCCESS", timeout=60_000)  # type: ignore[attr-defined]
    expect(page.locator('#dag g.task[data-task="after"]')).to_have_attribute(  # type: ignore[attr-defined]
        "data-state", "SUCCESS"
    )
    assert page.evaluate("window.__same_document") is True  # type: ignore[attr-defined]


def test_pause_and_resume_a_schedule_in_the_browser(monitor: Monitor, page: object) -> None:
    from playwright.sync_api import expect

    page.goto(monitor.url + "/pipelines/shop")  # type: ignore[attr-defined]
    page.get_by_label("reason").fill("upstream outage")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Pause").click()  # type: ignore[attr-defined]
    expect(page.locator(".actions")).to_contain_text("upstream outage")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Resume").click()  # type: ignore[attr-defined]
    expect(page.get_by_role("button", name="Pause")).to_be_visible()  # type: ignore[attr-defined]
    page.goto(monitor.url + "/")  # type: ignore[attr-defined]
    expect(page.locator('tr[data-pipeline="shop"]')).not_to_contain_text("paused")  # type: ignore[attr-defined]

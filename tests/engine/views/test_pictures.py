"""SVG, Mermaid and dot of the task graph, and the Gantt timeline from transitions: hostile task
ids are escaped everywhere, states colour the boxes, retries and waits show as their own bars."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from engine.views import Step, TaskBox, dag_dot, dag_mermaid, dag_svg, gantt_svg, timeline

HOSTILE = 'x"><script>alert(1)</script>'
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _boxes() -> list[TaskBox]:
    return [
        TaskBox(HOSTILE, "extract", state="SUCCESS", note="<i>10 rows</i>", href="/t?a=1&b=2"),
        TaskBox("b", "sql", (HOSTILE,), state="FAILED"),
    ]


def test_the_svg_is_well_formed_and_escapes_every_value() -> None:
    svg = dag_svg(_boxes())
    ET.fromstring(svg)  # parses as XML: nothing broke out of an attribute or element
    assert "<script>" not in svg
    assert "<i>" not in svg
    assert 'href="/t?a=1&amp;b=2"' in svg
    assert re.search(r'data-task="b" data-kind="sql" data-state="FAILED"', svg)


def test_mermaid_and_dot_quote_hostile_ids() -> None:
    mermaid = dag_mermaid(_boxes())
    assert "t0 --> t1" in mermaid
    assert '"x#quot;><script>' in mermaid  # inside a quoted label, its quote escaped
    assert "classDef failed" in mermaid
    dot = dag_dot(_boxes())
    assert '"x\\"><script>alert(1)</script>" -> "b";' in dot


def test_a_retried_task_shows_each_attempt_and_the_waits_between() -> None:
    at = [T0 + timedelta(seconds=s) for s in range(8)]
    steps = [  # as the executor records a retry: RETRYING, then QUEUED again, then RUNNING
        Step("a", "QUEUED", at[0]),
        Step("a", "RUNNING", at[1], attempt=1),
        Step("a", "RETRYING", at[3], attempt=1, error="timeout"),
        Step("a", "QUEUED", at[5]),
        Step("a", "RUNNING", at[6], attempt=2),
        Step("a", "SUCCESS", at[7], attempt=2),
    ]
    bars = timeline(steps)
    assert [(b.segment, b.start, b.end, b.state, b.attempt) for b in bars] == [
        ("queued", 0.0, 1.0, "RUNNING", 1),
        ("attempt", 1.0, 3.0, "RETRYING", 1),
        ("backoff", 3.0, 5.0, "QUEUED", None),
        ("queued", 5.0, 6.0, "RUNNING", 2),
        ("attempt", 6.0, 7.0, "SUCCESS", 2),
    ]
    assert bars[1].error == "timeout"
    svg = gantt_svg(bars, href={"a": "/runs/r/tasks/a"})
    ET.fromstring(svg)
    assert svg.count('class="bar attempt"') == 2


def test_a_running_attempt_ends_now() -> None:
    steps = [Step("a", "RUNNING", T0, attempt=1)]
    (bar,) = timeline(steps, now=T0 + timedelta(seconds=4))
    assert (bar.segment, bar.end, bar.state) == ("attempt", 4.0, "RUNNING")


def test_an_edge_from_a_filtering_box_is_dashed() -> None:
    svg = dag_svg(
        [
            TaskBox("orders.amount", "column"),
            TaskBox("orders.status", "column"),
            TaskBox(
                "revenue.total",
                "column",
                ("orders.amount", "orders.status"),
                filtered_by=("orders.status",),
            ),
        ],
        legend=False,
    )
    assert svg.count('stroke-dasharray="5 4"') == 1
    assert svg.count("<path d=") == 2 + 1  # two edges and the arrow marker

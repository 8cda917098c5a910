"""A run's timeline: each task's attempts, its waits for a slot and between retries, as bars
on one time axis; and its Gantt chart as SVG.

    bars = timeline(transitions, now=datetime.now(UTC))
    svg = gantt_svg(bars)

The bars come from the catalog's transitions alone (QUEUED -> RUNNING is a wait for a slot,
RUNNING -> anything is an attempt, RETRYING -> QUEUED is the backoff before a retry is queued
again), so the picture shows exactly what the state machine recorded, retries included.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Literal

from engine.views.svg import STATE_COLOURS, short

__all__ = ["Bar", "Step", "gantt_svg", "timeline"]

Segment = Literal["queued", "attempt", "backoff"]

LABEL_WIDTH = 190
CHART_WIDTH = 820
ROW_HEIGHT = 22
AXIS_HEIGHT = 26
MARGIN = 10


@dataclass(frozen=True)
class Step:
    """One transition of one task, as the catalog holds it."""

    task_id: str
    to_state: str
    at: datetime
    attempt: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Bar:
    task_id: str
    segment: Segment
    start: float
    """Seconds from the run's first transition."""
    end: float
    state: str
    """How the segment ended (an attempt's outcome; RUNNING while it still runs)."""
    attempt: int | None = None
    error: str | None = None

    @property
    def seconds(self) -> float:
        return self.end - self.start


def timeline(steps: Iterable[Step], *, now: datetime | None = None) -> list[Bar]:
    """The bars of a run's transitions (in the order they happened); a segment still open ends
    at `now` (or at the last transition when `now` is not given)."""
    ordered = sorted(steps, key=lambda step: step.at)
    if not ordered:
        return []
    origin = ordered[0].at
    end_of_all = now or ordered[-1].at
    bars: list[Bar] = []
    open_since: dict[str, Step] = {}
    for step in ordered:
        before = open_since.pop(step.task_id, None)
        if before is not None:
            bar = _segment(before, step, origin)
            if bar is not None:
                bars.append(bar)
        if step.to_state in ("QUEUED", "RUNNING", "RETRYING"):
            open_since[step.task_id] = step
    for step in open_since.values():
        still = Step(step.task_id, step.to_state, max(end_of_all, step.at), step.attempt)
        bar = _segment(step, still, origin)
        if bar is not None:
            bars.append(bar)
    return bars


def _segment(begin: Step, end: Step, origin: datetime) -> Bar | None:
    kinds: dict[str, Segment] = {"QUEUED": "queued", "RUNNING": "attempt", "RETRYING": "backoff"}
    segment = kinds.get(begin.to_state)
    if segment is None:
        return None
    start = (begin.at - origin).total_seconds()
    stop = (end.at - origin).total_seconds()
    attempt = begin.attempt if segment == "attempt" else end.attempt
    return Bar(begin.task_id, segment, start, stop, end.to_state, attempt, end.error)


def gantt_svg(bars: Sequence[Bar], *, href: dict[str, str] | None = None) -> str:
    """The Gantt chart: a row per task in the order tasks first appear, attempts as solid bars
    coloured by outcome, waits as light bars, a time axis on top."""
    rows: dict[str, int] = {}
    for bar in sorted(bars, key=lambda b: b.start):
        rows.setdefault(bar.task_id, len(rows))
    span = max((bar.end for bar in bars), default=0.0) or 1.0
    scale = CHART_WIDTH / span
    width = LABEL_WIDTH + CHART_WIDTH + 2 * MARGIN
    height = AXIS_HEIGHT + len(rows) * ROW_HEIGHT + 2 * MARGIN
    left = MARGIN + LABEL_WIDTH
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="gantt" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-family="system-ui, sans-serif" '
        f'font-size="12" role="img" aria-label="timeline of {len(rows)} tasks">',
        _axis(span, scale, left, height),
    ]
    for task_id, row in rows.items():
        y = MARGIN + AXIS_HEIGHT + row * ROW_HEIGHT
        label = escape(short(task_id, 26))
        if href and task_id in href:
            label = f'<a href="{escape(href[task_id])}">{label}</a>'
        parts.append(
            f'<text x="{MARGIN}" y="{y + 15}" fill="#1f2733" data-row="{escape(task_id)}">'
            f"{label}</text>"
        )
    for bar in bars:
        parts.append(_bar(bar, rows[bar.task_id], scale, left))
    parts.append("</svg>")
    return "".join(parts)


def _axis(span: float, scale: float, left: float, height: int) -> str:
    step = _tick(span)
    ticks = []
    t = 0.0
    while t <= span + 1e-9:
        x = left + t * scale
        ticks.append(
            f'<line x1="{x:.1f}" y1="{MARGIN + 16}" x2="{x:.1f}" y2="{height - MARGIN}" '
            f'stroke="#e3e6eb"/><text x="{x:.1f}" y="{MARGIN + 10}" fill="#5b6472" '
            f'text-anchor="middle" font-size="10.5">{_seconds(t)}</text>'
        )
        t += step
    return f'<g class="axis">{"".join(ticks)}</g>'


def _tick(span: float) -> float:
    """A round tick step giving 5 to 12 ticks."""
    for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900):
        if span / step <= 12:
            return float(step)
    hours = 1800.0
    while span / hours > 12:
        hours *= 2
    return hours


def _seconds(value: float) -> str:
    if value >= 3600:
        return f"{value / 3600:.1f}h"
    if value >= 60:
        return f"{int(value // 60)}m{int(value % 60):02d}s"
    return f"{value:g}s" if value >= 1 or value == 0 else f"{value * 1000:.0f}ms"


def _bar(bar: Bar, row: int, scale: float, left: float) -> str:
    y = MARGIN + AXIS_HEIGHT + row * ROW_HEIGHT + 4
    x = left + bar.start * scale
    w = max(bar.seconds * scale, 1.5)
    if bar.segment == "attempt":
        fill = STATE_COLOURS.get(bar.state, ("#d6e6fb", ""))[0]
        stroke = STATE_COLOURS.get(bar.state, ("", "#0b3d91"))[1]
        h, dy = ROW_HEIGHT - 8, 0
    else:
        fill, stroke, h, dy = "#eef0f3", "#b6bcc6", 6, 5
    what = f"attempt {bar.attempt}" if bar.segment == "attempt" else bar.segment
    tip = f"{bar.task_id} · {what} · {bar.seconds:.3f}s → {bar.state}"
    if bar.error and bar.segment == "attempt":
        tip += f": {bar.error}"
    return (
        f'<rect class="bar {bar.segment}" data-task="{escape(bar.task_id)}" '
        f'data-state="{escape(bar.state)}" x="{x:.1f}" y="{y + dy}" width="{w:.1f}" height="{h}" '
        f'rx="2" fill="{fill}" stroke="{stroke}"><title>{escape(tip)}</title></rect>'
    )

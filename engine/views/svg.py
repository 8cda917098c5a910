"""The task DAG as SVG, from a layout (engine.views.layout): one box per task, coloured by its
state, marked by its kind, linked to its page; edges as curves through their waypoints.

    svg = dag_svg([TaskBox("orders", "extract", state="SUCCESS", note="1.0M rows · 0.6 s")],
                  {"orders": []})

The SVG is text built here, every value escaped; it needs no script and no stylesheet (colours
are attributes), so the same drawing serves the web monitor, `arrowline graph --format svg`, an
exported report and a notebook.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

from engine.views.layout import Layout, layout

__all__ = ["KIND_COLOURS", "STATE_COLOURS", "TaskBox", "dag_svg", "short", "sparkline_svg"]

BOX_WIDTH = 180
BOX_HEIGHT = 38
LAYER_GAP = 225
"""Horizontal distance between layers' left edges, in pixels."""
ROW_GAP = 50
"""Vertical distance of one row slot."""
MARGIN = 16
LABEL_CHARS = 22
FIT_WIDTH = 2400
"""Drawings up to this wide (about ten layers) are scaled to fit their container."""

STATE_COLOURS: Mapping[str, tuple[str, str]] = {
    # state: (fill, text)
    "SUCCESS": ("#d9f2df", "#0b5d1e"),
    "FAILED": ("#fbd9d7", "#8a1c12"),
    "RUNNING": ("#d6e6fb", "#0b3d91"),
    "RETRYING": ("#fde9c8", "#7a4b00"),
    "QUEUED": ("#eef0f3", "#3b4350"),
    "PENDING": ("#f6f7f9", "#5b6472"),
    "SKIPPED": ("#f1f1f1", "#6b6b6b"),
    "CANCELLED": ("#e4e4e4", "#4b4b4b"),
    "REUSED": ("#e3f1f9", "#0d4f6e"),
}
NO_STATE = ("#ffffff", "#1f2733")

KIND_COLOURS: Mapping[str, str] = {
    "extract": "#2f6fdf",
    "sql": "#8a4fd1",
    "udf": "#d1612f",
    "validate": "#1f9d6b",
    "load": "#b8860b",
}


@dataclass(frozen=True)
class TaskBox:
    """What a task's box shows: its id and kind, and, when a run is drawn, its state and a note
    (rows, time); `href` makes the box a link, `title` its tooltip."""

    id: str
    kind: str
    upstream: tuple[str, ...] = ()
    state: str | None = None
    note: str | None = None
    href: str | None = None
    title: str | None = None
    filtered_by: tuple[str, ...] = ()
    """Upstream boxes whose edge into this one is drawn dashed (lineage: they filter its rows
    rather than feed its values)."""


def short(text: str, limit: int = LABEL_CHARS) -> str:
    """`text`, cut to `limit` characters with an ellipsis (the full text is in the tooltip)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dag_svg(tasks: Sequence[TaskBox], *, drawn: Layout | None = None, legend: bool = True) -> str:
    """The SVG document of the tasks' DAG (edges from each box's `upstream`)."""
    if drawn is None:
        drawn = layout({task.id: task.upstream for task in tasks})
    width = max(drawn.layers - 1, 0) * LAYER_GAP + BOX_WIDTH + 2 * MARGIN
    legend_height = 28 if legend else 0
    height = int(max(drawn.rows, 1.0) * ROW_GAP) + 2 * MARGIN + legend_height
    # a graph a few screens wide shrinks to the width it is shown in; a bigger one keeps its
    # size (its labels would be unreadable) and scrolls
    fit = ' style="max-width:100%;height:auto"' if width <= FIT_WIDTH else ""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="system-ui, sans-serif" font-size="12" '
        f'role="img" aria-label="task graph of {len(tasks)} tasks"{fit}>',
        '<defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L8,4 L0,8 z" '
        'fill="#8a93a3"/></marker></defs>',
    ]
    if legend:
        states = [state for state in STATE_COLOURS if any(t.state == state for t in tasks)]
        parts.append(_legend(legend_height, states))
    top = MARGIN + legend_height
    parts.append('<g class="edges" fill="none" stroke="#8a93a3" stroke-width="1.2">')
    dashed = {(source, task.id) for task in tasks for source in task.filtered_by}
    parts.extend(
        _edge(edge.points, top, (edge.source, edge.target) in dashed) for edge in drawn.edges
    )
    parts.append("</g>")
    parts.append('<g class="tasks">')
    parts.extend(_box(task, drawn.position[task.id], top) for task in tasks)
    parts.append("</g></svg>")
    return "".join(parts)


def _x(layer: float) -> float:
    return MARGIN + layer * LAYER_GAP


def _y(row: float, top: float) -> float:
    return top + row * ROW_GAP + ROW_GAP / 2


def _edge(points: Iterable[tuple[float, float]], top: float, dashed: bool = False) -> str:
    """A curve leaving the right side of the source box and entering the left of the target,
    bending at each waypoint."""
    centres = [(_x(layer), _y(row, top)) for layer, row in points]
    (x0, y0), rest = centres[0], centres[1:]
    path = [f"M{x0 + BOX_WIDTH:.1f},{y0:.1f}"]
    px, py = x0 + BOX_WIDTH, y0
    for i, (x, y) in enumerate(rest):
        last = i == len(rest) - 1
        tx = x if last else x + BOX_WIDTH / 2  # waypoints sit at the middle of their layer
        mid = (px + tx) / 2
        path.append(f"C{mid:.1f},{py:.1f} {mid:.1f},{y:.1f} {tx:.1f},{y:.1f}")
        px, py = tx, y
    style = ' stroke-dasharray="5 4" class="filter"' if dashed else ""
    return f'<path d="{" ".join(path)}" marker-end="url(#arrow)"{style}/>'


def _box(task: TaskBox, at: tuple[float, float], top: float) -> str:
    x, y = _x(at[0]), _y(at[1], top) - BOX_HEIGHT / 2
    fill, ink = STATE_COLOURS.get(task.state, NO_STATE) if task.state else NO_STATE
    kind_colour = KIND_COLOURS.get(task.kind, "#5b6472")
    title = task.title or " · ".join(
        part for part in (task.id, task.kind, task.state, task.note) if part
    )
    below = task.note or task.kind
    state = f' data-state="{escape(task.state)}"' if task.state else ""
    body = (
        f'<g class="task" data-task="{escape(task.id)}" data-kind="{escape(task.kind)}"{state}>'
        f"<title>{escape(title)}</title>"
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{BOX_WIDTH}" height="{BOX_HEIGHT}" rx="5" '
        f'fill="{fill}" stroke="{kind_colour}" stroke-width="1.5"/>'
        f'<rect x="{x:.1f}" y="{y:.1f}" width="6" height="{BOX_HEIGHT}" rx="2" '
        f'fill="{kind_colour}"/>'
        f'<text x="{x + 13:.1f}" y="{y + 16:.1f}" fill="{ink}" font-weight="600">'
        f"{escape(short(task.id))}</text>"
        f'<text x="{x + 13:.1f}" y="{y + 30:.1f}" fill="{ink}" font-size="10.5" opacity="0.85">'
        f"{escape(short(below, 28))}</text></g>"
    )
    if task.href:
        return f'<a href="{escape(task.href)}">{body}</a>'
    return body


def _legend(height: int, states: Sequence[str] = ()) -> str:
    """Kinds (the colour of a box's band and border), then the states drawn (its fill)."""
    items = []
    x = MARGIN
    for kind, colour in KIND_COLOURS.items():
        items.append(
            f'<rect x="{x}" y="{MARGIN - 4}" width="10" height="10" rx="2" fill="{colour}"/>'
            f'<text x="{x + 14}" y="{MARGIN + 5}" fill="#3b4350">{kind}</text>'
        )
        x += 24 + 7 * len(kind)
    x += 16
    for state in states:
        fill, ink = STATE_COLOURS[state]
        label = state.lower()
        items.append(
            f'<rect x="{x}" y="{MARGIN - 5}" width="12" height="12" rx="2" fill="{fill}" '
            f'stroke="{ink}" stroke-width="0.8"/>'
            f'<text x="{x + 16}" y="{MARGIN + 5}" fill="#3b4350">{label}</text>'
        )
        x += 26 + 7 * len(label)
    return f'<g class="legend" aria-hidden="true" data-height="{height}">{"".join(items)}</g>'


def sparkline_svg(points: Sequence[tuple[float | None, str]], width: int = 120) -> str:
    """Durations of recent runs, oldest first, as bars coloured by state (a run with no
    duration yet is a stub): the overview's trend column."""
    if not points:
        return ""
    height = 22
    longest = max((seconds or 0.0 for seconds, _ in points), default=0.0) or 1.0
    step = min(width / max(len(points), 1), 12.0)
    bars = []
    for i, (seconds, state) in enumerate(points):
        h = max((seconds or 0.0) / longest * (height - 2), 2.0)
        colour = STATE_COLOURS.get(state, NO_STATE)[1]
        tip = f"{state} · {seconds:.2f} s" if seconds is not None else state
        bars.append(
            f'<rect x="{i * step:.1f}" y="{height - h:.1f}" width="{max(step - 1.5, 1):.1f}" '
            f'height="{h:.1f}" fill="{colour}" opacity="0.8"><title>{escape(tip)}</title></rect>'
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="spark" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="durations of the last {len(points)} runs">{"".join(bars)}</svg>'
    )

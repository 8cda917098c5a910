"""HTML fragments for notebooks: tables, headings, badges and trees, written from values.

Jupyter shows an object's `_repr_html_()`; the objects of every layer that a notebook meets
(a plan, a run's result, a project, a lineage answer) build theirs from these fragments and
from engine.views' pictures. Every value is escaped here unless it is already `Html`; nothing
uses a script or a stylesheet (styles are inline), so the output stays readable in a saved
notebook, on GitHub and in an exported HTML file.

    table(["task", "rows"], [("orders", "1,024"), ("<b>", None)])
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from html import escape

__all__ = ["Html", "badge", "block", "figure", "heading", "number", "seconds", "table", "tree"]

_CELL = "padding:2px 8px;text-align:{align};vertical-align:top"
_MUTED = "color:#5b6472"


class Html(str):
    """Text that is HTML already: put in a fragment as it is, never escaped again."""

    __slots__ = ()


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, Html):
        return value
    return escape(str(value))


def number(value: int | None) -> str:
    """A count with thousands separators; nothing for None."""
    return "" if value is None else f"{value:,}"


def seconds(value: float | None) -> str:
    """A duration as people read it: 0.42 s, 12 s, 3 min 05 s."""
    if value is None:
        return ""
    if value < 10:
        return f"{value:.2f} s"
    if value < 60:
        return f"{value:.0f} s"
    minutes, rest = divmod(round(value), 60)
    return f"{minutes} min {rest:02d} s"


def badge(text: str, fill: str, ink: str) -> Html:
    """A state as a small coloured label."""
    style = f"background:{fill};color:{ink};padding:0 6px;border-radius:3px;font-size:90%"
    return Html(f'<span style="{style}">{escape(text)}</span>')


def heading(title: str, *facts: object) -> Html:
    """A line: the title in bold, then the facts that are not empty, separated by dots."""
    shown = " · ".join(_text(fact) for fact in facts if fact not in (None, ""))
    return Html(f"<p><strong>{_text(title)}</strong>{' · ' + shown if shown else ''}</p>")


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    right: Collection[str] = (),
    empty: str = "nothing to show",
) -> Html:
    """A table with a header row; the columns named in `right` (numbers, times) are aligned
    right. With no rows: the `empty` sentence instead."""
    body = [
        "<tr>"
        + "".join(
            f'<td style="{_CELL.format(align="right" if name in right else "left")}">'
            f"{_text(value)}</td>"
            for name, value in zip(columns, row, strict=True)
        )
        + "</tr>"
        for row in rows
    ]
    if not body:
        return Html(f'<p style="{_MUTED}">{escape(empty)}</p>')
    head = "".join(
        f'<th style="{_CELL.format(align="right" if name in right else "left")}">'
        f"{escape(name)}</th>"
        for name in columns
    )
    return Html(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def figure(svg: str, caption: str | None = None) -> Html:
    """A picture (an SVG document built by engine.views), scrolling sideways when wide."""
    note = f'<div style="{_MUTED};font-size:90%">{escape(caption)}</div>' if caption else ""
    return Html(f'<div style="overflow-x:auto;margin:4px 0">{svg}{note}</div>')


def tree(nodes: Mapping[str, object], *, empty: str = "nothing") -> Html:
    """Nested mappings ({label: {child: {...}}}) as nested lists."""
    if not nodes:
        return Html(f'<p style="{_MUTED}">{escape(empty)}</p>')
    items = []
    for label, children in nodes.items():
        below = tree(children, empty="") if isinstance(children, Mapping) and children else ""
        items.append(f"<li><code>{escape(label)}</code>{below}</li>")
    return Html(f'<ul style="margin:0;padding-left:18px">{"".join(items)}</ul>')


def block(*parts: str) -> Html:
    """The fragments of one object's picture, together."""
    return Html(f'<div class="arrowline">{"".join(parts)}</div>')

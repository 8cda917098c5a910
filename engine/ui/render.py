"""The monitor's HTML: Jinja2 templates shipped in the package (engine/ui/templates), with
autoescaping on and the stylesheet inlined, so a page saved or exported is whole and offline.

Pictures (SVG) are built by engine.views with every value escaped and reach templates as
`Markup`; anything else a template shows is text and is escaped by Jinja.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from importlib.resources import files
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from engine.core.sizes import format_bytes

__all__ = ["STATIC", "compile_templates", "render"]

STATIC = files("engine.ui") / "static"


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.2f} s"
    minutes, seconds = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _when(text: str | None) -> str:
    """A stored UTC time as `2024-11-02 03:00:12 UTC`."""
    if not text:
        return ""
    return datetime.fromisoformat(text).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(text: str | None) -> str:
    if not text:
        return "never"
    delta = (datetime.now(UTC) - datetime.fromisoformat(text)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{delta / size:.0f}{unit} ago"
    return f"{max(delta, 0):.0f}s ago"


def _count(value: float | None) -> str:
    if value is None:
        return ""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.2f}"


def _size(value: float | None) -> str:
    return "" if value is None else format_bytes(value)


@cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("engine.ui", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(seconds=_seconds, when=_when, ago=_ago, count=_count, size=_size)
    env.globals["css"] = Markup((STATIC / "app.css").read_text(encoding="utf-8"))
    return env


def render(template: str, **context: Any) -> str:
    return _environment().get_template(template).render(**context)


def compile_templates() -> None:
    """Compile every template now (a server's start), not on the first view of each page."""
    env = _environment()
    for name in env.list_templates(extensions=["html"]):
        env.get_template(name)

"""Pictures built from plain values: a DAG's layered layout (layout), the task graph as SVG
(svg) or as Mermaid and dot text (text), a run's timeline and Gantt chart (timeline). Pure:
nothing here reads the catalog or the workspace, so tests and notebooks draw without a project."""

from engine.views.layout import Layout, layout
from engine.views.svg import TaskBox, dag_svg, sparkline_svg
from engine.views.text import dag_dot, dag_mermaid
from engine.views.timeline import Bar, Step, gantt_svg, timeline

__all__ = [
    "Bar",
    "Layout",
    "Step",
    "TaskBox",
    "dag_dot",
    "dag_mermaid",
    "dag_svg",
    "gantt_svg",
    "layout",
    "sparkline_svg",
    "timeline",
]

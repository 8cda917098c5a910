"""The task DAG as Mermaid or Graphviz dot text, for documents and tools that draw their own.

Task ids are arbitrary text (a file-named task may hold quotes or brackets), so Mermaid gets
node names of its own (`t0`, `t1`, ...) with the id as the quoted label, and dot gets every id
as an escaped quoted string.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.views.svg import KIND_COLOURS, STATE_COLOURS, TaskBox

__all__ = ["dag_dot", "dag_mermaid"]


def _mermaid_label(text: str) -> str:
    # Mermaid reads entity codes inside quoted labels; a quote or a backtick would end it.
    return text.replace("&", "#amp;").replace('"', "#quot;").replace("`", "#96;")


def dag_mermaid(tasks: Sequence[TaskBox]) -> str:
    names = {task.id: f"t{i}" for i, task in enumerate(tasks)}
    lines = ["flowchart LR"]
    for task in tasks:
        below = " · ".join(part for part in (task.kind, task.state) if part)
        lines.append(f'  {names[task.id]}["{_mermaid_label(task.id)}<br/>{below}"]')
    for task in tasks:
        for source in task.upstream:
            if source in names:
                lines.append(f"  {names[source]} --> {names[task.id]}")
    for state, (fill, ink) in STATE_COLOURS.items():
        members = [names[t.id] for t in tasks if t.state == state]
        if members:
            lines.append(f"  classDef {state.lower()} fill:{fill},color:{ink}")
            lines.append(f"  class {','.join(members)} {state.lower()}")
    return "\n".join(lines) + "\n"


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def dag_dot(tasks: Sequence[TaskBox]) -> str:
    lines = [
        "digraph pipeline {",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="sans-serif", fillcolor="#ffffff"];',
    ]
    known = {task.id for task in tasks}
    for task in tasks:
        below = " · ".join(part for part in (task.kind, task.state) if part)
        fill = STATE_COLOURS.get(task.state or "", ("#ffffff", ""))[0]
        colour = KIND_COLOURS.get(task.kind, "#5b6472")
        label = _dot_string(f"{task.id}\n{below}")
        lines.append(
            f'  {_dot_string(task.id)} [label={label}, color="{colour}", fillcolor="{fill}"];'
        )
    for task in tasks:
        for source in task.upstream:
            if source in known:
                lines.append(f"  {_dot_string(source)} -> {_dot_string(task.id)};")
    lines.append("}")
    return "\n".join(lines) + "\n"

"""What a person at a terminal sees: live progress while a run runs, and a summary after it.

The live view shows the running tasks with rows, rows per second and time so far, and counts of
tasks by state; it stays small for a thousand-task pipeline. The summary lists every task with
its state, attempts, rows, duration and share of the wall time, then the critical path (the
chain of tasks that decided how long the run took) and the errors. After `run --repeat`, the
repetitions summed up: each task's median time and spread, and the runs' wall time, CPU time
and peak memory.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from engine.core.durations import format_duration
from engine.core.states import RunState, TaskState
from engine.execution.executor import Executor, RunEvent, RunResult
from engine.planning.build import Plan

if TYPE_CHECKING:
    from engine.api.compare import RepeatSummary, Spread

__all__ = ["LiveProgress", "critical_path", "repeat_summary", "summary"]

STYLES = {
    "PENDING": "dim",
    "QUEUED": "cyan",
    "RUNNING": "bold blue",
    "RETRYING": "yellow",
    "SUCCESS": "green",
    "FAILED": "bold red",
    "SKIPPED": "magenta",
    "CANCELLED": "red",
    "INTERRUPTED": "red",
    "REUSED": "green dim",
}


@dataclass
class _TaskView:
    state: str = "PENDING"
    attempt: int = 0
    started: float | None = None
    ended: float | None = None


@dataclass
class LiveProgress:
    """A run listener that renders a live table on a terminal."""

    plan: Plan
    console: Console
    executor: Executor | None = None
    views: dict[str, _TaskView] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _live: Live | None = None

    def __post_init__(self) -> None:
        for task in self.plan.tasks:
            self.views[task.id] = _TaskView("REUSED" if task.action == "reuse" else "PENDING")

    def __call__(self, event: RunEvent) -> None:
        if event.task_id is None:
            return
        with self._lock:
            view = self.views[event.task_id]
            view.state = event.state
            view.attempt = event.attempt or view.attempt
            if event.state == "RUNNING":
                view.started, view.ended = time.monotonic(), None
            elif TaskState(event.state).terminal or event.state == "RETRYING":
                view.ended = time.monotonic()

    def render(self) -> RenderableType:
        now = time.monotonic()
        rows = self.executor.progress() if self.executor else {}
        with self._lock:
            counts = Counter(view.state for view in self.views.values())
            running = [(task_id, v) for task_id, v in self.views.items() if v.state == "RUNNING"]
        header = Text(f"{self.plan.pipeline}  run {self.plan.run_id}   ")
        for state in (
            "RUNNING",
            "QUEUED",
            "PENDING",
            "RETRYING",
            "SUCCESS",
            "REUSED",
            "FAILED",
            "SKIPPED",
        ):
            if counts.get(state):
                header.append(f"{state.lower()} {counts[state]}  ", style=STYLES[state])
        table = Table(box=None, pad_edge=False, show_header=bool(running))
        table.add_column("task")
        table.add_column("attempt", justify="right")
        table.add_column("rows", justify="right")
        table.add_column("rows/s", justify="right")
        table.add_column("time", justify="right")
        for task_id, view in running[:15]:
            elapsed = now - (view.started or now)
            count = rows.get(task_id, 0)
            rate = count / elapsed if elapsed > 0.2 and count else 0
            table.add_row(
                Text(task_id, style=STYLES["RUNNING"]),
                str(view.attempt),
                f"{count:,}" if count else "",
                f"{rate:,.0f}" if rate else "",
                format_duration(elapsed),
            )
        if len(running) > 15:
            table.add_row(Text(f"... and {len(running) - 15} more", style="dim"), "", "", "", "")
        return Group(header, table)

    def __enter__(self) -> LiveProgress:
        self._live = Live(
            get_renderable=self.render, console=self.console, refresh_per_second=4, transient=True
        )
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)


def critical_path(plan: Plan, result: RunResult) -> tuple[list[str], float]:
    """The chain of tasks with the largest summed duration: what bounded the wall time."""
    best: dict[str, tuple[float, list[str]]] = {}
    for task in plan.tasks:
        own = result.tasks[task.id].duration_s if task.id in result.tasks else 0.0
        parents = [best[dep] for dep in task.upstream if dep in best]
        length, path = max(parents, key=lambda item: item[0]) if parents else (0.0, [])
        best[task.id] = (length + own, [*path, task.id])
    if not best:
        return [], 0.0
    length, path = max(best.values(), key=lambda item: item[0])
    return path, length


def repeat_summary(report: RepeatSummary, console: Console) -> None:
    """Print what the repetitions of a run measured: per task the median time, the fastest and
    slowest repetition, the spread and rows out; per run the wall time, CPU time and peak
    memory; the run ids, and the repetitions that failed."""
    from engine.core.sizes import format_bytes

    count = len(report.runs)
    pipeline = report.runs[0].pipeline if report.runs else ""
    table = Table(title=f"{pipeline} · {count} repetitions", title_justify="left")
    table.add_column("task")
    table.add_column("kind")
    for name in ("ran", "median", "min", "max", "spread", "rows out"):
        table.add_column(name, justify="right")
    for task in report.tasks:
        ran = Text(f"{task.ran}/{count}", style="" if task.ran == count else "yellow")
        rows = sorted({r for r in task.rows_out if r is not None})
        shown = Text(f"{rows[0]:,}" if len(rows) == 1 else "")
        if len(rows) > 1:
            shown = Text(f"{rows[0]:,}–{rows[-1]:,}", style="yellow")  # not the same each time
        table.add_row(task.task_id, task.kind, ran, *_spread_cells(task.duration_s), shown)
    measures = (
        ("wall time", report.wall_s, format_duration),
        ("CPU time", report.cpu_s, format_duration),
        ("peak memory", report.peak_rss_bytes, format_bytes),
    )
    for name, spread, show in measures:
        if spread is not None:
            table.add_row(
                Text(f"(run) {name}", style="bold"), "", "", *_spread_cells(spread, show), ""
            )
    console.print(table)
    console.print(Text("spread: (max - min) / median", style="dim"))
    console.print(Text.assemble(("runs: ", "bold"), ", ".join(r.run_id for r in report.runs)))
    for number, run in enumerate(report.runs, 1):
        if run.state is not RunState.SUCCESS:
            console.print(
                Text.assemble(
                    (f"✗ repetition {number} (run {run.run_id}) {run.state.value}", "bold red"),
                    f": {run.error}" if run.error else "",
                )
            )


def _spread_cells(
    spread: Spread | None, show: Callable[[float], str] = format_duration
) -> list[str]:
    """median, min, max and spread, or blanks when nothing was measured."""
    if spread is None:
        return ["", "", "", ""]
    relative = f"{100 * spread.relative:.0f}%" if spread.relative is not None else ""
    return [show(spread.median), show(spread.low), show(spread.high), relative]


def _count(value: int | None) -> str:
    return f"{value:,}" if value else ("0" if value == 0 else "")


def summary(plan: Plan, result: RunResult, console: Console) -> None:
    """Print the end-of-run table, the critical path, and any errors."""
    wall = max(result.duration_s, 1e-9)
    table = Table(title=f"{result.pipeline} · run {result.run_id}", title_justify="left")
    for name, justify in (
        ("task", "left"),
        ("kind", "left"),
        ("state", "left"),
        ("attempts", "right"),
        ("rows in", "right"),
        ("rows out", "right"),
        ("rejected", "right"),
        ("time", "right"),
        ("% of wall", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for task in plan.tasks:
        outcome = result.tasks[task.id]
        state = "REUSED" if outcome.reused_from else outcome.state.value
        inlined = task.spec.sql is not None and task.spec.materialize == "ephemeral"
        counted = outcome.state is TaskState.SUCCESS and not outcome.reused_from and not inlined
        table.add_row(
            task.id,
            task.kind.value,
            Text(state, style=STYLES.get(state, "")),
            str(outcome.attempts) if outcome.attempts else "",
            _count(outcome.rows_in) if counted else "",
            _count(outcome.rows_out) if counted else "",
            _count(outcome.rows_rejected) if outcome.rows_rejected else "",
            format_duration(outcome.duration_s) if outcome.duration_s else "",
            f"{100 * outcome.duration_s / wall:.0f}%" if outcome.duration_s else "",
        )
    console.print(table)
    path, length = critical_path(plan, result)
    style = STYLES.get(result.state.value, "")
    console.print(
        Text.assemble(
            (f"{result.state.value}", style),
            f" in {format_duration(result.duration_s)}",
            f"; critical path {' → '.join(path)} ({format_duration(length)})"
            if len(path) > 1
            else "",
        )
    )
    where = {task.id: task.defined_at for task in plan.tasks}
    for outcome in result.tasks.values():
        if outcome.state is TaskState.FAILED and outcome.error:
            first, *rest = outcome.error.splitlines()
            console.print(
                Text.assemble(
                    (f"✗ {outcome.task_id}", "bold red"), f" ({outcome.error_kind}): {first}"
                )
            )
            if where.get(outcome.task_id):
                console.print(Text(f"    task defined at {where[outcome.task_id]}", style="dim"))
            for line in rest[:6]:
                console.print(Text("    " + line, style="dim"))
    skipped = [o.task_id for o in result.tasks.values() if o.state is TaskState.SKIPPED]
    if skipped:
        console.print(
            Text(f"skipped because an upstream task failed: {', '.join(skipped)}", style="magenta")
        )
    if result.state is RunState.CANCELLED:
        console.print(
            Text("the run was cancelled; outputs of unfinished tasks were discarded", style="red")
        )
    if result.state is not RunState.SUCCESS:
        console.print(
            Text(
                f"resume it with: arrowline run {result.plan.pipeline_file or 'PIPELINE'} "
                f"--resume {result.run_id}",
                style="yellow",
            )
        )

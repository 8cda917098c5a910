"""Tables, charts and regression checks from result files.

    python -m benchmarks report RESULT.json [...]        Markdown table + PNG chart beside each
    python -m benchmarks compare OLD.json NEW.json       ratios; exit 1 when arrowline got slower

A result file holds every sample of every contender (see harness.save). Medians are what the
tables show; the charts draw the median as a bar and the min–max of the samples as whiskers,
time beside peak memory, so a fast-but-fat contender is visible at a glance.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Comparison", "compare", "load", "markdown_table", "write_chart", "write_report"]

_NOT_METRICS = {"rows", "checksum", "tasks", "files"}


def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "outcomes" not in data or "workload" not in data:
        raise ValueError(f"{path} is not a benchmark result file (no workload and outcomes)")
    return data


def lower_is_better(metric: str) -> bool:
    """Times and memory shrink when things improve; rates (`*_per_s`) grow."""
    return not metric.endswith("per_s")


def _values(outcome: dict[str, Any], metric: str) -> list[float]:
    values = []
    for sample in outcome.get("samples", []):
        value = sample.get(metric, sample.get("reported", {}).get(metric))
        if isinstance(value, int | float) and not isinstance(value, bool):
            values.append(float(value))
    return values


def metrics_of(outcome: dict[str, Any]) -> list[str]:
    """The numeric measurements of a contender: wall, CPU and memory, then what it reported."""
    names = ["wall_s", "cpu_s", "peak_rss_mb"]
    for sample in outcome.get("samples", [])[:1]:
        for key, value in sample.get("reported", {}).items():
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if numeric and key not in _NOT_METRICS and key not in names:
                names.append(key)
    return names


def median(outcome: dict[str, Any], metric: str) -> float | None:
    values = _values(outcome, metric)
    return statistics.median(values) if values else None


def markdown_table(data: dict[str, Any]) -> str:
    outcomes = data["outcomes"]
    metrics: list[str] = []
    for outcome in outcomes:
        for metric in metrics_of(outcome):
            if metric not in metrics:
                metrics.append(metric)
    machine = data.get("machine", {})
    lines = [
        f"**{data['workload']}** — {data.get('date', '')}, {machine.get('cpu', '?')}, "
        f"{machine.get('cores', '?')} cores; medians of "
        f"{data.get('params', {}).get('repeat', '?')} runs (min–max)",
        "",
        "| contender | " + " | ".join(metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for outcome in outcomes:
        if outcome.get("error"):
            cells = [f"**{outcome['error'].splitlines()[0][:60]}**"] + [""] * (len(metrics) - 1)
        else:
            cells = []
            for metric in metrics:
                values = _values(outcome, metric)
                if not values:
                    cells.append("")
                    continue
                cells.append(
                    f"{_fmt(statistics.median(values))} ({_fmt(min(values))}–{_fmt(max(values))})"
                )
        lines.append(f"| {outcome['contender']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: float) -> str:
    if abs(value) >= 100_000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def write_chart(data: dict[str, Any], path: Path) -> Path:
    """Bars of median wall time and peak RSS per contender, with min–max whiskers."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    outcomes = [o for o in data["outcomes"] if not o.get("error") and o.get("samples")]
    names = [o["contender"] for o in outcomes]
    figure, axes = plt.subplots(1, 2, figsize=(12, 0.5 * len(names) + 1.8), sharey=True)
    for axis, metric, label in (
        (axes[0], "wall_s", "wall time, s (lower is better)"),
        (axes[1], "peak_rss_mb", "peak RSS, MB (lower is better)"),
    ):
        medians, lows, highs = [], [], []
        for outcome in outcomes:
            values = _values(outcome, metric)
            middle = statistics.median(values)
            medians.append(middle)
            lows.append(middle - min(values))
            highs.append(max(values) - middle)
        colors = ["#1f6feb" if n.startswith("arrowline") else "#8b949e" for n in names]
        axis.barh(names, medians, xerr=[lows, highs], color=colors, capsize=3)
        axis.set_xlabel(label)
        axis.invert_yaxis()
        axis.grid(axis="x", alpha=0.3)
    machine = data.get("machine", {})
    figure.suptitle(
        f"{data['workload']} — {machine.get('cpu', '')}, {machine.get('cores', '?')} cores, "
        f"{data.get('date', '')}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_report(result: Path) -> tuple[Path, Path | None]:
    """`RESULT.md` and, when matplotlib is installed, `RESULT.png`, beside the result file."""
    data = load(result)
    table = result.with_suffix(".md")
    table.write_text(markdown_table(data), encoding="utf-8")
    try:
        chart: Path | None = write_chart(data, result.with_suffix(".png"))
    except ModuleNotFoundError:
        chart = None
    return table, chart


@dataclass(frozen=True)
class Comparison:
    contender: str
    metric: str
    old: float
    new: float

    @property
    def ratio(self) -> float:
        return self.new / self.old if self.old else float("inf")

    def worse_by(self) -> float:
        """How much worse NEW is (0.1 = 10% worse; negative: better)."""
        if lower_is_better(self.metric):
            return self.ratio - 1
        return (self.old / self.new - 1) if self.new else float("inf")


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[Comparison]:
    if old["workload"] != new["workload"]:
        raise ValueError(f"different workloads: {old['workload']} and {new['workload']}")
    before = {o["contender"]: o for o in old["outcomes"] if not o.get("error")}
    rows = []
    for outcome in new["outcomes"]:
        previous = before.get(outcome["contender"])
        if previous is None or outcome.get("error"):
            continue
        for metric in metrics_of(outcome):
            a, b = median(previous, metric), median(outcome, metric)
            if a is not None and b is not None:
                rows.append(Comparison(outcome["contender"], metric, a, b))
    return rows


def regressions(rows: Iterable[Comparison], threshold: float) -> list[Comparison]:
    """arrowline's speed measurements that got worse by more than `threshold` (memory and
    CPU time, `*rss_mb` and `*cpu_s` whatever the phase, are reported, not judged: allocator
    noise on shared machines is larger than 10%)."""
    return [
        row
        for row in rows
        if row.contender.startswith("arrowline")
        and not row.metric.endswith(("rss_mb", "cpu_s"))
        and row.worse_by() > threshold
    ]

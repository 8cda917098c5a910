"""What a task's page shows besides the catalog's rows: its log lines, its schema drift, a
preview of its output with column statistics, and its quarantined rows by check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.api.project import Project
from engine.core.errors import ArrowlineError
from engine.state.catalog import TaskRunRow

__all__ = ["drift", "preview", "quarantine", "task_log"]

PREVIEW_ROWS = 20
LOG_LINES = 500


def task_log(path: Path, task_id: str) -> list[dict[str, Any]]:
    """The task's lines of the run's log (the last LOG_LINES of them), or none when the run
    kept no log (its logging was off, or it ran before logs were kept)."""
    import json
    from collections import deque

    lines: deque[dict[str, Any]] = deque(maxlen=LOG_LINES)
    try:
        with path.open(encoding="utf-8") as stream:
            for text in stream:
                try:
                    line = json.loads(text)
                except ValueError:
                    continue  # a line cut short by a kill: the rest are whole
                if isinstance(line, dict) and line.get("task_id") == task_id:
                    lines.append(line)
    except OSError:
        return []
    return list(lines)


def drift(previous: TaskRunRow | None, row: TaskRunRow) -> list[tuple[str, str, str, str]]:
    """(column, change, before, after) against the previous successful run's output."""
    if previous is None or not previous.output_schema or not row.output_schema:
        return []
    before = {f["name"]: f["type"] for f in previous.output_schema}
    after = {f["name"]: f["type"] for f in row.output_schema}
    changes = []
    for name, kind in after.items():
        if name not in before:
            changes.append((name, "added", "", kind))
        elif before[name] != kind:
            changes.append((name, "changed", before[name], kind))
    changes += [(name, "dropped", kind, "") for name, kind in before.items() if name not in after]
    return changes


def preview(
    project: Project, row: TaskRunRow
) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None, str | None]:
    """The output's first rows and, per column, nulls, min and max (over the whole output, in
    one pass of Polars over its Parquet files)."""
    try:
        if not row.output_path or not row.output_on_disk:
            return None, None, None
    except ArrowlineError as exc:  # the workspace's object store does not answer
        return None, None, f"{type(exc).__name__}: {exc}"
    import polars as pl

    try:
        frame = project.table(row.task_id, run=row.run_id)
        head = frame.head(PREVIEW_ROWS).collect()
        columns = head.columns
        numeric_or_time = [c for c, t in head.schema.items() if t.is_numeric() or t.is_temporal()]
        summary = frame.select(
            pl.len().alias("__rows"),
            *[pl.col(c).null_count().alias(f"{c}\0nulls") for c in columns],
            *[pl.col(c).min().cast(pl.String).alias(f"{c}\0min") for c in numeric_or_time],
            *[pl.col(c).max().cast(pl.String).alias(f"{c}\0max") for c in numeric_or_time],
        ).collect()
    except (ArrowlineError, pl.exceptions.PolarsError, OSError) as exc:
        return None, None, f"{type(exc).__name__}: {exc}"
    values = summary.row(0, named=True)
    stats = [
        {
            "column": c,
            "type": str(head.schema[c]),
            "nulls": values[f"{c}\0nulls"],
            "min": values.get(f"{c}\0min"),
            "max": values.get(f"{c}\0max"),
        }
        for c in columns
    ]
    rows = [{c: _cell(v) for c, v in r.items()} for r in head.iter_rows(named=True)]
    return rows, stats, None


def _cell(value: object) -> str:
    text = "∅" if value is None else str(value)
    return text if len(text) <= 80 else text[:79] + "…"


def quarantine(project: Project, row: TaskRunRow) -> list[dict[str, Any]]:
    """Rows the task set aside, grouped by column and check: how many, and a few values."""
    if not row.rows_rejected:
        return []
    import polars as pl

    try:
        frame = project.quarantine(row.task_id, run=row.run_id)
        groups = (
            frame.select(pl.col("_arrowline_errors").explode().alias("e"))
            .unnest("e")
            .group_by("column", "check")
            .agg(pl.len().alias("rows"), pl.col("value").cast(pl.String).unique().head(5))
            .sort("rows", descending=True)
            .collect()
        )
    except (ArrowlineError, pl.exceptions.PolarsError, OSError):
        return []
    return list(groups.iter_rows(named=True))

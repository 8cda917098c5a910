"""`arrowline status`: what is scheduled next, what is running, what is failing, per pipeline."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.state.layout import ProjectLayout

__all__ = ["status_rows"]


def status_rows(project: ProjectLayout | Path, now: datetime | None = None) -> list[dict[str, Any]]:
    """One row per pipeline file of the project: its schedule and triggers, next run, pause,
    running runs, last run and how long it has been failing (or why its file is invalid)."""
    from engine.core.errors import ArrowlineError, PipelineInvalid
    from engine.scheduling.cron import Schedule
    from engine.scheduling.discover import discover_pipelines
    from engine.state.catalog import CatalogReader
    from engine.state.locks import lock_is_held
    from engine.tasks.checks import load_definition

    layout = ProjectLayout.of(project)
    now = now or datetime.now(UTC)
    location = layout.catalog
    reader = CatalogReader(location) if location.exists() else None
    rows = []
    try:
        for name, path in discover_pipelines(layout.project_dir).items():
            row: dict[str, Any] = {
                "pipeline": name,
                "file": str(path.relative_to(layout.project_dir)),
            }
            try:
                spec = load_definition(path).spec
            except (PipelineInvalid, ArrowlineError) as exc:
                row["problem"] = f"invalid: {exc}"  # every problem: the first line is a count
                rows.append(row)
                continue
            state = reader.schedule(name) if reader else None
            row["schedule"] = f"{spec.schedule} ({spec.timezone})" if spec.schedule else None
            row["triggers"] = [
                f"files {t.files}" if t.files else f"after {t.after}" for t in spec.trigger
            ]
            row["paused"] = bool(state and state.paused)
            row["pause_reason"] = state.reason if state and state.paused else None
            row["next_run"] = (
                Schedule(spec.schedule, spec.timezone).next_after(now).isoformat()
                if spec.schedule and not row["paused"]
                else None
            )
            running = lock_is_held(layout.state_dir, name, location)
            recent = reader.runs(name, limit=20) if reader else []
            row["running"] = (
                [r.run_id for r in recent if r.state.value == "RUNNING"] if running else []
            )
            last = next((r for r in recent if r.ended_at), None)
            row["last_run"] = (
                {"run_id": last.run_id, "state": last.state.value, "ended_at": last.ended_at}
                if last
                else None
            )
            failing = []
            for run in recent:
                if not run.ended_at:
                    continue
                if run.state.value == "SUCCESS":
                    break
                failing.append(run)
            row["failing"] = (
                {"runs": len(failing), "since": failing[-1].ended_at, "error": failing[0].error}
                if failing
                else None
            )
            rows.append(row)
    finally:
        if reader is not None:
            reader.close()
    return rows

"""What happened to published task outputs after their run: those retention removed from the
workspace are noted here first, so that reading one says "removed by gc" instead of failing on
a missing file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.state.db import Database
from engine.state.rows import RemovedOutputRow
from engine.state.values import now_text

__all__ = ["OutputStore"]


@dataclass(frozen=True)
class OutputStore:
    db: Database

    def removed_output(self, run_id: str, task_id: str) -> RemovedOutputRow | None:
        """How a task's output of a run left the workspace, if retention removed it."""
        rows = self.db.execute(
            "select * from removed_outputs where run_id = ? and task_id = ?", (run_id, task_id)
        )
        return RemovedOutputRow(**dict(rows[0])) if rows else None

    def record_removed_outputs(
        self, pipeline: str, outputs: Sequence[tuple[str, str, int]], reason: str
    ) -> None:
        """Note (run_id, task_id, bytes) outputs as removed, before their folders go: a crash
        in between leaves a folder the next collection removes, never a silent gap."""
        at = now_text()
        with self.db.transaction() as connection:
            connection.executemany(
                "insert into removed_outputs "
                "(run_id, task_id, pipeline, bytes, removed_at, reason) values (?, ?, ?, ?, ?, ?) "
                "on conflict (run_id, task_id) do update set bytes = excluded.bytes, "
                "removed_at = excluded.removed_at, reason = excluded.reason",
                [(run, task, pipeline, size, at, reason) for run, task, size in outputs],
            )

"""Watermarks: where each incremental extract continues from, per load task that consumes it,
and the audit of every change (by a run, or by hand with `arrowline watermark`)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.state.db import Database
from engine.state.rows import AuditRow, WatermarkRow
from engine.state.values import current_actor, now_text

__all__ = ["WatermarkStore"]

_KEY = "pipeline = ? and task_id = ? and sink_id = ?"


@dataclass(frozen=True)
class WatermarkStore:
    db: Database

    def watermarks(self, pipeline: str, task_id: str | None = None) -> list[WatermarkRow]:
        if task_id is None:
            rows = self.db.execute(
                "select * from watermarks where pipeline = ? order by task_id, sink_id", (pipeline,)
            )
        else:
            rows = self.db.execute(
                "select * from watermarks where pipeline = ? and task_id = ? order by sink_id",
                (pipeline, task_id),
            )
        return [WatermarkRow(**dict(row)) for row in rows]

    def every_watermark(self) -> list[WatermarkRow]:
        """Every pipeline's watermarks, by pipeline, task and sink."""
        rows = self.db.execute("select * from watermarks order by pipeline, task_id, sink_id")
        return [WatermarkRow(**dict(row)) for row in rows]

    def watermark_audit(self, pipeline: str, task_id: str | None = None) -> list[AuditRow]:
        rows = self.db.execute(
            "select * from watermark_audit where pipeline = ? "
            "and (cast(? as text) is null or task_id = ?) "
            "order by id",
            (pipeline, task_id, task_id),
        )
        return [AuditRow(**dict(row)) for row in rows]

    def set_watermark(
        self,
        pipeline: str,
        task_id: str,
        sink_id: str,
        value: str | None,
        *,
        action: str,
        run_id: str | None = None,
        actor: str | None = None,
    ) -> None:
        """Store (or with None, delete) a watermark, with an audit row, in one transaction."""
        at = now_text()
        who = actor or current_actor()
        key = (pipeline, task_id, sink_id)
        with self.db.transaction() as connection:
            rows = connection.execute(f"select value from watermarks where {_KEY}", key)
            old = rows[0]["value"] if rows else None
            if old == value:
                return
            if value is None:
                connection.execute(f"delete from watermarks where {_KEY}", key)
            else:
                connection.execute(
                    "insert into watermarks "
                    "(pipeline, task_id, sink_id, value, run_id, updated_at) "
                    "values (?, ?, ?, ?, ?, ?) on conflict (pipeline, task_id, sink_id) do update "
                    "set value = excluded.value, run_id = excluded.run_id, "
                    "updated_at = excluded.updated_at",
                    (*key, value, run_id, at),
                )
            connection.execute(
                "insert into watermark_audit (pipeline, task_id, sink_id, action, old_value, "
                "new_value, run_id, actor, at) values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, action, old, value, run_id, who, at),
            )

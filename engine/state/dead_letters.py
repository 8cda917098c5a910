"""Dead letters: tasks that failed for good, with every attempt, kept open until a requeue that
succeeds or an operator (`arrowline dlq resolve`) settles them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.core.errors import StateError
from engine.state.db import Database, Row
from engine.state.rows import DeadLetterRow, dead_letter_row
from engine.state.values import checked_note, current_actor, now_text, params_text

__all__ = ["DeadLetterStore"]


def _no_letter(letter_id: int) -> StateError:
    return StateError(f"no dead letter {letter_id}", hint="`arrowline dlq list --all` lists them")


@dataclass(frozen=True)
class DeadLetterStore:
    db: Database

    def dead_letters(
        self, pipeline: str | None = None, status: str | None = "open", limit: int = 100
    ) -> list[DeadLetterRow]:
        """Newest first; `status=None` lists every status."""
        rows = self.db.execute(
            "select * from dead_letters where (cast(? as text) is null or pipeline = ?) "
            "and (cast(? as text) is null or status = ?) order by id desc limit ?",
            (pipeline, pipeline, status, status, limit),
        )
        return [dead_letter_row(row) for row in rows]

    def dead_letter(self, letter_id: int) -> DeadLetterRow:
        return dead_letter_row(self._letter(self.db, letter_id))

    @staticmethod
    def _letter(connection: Database, letter_id: int) -> Row:
        rows = connection.execute("select * from dead_letters where id = ?", (letter_id,))
        if not rows:
            raise _no_letter(letter_id)
        return rows[0]

    def lettered_runs(self, pipeline: str) -> set[str]:
        """Runs of the pipeline with an open (or requeued) dead letter: a requeue may still
        resume them, so retention keeps their outputs."""
        rows = self.db.execute(
            "select distinct run_id from dead_letters "
            "where pipeline = ? and status in ('open', 'requeued')",
            (pipeline,),
        )
        return {row["run_id"] for row in rows}

    def add_dead_letter(
        self,
        *,
        run_id: str,
        pipeline: str,
        task_id: str,
        pipeline_version: str,
        pipeline_file: str | None,
        params: dict[str, Any],
        logical_date: str,
        error_kind: str,
        transient: bool,
        reason: str,
        attempts: list[dict[str, Any]],
    ) -> int:
        with self.db.transaction() as connection:
            rows = connection.execute(
                "insert into dead_letters (run_id, pipeline, task_id, pipeline_version, "
                "pipeline_file, params, logical_date, error_kind, transient, reason, attempts, "
                "created_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) returning id",
                (
                    run_id,
                    pipeline,
                    task_id,
                    pipeline_version,
                    pipeline_file,
                    params_text(params),
                    logical_date,
                    error_kind,
                    int(transient),
                    reason,
                    json.dumps(attempts, default=str),
                    now_text(),
                ),
            )
            return int(rows[0][0])

    def settle_dead_letters(
        self, run_id: str, task_ids: Sequence[str], result: str, before: str
    ) -> None:
        """A resumed or requeued run ended: the letters written before it (`before`) for the
        tasks it ran again become resolved when it succeeded, or requeued with its result (a
        task that failed again has a new open letter of its own)."""
        with self.db.transaction() as connection:
            for task_id in task_ids:
                connection.execute(
                    "update dead_letters set status = ?, requeued_at = ?, requeue_result = ? "
                    "where run_id = ? and task_id = ? and status in ('open', 'requeued') "
                    "and created_at < ?",
                    (
                        "resolved" if result == "SUCCESS" else "requeued",
                        now_text(),
                        result,
                        run_id,
                        task_id,
                        before,
                    ),
                )

    def resolve_dead_letter(
        self, letter_id: int, note: str, *, by: str | None = None
    ) -> DeadLetterRow:
        """Dismiss a dead letter an operator dealt with some other way (the source was fixed
        and reloaded by hand, the run is obsolete): resolved, with who, when and why. It leaves
        `dlq list` and stops holding its run's outputs (engine.state.retention). A resolved letter
        stays resolved: resolving it again is refused, naming who did it first."""
        text = checked_note(note)
        with self.db.transaction() as connection:
            letter = dead_letter_row(self._letter(connection, letter_id))
            if letter.status == "resolved":
                raise StateError(f"dead letter {letter_id} is already resolved {letter.resolution}")
            updated = connection.execute(
                "update dead_letters set status = 'resolved', resolved_at = ?, resolved_by = ?, "
                "resolution_note = ? where id = ? returning *",
                (now_text(), by or current_actor(), text, letter_id),
            )
        return dead_letter_row(updated[0])

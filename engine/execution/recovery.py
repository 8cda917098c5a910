"""What an operator needs when a run goes wrong: runs whose process died are marked
INTERRUPTED (their staging swept), and a task that will not be retried again leaves a dead
letter with every attempt it made, to read (`arrowline dlq show`) and requeue."""

from __future__ import annotations

from typing import Any

from loguru import logger

from engine.core.errors import ArrowlineError, Classification
from engine.planning.build import Plan
from engine.state.catalog import Catalog
from engine.state.workspace import Workspace

__all__ = ["DeadLetters", "heartbeat", "recover_interrupted"]


def heartbeat(catalog: Catalog, run_id: str, log: Any) -> None:
    """Tell the catalog the run is alive; one that cannot be written (a full disk, a catalog
    restarting) is said and skipped: only the state changes that matter fail the run."""
    try:
        catalog.heartbeat(run_id)
    except ArrowlineError as exc:
        log.warning("heartbeat not recorded: {}", exc.message)


def recover_interrupted(catalog: Catalog, workspace: Workspace, pipeline: str) -> list[str]:
    """Call while holding the pipeline's run lock: a run of it that the catalog still calls
    PENDING or RUNNING has lost its process (the lock would be held otherwise). Mark each
    INTERRUPTED, remove its unpublished staging folders, and return their ids."""
    recovered = []
    for run in catalog.unfinished_runs(pipeline):
        reason = (
            f"interrupted: the process running it (pid {run.pid} on {run.host}) ended without "
            f"finishing; last heartbeat {run.heartbeat_at or run.created_at}"
        )
        catalog.interrupt_run(run.run_id, reason)
        workspace.sweep_staging(pipeline, run.run_id)
        recovered.append(run.run_id)
    return recovered


class DeadLetters:
    """A run's failed attempts, per task, and the dead letters of the tasks that failed."""

    def __init__(self, plan: Plan, catalog: Catalog) -> None:
        self.plan = plan
        self.catalog = catalog
        self.attempts: dict[str, list[dict[str, Any]]] = {}

    def failed_attempt(
        self,
        task_id: str,
        number: int,
        started_at: str,
        duration: float,
        kind: Classification,
        error: str,
    ) -> None:
        self.attempts.setdefault(task_id, []).append(
            {
                "attempt": number,
                "started_at": started_at,
                "duration_s": round(duration, 6),
                "error_kind": kind.kind,
                "transient": kind.transient,
                "error": error,
            }
        )

    def record(self, task_id: str, kind: Classification, reason: str) -> None:
        """Record what an operator needs to act on a task that will not be retried again."""
        plan = self.plan
        letter = self.catalog.add_dead_letter(
            run_id=plan.run_id,
            pipeline=plan.pipeline,
            task_id=task_id,
            pipeline_version=plan.pipeline_version,
            pipeline_file=plan.pipeline_file,
            params=dict(plan.params),
            logical_date=plan.logical_date.isoformat(),
            error_kind=kind.kind,
            transient=kind.transient,
            reason=reason,
            attempts=self.attempts.get(task_id, []),
        )
        logger.bind(pipeline=plan.pipeline, run_id=plan.run_id, task_id=task_id).warning(
            "dead letter {} recorded; `arrowline dlq show {}` has every attempt", letter, letter
        )

"""Runs and their tasks as the catalog holds them: the questions the planner, the executor, the
notebook and the CLI ask about them. Changing a run is engine.state.transitions' part."""

from __future__ import annotations

import json
from dataclasses import dataclass

from engine.core.errors import StateError
from engine.state.db import Database
from engine.state.rows import RunRow, TaskRunRow, TransitionRow, run_row, task_row

__all__ = ["RunStore"]

_NEWEST_SUCCESS = (
    "select t.* from task_runs t join runs r using (run_id) "
    "where r.pipeline = ? and t.task_id = ? and t.state = 'SUCCESS' "
    "{condition}order by t.ended_at desc limit 1"
)


def _like_prefix(text: str) -> str:
    """`text%` for `like ... escape '\\'`, with the wildcards in `text` taken literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@dataclass(frozen=True)
class RunStore:
    db: Database

    def runs(self, pipeline: str | None = None, limit: int = 50) -> list[RunRow]:
        """Most recent first."""
        if pipeline is None:
            rows = self.db.execute("select * from runs order by created_at desc limit ?", (limit,))
        else:  # apart, so that the index on (pipeline, created_at) serves it
            rows = self.db.execute(
                "select * from runs where pipeline = ? order by created_at desc limit ?",
                (pipeline, limit),
            )
        return [run_row(row) for row in rows]

    def run(self, run_id: str) -> RunRow:
        """A run by id or unambiguous prefix, or 'last' for the most recent."""
        if run_id == "last":
            rows = self.db.execute("select * from runs order by created_at desc limit 1")
        else:
            rows = self.db.execute(
                "select * from runs where run_id like ? escape '\\' "
                "order by created_at desc limit 2",
                (_like_prefix(run_id),),
            )
        if not rows:
            raise StateError(
                f"no run {run_id!r} in the catalog", hint="`arrowline runs` lists runs"
            )
        if len(rows) > 1 and rows[0]["run_id"] != run_id:
            raise StateError(f"run id prefix {run_id!r} is ambiguous; give more characters")
        return run_row(rows[0])

    def has_run(self, run_id: str) -> bool:
        """Whether a run has exactly this id (no prefix, no 'last')."""
        return bool(self.db.execute("select 1 from runs where run_id = ?", (run_id,)))

    def run_of(self, pipeline: str, run_id: str) -> RunRow:
        """A run of `pipeline`, as `run` finds one, except that 'last' is the pipeline's most
        recent run rather than the catalog's."""
        run = self.last_run(pipeline) if run_id == "last" else self.run(run_id)
        if run is None:
            raise StateError(
                f"pipeline {pipeline!r} has no runs yet", hint="`arrowline runs` lists runs"
            )
        if run.pipeline != pipeline:
            raise StateError(
                f"run {run.run_id} belongs to pipeline {run.pipeline!r}, not {pipeline!r}"
            )
        return run

    def last_run(self, pipeline: str) -> RunRow | None:
        rows = self.db.execute(
            "select * from runs where pipeline = ? order by created_at desc limit 1", (pipeline,)
        )
        return run_row(rows[0]) if rows else None

    def unfinished_runs(self, pipeline: str) -> list[RunRow]:
        """Runs of a pipeline the catalog still calls PENDING or RUNNING."""
        rows = self.db.execute(
            "select * from runs where pipeline = ? and state in ('PENDING', 'RUNNING') "
            "order by created_at",
            (pipeline,),
        )
        return [run_row(row) for row in rows]

    def run_states(self, pipeline: str) -> list[tuple[str, str]]:
        """(run_id, state) of every run of the pipeline, newest first (what retention weighs)."""
        rows = self.db.execute(
            "select run_id, state from runs where pipeline = ? "
            "order by created_at desc, run_id desc",
            (pipeline,),
        )
        return [(row["run_id"], row["state"]) for row in rows]

    def latest_definition(self, pipeline: str) -> str | None:
        """The definition (YAML) the pipeline's newest run that stored one executed."""
        rows = self.db.execute(
            "select definition from runs where pipeline = ? and definition is not null "
            "order by created_at desc limit 1",
            (pipeline,),
        )
        return str(rows[0]["definition"]) if rows else None

    def pipelines(self) -> list[str]:
        """Every pipeline with runs in the catalog."""
        return [row[0] for row in self.db.execute("select distinct pipeline from runs order by 1")]

    def task_runs(self, run_id: str) -> list[TaskRunRow]:
        rows = self.db.execute(
            "select * from task_runs where run_id = ? order by level, ordinal", (run_id,)
        )
        return [task_row(row) for row in rows]

    def task_run(self, run_id: str, task_id: str) -> TaskRunRow | None:
        rows = self.db.execute(
            "select * from task_runs where run_id = ? and task_id = ?", (run_id, task_id)
        )
        return task_row(rows[0]) if rows else None

    def task_ids(self, pipeline: str) -> list[str]:
        """Every task id the runs of a pipeline ever had."""
        rows = self.db.execute(
            "select distinct t.task_id from task_runs t join runs r using (run_id) "
            "where r.pipeline = ? order by 1",
            (pipeline,),
        )
        return [row[0] for row in rows]

    def latest_output(self, pipeline: str, task_id: str) -> TaskRunRow | None:
        """The newest successful output of a task, or None."""
        return self._newest_success(pipeline, task_id, "and t.output_path is not null ")

    def last_success(self, pipeline: str, task_id: str) -> TaskRunRow | None:
        """The newest successful run of a task, with an output in the workspace or not (a load
        keeps none: its `target` says where its rows went)."""
        return self._newest_success(pipeline, task_id, "")

    def outputs_with_key(
        self, pipeline: str, task_id: str, cache_key: str, limit: int = 5
    ) -> list[TaskRunRow]:
        """The newest successful outputs of a task made with this cache key, newest first."""
        rows = self.db.execute(
            "select t.* from task_runs t join runs r using (run_id) "
            "where r.pipeline = ? and t.task_id = ? and t.cache_key = ? and t.state = 'SUCCESS' "
            "and t.output_path is not null order by t.ended_at desc limit ?",
            (pipeline, task_id, cache_key, limit),
        )
        return [task_row(row) for row in rows]

    def kept_outputs(
        self, pipeline: str, task_id: str, limit: int = 20
    ) -> list[tuple[TaskRunRow, str | None]]:
        """The newest successful outputs of a task, newest first, each with its run's recorded
        parameters (JSON text): what an incremental sql task may add to."""
        rows = self.db.execute(
            "select t.*, r.params as run_params from task_runs t join runs r using (run_id) "
            "where r.pipeline = ? and t.task_id = ? and t.state = 'SUCCESS' "
            "and t.output_path is not null order by t.ended_at desc limit ?",
            (pipeline, task_id, limit),
        )
        return [(task_row(row), row["run_params"]) for row in rows]

    def _newest_success(self, pipeline: str, task_id: str, condition: str) -> TaskRunRow | None:
        rows = self.db.execute(_NEWEST_SUCCESS.format(condition=condition), (pipeline, task_id))
        return task_row(rows[0]) if rows else None

    def latest_outputs(self, pipeline: str) -> dict[str, TaskRunRow]:
        """The newest successful output of every task of a pipeline."""
        rows = self.db.execute(
            "select * from (select t.*, row_number() over (partition by t.task_id "
            "order by t.ended_at desc) as newest from task_runs t join runs r using (run_id) "
            "where r.pipeline = ? and t.state = 'SUCCESS' and t.output_path is not null) "
            "as ranked where newest = 1 order by task_id",
            (pipeline,),
        )
        return {row["task_id"]: task_row(row) for row in rows}

    def viewed_outputs(self, pipeline: str) -> set[tuple[str, str]]:
        """(task_id, run_id) of the outputs a database view reads now: what the latest
        successful run of each `materialize: view` load pointed its view at, in each database
        it loaded (a SQL project's dev and prod targets: dev's view still reads its files
        after prod runs)."""
        rows = self.db.execute(
            "select details from (select t.details, row_number() over (partition by t.task_id, "
            "t.target order by t.ended_at desc) as newest from task_runs t join runs r "
            "using (run_id) "
            "where r.pipeline = ? and t.state = 'SUCCESS' and t.output_path is null "
            "and t.details is not null) as ranked where newest = 1",
            (pipeline,),
        )
        viewed = set()
        for row in rows:
            found = json.loads(row["details"]).get("view_of")
            if isinstance(found, dict) and {"task", "run"} <= found.keys():
                viewed.add((str(found["task"]), str(found["run"])))
        return viewed

    def reused(self, run_id: str) -> dict[str, str]:
        """task_id -> the earlier run whose output the run reused."""
        rows = self.db.execute(
            "select task_id, from_run_id from reused where run_id = ?", (run_id,)
        )
        return {row["task_id"]: row["from_run_id"] for row in rows}

    def reuses_in(self, pipeline: str) -> list[tuple[str, str, str]]:
        """(run_id, task_id, from_run_id) of every reuse by a run of the pipeline."""
        rows = self.db.execute(
            "select u.run_id, u.task_id, u.from_run_id from reused u join runs r using (run_id) "
            "where r.pipeline = ?",
            (pipeline,),
        )
        return [(row["run_id"], row["task_id"], row["from_run_id"]) for row in rows]

    def transitions(self, run_id: str, task_id: str | None = None) -> list[TransitionRow]:
        """A run's history, oldest first: its own transitions and its tasks', or one task's."""
        if task_id is None:
            rows = self.db.execute(
                "select * from transitions where run_id = ? order by id", (run_id,)
            )
        else:
            rows = self.db.execute(
                "select * from transitions where run_id = ? and task_id = ? order by id",
                (run_id, task_id),
            )
        return [TransitionRow(**dict(row)) for row in rows]

"""Runs measured against each other, from what the catalog recorded: two runs side by side
(`compare_runs`, behind `arrowline runs compare`), and the repetitions of one pipeline summed up
(`summarize_repeats`, behind `arrowline run --repeat`). Pure data: the CLI prints it.

    from engine.api.compare import compare_runs
    with engine.open(".") as project:
        comparison = compare_runs(project.catalog, "20241102T0300", "last")
        comparison.regressions(threshold_pct=20)   # [] when nothing got slower by over 20%

Tasks are matched by id, so two runs of different pipelines compare too (`same_pipeline` says
so). A task counts as slower only when it succeeded in both runs, ran in both (no earlier
output stood for it) and took at least `FLOOR_S` in A: under that, the time is mostly
scheduling noise, and a 10 ms task taking 15 ms is no regression.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.core.errors import StateError
from engine.core.states import RunState, TaskState
from engine.state.catalog import CatalogReader, RunRow, TaskRunRow

__all__ = [
    "FLOOR_S",
    "Delta",
    "Regression",
    "RepeatSummary",
    "RepeatedTask",
    "RunComparison",
    "Spread",
    "TaskComparison",
    "compare_runs",
    "summarize_repeats",
]

FLOOR_S = 0.05
"""Tasks (and runs) faster than this in A never count as slower in B."""

REUSED = "REUSED"
"""The state shown for a task an earlier run's output stood for: it did no work."""


@dataclass(frozen=True)
class Delta:
    """One measure in run A and in run B (None: not recorded there)."""

    a: float | None
    b: float | None

    @property
    def change(self) -> float | None:
        """B minus A."""
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def relative(self) -> float | None:
        """(B - A) / A: 0.25 is 25% more in B. None when A is 0 or either is missing."""
        change = self.change
        return None if change is None or not self.a else change / self.a

    @property
    def changed(self) -> bool:
        return self.a != self.b

    def to_dict(self) -> dict[str, float | None]:
        return {"a": self.a, "b": self.b, "change": self.change, "relative": self.relative}


@dataclass(frozen=True)
class TaskComparison:
    """One task in both runs. A state is a task state, REUSED, or None: not in that run."""

    task_id: str
    kind: str
    state_a: str | None
    state_b: str | None
    duration_s: Delta
    rows_in: Delta
    rows_out: Delta
    bytes_out: Delta
    attempts: Delta

    def slower_by(self, floor_s: float = FLOOR_S) -> float | None:
        """How much slower it ran in B, relative to A (0.25: 25%), when the two are comparable:
        it succeeded in both by running, and took at least `floor_s` in A."""
        a = self.duration_s.a
        success = TaskState.SUCCESS.value
        if self.state_a != success or self.state_b != success or a is None or a < floor_s:
            return None
        return self.duration_s.relative

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "kind": self.kind,
            "state": {"a": self.state_a, "b": self.state_b},
            **{
                name: getattr(self, name).to_dict()
                for name in ("duration_s", "rows_in", "rows_out", "bytes_out", "attempts")
            },
        }


@dataclass(frozen=True)
class Regression:
    """A task, or the whole run (`task_id` None), slower in B by more than the threshold, or
    failed in B where it succeeded in A (`failed`: the worst regression, whatever its time)."""

    task_id: str | None
    duration_s: Delta
    relative: float
    failed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "a_s": self.duration_s.a,
            "b_s": self.duration_s.b,
            "relative": None if self.failed else self.relative,
            "failed": self.failed,
        }


@dataclass(frozen=True)
class RunComparison:
    a: RunRow
    b: RunRow
    tasks: tuple[TaskComparison, ...]
    wall_s: Delta
    cpu_s: Delta
    peak_rss_bytes: Delta

    @property
    def same_pipeline(self) -> bool:
        return self.a.pipeline == self.b.pipeline

    def run_slower_by(self, floor_s: float = FLOOR_S) -> float | None:
        """How much longer run B took than run A, when both succeeded and A took `floor_s`."""
        a = self.wall_s.a
        both = self.a.state is self.b.state is RunState.SUCCESS
        return self.wall_s.relative if both and a is not None and a >= floor_s else None

    def regressions(self, threshold_pct: float, floor_s: float = FLOOR_S) -> list[Regression]:
        """The run and the tasks that failed in B where they succeeded in A, then those slower
        in B than in A by more than `threshold_pct` percent."""
        measured: list[tuple[str | None, Delta, float | None]] = [
            (None, self.wall_s, self.run_slower_by(floor_s))
        ]
        measured += [(t.task_id, t.duration_s, t.slower_by(floor_s)) for t in self.tasks]
        success = RunState.SUCCESS
        failed: list[Regression] = []
        if self.a.state is success and self.b.state is not success:
            failed.append(Regression(None, self.wall_s, 0.0, failed=True))
        failed += [
            Regression(t.task_id, t.duration_s, 0.0, failed=True)
            for t in self.tasks
            if t.state_a == TaskState.SUCCESS.value and t.state_b == TaskState.FAILED.value
        ]
        return failed + [
            Regression(task_id, duration, slower)
            for task_id, duration, slower in measured
            if slower is not None and slower * 100 > threshold_pct
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": _run_dict(self.a),
            "b": _run_dict(self.b),
            "same_pipeline": self.same_pipeline,
            "run": {
                "wall_s": self.wall_s.to_dict(),
                "cpu_s": self.cpu_s.to_dict(),
                "peak_rss_bytes": self.peak_rss_bytes.to_dict(),
            },
            "tasks": [t.to_dict() for t in self.tasks],
        }


def _run_dict(run: RunRow) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "pipeline": run.pipeline,
        "state": run.state.value,
        "started_at": run.started_at,
        "wall_s": run.duration_s,
        "cpu_s": run.cpu_s,
        "peak_rss_bytes": run.peak_rss_bytes,
    }


def compare_runs(catalog: CatalogReader, a: str, b: str) -> RunComparison:
    """Runs `a` and `b` (ids, unambiguous prefixes or 'last') side by side, task by task, in
    A's task order and then B's tasks that A did not have. Raises StateError naming which run
    the catalog does not know."""
    first, second = _find(catalog, a, "A"), _find(catalog, b, "B")
    tasks_a, tasks_b = _tasks(catalog, first), _tasks(catalog, second)
    order = list(tasks_a) + [t for t in tasks_b if t not in tasks_a]
    compared = []
    for task_id in order:
        kind_a, state_a, row_a = tasks_a.get(task_id, ("", None, None))
        kind_b, state_b, row_b = tasks_b.get(task_id, ("", None, None))
        compared.append(
            TaskComparison(
                task_id,
                kind_a or kind_b,
                state_a,
                state_b,
                _delta(row_a, row_b, "duration_s"),
                _delta(row_a, row_b, "rows_in"),
                _delta(row_a, row_b, "rows_out"),
                _delta(row_a, row_b, "bytes_out"),
                _delta(row_a, row_b, "attempts"),
            )
        )
    return RunComparison(
        first,
        second,
        tuple(compared),
        Delta(first.duration_s, second.duration_s),
        Delta(first.cpu_s, second.cpu_s),
        Delta(first.peak_rss_bytes, second.peak_rss_bytes),
    )


def _find(catalog: CatalogReader, reference: str, label: str) -> RunRow:
    try:
        return catalog.run(reference)
    except StateError as exc:
        raise StateError(f"run {label}: {exc.message}", hint=exc.hint) from exc


def _delta(a: TaskRunRow | None, b: TaskRunRow | None, measure: str) -> Delta:
    """A measure of a task's row in A and in B (None where the run kept no row of it)."""
    first, second = (getattr(row, measure) if row is not None else None for row in (a, b))
    return Delta(first, second)


def _tasks(catalog: CatalogReader, run: RunRow) -> dict[str, tuple[str, str, TaskRunRow | None]]:
    """task -> (kind, state, its row) in the run's plan order: the tasks it ran, and those an
    earlier run's output stood for (REUSED, with no row when planning decided it)."""
    rows = {row.task_id: row for row in catalog.task_runs(run.run_id)}
    reused = catalog.reused(run.run_id)
    graph = catalog.monitor.run_graph(run.run_id) or []
    kinds = {task_id: kind for task_id, kind, _ in graph}
    order = [task_id for task_id, _, _ in graph if task_id in rows or task_id in reused]
    order += [t for t in (*reused, *rows) if t not in order]
    found: dict[str, tuple[str, str, TaskRunRow | None]] = {}
    for task_id in order:
        row = rows.get(task_id)
        if row is None:
            found[task_id] = (kinds.get(task_id, ""), REUSED, None)
        else:
            cached = row.output_run != row.run_id  # the cache found an output while it ran
            found[task_id] = (row.kind, REUSED if cached else row.state.value, row)
    return found


# -- repetitions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """One measure over repetitions."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    @property
    def relative(self) -> float | None:
        """(max - min) / median: 0.1 means the slowest repetition took 10% of the median more
        than the fastest. None when the median is 0."""
        median = self.median
        return (self.high - self.low) / median if median else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "relative_spread": self.relative,
            "values": list(self.values),
        }


def _spread(values: Sequence[float | int | None]) -> Spread | None:
    known = tuple(float(v) for v in values if v is not None)
    return Spread(known) if known else None


@dataclass(frozen=True)
class RepeatedTask:
    task_id: str
    kind: str
    ran: int
    """Repetitions in which it ran and succeeded: what its duration is measured over."""
    duration_s: Spread | None
    rows_out: tuple[int | None, ...]
    """Its rows out in each repetition it succeeded in, in order."""

    def to_dict(self) -> dict[str, Any]:
        duration = self.duration_s.to_dict() if self.duration_s else None
        return {
            "task_id": self.task_id,
            "kind": self.kind,
            "ran": self.ran,
            "duration_s": duration,
            "rows_out": list(self.rows_out),
        }


@dataclass(frozen=True)
class RepeatSummary:
    runs: tuple[RunRow, ...]
    tasks: tuple[RepeatedTask, ...]
    wall_s: Spread | None
    cpu_s: Spread | None
    peak_rss_bytes: Spread | None

    @property
    def failed(self) -> list[RunRow]:
        """The repetitions that did not succeed."""
        return [run for run in self.runs if run.state is not RunState.SUCCESS]

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.runs[0].pipeline if self.runs else None,
            "repetitions": len(self.runs),
            "runs": [_run_dict(run) for run in self.runs],
            "failed": [run.run_id for run in self.failed],
            "wall_s": self.wall_s.to_dict() if self.wall_s else None,
            "cpu_s": self.cpu_s.to_dict() if self.cpu_s else None,
            "peak_rss_bytes": self.peak_rss_bytes.to_dict() if self.peak_rss_bytes else None,
            "tasks": [t.to_dict() for t in self.tasks],
        }


def summarize_repeats(catalog: CatalogReader, run_ids: Sequence[str]) -> RepeatSummary:
    """The repetitions `run_ids` of one pipeline summed up: per task, the spread of its
    duration over the repetitions in which it ran and succeeded; per run, of the wall time,
    CPU time and peak memory of those that succeeded."""
    runs = tuple(catalog.run(run_id) for run_id in run_ids)
    succeeded: dict[str, list[TaskRunRow]] = {}
    kinds: dict[str, str] = {}
    for run in runs:
        for row in catalog.task_runs(run.run_id):
            kinds.setdefault(row.task_id, row.kind)
            if row.state is TaskState.SUCCESS and row.output_run == row.run_id:
                succeeded.setdefault(row.task_id, []).append(row)
    tasks = tuple(
        RepeatedTask(
            task_id,
            kind,
            len(rows := succeeded.get(task_id, [])),
            _spread([row.duration_s for row in rows]),
            tuple(row.rows_out for row in rows),
        )
        for task_id, kind in kinds.items()
    )
    ok = [run for run in runs if run.state is RunState.SUCCESS]
    return RepeatSummary(
        runs,
        tasks,
        _spread([run.duration_s for run in ok]),
        _spread([run.cpu_s for run in ok]),
        _spread([run.peak_rss_bytes for run in ok]),
    )

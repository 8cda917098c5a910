"""Orchestration overhead: 1,000 no-op tasks as a chain and as a fan-out.

arrowline runs the tasks through its real executor (state machine, catalog writes in SQLite,
staging folders, events) with a runner that does no work, so the whole run time is overhead:
overhead per task = executor wall time / tasks. The plain-loop contender calls a no-op function
per task in dependency order: the floor. Validation and planning of the same 1,000-task pipeline
are timed separately.

Child usage:
    python -m benchmarks.workloads.orchestration {arrowline,loop} --shape chain --tasks 1000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Contender, Outcome

GOAL_MS_PER_TASK = 2.0


def _spec_data(shape: str, tasks: int) -> dict[str, Any]:
    items: list[dict[str, Any]] = [{"id": "t0", "sql": "select 1 as x"}]
    for i in range(1, tasks):
        upstream = f"t{i - 1}" if shape == "chain" else "t0"
        items.append({"id": f"t{i}", "sql": "select 1 as x", "depends_on": [upstream]})
    return {"pipeline": f"noop_{shape}", "tasks": items}


def _arrowline(shape: str, tasks: int) -> dict[str, Any]:
    from engine.catalog import Catalog
    from engine.definition import Definition
    from engine.executor import ExecutionSettings, Executor
    from engine.planner import build_plan
    from engine.tasks import TaskContext, TaskOutcome
    from engine.validation import check_definition, structural_check

    def noop(context: TaskContext) -> TaskOutcome:
        return TaskOutcome(rows_in=0, rows_out=0, produces_output=False)

    with tempfile.TemporaryDirectory() as directory:
        project = Path(directory)
        started = time.perf_counter()
        spec, problems, ids = structural_check(_spec_data(shape, tasks), None, None)
        assert spec is not None
        assert not problems
        definition = Definition(spec, project, None, None, ids)
        assert not [p for p in check_definition(definition) if p.severity == "error"]
        plan = build_plan(definition)
        validate_plan_s = time.perf_counter() - started
        catalog = Catalog(project / ".arrowline" / "catalog.db")
        executor = Executor(
            plan, project, catalog=catalog, runner=noop, settings=ExecutionSettings(max_parallel=8)
        )
        started = time.perf_counter()
        result = executor.run()
        execute_s = time.perf_counter() - started
        transitions = len(catalog.transitions(plan.run_id))
        catalog.close()
    assert result.ok
    return {
        "validate_plan_s": validate_plan_s,
        "execute_s": execute_s,
        "ms_per_task": 1000 * execute_s / tasks,
        "transitions": transitions,
        "checksum": f"{tasks}-{shape}",
    }


def _loop(shape: str, tasks: int) -> dict[str, Any]:
    order = [f"t{i}" for i in range(tasks)]

    def noop() -> None:
        return None

    started = time.perf_counter()
    for _ in order:
        noop()
    execute_s = time.perf_counter() - started
    return {
        "validate_plan_s": 0.0,
        "execute_s": execute_s,
        "ms_per_task": 1000 * execute_s / tasks,
        "checksum": f"{tasks}-{shape}",
    }


def contenders(args: argparse.Namespace) -> list[Contender]:
    tasks = 100 if args.quick else 1000
    result = []
    for shape in ("chain", "fanout"):
        for name in ("arrowline", "loop"):
            argv = (
                sys.executable,
                "-m",
                "benchmarks.workloads.orchestration",
                name,
                "--shape",
                shape,
                "--tasks",
                str(tasks),
            )
            result.append(Contender(f"{name}/{shape}", argv, group=shape))
    return result


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    return {"tasks": 100 if args.quick else 1000}


def summarize(outcomes: list[Outcome], params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    rows = [
        "| contender | overhead per task (median, min–max) | validate + plan | peak RSS |",
        "|---|---|---|---|",
    ]
    summary: dict[str, Any] = {}
    for o in outcomes:
        if o.error or not o.samples:
            rows.append(f"| {o.contender} | {o.error or 'no samples'} | | |")
            continue
        low, high = o.spread("ms_per_task")
        median = o.median("ms_per_task")
        summary[o.contender] = {
            "ms_per_task": median,
            "validate_plan_s": o.median("validate_plan_s"),
            "peak_rss_mb": o.median("peak_rss_mb"),
        }
        verdict = ""
        if o.contender.startswith("arrowline"):
            verdict = " ✅ goal ≤ 2 ms" if median <= GOAL_MS_PER_TASK else " ❌ goal ≤ 2 ms"
        rows.append(
            f"| {o.contender} | {median:.3f} ms ({low:.3f}–{high:.3f}){verdict} | "
            f"{o.median('validate_plan_s'):.3f} s | {o.median('peak_rss_mb'):.0f} MB |"
        )
    return summary, "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("contender", choices=["arrowline", "loop"])
    parser.add_argument("--shape", choices=["chain", "fanout"], default="chain")
    parser.add_argument("--tasks", type=int, default=1000)
    args = parser.parse_args()
    run = _arrowline if args.contender == "arrowline" else _loop
    print("RESULT " + json.dumps(run(args.shape, args.tasks)))


if __name__ == "__main__":
    main()

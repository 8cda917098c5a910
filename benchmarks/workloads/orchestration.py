"""Orchestration overhead: 1,000 no-op tasks as a chain and as a fan-out, and a chain of 100
tasks that each work 10 ms.

arrowline runs the tasks through its real executor (state machine, catalog writes in SQLite,
staging folders, events); Dagster runs ops with its in-process executor; Prefect runs tasks on
its thread-pool task runner; the plain loop calls a function per task in dependency order (the
floor). Overhead per task = (execution wall time - work) / tasks, where work is the sleep the
10 ms tasks do (zero for no-ops). Validation and planning of arrowline's pipeline are timed
separately. Dagster and Prefect are optional (`arrowline[bench]`); missing ones are reported.

Child usage:
    python -m benchmarks.workloads.orchestration {arrowline,dagster,prefect,loop} \
        --shape {chain,fanout,work10ms} --tasks N
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


WORK_S = 0.010


def _upstream(shape: str, i: int) -> str:
    return "t0" if shape == "fanout" else f"t{i - 1}"


def _work(shape: str) -> None:
    if shape == "work10ms":
        time.sleep(WORK_S)


def _result(shape: str, tasks: int, execute_s: float, **extra: Any) -> dict[str, Any]:
    work = WORK_S * tasks if shape == "work10ms" else 0.0
    return {
        "execute_s": execute_s,
        "ms_per_task": 1000 * (execute_s - work) / tasks,
        "checksum": f"{tasks}-{shape}",
        **extra,
    }


def _spec_data(shape: str, tasks: int) -> dict[str, Any]:
    items: list[dict[str, Any]] = [{"id": "t0", "sql": "select 1 as x"}]
    for i in range(1, tasks):
        items.append({"id": f"t{i}", "sql": "select 1 as x", "depends_on": [_upstream(shape, i)]})
    return {"pipeline": f"noop_{shape}", "tasks": items}


def _arrowline(shape: str, tasks: int) -> dict[str, Any]:
    from engine.execution.executor import ExecutionSettings, Executor
    from engine.planning.build import build_plan
    from engine.spec.definition import Definition
    from engine.state.catalog import Catalog
    from engine.tasks import TaskContext, TaskOutcome
    from engine.tasks.checks import check_definition, structural_check

    def noop(context: TaskContext) -> TaskOutcome:
        _work(shape)
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
    return _result(
        shape, tasks, execute_s, validate_plan_s=validate_plan_s, transitions=transitions
    )


def _loop(shape: str, tasks: int) -> dict[str, Any]:
    order = [f"t{i}" for i in range(tasks)]

    def noop() -> None:
        _work(shape)

    started = time.perf_counter()
    for _ in order:
        noop()
    execute_s = time.perf_counter() - started
    return _result(shape, tasks, execute_s, validate_plan_s=0.0)


def _dagster(shape: str, tasks: int) -> dict[str, Any]:
    import os

    import dagster as dg

    os.environ.setdefault("DAGSTER_HOME", tempfile.mkdtemp())

    def make(i: int) -> dg.OpDefinition:
        ins = {"after": dg.In(dg.Nothing)} if i else {}

        @dg.op(name=f"t{i}", ins=ins)
        def body() -> None:
            _work(shape)

        return body

    ops = [make(i) for i in range(tasks)]
    dependencies = {
        f"t{i}": {"after": dg.DependencyDefinition(_upstream(shape, i))} for i in range(1, tasks)
    }
    graph = dg.GraphDefinition(name=f"noop_{shape}", node_defs=ops, dependencies=dependencies)
    job = graph.to_job(executor_def=dg.in_process_executor)
    started = time.perf_counter()
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral())
    execute_s = time.perf_counter() - started
    assert result.success
    return _result(shape, tasks, execute_s, validate_plan_s=0.0)


def _prefect(shape: str, tasks: int) -> dict[str, Any]:
    import os

    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp())
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner

    @task
    def body() -> None:
        _work(shape)

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=8))  # type: ignore[arg-type]
    def pipeline() -> None:
        first = body.submit()
        futures = [first]
        previous = first
        for _ in range(1, tasks):
            upstream = first if shape == "fanout" else previous
            previous = body.submit(wait_for=[upstream])
            futures.append(previous)
        for future in futures:
            future.result()

    @flow
    def warm_up() -> None:
        body.submit().result()

    warm_up()  # starts Prefect's ephemeral API server, which is not the per-task overhead
    started = time.perf_counter()
    pipeline()
    execute_s = time.perf_counter() - started
    return _result(shape, tasks, execute_s, validate_plan_s=0.0)


CONTENDERS = ("arrowline", "dagster", "prefect", "loop")


def contenders(args: argparse.Namespace) -> list[Contender]:
    tasks = 100 if args.quick else 1000
    result = []
    for shape, count in (("chain", tasks), ("fanout", tasks), ("work10ms", tasks // 10)):
        for name in CONTENDERS:
            argv = (
                sys.executable,
                "-m",
                "benchmarks.workloads.orchestration",
                name,
                "--shape",
                shape,
                "--tasks",
                str(count),
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
        shape = o.contender.split("/")[1]
        ours = next((x for x in outcomes if x.contender == f"arrowline/{shape}"), None)
        if o.contender.split("/")[0] in ("dagster", "prefect") and ours and ours.samples:
            ratio = median / max(ours.median("ms_per_task"), 1e-9)
            summary[o.contender]["times_arrowline"] = ratio
            verdict = f" ({ratio:.0f}x arrowline's; goal ≥ 10x {'✅' if ratio >= 10 else '❌'})"
        rows.append(
            f"| {o.contender} | {median:.3f} ms ({low:.3f}–{high:.3f}){verdict} | "
            f"{o.median('validate_plan_s'):.3f} s | {o.median('peak_rss_mb'):.0f} MB |"
        )
    return summary, "\n".join(rows)


def main() -> None:
    import importlib.util

    parser = argparse.ArgumentParser()
    parser.add_argument("contender", choices=CONTENDERS)
    parser.add_argument("--shape", choices=["chain", "fanout", "work10ms"], default="chain")
    parser.add_argument("--tasks", type=int, default=1000)
    args = parser.parse_args()
    if args.contender in ("dagster", "prefect") and not importlib.util.find_spec(args.contender):
        sys.exit(f"{args.contender} is not installed: pip install 'arrowline[bench]'")
    run = {"arrowline": _arrowline, "dagster": _dagster, "prefect": _prefect, "loop": _loop}[
        args.contender
    ]
    print("RESULT " + json.dumps(run(args.shape, args.tasks)))


if __name__ == "__main__":
    main()

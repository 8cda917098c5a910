"""The Ray executor (`executor: ray`) on a local cluster this workload starts: a head with no
CPUs of its own and one or two worker nodes of one CPU each, all on this machine, with the
workspace on a moto S3 server on loopback (Ray needs an object-store workspace).

- `cpu`: 8 independent CPU-bound SQL tasks (DuckDB hashing N rows each, one thread per attempt
  as its one CPU says) and a PostgreSQL extract partitioned in 4 ranges (each a Ray task of its
  own, all reading one snapshot; the table of pg_extract, N/100 rows, from
  $ARROWLINE_BENCH_PG_URI), on one node and on two: the goal is ≥ 1.7x from the second node.
- `tiny`: 40 one-row tasks in a chain, on Ray (one node) and on the local executor with the same
  workspace, one task at a time, each run twice in one process: the first run (a fresh driver,
  as `arrowline run` starts one) and the second (as the scheduler's runs after its first: Ray's
  worker processes of the driver's job have imported arrowline already). The difference per
  task is Ray's overhead (goal ≤ 20 ms), told for each run.

The cluster and the S3 server start before the clock; engine time is the run alone. Each
contender reports a checksum of its outputs, so the harness refuses one that computed something
else.

Child usage: python -m benchmarks.workloads.ray {cpu_1,cpu_2,tiny_ray,tiny_local} --data N
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Contender, Outcome
from benchmarks.workloads._child import child_main, engine_table
from benchmarks.workloads.objectstore import moto_store
from benchmarks.workloads.pg_extract import URI as PG_URI
from benchmarks.workloads.pg_extract import ensure_table, table_name

CPU_TASKS = 8
TINY_TASKS = 40


def _cluster(nodes: int) -> Any:
    from ray.cluster_utils import Cluster

    os.environ["RAY_AUTH_MODE"] = "disabled"
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    for _ in range(nodes):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    import ray

    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    return cluster


def _pipeline(out: Path, tasks: list[dict[str, Any]], endpoint: str, executor: str) -> Path:
    import yaml

    document: dict[str, Any] = {
        "pipeline": "ray_bench",
        "workspace": f"s3://bench/ws?endpoint={endpoint}",
        "executor": executor,
        "tasks": tasks,
    }
    if any("extract" in task for task in tasks):
        document["connections"] = {"pg": {"kind": "postgres", "uri": PG_URI}}
    path = out / "pipeline.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _checksum(result: Any) -> str:
    import duckdb

    from engine.state.objectstore import ensure_local

    total = 0
    for task_id in sorted(result.tasks):
        output = result.tasks[task_id].output
        files = ", ".join(f"'{f}'" for f in ensure_local(output).files)
        summed = "id" if task_id == "orders" else "s"
        (row,) = duckdb.sql(f"select sum({summed}) from read_parquet([{files}])").fetchall()
        total += int(row[0]) if row and row[0] is not None else 0
    return str(total)


def _tasks(rows: int, tiny: bool) -> list[dict[str, Any]]:
    if tiny:
        chain = [
            {"id": f"t{k}", "sql": f"select s + 1 as s from t{k - 1}"} for k in range(1, TINY_TASKS)
        ]
        return [{"id": "t0", "sql": "select 1 as s"}, *chain]
    extract = {
        "id": "orders",
        "extract": {
            "from": "postgres",
            "connection": "pg",
            "table": table_name(max(1, rows // 100)),
            "partition": {"column": "id", "count": 4},
        },
    }
    hashing = [
        {
            "id": f"h{k}",
            "sql": f"select sum(hash(i + {k}) % 997) as s from range({rows}) t(i)",
            "resources": {"cpu": 1},
        }
        for k in range(CPU_TASKS)
    ]
    return [extract, *hashing]


def _run(out: Path, rows: int, *, nodes: int, tiny: bool) -> dict[str, Any]:
    """A `cpu` contender times one run; a `tiny` one times two in one process, the first
    (`engine_s`) and the second (`second_run_s`), whose checksums must agree."""
    from engine.api.pipeline import run

    with moto_store(out) as endpoint:
        cluster = _cluster(nodes) if nodes else None
        try:
            path = _pipeline(out, _tasks(rows, tiny), endpoint, "ray" if nodes else "local")
            timed: list[float] = []
            sums: set[str] = set()
            for _ in range(2 if tiny else 1):
                started = time.perf_counter()
                result = run(path, project_dir=out, max_parallel=None if nodes else 1)
                timed.append(time.perf_counter() - started)
                assert result.ok, {k: t.error for k, t in result.tasks.items() if t.error}
                sums.add(_checksum(result))
            assert len(sums) == 1, sums
            return {"engine_s": timed[0], "second_run_s": timed[-1], "checksum": sums.pop()}
        finally:
            if cluster is not None:
                import ray

                ray.shutdown()
                cluster.shutdown()


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    rows = 200_000 if args.quick else (args.rows or 200_000_000)
    ensure_table(max(1, rows // 100))
    return {"rows": rows, "cpu_tasks": CPU_TASKS, "tiny_tasks": TINY_TASKS}


def contenders(args: argparse.Namespace) -> list[Contender]:
    params = prepare(args)
    module = (sys.executable, "-m", "benchmarks.workloads.ray")
    rows = str(params["rows"])
    return [
        Contender("ray/cpu, 1 node", (*module, "cpu_1", "--data", rows), group="cpu"),
        Contender("ray/cpu, 2 nodes", (*module, "cpu_2", "--data", rows), group="cpu"),
        Contender("ray/tiny, 1 node", (*module, "tiny_ray", "--data", rows), group="tiny"),
        Contender("local/tiny, 1 thread", (*module, "tiny_local", "--data", rows), group="tiny"),
    ]


def summarize(outcomes: list[Outcome], params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    summary, rows = engine_table(outcomes)
    one, two = summary.get("ray/cpu, 1 node"), summary.get("ray/cpu, 2 nodes")
    if one and two:
        speedup = one["engine_s"] / two["engine_s"]
        summary["two_nodes_speedup"] = speedup
        verdict = "✅" if speedup >= 1.7 else "❌"
        rows.append(f"\nsecond node: {speedup:.2f}x faster (goal ≥ 1.7x {verdict})")
    by_name = {o.contender: o for o in outcomes if o.samples and not o.error}
    remote, local = by_name.get("ray/tiny, 1 node"), by_name.get("local/tiny, 1 thread")
    overheads = (
        ("engine_s", "", "Ray's overhead per task, a first run (a fresh driver)"),
        (
            "second_run_s",
            "_warm",
            "the same, a second run in one driver (a scheduler's process; Ray's worker "
            "processes have imported arrowline)",
        ),
    )
    for key, suffix, said in overheads:
        if remote is None or local is None:
            break
        overhead = (remote.median(key) - local.median(key)) / params["tiny_tasks"] * 1000
        summary[f"ray_overhead_ms_per_task{suffix}"] = overhead
        verdict = "✅" if overhead <= 20 else "❌"
        rows.append(f"\n{said}: {overhead:.1f} ms (goal ≤ 20 ms {verdict})")
    return summary, "\n".join(rows)


def main() -> None:
    def runner(**how: Any) -> Any:
        return lambda data, out: _run(out, int(str(data)), **how)

    child_main(
        {
            "cpu_1": runner(nodes=1, tiny=False),
            "cpu_2": runner(nodes=2, tiny=False),
            "tiny_ray": runner(nodes=1, tiny=True),
            "tiny_local": runner(nodes=0, tiny=True),
        },
        needs=dict.fromkeys(
            ("cpu_1", "cpu_2", "tiny_ray", "tiny_local"),
            "ray moto",
        ),
    )


if __name__ == "__main__":
    main()

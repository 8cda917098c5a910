"""Scheduler overhead: how late a due run starts, and what an idle scheduler costs.

- `arrowline/latency`: one pipeline due every second (`* * * * * *`, a no-op SQL task), the real
  scheduler at a 1 s tick for a while; per interval, the delay from its due time to its first
  task starting (from the catalog's timestamps). Goal: under 1 s.
- `arrowline/idle100`: 100 pipelines scheduled daily (none due), the real scheduler at a 1 s
  tick; the process's CPU time over the wall time it served. Goal: under 1% of a core.

Child usage:
    python -m benchmarks.workloads.scheduler {latency,idle100} --seconds S
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.harness import Contender, Outcome

GOAL_DELAY_S = 1.0
GOAL_IDLE_CPU = 0.01


def _serve(project: Path, seconds: float) -> tuple[float, float]:
    """Run the scheduler for `seconds`; (wall seconds, CPU seconds of this process) meanwhile."""
    from engine.logs import configure_logging
    from engine.scheduler import Scheduler, SchedulerSettings

    configure_logging("text", "WARNING")
    scheduler = Scheduler(project, SchedulerSettings(tick=1.0))
    marks: list[tuple[float, resource.struct_rusage]] = []

    def first_tick() -> None:  # start measuring once the pipelines are loaded and registered
        if not marks:
            marks.append((time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)))
            threading.Timer(seconds, scheduler.stop).start()

    scheduler.serve(install_signals=False, on_tick=first_tick)
    wall = time.perf_counter() - marks[0][0]
    before, after = marks[0][1], resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _latency(seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        (project / "every_second.yaml").write_text(
            'pipeline: every_second\nschedule: "* * * * * *"\n'
            "tasks:\n  - id: t\n    sql: select 1 as x\n",
            encoding="utf-8",
        )
        _serve(project, seconds)
        connection = sqlite3.connect(project / ".arrowline" / "catalog.db")
        rows = connection.execute(
            "select i.fire_at, min(t.started_at) from intervals i join task_runs t using (run_id) "
            "where i.state = 'started' group by i.fire_at order by i.fire_at"
        ).fetchall()
        skipped = connection.execute(
            "select count(*) from intervals where state = 'skipped'"
        ).fetchone()[0]
        connection.close()
    delays = [
        (datetime.fromisoformat(started) - datetime.fromisoformat(fire)).total_seconds()
        for fire, started in rows
    ]
    if not delays:
        raise SystemExit("no scheduled run started")
    ordered = sorted(delays)
    return {
        "median_delay_s": statistics.median(delays),
        "p95_delay_s": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max_delay_s": ordered[-1],
        "runs": len(delays),
        "skipped": skipped,
        "checksum": "latency",
    }


def _idle(seconds: float, pipelines: int = 100) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        for i in range(pipelines):
            (project / f"p{i:03d}.yaml").write_text(
                f'pipeline: p{i:03d}\nschedule: "{i % 60} 3 * * *"\ntimezone: Europe/Berlin\n'
                "tasks:\n  - id: t\n    sql: select 1 as x\n",
                encoding="utf-8",
            )
        wall, cpu = _serve(project, seconds)  # measured from the end of the first tick
    return {"cpu_fraction": cpu / wall, "pipelines": pipelines, "checksum": "idle"}


CONTENDERS = ("latency", "idle100")


def contenders(args: argparse.Namespace) -> list[Contender]:
    seconds = "6" if args.quick else "30"
    return [
        Contender(
            f"arrowline/{name}",
            (sys.executable, "-m", "benchmarks.workloads.scheduler", name, "--seconds", seconds),
            group=name,
        )
        for name in CONTENDERS
    ]


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    return {"seconds": 6 if args.quick else 30}


def summarize(outcomes: list[Outcome], params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    rows = ["| measure | median over repeats (min–max) | goal |", "|---|---|---|"]
    summary: dict[str, Any] = {}
    for o in outcomes:
        if o.error or not o.samples:
            rows.append(f"| {o.contender} | {o.error or 'no samples'} | |")
            continue
        if o.contender.endswith("latency"):
            median, (low, high) = o.median("median_delay_s"), o.spread("median_delay_s")
            worst = o.median("max_delay_s")
            summary[o.contender] = {"median_delay_s": median, "max_delay_s": worst}
            verdict = "✅" if worst < GOAL_DELAY_S else "❌"
            rows.append(
                f"| due → first task start, 1 s tick ({o.median('runs'):.0f} runs per repeat) | "
                f"median {median * 1000:.0f} ms ({low * 1000:.0f}–{high * 1000:.0f}), "
                f"worst {worst * 1000:.0f} ms | < 1 s {verdict} |"
            )
        else:
            cpu, (low, high) = o.median("cpu_fraction"), o.spread("cpu_fraction")
            summary[o.contender] = {"cpu_fraction": cpu}
            verdict = "✅" if cpu < GOAL_IDLE_CPU else "❌"
            rows.append(
                f"| idle CPU, 100 scheduled pipelines, 1 s tick | {cpu:.2%} of a core "
                f"({low:.2%}–{high:.2%}) | < 1% {verdict} |"
            )
    return summary, "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("contender", choices=CONTENDERS)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    result = _latency(args.seconds) if args.contender == "latency" else _idle(args.seconds)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()

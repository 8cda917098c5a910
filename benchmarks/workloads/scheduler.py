"""Scheduler overhead: how late a due run starts, and what an idle scheduler costs.

- `arrowline/latency`: one pipeline due every second (`* * * * * *`, a no-op SQL task), the real
  scheduler at a 1 s tick for a while; per interval, the delay from its due time to its first
  task starting (from the catalog's timestamps). Goal: under 1 s.
- `arrowline/idle100`: 100 pipelines scheduled daily (none due), the real scheduler at a 1 s
  tick; the process's CPU time over the wall time it served. Goal: under 1% of a core.
- `arrowline/latency-pg`, `arrowline/idle100-pg`: the same with the catalog shared in
  PostgreSQL (ARROWLINE_CATALOG, a schema of its own), as scheduler replicas run it: every
  catalog write is a round trip, and the leader checks its lease on every tick.

Child usage:
    python -m benchmarks.workloads.scheduler {latency,idle100} --seconds S [--catalog postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.harness import Contender, Outcome
from engine.state.catalog import CatalogReader
from engine.state.db import CATALOG_ENV, catalog_location

GOAL_DELAY_S = 1.0
GOAL_IDLE_CPU = 0.01
QUICK_SECONDS = 4
"""A quick run serves long enough for a few due runs at the 1 s tick; it proves the harness."""


def _serve(project: Path, seconds: float) -> tuple[float, float]:
    """Run the scheduler for `seconds`; (wall seconds, CPU seconds of this process) meanwhile."""
    from engine.cli.logs import configure_logging
    from engine.scheduling.scheduler import Scheduler, SchedulerSettings

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


def _first_start(catalog: CatalogReader, run_id: str | None) -> str | None:
    """When the first task of a run started, or None before any did."""
    started = [t.started_at for t in catalog.task_runs(run_id)] if run_id else []
    return min((at for at in started if at), default=None)


def _latency(seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        (project / "every_second.yaml").write_text(
            'pipeline: every_second\nschedule: "* * * * * *"\n'
            "tasks:\n  - id: t\n    sql: select 1 as x\n",
            encoding="utf-8",
        )
        _serve(project, seconds)
        with CatalogReader(catalog_location(project)) as catalog:
            firsts = [  # (fire time, when its run's first task started)
                (interval.fire_at, first)
                for interval in catalog.intervals("every_second", "started")
                if (first := _first_start(catalog, interval.run_id))
            ]
            skipped = len(catalog.intervals("every_second", "skipped"))
    delays = [
        (datetime.fromisoformat(first) - datetime.fromisoformat(fire)).total_seconds()
        for fire, first in firsts
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
    seconds = str(QUICK_SECONDS) if args.quick else "30"
    module = (sys.executable, "-m", "benchmarks.workloads.scheduler")
    return [
        Contender(
            f"arrowline/{name}{suffix}",
            (*module, name, "--seconds", seconds, "--catalog", catalog),
            group=name,
        )
        for name in CONTENDERS
        for catalog, suffix in (("embedded", ""), ("postgres", "-pg"))
    ]


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    return {"seconds": QUICK_SECONDS if args.quick else 30}


def summarize(outcomes: list[Outcome], params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    rows = ["| measure | median over repeats (min–max) | goal |", "|---|---|---|"]
    summary: dict[str, Any] = {}
    for o in outcomes:
        if o.error or not o.samples:
            rows.append(f"| {o.contender} | {o.error or 'no samples'} | |")
            continue
        where = "shared PostgreSQL catalog" if o.contender.endswith("-pg") else "embedded catalog"
        if "latency" in o.contender:
            median, (low, high) = o.median("median_delay_s"), o.spread("median_delay_s")
            worst = o.median("max_delay_s")
            summary[o.contender] = {"median_delay_s": median, "max_delay_s": worst}
            verdict = "✅" if worst < GOAL_DELAY_S else "❌"
            rows.append(
                f"| due → first task start, 1 s tick, {where} "
                f"({o.median('runs'):.0f} runs per repeat) | "
                f"median {median * 1000:.0f} ms ({low * 1000:.0f}–{high * 1000:.0f}), "
                f"worst {worst * 1000:.0f} ms | < 1 s {verdict} |"
            )
        else:
            cpu, (low, high) = o.median("cpu_fraction"), o.spread("cpu_fraction")
            summary[o.contender] = {"cpu_fraction": cpu}
            verdict = "✅" if cpu < GOAL_IDLE_CPU else "❌"
            rows.append(
                f"| idle CPU, 100 scheduled pipelines, 1 s tick, {where} | {cpu:.2%} of a core "
                f"({low:.2%}–{high:.2%}) | < 1% {verdict} |"
            )
    return summary, "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("contender", choices=CONTENDERS)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--catalog", choices=("embedded", "postgres"), default="embedded")
    args = parser.parse_args()
    with _catalog(args.catalog):
        result = _latency(args.seconds) if args.contender == "latency" else _idle(args.seconds)
    print("RESULT " + json.dumps(result))


@contextmanager
def _catalog(kind: str) -> Iterator[None]:
    """The embedded catalog, or a fresh schema on the benchmark server named by
    ARROWLINE_CATALOG (dropped afterwards)."""
    if kind == "embedded":
        os.environ.pop(CATALOG_ENV, None)
        yield
        return
    import psycopg  # the catalog's own driver: nothing else is loaded to clean up

    from benchmarks.workloads.pg_extract import URI

    schema = f"arrowline_bench_catalog_{os.getpid()}"
    os.environ[CATALOG_ENV] = f"{URI}?schema={schema}"
    try:
        yield
    finally:
        with psycopg.connect(URI, autocommit=True) as connection:
            connection.execute(f"drop schema if exists {schema} cascade".encode())


if __name__ == "__main__":
    main()

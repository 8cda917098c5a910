"""The web monitor's speed where peers' monitors slow down: big graphs and long histories.

Each contender starts the real monitor (uvicorn on loopback, in the process) over a prepared
project and times whole HTTP requests from a client in the same process (httpx), the first
(cold) request and the median of the rest:

- `arrowline/dag5000`: a 5,000-task pipeline that ran once: its pipeline page (the DAG laid out
  and drawn on the server with the run's states), its run page (DAG, Gantt of 5,000 tasks, task
  table), and the page drawn as the file defines it now (first view plans the pipeline; later
  views use the drawing kept for the file). Goal: the DAG page in < 1 s.
- `arrowline/runs100k`, `arrowline/runs100k-pg`: a catalog of 100,000 runs over 20 pipelines
  (embedded SQLite; the same catalog copied into PostgreSQL with `catalog copy`): time to the
  first byte of the runs list, filtered lists, a page deep in the history and the overview.
  Goal: first byte < 300 ms.
- `arrowline/live`: a running run's page: from a task's transition in the catalog to the
  server-sent event reaching the client. Goal: < 1 s.
- `arrowline/export1000`: `arrowline ui export` of a 1,000-task run. Goal: < 5 MB.

The catalogs are built once through the catalog's own API (engine.state.catalog: runs created
and moved through their states as the executor does, with each run's graph) and kept under
benchmarks/.data/ui; no pipeline of 5,000 tasks is executed for them.

Child usage: python -m benchmarks.workloads.ui {dag5000,runs100k,live,export1000}
    [--catalog embedded|postgres] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.harness import Contender, Outcome

DATA = Path(__file__).resolve().parents[1] / ".data" / "ui"
GOAL_DAG_S, GOAL_FIRST_BYTE_S, GOAL_LIVE_S, GOAL_EXPORT_MB = 1.0, 0.3, 1.0, 5.0
REQUESTS = 7


def _pipeline_yaml(tasks: int, seed: int = 3) -> str:
    rng = random.Random(seed)
    lines = ["pipeline: big", "tasks:", "  - id: t0", "    sql: select 1 as id"]
    for i in range(1, tasks):
        ups = sorted({rng.randint(max(0, i - 200), i - 1) for _ in range(rng.randint(1, 3))})
        union = " union all ".join(f"select * from t{u}" for u in ups)
        lines += [f"  - id: t{i}", f"    sql: select * from ({union}) limit 1"]
    return "\n".join(lines) + "\n"


def _graph(text: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """(task, kind, upstream) of a generated pipeline, read back from its SQL."""
    graph: list[tuple[str, str, tuple[str, ...]]] = []
    task = ""
    for line in text.splitlines():
        if line.startswith("  - id: "):
            task = line.split(": ", 1)[1]
        elif line.startswith("    sql: "):
            ups = tuple(
                word for word in line.split() if word.startswith("t") and word[1:].isdigit()
            )
            graph.append((task, "sql", tuple(dict.fromkeys(ups))))
    return graph


def _record_run(catalog: Any, run_id: str, pipeline: str, graph: list[Any], at: datetime) -> None:
    """One finished run of `graph`, moved through its states as the executor moves it."""
    from engine.core.states import RunState, TaskState

    levels: dict[str, int] = {}
    for task, _, ups in graph:
        levels[task] = 1 + max((levels[u] for u in ups), default=-1)
    tasks = [(task, kind, levels[task], "fp") for task, kind, _ in graph]
    catalog.create_run(
        run_id,
        pipeline,
        "v1",
        f"{pipeline}.yaml",
        {},
        at.isoformat(),
        None,
        tasks,
        {},
        graph=graph,
    )
    catalog.transition_run(run_id, RunState.RUNNING, "started")
    for task, _, _ in graph:
        catalog.transition_task(run_id, task, TaskState.QUEUED, "ready")
        catalog.transition_task(run_id, task, TaskState.RUNNING, "attempt 1", attempt=1)
        catalog.transition_task(
            run_id,
            task,
            TaskState.SUCCESS,
            "succeeded",
            attempt=1,
            fields={"rows_in": 1, "rows_out": 1, "duration_s": 0.01, "bytes_out": 600},
        )
    catalog.transition_run(run_id, RunState.SUCCESS, "finished")


def _big_project(tasks: int) -> Path:
    """A project whose pipeline `big` of `tasks` SQL tasks ran once (kept under DATA)."""
    from engine.state.catalog import Catalog, catalog_location

    folder = DATA / f"dag{tasks}"
    if (folder / ".arrowline" / "catalog.db").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    text = _pipeline_yaml(tasks)
    (folder / "big.yaml").write_text(text, encoding="utf-8")
    with Catalog(catalog_location(folder)) as catalog:
        _record_run(catalog, "20241102T030000Z-big000", "big", _graph(text), datetime.now(UTC))
    return folder


def _history_project(runs: int) -> Path:
    """A project with `runs` one-task runs over 20 pipelines, a tenth of them failed."""
    from engine.core.states import RunState, TaskState
    from engine.state.catalog import Catalog, catalog_location

    folder = DATA / f"runs{runs}"
    if (folder / ".arrowline" / "catalog.db").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for p in range(20):
        (folder / f"p{p:02d}.yaml").write_text(
            f"pipeline: p{p:02d}\ntasks:\n  - id: t\n    sql: select 1 as x\n", encoding="utf-8"
        )
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with Catalog(catalog_location(folder)) as catalog:
        for i in range(runs):
            run_id = f"{(start + timedelta(minutes=i)):%Y%m%dT%H%M%SZ}-{i:06x}"
            catalog.create_run(
                run_id,
                f"p{i % 20:02d}",
                "v1",
                None,
                {},
                start.isoformat(),
                None,
                [("t", "sql", 0, "fp")],
                {},
                graph=[("t", "sql", ())],
            )
            failed = i % 10 == 0
            catalog.transition_run(run_id, RunState.RUNNING, "started")
            catalog.transition_task(run_id, "t", TaskState.QUEUED, "ready")
            catalog.transition_task(run_id, "t", TaskState.RUNNING, "attempt 1", attempt=1)
            catalog.transition_task(
                run_id,
                "t",
                TaskState.FAILED if failed else TaskState.SUCCESS,
                "ended",
                attempt=1,
                error="boom" if failed else None,
            )
            catalog.transition_run(
                run_id,
                RunState.FAILED if failed else RunState.SUCCESS,
                "finished",
                error="task t failed" if failed else None,
            )
    return folder


@dataclass
class _Served:
    url: str
    client: Any
    form_token: str


@contextmanager
def _served(project: Path) -> Iterator[_Served]:
    import httpx

    from engine.ui.background import monitor_thread

    with (
        monitor_thread(project) as running,
        httpx.Client(base_url=running.url, timeout=120) as client,
    ):
        yield _Served(running.url, client, running.guard.form_token())


def _timed(client: Any, path: str, first_byte: bool = False) -> float:
    start = time.perf_counter()
    with client.stream("GET", path) as response:
        if response.status_code != 200:
            raise SystemExit(f"GET {path} answered {response.status_code}")
        chunks = response.iter_raw()
        next(chunks)
        if first_byte:
            return time.perf_counter() - start
        for _ in chunks:
            pass
    return time.perf_counter() - start


def _series(client: Any, path: str, first_byte: bool = False) -> dict[str, float]:
    times = [_timed(client, path, first_byte) for _ in range(REQUESTS)]
    return {"first": times[0], "median": statistics.median(times[1:])}


def _dag(tasks: int) -> dict[str, Any]:
    project = _big_project(tasks)
    os.chdir(project)
    with _served(project) as monitor:
        client = monitor.client
        result = {
            "pipeline_page": _series(client, "/pipelines/big"),
            "run_page": _series(client, "/runs/20241102T030000Z-big000"),
            "as_defined": _series(client, "/pipelines/big?as=defined"),
            "page_mb": len(client.get("/pipelines/big").content) / 1e6,
        }
    return result | {"checksum": f"dag{tasks}"}


def _history(runs: int, catalog: str) -> dict[str, Any]:
    project = _history_project(runs)
    os.chdir(project)
    with _catalog(project, catalog), _served(project) as monitor:
        client = monitor.client
        deep = client.get("/runs").text  # follow the "older runs" link 20 pages down
        for _ in range(20):
            marker = 'rel="next" href="'
            deep_path = deep.split(marker, 1)[1].split('"', 1)[0].replace("&amp;", "&")
            deep = client.get(deep_path).text
        result = {
            "runs": _series(client, "/runs", first_byte=True),
            "runs_of_pipeline": _series(client, "/runs?pipeline=p07", first_byte=True),
            "failed_runs": _series(client, "/runs?state=FAILED", first_byte=True),
            "page_21": _series(client, deep_path, first_byte=True),
            "overview": _series(client, "/", first_byte=True),
        }
    return result | {"checksum": f"runs{runs}"}


@contextmanager
def _catalog(project: Path, kind: str) -> Iterator[None]:
    """The project's embedded catalog, or a copy of it in a fresh PostgreSQL schema."""
    from engine.state.db import CATALOG_ENV

    if kind == "embedded":
        os.environ.pop(CATALOG_ENV, None)
        yield
        return
    import psycopg

    from benchmarks.workloads.pg_extract import URI
    from engine.state.copy import copy_catalog
    from engine.state.db import catalog_location

    schema = f"arrowline_bench_ui_{os.getpid()}"
    target = catalog_location(project, f"{URI}?schema={schema}")
    copy_catalog(catalog_location(project), target)
    os.environ[CATALOG_ENV] = f"{URI}?schema={schema}"
    try:
        yield
    finally:
        os.environ.pop(CATALOG_ENV, None)
        with psycopg.connect(URI, autocommit=True) as connection:
            connection.execute(f"drop schema if exists {schema} cascade".encode())


SLOW_CHAIN = """
pipeline: chain
tasks:
  - id: a
    udf: {input: src, function: "udfs.py:slow", args: {seconds: 0.4}}
  - id: src
    sql: select range as id from range(10)
  - id: b
    udf: {input: a, function: "udfs.py:slow", args: {seconds: 0.4}}
  - id: c
    udf: {input: b, function: "udfs.py:slow", args: {seconds: 0.4}}
  - id: d
    udf: {input: c, function: "udfs.py:slow", args: {seconds: 0.4}}
"""


SLEEP_UDF = """
import time

def slow(frame, seconds: float = 0.0):
    time.sleep(seconds)
    return frame
"""


def _live() -> dict[str, Any]:
    """Trigger a run of a chain of slow tasks; for each event the page's stream delivers, the
    time since the newest transition the catalog holds at that moment."""
    import httpx

    from engine.state.catalog import CatalogReader, catalog_location

    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        os.chdir(project)
        (project / "chain.yaml").write_text(SLOW_CHAIN, encoding="utf-8")
        (project / "udfs.py").write_text(SLEEP_UDF, encoding="utf-8")
        subprocess.run(  # a first run creates the catalog and warms the imports
            [sys.executable, "-m", "engine", "run", "chain.yaml", "--no-progress"],
            check=True,
            capture_output=True,
        )
        delays: list[float] = []
        with _served(project) as monitor:
            started = monitor.client.post(
                "/pipelines/chain/trigger", data={"csrf": monitor.form_token}
            )
            run_id = started.headers["location"].rsplit("/", 1)[1]
            with httpx.stream("GET", f"{monitor.url}/runs/{run_id}/events", timeout=60) as events:
                for line in events.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    received = datetime.now(UTC)
                    if line.strip() == "data: {}":
                        break
                    with CatalogReader(catalog_location(project)) as catalog:
                        newest = max(t.at for t in catalog.transitions(run_id))
                    delays.append((received - datetime.fromisoformat(newest)).total_seconds())
        os.chdir("/")
    if len(delays) < 4:
        raise SystemExit(f"only {len(delays)} live events arrived")
    return {
        "median_s": statistics.median(delays[1:]),  # the first is the page's initial state
        "max_s": max(delays[1:]),
        "events": len(delays),
        "checksum": "live",
    }


def _export(tasks: int) -> dict[str, Any]:
    project = _big_project(tasks)
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.html"
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "engine",
                "ui",
                "export",
                "big",
                "--run",
                "last",
                "-o",
                str(report),
                "--project-dir",
                str(project),
            ],
            check=True,
            capture_output=True,
        )
        seconds = time.perf_counter() - start
        size = report.stat().st_size
    return {"mb": size / 1e6, "seconds": seconds, "checksum": f"export{tasks}"}


CONTENDERS = ("dag5000", "runs100k", "live", "export1000")


def contenders(args: argparse.Namespace) -> list[Contender]:
    module = (sys.executable, "-m", "benchmarks.workloads.ui")
    quick = ("--quick",) if args.quick else ()
    return [
        Contender("arrowline/dag5000", (*module, "dag5000", *quick), group="dag"),
        Contender("arrowline/runs100k", (*module, "runs100k", *quick), group="runs"),
        Contender(
            "arrowline/runs100k-pg",
            (*module, "runs100k", "--catalog", "postgres", *quick),
            group="runs",
        ),
        Contender("arrowline/live", (*module, "live"), group="live"),
        Contender("arrowline/export1000", (*module, "export1000", *quick), group="export"),
    ]


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    DATA.mkdir(parents=True, exist_ok=True)
    tasks, runs, exported = (500, 5_000, 200) if args.quick else (5_000, 100_000, 1_000)
    _big_project(tasks)
    _big_project(exported)
    _history_project(runs)
    return {"tasks": tasks, "runs": runs, "export_tasks": exported}


def _ms(value: float) -> str:
    return f"{value * 1000:.0f} ms"


def summarize(outcomes: list[Outcome], params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    rows = [
        "| measure | first request | median of the rest (min–max) | goal |",
        "|---|---|---|---|",
    ]
    summary: dict[str, Any] = {}

    def line(label: str, o: Outcome, key: str, goal: float | None) -> None:
        first = statistics.median(s.reported[key]["first"] for s in o.samples)
        medians = [s.reported[key]["median"] for s in o.samples]
        median = statistics.median(medians)
        # judged on the first request (a cold server: imports, the catalog opened, nothing
        # drawn yet) as well as on the later ones (drawings and definitions kept)
        goal_text = (
            ""
            if goal is None
            else f"< {_ms(goal)}: first {'✅' if first < goal else '❌'}, "
            f"later {'✅' if median < goal else '❌'}"
        )
        rows.append(
            f"| {label} | {_ms(first)} | {_ms(median)} ({_ms(min(medians))}–{_ms(max(medians))})"
            f" | {goal_text} |"
        )
        summary[f"{o.contender}/{key}"] = {"first_s": first, "median_s": median}

    for o in outcomes:
        if o.error or not o.samples:
            rows.append(f"| {o.contender} | {o.error or 'no samples'} | | |")
            continue
        if o.contender == "arrowline/dag5000":
            n = params["tasks"]
            line(
                f"DAG page of a {n:,}-task pipeline (last run's states)",
                o,
                "pipeline_page",
                GOAL_DAG_S,
            )
            line(f"run page of it (DAG, Gantt, {n:,} task rows)", o, "run_page", GOAL_DAG_S)
            line("DAG page as defined now (first view plans it)", o, "as_defined", GOAL_DAG_S)
        elif o.contender.startswith("arrowline/runs100k"):
            where = "PostgreSQL" if o.contender.endswith("-pg") else "SQLite"
            n = params["runs"]
            for key, label in (
                ("runs", "runs list"),
                ("runs_of_pipeline", "runs of one pipeline"),
                ("failed_runs", "failed runs"),
                ("page_21", "21st page of runs"),
                ("overview", "overview of 20 pipelines"),
            ):
                line(f"{label}, first byte, {n:,} runs, {where}", o, key, GOAL_FIRST_BYTE_S)
        elif o.contender == "arrowline/live":
            median = o.median("median_s")
            worst = max(s.reported["max_s"] for s in o.samples)
            summary[o.contender] = {"median_s": median, "max_s": worst}
            verdict = "✅" if worst < GOAL_LIVE_S else "❌"
            rows.append(
                f"| live update: transition → event at the browser | | median {_ms(median)}, "
                f"worst {_ms(worst)} | < 1 s {verdict} |"
            )
        elif o.contender == "arrowline/export1000":
            mb = o.median("mb")
            summary[o.contender] = {"mb": mb, "seconds": o.median("seconds")}
            verdict = "✅" if mb < GOAL_EXPORT_MB else "❌"
            rows.append(
                f"| `ui export` of a {params['export_tasks']:,}-task run | "
                f"{o.median('seconds'):.2f} s (whole process) | {mb:.2f} MB | < 5 MB {verdict} |"
            )
    return summary, "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("contender", choices=CONTENDERS)
    parser.add_argument("--catalog", choices=("embedded", "postgres"), default="embedded")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    tasks, runs, exported = (500, 5_000, 200) if args.quick else (5_000, 100_000, 1_000)
    match args.contender:
        case "dag5000":
            result = _dag(tasks)
        case "runs100k":
            result = _history(runs, args.catalog)
        case "live":
            result = _live()
        case _:
            result = _export(exported)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()

"""Attempts on a Ray cluster (`executor: ray`), on a local cluster the tests start: a head with
no CPUs of its own (so every attempt runs on a worker node) and two worker nodes of one CPU,
each its own raylet and worker processes, with the workspace on a moto S3 server on loopback.
The quickstart on Ray equals the local run row for row; a worker node killed mid-attempt costs
that attempt only and the sink holds each row once; bad settings are refused before any task
runs. Marked slow (a cluster takes ~10 s to start), never skipped: the dev extra installs Ray."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import Result

import engine
from engine.api.pipeline import run
from tests.conftest import PgSchema, WritePipeline
from tests.s3_server import GuardedStore, S3Bucket

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

Cli = Callable[..., Result]
ROOT = Path(__file__).resolve().parents[3]
PG_SECRET = "pg-secret-never-shipped-7c1d"
QUICKSTART = ROOT / "examples" / "quickstart"


@pytest.fixture(scope="module")
def cluster(
    s3_server: str, guarded_s3: GuardedStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """Head (0 CPUs) + two 1-CPU worker nodes. Their processes take the environment they are
    started with: the store's credentials and a cache folder of their own."""
    try:
        from ray.cluster_utils import Cluster
    except ImportError:  # never skipped
        pytest.fail("Ray is needed: .venv/bin/pip install -e '.[dev]' (ray[default])")
    import ray

    saved = dict(os.environ)
    os.environ |= {
        "AWS_ACCESS_KEY_ID": "arrowline-test",
        "AWS_SECRET_ACCESS_KEY": "ray-nodes-secret",
        "AWS_REGION": "us-east-1",
        "ARROWLINE_CACHE_DIR": str(tmp_path_factory.mktemp("ray-node-cache")),
        "RAY_AUTH_MODE": "disabled",
        "RAY_TEST_PG_PASSWORD": PG_SECRET,  # the nodes' own environment: resolved there
        "RAY_LAKE_KEY_ID": guarded_s3.access_key,  # a workspace connection's, resolved there
        "RAY_LAKE_SECRET": guarded_s3.secret_key,
    }
    ours = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False},
    )
    workers = [ours.add_node(num_cpus=1) for _ in range(2)]
    ours.wait_for_nodes()
    ray.init(address=ours.address, include_dashboard=False, log_to_driver=False)
    try:
        yield ours, workers
    finally:
        ray.shutdown()
        ours.shutdown()
        os.environ.clear()
        os.environ.update(saved)


def _quickstart(folder: Path, rows: int) -> Path:
    shutil.copytree(
        QUICKSTART,
        folder,
        ignore=shutil.ignore_patterns("data", "out", ".arrowline", "__pycache__"),
    )
    subprocess.run(
        [
            sys.executable,
            str(folder / "generate.py"),
            "--rows",
            str(rows),
            "--out",
            str(folder / "data"),
        ],
        check=True,
        capture_output=True,
    )
    return folder / "pipeline.yaml"


def _sink_rows(folder: Path) -> tuple[pl.DataFrame, list[tuple[Any, ...]]]:
    import duckdb

    orders = pl.read_parquet(folder / "out" / "orders", hive_partitioning=True)
    orders = orders.select(sorted(orders.columns)).sort("order_id")
    with duckdb.connect(str(folder / "out" / "warehouse.duckdb"), read_only=True) as db:
        daily = db.execute(
            "select * from analytics.daily_revenue order by order_date, segment"
        ).fetchall()
    return orders, daily


def test_the_quickstart_on_ray_equals_the_local_run_row_for_row(
    cluster: Any, s3: S3Bucket, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = _quickstart(tmp_path / "local", 20_000)
    assert run(local, project_dir=local.parent).ok
    on_ray = _quickstart(tmp_path / "ray", 20_000)
    monkeypatch.chdir(on_ray.parent)
    monkeypatch.setenv("ARROWLINE_WORKSPACE", s3.uri("qs"))
    result = cli("run", str(on_ray), "--executor", "ray", "--address", "auto", "--no-progress")
    assert result.exit_code == 0, result.output
    driver_cache = Path(os.environ["ARROWLINE_CACHE_DIR"])  # the s3 fixture's: this process
    assert not list(driver_cache.rglob("*.parquet"))  # inputs were copied on the workers only
    assert _sink_rows(local.parent)[0].equals(_sink_rows(on_ray.parent)[0])
    assert _sink_rows(local.parent)[1] == _sink_rows(on_ray.parent)[1]
    import json

    (log,) = (on_ray.parent / ".arrowline" / "logs" / "quickstart").glob("*.jsonl")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    said = [r for r in lines if r["task_id"] == "checked" and "ran on Ray node" in r["message"]]
    assert said, lines  # said on the worker, kept in the driver's run log with its task
    assert any(k.endswith("MANIFEST.json") for k in s3.keys("qs/quickstart/checked"))
    with engine.open(on_ray.parent) as project:  # the notebook reads what the workers wrote
        assert project.table("checked").select(pl.len()).collect().item() > 19_000
        assert project.quarantine("checked").select(pl.len()).collect().item() > 0


FLAKY_NODE = """
from pathlib import Path
import time

def slow_once(frame):
    flag = Path(__file__).with_name("started")
    if not flag.exists():  # the first attempt says where it runs, then waits to be killed
        import ray
        flag.write_text(ray.get_runtime_context().get_node_id())
        time.sleep(120)
    return frame
"""

PIPELINE = """
pipeline: lost_node
workspace: WORKSPACE
executor: ray
defaults: {retry: {attempts: 3, backoff: 0.1s}}
tasks:
  - id: numbers
    sql: select range as id, range * 3 as amount from range(1000)
  - id: slow
    udf: {input: numbers, function: "udfs.py:slow_once"}
  - id: out
    load: {input: slow, to: duckdb, path: sink.duckdb, table: numbers, mode: append}
"""


def test_a_worker_node_killed_mid_attempt_costs_that_attempt_only(
    cluster: Any, s3: S3Bucket, write: WritePipeline, project: Path
) -> None:
    import threading

    ours, workers = cluster
    write("udfs.py", FLAKY_NODE)
    path = write("p.yaml", PIPELINE.replace("WORKSPACE", s3.uri("lost")))
    outcome: dict[str, Any] = {}
    running = threading.Thread(target=lambda: outcome.setdefault("run", run(path)))
    running.start()
    deadline = time.monotonic() + 120
    while not (project / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    node_id = (project / "started").read_text()
    victim = next(node for node in workers if node.node_id == node_id)
    ours.remove_node(victim, allow_graceful=False)  # the node dies with its worker
    running.join(180)
    try:
        result = outcome["run"]
        assert result.ok, {k: t.error for k, t in result.tasks.items() if t.error}
        assert result.tasks["slow"].attempts == 2
        import duckdb

        with duckdb.connect(str(project / "sink.duckdb"), read_only=True) as db:
            assert db.execute("select count(*), count(distinct id) from numbers").fetchone() == (
                1000,
                1000,
            )
    finally:
        workers.remove(victim)
        workers.append(ours.add_node(num_cpus=1))  # the next test has two nodes again
        ours.wait_for_nodes()


def test_ray_without_an_object_store_workspace_is_refused_before_any_task(
    cluster: Any, write: WritePipeline, project: Path, cli: Cli
) -> None:
    path = write("p.yaml", "pipeline: nope\ntasks:\n  - id: a\n    sql: select 1 as x\n")
    result = cli("run", str(path), "--executor", "ray", "--address", "auto", "--no-progress")
    assert result.exit_code != 0
    assert "the workspace is this host's folder" in result.output
    assert "s3://" in result.output  # says what to set


def test_a_task_asking_more_than_any_node_has_is_refused_at_its_line(
    cluster: Any, s3: S3Bucket, write: WritePipeline, project: Path, cli: Cli
) -> None:
    text = (
        f"pipeline: big\nworkspace: {s3.uri('big')}\ntasks:\n"
        "  - id: a\n    sql: select 1 as x\n    resources: {cpu: 8}\n"
    )
    path = write("p.yaml", text)
    result = cli("run", str(path), "--executor", "ray", "--address", "auto", "--no-progress")
    assert result.exit_code != 0
    assert "asks for 8 CPU" in result.output
    assert "p.yaml:4" in result.output
    assert s3.keys("big") == []


SLEEPER = """
import time

def sleep_long(frame):
    time.sleep(90)
    return frame
"""


def test_a_timeout_stops_the_attempt_on_its_worker(
    cluster: Any, s3: S3Bucket, write: WritePipeline, project: Path
) -> None:
    write("udfs.py", SLEEPER)
    text = (
        f"pipeline: stuck\nworkspace: {s3.uri('stuck')}\nexecutor: ray\n"
        "defaults: {retry: {attempts: 1}}\ntasks:\n"
        "  - id: numbers\n    sql: select 1 as x\n"
        "  - id: slow\n    udf: {input: numbers, function: 'udfs.py:sleep_long'}\n"
        "    timeout: 2s\n"
    )
    started = time.monotonic()
    result = run(write("p.yaml", text))
    assert time.monotonic() - started < 45  # not the 90 s the function sleeps
    assert not result.ok
    error = result.tasks["slow"].error or ""
    assert "timeout" in error.lower() or "stopped" in error.lower(), error
    import ray

    deadline = time.monotonic() + 30  # the worker process was cancelled: its CPU comes back
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 2


def _record_shipped(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every attempt the driver ships from now on, pickled as Ray sends it."""
    import pickle

    from engine.execution.remote import RayRunner

    shipped: list[bytes] = []
    original = RayRunner.shipped

    def recording(self: RayRunner, context: Any, options: Any) -> Any:
        attempt = original(self, context, options)
        shipped.append(pickle.dumps(attempt))
        return attempt

    monkeypatch.setattr(RayRunner, "shipped", recording)
    return shipped


PG_SOURCE = """connections:
  src: {kind: postgres, host: 127.0.0.1, user: postgres, database: test,
        password: "${env:RAY_TEST_PG_PASSWORD}"}
"""
"""The test server as the nodes reach it, its password from their own environment."""

FROM_POSTGRES = """
pipeline: pg_on_ray
workspace: WORKSPACE
executor: ray
PG_CONNECTION
tasks:
  - id: rows
    extract: {from: postgres, connection: src, query: "select g as id from generate_series(1, 500) g"}
  - id: out
    load: {input: rows, to: parquet, path: out/rows}
""".replace("PG_CONNECTION\n", PG_SOURCE)


def test_connection_secrets_are_resolved_on_the_worker_and_never_shipped(
    cluster: Any,
    s3: S3Bucket,
    write: WritePipeline,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAY_TEST_PG_PASSWORD", PG_SECRET)  # the driver resolves it too
    shipped = _record_shipped(monkeypatch)
    result = run(write("p.yaml", FROM_POSTGRES.replace("WORKSPACE", s3.uri("pg"))))
    assert result.ok, {k: t.error for k, t in result.tasks.items() if t.error}
    assert pl.read_parquet(project / "out" / "rows")["id"].sum() == 500 * 501 // 2
    assert len(shipped) == 2
    assert all(PG_SECRET.encode() not in payload for payload in shipped)
    assert b"${env:RAY_TEST_PG_PASSWORD}" in shipped[0]  # the reference travels, not the value


INCREMENTAL = """
pipeline: grows
workspace: WORKSPACE
tasks:
  - id: batch
    sql: select {{ params.n }} as id
  - id: history
    sql:
      query: |
        select id from batch
        {% if is_incremental() %} union all select id from {{ this }} {% endif %}
      incremental: {unique_key: id}
params: {n: 1}
"""


def test_a_pipelines_own_store_is_where_planning_reads_its_outputs(
    s3: S3Bucket, write: WritePipeline, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The endpoint is in the pipeline file only (no AWS_ENDPOINT_URL): a new process plans
    its second run by reading the first run's outputs there, never at AWS itself."""
    import engine.core.s3

    path = write("p.yaml", INCREMENTAL.replace("WORKSPACE", s3.uri("inc")))
    assert run(path, params={"n": 1}).ok
    monkeypatch.setattr(engine.core.s3, "_TRUSTED", {})  # as in a new process
    second = run(path, params={"n": 2})
    assert second.ok, {k: t.error for k, t in second.tasks.items() if t.error}
    with engine.open(project) as notebook:
        assert sorted(notebook.table("history").collect()["id"].to_list()) == [1, 2]


PARTITIONED = """
pipeline: accounts_on_ray
workspace: WORKSPACE
executor: ray
PG_CONNECTION
tasks:
  - id: accounts
    extract: {from: postgres, connection: src, table: TABLE, partition: {column: id, count: 4}}
""".replace("PG_CONNECTION\n", PG_SOURCE)


def test_a_partitioned_extract_reads_one_snapshot_across_nodes_under_concurrent_writes(
    cluster: Any, s3: S3Bucket, write: WritePipeline, project: Path, pg: PgSchema
) -> None:
    """Each range is a Ray task of its own, spread over both nodes, and all of them read the
    snapshot the driver exported and holds: while a writer moves money between accounts (the
    total never changes in any one snapshot; tests/connectors/test_postgres_source.py shows
    that ranges read apart see it move), every run's output holds the unchanged total."""
    import threading

    from engine.state.catalog import CatalogReader
    from engine.state.db import catalog_location
    from tests.connectors.test_postgres_source import _start_writer

    table = pg.table("accounts")
    pg.execute(
        f"create table {table} as select g as id, 100::bigint as balance "
        "from generate_series(1, 20000) g",
        f"alter table {table} add primary key (id)",
    )
    text = PARTITIONED.replace("WORKSPACE", s3.uri("split")).replace("TABLE", table)
    path = write("p.yaml", text)
    stop = threading.Event()
    writer = _start_writer(pg, table, stop)
    nodes: set[str] = set()
    try:
        time.sleep(0.3)
        for _ in range(3):
            result = run(path)
            assert result.ok, {k: t.error for k, t in result.tasks.items() if t.error}
            with engine.open(project) as notebook:
                frame = notebook.table("accounts").collect()
            assert frame.height == 20_000
            assert frame["id"].n_unique() == 20_000
            assert frame["balance"].sum() == 2_000_000
            with CatalogReader(catalog_location(project)) as reader:
                row = reader.task_run(result.run_id, "accounts")
            assert row is not None
            assert row.details is not None
            assert row.details["streams"] == 4  # one Ray task per range
            nodes |= set(row.details["ray_nodes"])
    finally:
        stop.set()
        writer.join()
    assert len(nodes) == 2, nodes  # the ranges ran on both worker nodes
    manifests = [
        k for k in s3.keys("split/accounts_on_ray/accounts") if k.endswith("MANIFEST.json")
    ]
    assert len(manifests) == 3


def test_a_range_that_fails_fails_the_extract_and_leaves_no_upload(
    cluster: Any, s3: S3Bucket, write: WritePipeline, project: Path, pg: PgSchema
) -> None:
    """The last range holds a NUMERIC NaN, which a decimal cannot hold: its Ray task fails,
    the task fails with that part's error, and no part another range uploaded is left."""
    table = pg.table("amounts")
    pg.execute(
        f"create table {table} as select g as id, (g % 100)::numeric(12, 2) as amount "
        "from generate_series(1, 8000) g",
        f"update {table} set amount = 'NaN' where id = 7999",
    )
    text = (
        PARTITIONED.replace("WORKSPACE", s3.uri("bad"))
        .replace("TABLE", table)
        .replace("tasks:", "defaults: {retry: {attempts: 1}}\ntasks:")
    )
    result = run(write("p.yaml", text.replace("accounts", "amounts")))
    assert not result.ok
    error = result.tasks["amounts"].error or ""
    assert "NaN or Infinity" in error, error
    assert "'amount'" in error
    assert [k for k in s3.keys("bad") if k.endswith(".parquet")] == []


GUARDED = """
pipeline: guarded_on_ray
workspace: s3://BUCKET/ws?connection=lake
executor: ray
connections:
  lake:
    kind: s3
    endpoint: ENDPOINT
    access_key_id: "${env:RAY_LAKE_KEY_ID}"
    secret_access_key: "${env:RAY_LAKE_SECRET}"
tasks:
  - id: numbers
    sql: select range as id from range(1000)
  - id: total
    sql: select sum(id) as s from numbers
"""


def test_workers_open_the_workspace_with_its_connection_resolved_on_their_node(
    cluster: Any,
    guarded_s3: GuardedStore,
    write: WritePipeline,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store checks signatures and the nodes' AWS_* key is not one it knows: the workers
    read and write it with the connection's key, resolved from their own environment (the
    connection travels as written, `${env:...}` and all)."""
    monkeypatch.setenv("RAY_LAKE_KEY_ID", guarded_s3.access_key)  # the driver's environment
    monkeypatch.setenv("RAY_LAKE_SECRET", guarded_s3.secret_key)
    shipped = _record_shipped(monkeypatch)
    text = GUARDED.replace("BUCKET", guarded_s3.bucket()).replace("ENDPOINT", guarded_s3.endpoint)
    result = run(write("p.yaml", text))
    assert result.ok, {k: t.error for k, t in result.tasks.items() if t.error}
    with engine.open(project) as notebook:
        assert notebook.table("total").collect().item() == sum(range(1000))
    assert len(shipped) == 2
    assert all(guarded_s3.secret_key.encode() not in payload for payload in shipped)
    assert all(b"${env:RAY_LAKE_SECRET}" in payload for payload in shipped)


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_a_signal_to_the_driver_cancels_the_attempt_on_its_worker(
    cluster: Any, s3: S3Bucket, write: WritePipeline, project: Path, signal_name: str
) -> None:
    """Ctrl-C (or a SIGTERM from a supervisor) on the driver process while an attempt runs on a
    worker: the run ends cancelled within seconds, not after the 90 s the function sleeps,
    and the worker's CPU is given back (the Ray task was cancelled, not left running)."""
    import signal

    import ray

    ours, _ = cluster
    write("udfs.py", SLEEPER)
    path = write(
        "p.yaml",
        f"pipeline: interrupted\nworkspace: {s3.uri('sig')}\nexecutor: ray\ntasks:\n"
        "  - id: numbers\n    sql: select 1 as x\n"
        "  - id: slow\n    udf: {input: numbers, function: 'udfs.py:sleep_long'}\n",
    )
    command = [
        sys.executable,
        "-c",
        "from engine.cli import main; main()",
        "run",
        str(path),
        "--executor",
        "ray",
        "--address",
        ours.address,
        "--no-progress",
    ]
    driver = subprocess.Popen(
        command, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # the slow attempt holds a worker's CPU
            if driver.poll() is not None:
                pytest.fail(f"the run ended before it was interrupted: {driver.stdout.read()}")
            if ray.available_resources().get("CPU", 0) < 2 and (project / ".arrowline").exists():
                slow_started = _task_running(project, "slow")
                if slow_started:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("the slow attempt never started")
        interrupted = time.monotonic()
        driver.send_signal(getattr(signal, signal_name))
        output, _ = driver.communicate(timeout=60)
        assert time.monotonic() - interrupted < 30, output
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode != 0, output
    assert "cancel" in output.lower() or "interrupt" in output.lower(), output
    deadline = time.monotonic() + 30  # the worker process was cancelled: its CPU comes back
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 2


def _task_running(project: Path, task: str) -> bool:
    """Whether the catalog says `task` is running (read-only, while the driver writes it)."""
    from engine.state.catalog import CatalogReader
    from engine.state.db import catalog_location

    try:
        with CatalogReader(catalog_location(project)) as reader:
            last = reader.last_run("interrupted")
            if last is None:
                return False
            row = reader.task_run(last.run_id, task)
            return row is not None and row.state == "RUNNING"
    except Exception:  # the catalog being created
        return False


WHERE = """
from pathlib import Path

def where(frame):
    import ray
    Path(__file__).with_name("ran_on").write_text(ray.get_runtime_context().get_node_id())
    return frame
"""


def test_the_scheduler_runs_a_pipeline_that_says_executor_ray_on_the_cluster(
    cluster: Any, s3: S3Bucket, write: WritePipeline, project: Path
) -> None:
    """A scheduled run of a pipeline with `executor: {kind: ray, address: ...}` runs its
    attempts on the cluster's worker nodes, as `arrowline run` does."""
    from datetime import UTC, datetime, timedelta

    from engine.scheduling.scheduler import Scheduler, SchedulerSettings
    from engine.state.catalog import CatalogReader
    from engine.state.db import catalog_location

    ours, workers = cluster
    write("udfs.py", WHERE)
    write(
        "p.yaml",
        f"pipeline: scheduled_on_ray\nworkspace: {s3.uri('sched')}\n"
        f"executor: {{kind: ray, address: '{ours.address}'}}\n"
        'schedule: "* * * * *"\ntasks:\n'
        "  - id: numbers\n    sql: select range as x from range(10)\n"
        "  - id: placed\n    udf: {input: numbers, function: 'udfs.py:where'}\n",
    )
    now = [datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)]
    scheduler = Scheduler(project, SchedulerSettings(file_scan_every=0), lambda: now[0])
    try:
        assert scheduler.try_lead()
        scheduler.tick()
        now[0] += timedelta(minutes=1)  # 00:01 is due
        for _ in range(50):
            scheduler.tick()
            running = [a for runs in scheduler.active.values() for a in runs]
            if not running and (project / "ran_on").exists():
                break
            for active in running:
                active.thread.join(60)
    finally:
        scheduler.close()
    with CatalogReader(catalog_location(project)) as reader:
        last = reader.last_run("scheduled_on_ray")
    assert last is not None
    assert last.state == "SUCCESS", last
    assert (project / "ran_on").read_text() in {node.node_id for node in workers}


SLOW_ROWS = """
pipeline: progress_on_ray
workspace: WORKSPACE
executor: ray
PG_CONNECTION
tasks:
  - id: rows
    extract:
      from: postgres
      connection: src
      query: "select g as id, pg_sleep(0.0004) is null as slept from generate_series(1, 12000) g"
      batch_bytes: 65536
""".replace("PG_CONNECTION\n", PG_SOURCE)


def test_a_long_remote_attempt_shows_its_rows_while_it_runs(
    cluster: Any, s3: S3Bucket, write: WritePipeline, project: Path
) -> None:
    """The driver's progress (what the display shows) counts a remote extract's rows while it
    runs, not only at its end; the run's progress actor is gone afterwards."""
    import threading

    import ray

    seen: list[int] = []
    running = threading.Event()

    def watch(executor: Any) -> None:
        def poll() -> None:
            while not running.is_set():
                seen.append(executor.progress().get("rows", 0))
                time.sleep(0.2)

        threading.Thread(target=poll, daemon=True).start()

    path = write("p.yaml", SLOW_ROWS.replace("WORKSPACE", s3.uri("progress")))
    try:
        result = run(path, on_executor=watch)
    finally:
        running.set()
    assert result.ok, {k: t.error for k, t in result.tasks.items() if t.error}
    assert result.tasks["rows"].rows_out == 12_000
    partial = [rows for rows in seen if 0 < rows < 12_000]
    assert partial, seen  # rows arrived while the attempt ran
    assert partial == sorted(partial)
    named = [a for a in ray.util.list_named_actors(all_namespaces=True) if "progress-" in str(a)]
    assert named == [], named


def test_a_variable_only_the_driver_has_is_said_to_be_missing_on_the_node(
    cluster: Any, s3: S3Bucket, write: WritePipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver resolves the connection (its shell has the variable), the worker cannot (its
    node's environment lacks it): the error says which node, and where to set it."""
    monkeypatch.setenv("RAY_DRIVER_ONLY_PASSWORD", PG_SECRET)
    text = FROM_POSTGRES.replace("WORKSPACE", s3.uri("envless")).replace(
        "RAY_TEST_PG_PASSWORD", "RAY_DRIVER_ONLY_PASSWORD"
    )
    text = text.replace(
        "pipeline: pg_on_ray", "pipeline: envless\ndefaults: {retry: {attempts: 1}}"
    )
    result = run(write("p.yaml", text))
    assert not result.ok
    error = result.tasks["rows"].error or ""
    assert "on Ray node" in error, error
    assert "RAY_DRIVER_ONLY_PASSWORD is not set" in error
    assert "where its `ray start` runs" in error
    assert PG_SECRET not in error

"""The benchmark harness works (quick mode: small data, one run); the timings are not tested."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _quick(
    workload: str, timeout: int = 600, env: dict[str, str] | None = None
) -> tuple[str, dict[str, Any]]:
    """`python -m benchmarks run WORKLOAD --quick`, which must succeed: its stdout and its
    results, whose files are removed (a quick run is not a result worth keeping)."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", workload, "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    lines = done.stdout.splitlines()
    path = Path(next(line for line in lines if line.startswith("results: "))[9:])
    payload = json.loads(path.read_text())
    for leftover in (path, path.with_suffix(".md"), path.with_suffix(".png")):
        leftover.unlink(missing_ok=True)
    return done.stdout, payload


@pytest.mark.slow
def test_orchestration_benchmark_runs_in_quick_mode(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "orchestration", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "| arrowline/chain |" in done.stdout
    lines = done.stdout.splitlines()
    path = Path(next(line for line in lines if line.startswith("results: "))[9:])
    assert path.name.endswith("-quick.json")
    chart = path.with_suffix(".png")
    assert f"chart: {chart}" in lines
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| arrowline/chain |" in path.with_suffix(".md").read_text()
    payload = json.loads(path.read_text())
    arrowline = next(o for o in payload["outcomes"] if o["contender"] == "arrowline/chain")
    assert arrowline["error"] is None
    sample = arrowline["samples"][0]
    assert (
        sample["reported"]["transitions"] == 100 * 3 + 3
    )  # every task's transitions were committed
    assert sample["peak_rss_mb"] > 0
    assert sample["cpu_s"] > 0
    assert payload["machine"]["cores"] >= 1
    for leftover in (path, chart, path.with_suffix(".md")):
        leftover.unlink()  # a quick run is not a result worth keeping


def result(workload: str, samples: dict[str, list[float]]) -> dict[str, object]:
    """A result file as the harness writes it, with wall times (s) per contender."""
    return {
        "workload": workload,
        "date": "2026-11-22",
        "machine": {"cpu": "test cpu", "cores": 2},
        "params": {"repeat": 3},
        "outcomes": [
            {
                "contender": name,
                "group": "g",
                "error": None,
                "samples": [
                    {
                        "wall_s": w,
                        "cpu_s": w,
                        "peak_rss_mb": 100.0,
                        "reported": {"rows_per_s": 1e6 / w},
                    }
                    for w in walls
                ],
            }
            for name, walls in samples.items()
        ],
    }


def bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", "bench", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_compare_exits_non_zero_when_arrowline_got_slower(tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    old.write_text(json.dumps(result("w", {"arrowline/x": [1.0, 1.1, 0.9], "peer": [2.0] * 3})))
    same = tmp_path / "same.json"
    same.write_text(json.dumps(result("w", {"arrowline/x": [1.05] * 3, "peer": [3.0] * 3})))
    slower = tmp_path / "slower.json"
    slower.write_text(json.dumps(result("w", {"arrowline/x": [1.2] * 3, "peer": [2.0] * 3})))

    fine = bench(tmp_path, "compare", str(old), str(same))
    assert fine.returncode == 0, fine.stderr
    assert "no arrowline measurement got more than 10% worse" in fine.stdout  # the peer may
    regressed = bench(tmp_path, "compare", str(old), str(slower))
    assert regressed.returncode == 1
    assert "REGRESSION: arrowline/x wall_s is 20% worse" in regressed.stdout
    assert "REGRESSION: arrowline/x rows_per_s is 20% worse" in regressed.stdout
    loose = bench(tmp_path, "compare", str(old), str(slower), "--threshold", "0.25")
    assert loose.returncode == 0

    other = tmp_path / "other.json"
    other.write_text(json.dumps(result("v", {"arrowline/x": [1.0]})))
    mismatch = bench(tmp_path, "compare", str(old), str(other))
    assert mismatch.returncode == 2
    assert "different workloads" in mismatch.stderr


def test_report_writes_a_table_and_a_chart(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result("w", {"arrowline/x": [1.0, 2.0, 3.0], "peer": [4.0] * 3})))
    done = bench(tmp_path, "report", str(path))
    assert done.returncode == 0, done.stderr
    table = path.with_suffix(".md").read_text()
    assert "| arrowline/x | 2.00 (1.00–3.00) |" in table
    assert "| peer | 4.00 (4.00–4.00) |" in table
    assert path.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
@pytest.mark.parametrize("workload", ["udf", "validate", "sql_dag"])
def test_transform_workloads_run_in_quick_mode_and_agree(workload: str) -> None:
    """Every contender of the workload produces the same checksum (the harness would report a
    disagreeing one as wrong), and arrowline's contender succeeds."""
    _stdout, payload = _quick(workload)
    by_name = {o["contender"]: o for o in payload["outcomes"]}
    assert by_name["arrowline"]["error"] is None
    for outcome in payload["outcomes"]:
        if outcome["error"] and "not installed" in outcome["error"]:
            continue  # an optional peer, reported as missing rather than dropped
        assert outcome["error"] is None, outcome
    floor = {"udf": "polars", "validate": "polars", "sql_dag": "duckdb/script"}[workload]
    checksums = {by_name[n]["samples"][0]["reported"]["checksum"] for n in ("arrowline", floor)}
    assert len(checksums) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "workload",
    [
        "pg_extract",
        "pg_parquet",
        "pg_load",
        "e2e",
        "stream_memory",
        "scheduler",
        "rest_extract",
        "lakehouse",
        "ui",
    ],
)
def test_other_workloads_run_in_quick_mode(workload: str, pg_uri: str) -> None:
    """PostgreSQL ones against the test server: every installed contender succeeds and agrees
    with the others (the harness turns a checksum that disagrees into an error); missing peers
    say so, and a contender this tree cannot run yet (pg_parquet's `materialize: ephemeral`)
    says it is not supported."""
    import os

    _stdout, payload = _quick(
        workload, timeout=900, env={**os.environ, "ARROWLINE_BENCH_PG_URI": pg_uri}
    )
    arrowline = [
        o
        for o in payload["outcomes"]
        if o["contender"].startswith("arrowline") and not o["unsupported"]
    ]
    assert arrowline
    assert all(o["error"] is None and o["samples"] for o in arrowline), arrowline
    for outcome in payload["outcomes"]:
        if outcome["error"]:
            assert "not installed" in outcome["error"] or outcome["unsupported"], outcome


def test_a_contender_the_tree_cannot_run_yet_is_reported_not_supported_and_never_run(
    tmp_path: Path,
) -> None:
    from benchmarks.harness import Contender, run_interleaved

    ran = tmp_path / "ran"
    touch = (sys.executable, "-c", f"open({str(ran)!r}, 'w')")
    outcomes = run_interleaved(
        [Contender("arrowline/later", touch, unsupported="`materialize` refused")],
        repeat=2,
        cwd=tmp_path,
        log=lambda *_: None,
    )
    assert not ran.exists()
    assert outcomes[0].unsupported
    assert outcomes[0].error == "not supported: `materialize` refused"
    assert outcomes[0].samples == []


@pytest.mark.slow
def test_handoff_workload_runs_in_quick_mode_and_every_format_agrees() -> None:
    """Every format is written and read by every consumer, and all of them agree on rows, key
    sum and decimal sum per data set (the harness would report a disagreeing one as wrong)."""
    stdout, payload = _quick("handoff", timeout=900)
    assert len(payload["outcomes"]) == 2 * 5 * 4  # data sets x formats x (write + 3 readers)
    for outcome in payload["outcomes"]:
        assert outcome["error"] is None, outcome
        assert outcome["samples"][0]["peak_rss_mb"] > 0
    for dataset in ("lineitem", "orders"):
        checksums = {
            o["samples"][0]["reported"]["checksum"]
            for o in payload["outcomes"]
            if o["contender"].startswith(dataset + "/")
        }
        assert len(checksums) == 1, checksums
    assert all(size > 0 for size in payload["params"]["file_mb"].values())
    assert "| ipc-lz4 |" in stdout


@pytest.mark.slow
def test_cdc_workload_runs_in_quick_mode_against_a_logical_server() -> None:
    """pg_cdc needs wal_level = logical: a throwaway cluster of its own. Both apply contenders
    agree with the source table (their checksums are compared by the harness)."""
    import os

    from tests.pg import throwaway_server

    with throwaway_server(settings={"wal_level": "logical"}) as cluster:
        _stdout, payload = _quick(
            "pg_cdc", timeout=900, env={**os.environ, "ARROWLINE_BENCH_CDC_URI": cluster.uri}
        )
    assert all(o["error"] is None and o["samples"] for o in payload["outcomes"]), payload
    assert payload["summary"]["read_changes_per_s"] > 0
    assert "apply_vs_handwritten" in payload["summary"]


@pytest.mark.slow
def test_sql_project_workload_runs_in_quick_mode_and_every_tool_builds_the_same_marts() -> None:
    """arrowline (with and without the cache), the DuckDB script and dbt-duckdb run the same
    project cold and warm, and the four marts in each one's DuckDB file agree row for row (the
    harness reports a disagreeing contender as wrong); dbt, when missing, says how to install
    it instead of passing."""
    stdout, payload = _quick("sql_project")
    by_name = {o["contender"]: o for o in payload["outcomes"]}
    assert set(by_name) == {"arrowline", "arrowline/cache", "duckdb/script", "dbt-duckdb"}
    for name, outcome in by_name.items():
        if name == "dbt-duckdb" and outcome["error"]:
            assert "not installed: pip install" in outcome["error"], outcome
            continue
        assert outcome["error"] is None, outcome
        reported = outcome["samples"][0]["reported"]
        for key in ("cold_s", "cold_cpu_s", "cold_rss_mb", "warm_s", "warm_cpu_s", "warm_rss_mb"):
            assert reported[key] > 0, (name, key)
    checksums = {
        o["samples"][0]["reported"]["checksum"] for o in by_name.values() if not o["error"]
    }
    assert len(checksums) == 1, checksums
    assert all(f"{mart}=" in next(iter(checksums)) for mart in ("orders", "customers"))
    assert "| goal (issue 20) |" in stdout


def test_sql_project_gives_both_tools_the_same_models_macro_and_tests(tmp_path: Path) -> None:
    """The comparison is of one project: only the project files and the quoting of the text
    var (dbt quotes it by hand; arrowline's `sql_literal` does) differ."""
    from benchmarks.workloads import sql_project

    data = sql_project.generate(100, tmp_path / "data")
    sql_project.write_arrowline(tmp_path / "arrowline", data, cache=False)
    sql_project.write_dbt(tmp_path / "dbt", data)
    quoted = sql_project.START_DATE_VAR
    shared = [*sql_project.MACROS, *sql_project.MODELS, *sql_project.TESTS, "seeds/raw_stores.csv"]
    for name in shared:
        ours = (tmp_path / "arrowline" / name).read_text()
        theirs = (tmp_path / "dbt" / name).read_text()
        assert ours.replace(quoted["arrowline"], quoted["dbt"]) == theirs, name
    assert quoted["arrowline"] in (tmp_path / "arrowline" / "models/marts/orders.sql").read_text()
    marts = (tmp_path / "dbt" / "models/marts/orders.sql").read_text()
    assert "{% for payment_method in payment_methods" in marts
    assert "cents_to_dollars" in (tmp_path / "dbt" / "models/staging/stg_payments.sql").read_text()


def test_sql_project_says_how_to_install_dbt_when_it_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.workloads import sql_project

    monkeypatch.setattr(sql_project, "_dbt_cli", lambda: tmp_path / "no-dbt")
    reason = sql_project.missing_peer("dbt-duckdb")
    assert reason.startswith("dbt-duckdb is not installed: pip install")
    assert "dbt-duckdb>=1.9" in reason
    assert sql_project.missing_peer("arrowline") == ""


@pytest.mark.slow
def test_objectstore_workload_runs_in_quick_mode_and_both_workspaces_agree() -> None:
    """The same pipeline with the local folder, with the workspace on a loopback S3 server, and
    run locally then uploaded: one checksum of the marts (the harness refuses a contender that
    disagrees), and the ratios the issue's goal reads."""
    _stdout, payload = _quick("objectstore")
    assert all(o["error"] is None and o["samples"] for o in payload["outcomes"]), payload
    checksums = {o["samples"][0]["reported"]["checksum"] for o in payload["outcomes"]}
    assert len(checksums) == 1, checksums
    assert payload["summary"]["s3_vs_local"] > 0
    assert payload["summary"]["s3_vs_local_then_upload"] > 0


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # one local Ray cluster at a time on the machine
def test_ray_workload_runs_in_quick_mode_and_every_contender_agrees() -> None:
    """One and two Ray nodes, and Ray against the local executor: the same outputs (the
    harness refuses a contender whose checksum differs), and the issue's two ratios."""
    _stdout, payload = _quick("ray", timeout=900)
    assert all(o["error"] is None and o["samples"] for o in payload["outcomes"]), payload
    by_group: dict[str, set[str]] = {}
    for o in payload["outcomes"]:
        by_group.setdefault(o["group"], set()).add(o["samples"][0]["reported"]["checksum"])
    assert all(len(sums) == 1 for sums in by_group.values()), by_group
    assert payload["summary"]["two_nodes_speedup"] > 0
    assert "ray_overhead_ms_per_task" in payload["summary"]
    assert "ray_overhead_ms_per_task_warm" in payload["summary"]


@pytest.mark.slow
def test_quickstart_workload_runs_whole_processes_that_publish_the_same_tables() -> None:
    """`arrowline run` on a fresh project, the unchanged re-run and the hand-written pandas
    script publish the same orders and daily table (the harness reports a disagreeing one as
    wrong); the re-run writes no new file; pandas, when missing, says how to install it."""
    stdout, payload = _quick("quickstart")
    by_name = {o["contender"]: o for o in payload["outcomes"]}
    assert set(by_name) == {"arrowline", "arrowline/rerun", "pandas/script"}
    for name in ("arrowline", "arrowline/rerun"):
        assert by_name[name]["error"] is None, by_name[name]
        reported = by_name[name]["samples"][0]["reported"]
        assert reported["engine_s"] > 0  # the process's wall time
        assert reported["process_rss_mb"] > 0
    assert by_name["arrowline/rerun"]["samples"][0]["reported"]["new_files"] == 0
    pandas = by_name["pandas/script"]
    if pandas["error"]:
        assert "not installed: pip install" in pandas["error"], pandas
    checksums = {o["samples"][0]["reported"]["checksum"] for o in by_name.values() if o["samples"]}
    assert len(checksums) == 1, checksums
    assert "| goal (issue 14) |" in stdout

"""The `arrowline` command: output people read, exit codes scripts read."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from engine.core.states import RunState, TaskState
from engine.state.catalog import CatalogReader
from tests.conftest import WritePipeline

Cli = Callable[..., Result]

GOOD = """
    pipeline: shop
    params: {min_amount: 0}
    tasks:
      - id: orders
        sql: select range as id, (range % 7) - 1 as amount from range(100)
      - id: big
        sql: select * from orders where amount > {{ params.min_amount | sql_literal }}
      - id: checked
        validate:
          input: big
          schema: {columns: {amount: {type: int64, checks: {le: 4}}}}
          on_fail: quarantine
          max_rejected_fraction: 0.5
      - id: out
        load: {input: checked, to: duckdb, path: out/w.duckdb, table: big, mode: replace}
"""


def test_validate_valid_file(cli: Cli, write: WritePipeline) -> None:
    result = cli("validate", write("p.yaml", GOOD))
    assert result.exit_code == 0
    assert "p.yaml: valid, 4 tasks" in result.stdout


def test_validate_invalid_file_exits_2_with_file_line_and_task(
    cli: Cli, write: WritePipeline
) -> None:
    path = write(
        "p.yaml",
        """
        pipeline: shop
        tasks:
          - id: a
            sql: select 1 as x
          - id: b
            depends_on: [aa]
            sql: select * from a
    """,
    )
    result = cli("validate", path)
    assert result.exit_code == 2
    assert (
        f"{path}:6: error [task b]: depends on unknown task 'aa'. Did you mean 'a'?"
        in result.stderr
    )
    assert "1 error, 0 warnings" in result.stderr


def test_validate_json(cli: Cli, write: WritePipeline) -> None:
    result = cli("validate", "--format", "json", write("p.yaml", "pipeline: p\ntasks: []\n"))
    assert result.exit_code == 2
    payload = json.loads(result.stdout)
    assert payload["valid"] is False
    assert payload["problems"][0]["line"] == 2


def test_plan_text_and_json(cli: Cli, write: WritePipeline) -> None:
    path = write("p.yaml", GOOD)
    text = cli("plan", path)
    assert text.exit_code == 0
    assert "checked" in text.stdout
    assert "duckdb:out/w.duckdb#big" in text.stdout
    payload = json.loads(cli("plan", path, "--format", "json", "--param", "min_amount=3").stdout)
    assert [t["id"] for t in payload["tasks"]] == ["orders", "big", "checked", "out"]
    assert payload["params"] == {"min_amount": 3}
    assert "amount > 3" in payload["tasks"][1]["sql"]


def test_render_sql_and_config(cli: Cli, write: WritePipeline) -> None:
    path = write("p.yaml", GOOD)
    sql = cli("render", path, "big", "-p", "min_amount=2")
    assert sql.exit_code == 0
    assert "where amount > 2" in sql.stdout
    config = cli("render", path, "out")
    assert "mode: replace" in config.stdout
    assert "table: big" in config.stdout
    missing = cli("render", path, "bgi")
    assert missing.exit_code == 2
    assert "Did you mean 'big'?" in missing.stderr


def test_run_success_then_runs_and_show(cli: Cli, write: WritePipeline, project: Path) -> None:
    path = write("p.yaml", GOOD)
    result = cli("run", path, "--no-progress")
    assert result.exit_code == 0, result.stderr
    assert "SUCCESS" in result.stdout
    assert "critical path" in result.stdout
    listing = cli("runs")
    assert listing.exit_code == 0
    assert "shop" in listing.stdout
    assert "SUCCESS" in listing.stdout
    detail = cli("runs", "last", "--transitions")
    assert "checked" in detail.stdout
    assert "RUNNING" in detail.stdout
    assert "→ SUCCESS" in detail.stdout
    shown = cli("show", "big", "--limit", "3", "--format", "csv")
    assert shown.stdout.splitlines()[0] == "id,amount"
    assert len(shown.stdout.splitlines()) == 4
    quarantined = cli("show", "checked", "--quarantine", "--format", "json")
    rows = json.loads(quarantined.stdout)
    assert rows
    assert all(r["amount"] == 5 for r in rows)
    assert rows[0]["_arrowline_errors"][0]["check"] == "less_than_or_equal_to(4)"


def test_show_of_a_load_says_where_it_loaded(cli: Cli, write: WritePipeline, project: Path) -> None:
    assert cli("run", write("p.yaml", GOOD), "--no-progress").exit_code == 0
    with CatalogReader(project / ".arrowline" / "catalog.db") as catalog:
        run_id = catalog.runs("shop")[0].run_id
    shown = cli("show", "out")
    assert shown.exit_code == 1
    message = " ".join(shown.stderr.split())
    assert (
        f"task 'out' of pipeline 'shop' is a load: run {run_id} loaded its rows into "
        f"duckdb:{project / 'out' / 'w.duckdb'}#big" in message
    )
    assert "task 'checked' holds the rows it loaded" in message
    assert "Did you mean" not in message
    unknown = cli("show", "chekced")
    assert unknown.exit_code == 1
    assert "no task 'chekced' in pipeline 'shop'. Did you mean 'checked'?" in unknown.stderr


def test_run_failure_exits_1_and_names_the_task(cli: Cli, write: WritePipeline) -> None:
    path = write(
        "p.yaml",
        """
        pipeline: broken
        tasks:
          - id: a
            sql: select cast('x' as integer) as n
          - id: b
            sql: select * from a
    """,
    )
    result = cli("run", path, "--no-progress")
    assert result.exit_code == 1
    assert "✗ a (DataError)" in result.stdout
    assert f"task defined at {path}:3" in result.stdout.replace("\n", "")
    assert "skipped because an upstream task failed: b" in result.stdout


def test_a_transient_failure_that_used_up_its_attempts_does_not_promise_another(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    path = write(
        "p.yaml",
        """
        pipeline: locked
        tasks:
          - id: src
            sql: select 1 as x
          - id: out
            load: {input: src, to: duckdb, path: w.duckdb, table: t}
            retry: {attempts: 2, backoff: 0s}
    """,
    )
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(project / 'w.duckdb')!r}); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        result = cli("run", path, "--no-progress")
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    assert result.exit_code == 1
    assert "attempt 1/2 failed (TransientTaskError), retrying" in result.stderr
    assert "failed (TransientTaskError, attempts exhausted)" in result.stderr
    failure = result.stdout[result.stdout.index("✗ out") :]
    assert "the database file is locked by another process" in failure
    assert "more `retry` attempts" in failure  # what would have helped, not what happens next
    assert "is retried" not in result.stdout + result.stderr


def test_run_invalid_pipeline_exits_2(cli: Cli, write: WritePipeline) -> None:
    result = cli(
        "run",
        write("p.yaml", "pipeline: p\ntasks:\n  - id: a\n    sql: selec 1\n"),
        "--no-progress",
    )
    assert result.exit_code == 2
    assert "p.yaml:4: error [task a]: SQL does not parse" in result.stderr


def test_run_unknown_parameter_and_selection_exit_2(cli: Cli, write: WritePipeline) -> None:
    path = write("p.yaml", GOOD)
    bad_param = cli("run", path, "--param", "min_amont=1", "--no-progress")
    assert bad_param.exit_code == 2
    assert "Did you mean 'min_amount'?" in bad_param.stderr
    bad_select = cli("run", path, "--select", "nope", "--no-progress")
    assert bad_select.exit_code == 2
    assert "unknown task 'nope'" in bad_select.stderr


IDENTIFIER = """
    pipeline: pick
    params: {source: orders}
    tasks:
      - id: orders
        sql: select 1 as x
      - id: copy
        sql: select * from {{ params.source | sql_identifier }}
"""


@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_parameter_naming_no_task_as_a_table_exits_2_naming_task_parameter_and_table(
    cli: Cli, write: WritePipeline, command: str
) -> None:
    path = write("p.yaml", IDENTIFIER)
    result = cli(command, path, "--param", "source=ordrs")
    assert result.exit_code == 2, result.output
    assert (
        "p.yaml:7: error [task copy]: SQL reads table 'ordrs' (the value of parameter "
        "'source'), which no task of this pipeline produces. Did you mean 'orders'?"
    ) in " ".join(result.stderr.split())  # the console wraps long lines
    assert "Traceback" not in result.output
    assert "KeyError" not in result.output


def test_a_parameter_naming_a_load_task_as_a_table_exits_2(cli: Cli, write: WritePipeline) -> None:
    path = write(
        "p.yaml",
        IDENTIFIER
        + "      - id: out\n        load: {input: orders, to: parquet, path: o.parquet}\n",
    )
    result = cli("run", path, "--param", "source=out", "--no-progress")
    assert result.exit_code == 2, result.output
    assert "SQL reads 'out', a load task, which produces no table" in result.stderr


def test_json_logs_carry_pipeline_run_and_task(cli: Cli, write: WritePipeline) -> None:
    result = cli("run", write("p.yaml", GOOD), "--no-progress", "--log-format", "json")
    assert result.exit_code == 0
    records = [
        json.loads(line)["record"] for line in result.stderr.splitlines() if line.startswith("{")
    ]
    assert records
    assert all(r["extra"]["pipeline"] == "shop" and r["extra"]["run_id"] for r in records)
    task_lines = [r for r in records if "succeeded" in r["message"]]
    assert {r["extra"]["task_id"] for r in task_lines} == {"orders", "big", "checked", "out"}


def test_schema_is_json_schema(cli: Cli) -> None:
    result = cli("schema")
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert "TaskSpec" in schema["$defs"]


def test_runs_without_a_catalog_explains(cli: Cli, project: Path) -> None:
    result = cli("runs")
    assert result.exit_code == 1
    assert "no arrowline catalog" in result.stderr


@pytest.mark.slow
def test_the_installed_command_runs_in_a_real_process(write: WritePipeline, project: Path) -> None:
    path = write("p.yaml", GOOD)
    command = [sys.executable, "-m", "engine", "run", str(path), "--no-progress"]
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=project, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert (project / "out" / "w.duckdb").exists()
    assert "nanobind: leaked" not in done.stderr


LONG_RUNNING = """
    pipeline: interrupted
    tasks:
      - id: long
        sql: select count(*) as n from range(100000000000) a where a % 7 = 3
      - id: after
        sql: select * from long
"""


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_cancel_the_run_cleanly(
    write: WritePipeline, project: Path, signum: int
) -> None:
    path = write("p.yaml", LONG_RUNNING)
    # A shell's background job inherits SIGINT ignored, a terminal's Ctrl-C does not: install
    # Python's handler first, as an interactive run has it.
    start = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from engine.cli import console; sys.argv[0] = 'arrowline'; console()"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", start, "run", str(path), "--no-progress"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "run started" in line:
            break
    time.sleep(0.5)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "the run was cancelled" in stdout
    with CatalogReader(project / ".arrowline" / "catalog.db") as catalog:
        run = catalog.run("last")
        assert run.state is RunState.CANCELLED
        states = {t.task_id: t.state for t in catalog.task_runs(run.run_id)}
    assert states == {"long": TaskState.CANCELLED, "after": TaskState.CANCELLED}
    assert not list((project / ".arrowline" / "workspace" / "interrupted" / "long").glob("2*"))

    # The cancelled run can be resumed; here its query changes, so only with --force.
    path.write_text(path.read_text().replace("range(100000000000)", "range(1000)"))
    command = [sys.executable, "-m", "engine", "run", str(path), "--no-progress", "--resume"]
    refused = subprocess.run(command, capture_output=True, text=True, cwd=project, check=False)
    assert refused.returncode == 1
    assert "changed since run" in refused.stderr
    resumed = subprocess.run(
        [*command, "--force"], capture_output=True, text=True, cwd=project, check=False
    )
    assert resumed.returncode == 0, resumed.stderr
    with CatalogReader(project / ".arrowline" / "catalog.db") as catalog:
        again = catalog.run("last")
    assert (again.run_id, again.state) == (run.run_id, RunState.SUCCESS)


def test_check_reports_every_connection(
    cli: Cli, write: WritePipeline, pg_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOD_URI", pg_uri)
    path = write(
        "p.yaml",
        """
        pipeline: conns
        connections:
          good: {kind: postgres, uri: "${env:GOOD_URI}"}
          down: {kind: postgres, uri: "postgresql://postgres:pa55word-x@127.0.0.1:1/test"}
          unset: {kind: postgres, uri: "${env:NOT_SET_FOR_CHECK}"}
        tasks:
          - id: a
            sql: select 1 as x
    """,
    )
    result = cli("check", path)
    assert result.exit_code == 1
    assert "ok PostgreSQL" in result.stdout
    assert "Connection refused" in result.stdout
    assert "environment variable NOT_SET_FOR_CHECK is not set" in result.stdout
    assert "pa55word-x" not in result.stdout + result.stderr


def test_render_and_logs_never_show_a_password(
    cli: Cli, write: WritePipeline, pg_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_uri = pg_uri.replace("postgres@", "postgres:top-secret-pw@", 1)  # trust auth ignores it
    monkeypatch.setenv("WH_URI", secret_uri)
    path = write(
        "p.yaml",
        """
        pipeline: secrets
        connections:
          wh: {kind: postgres, uri: "${env:WH_URI}"}
        tasks:
          - id: rows
            extract: {from: postgres, connection: wh, query: "select 1 as x from nowhere_at_all"}
    """,
    )
    rendered = cli("render", path, "rows")
    assert rendered.exit_code == 0
    assert "top-secret-pw" not in rendered.stdout
    ran = cli("run", path, "--no-progress", "--log-format", "json")
    assert ran.exit_code == 1
    assert "nowhere_at_all" in ran.stderr  # the error is reported ...
    assert "top-secret-pw" not in ran.stderr + ran.stdout  # ... without the secret
    shown = cli("runs", "last", "--format", "json")
    assert "top-secret-pw" not in shown.stdout


DUPLICATE_HEADER = """
    pipeline: dup
    tasks:
      - id: raw
        extract: {from: files, path: data/x.csv}
      - id: t
        sql: select * from raw
"""


def test_a_csv_header_naming_a_column_twice_fails_every_run_without_a_traceback(
    cli: Cli, write: WritePipeline
) -> None:
    write("data/x.csv", "id,id\n1,2\n")
    path = write("p.yaml", DUPLICATE_HEADER)
    for _ in range(2):  # the first run used to succeed, renaming one to id_1; the next crashed
        result = cli("run", path)
        assert result.exit_code == 1
        output = " ".join(result.output.split())
        assert "data/x.csv:1: the header names column 'id' twice (columns 1 and 2)" in output
        assert "Traceback" not in result.output


def test_validate_and_plan_report_a_header_naming_a_column_twice(
    cli: Cli, write: WritePipeline
) -> None:
    write("data/x.csv", "id,ID\n1,2\n")
    path = write("p.yaml", DUPLICATE_HEADER)
    message = (
        "data/x.csv:1: the header names columns 'id' and 'ID' (columns 1 and 2), which differ "
        "only in case: DuckDB reads them as one name"
    )
    validated = cli("validate", path)
    # A warning, as for files that are not there yet: the data may change before the run.
    assert validated.exit_code == 0
    assert f"{path}:4: warning [task raw]: {message} (column-names)" in " ".join(
        validated.stderr.split()
    )
    planned = cli("plan", path, "--format", "json")
    assert planned.exit_code == 2
    (problem,) = json.loads(planned.stdout)["schemas"]["problems"]
    assert (problem["code"], problem["task_id"], problem["line"]) == ("column-names", "raw", 4)
    assert problem["message"] == message


def test_validate_names_an_unknown_key_of_an_inline_schema_with_its_line(
    cli: Cli, write: WritePipeline
) -> None:
    path = write(
        "p.yaml",
        """
        pipeline: shop
        tasks:
          - id: a
            sql: select 1 as amount
          - id: b
            sql: select 2 as amount
          - id: c
            sql: select 3 as amount
          - id: checked
            validate:
              input: a
              schema:
                columns:
                  amount: {type: int64, minimum: 0}
                strictt: true
        """,
    )
    result = cli("validate", path)
    assert result.exit_code == 2
    errors = " ".join(result.stderr.split())
    assert (
        f"{path}:14: error [task checked]: unknown key 'minimum' in "
        "validate.schema.columns.amount. (unknown-key) hint: valid keys: checks, description, "
        "nullable, required, type, unique"
    ) in errors
    assert (
        f"{path}:15: error [task checked]: unknown key 'strictt' in validate.schema. Did you "
        "mean 'strict'? (unknown-key)"
    ) in errors
    assert "is a dict" not in errors


def test_the_console_script_keeps_exit_codes_output_and_exit_handlers(
    write: WritePipeline, project: Path, tmp_path: Path
) -> None:
    """`arrowline` ends without the interpreter's teardown (engine.cli.console): each exit
    code still reaches the shell, every line written to a pipe arrives, the exit handlers
    registered by the command's libraries still run, and a library's thread pool left open
    with idle workers (pyiceberg keeps one) does not keep the process from ending."""
    good = write("good.yaml", "pipeline: good\ntasks:\n  - id: a\n    sql: select 1 as x\n")
    bad = write(
        "bad.yaml", "pipeline: bad\ntasks:\n  - id: a\n    sql: select error('boom') as x\n"
    )
    marker = tmp_path / "exit-handler-ran"
    start = (
        "import atexit, pathlib, sys; "
        f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'yes'); "
        "import concurrent.futures; pool = concurrent.futures.ThreadPoolExecutor(2); "
        "pool.submit(int).result(); "
        "from engine.cli import console; sys.argv[0] = 'arrowline'; console()"
    )

    def arrowline(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", start, *args],
            cwd=project,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    done = arrowline("run", str(good), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "SUCCESS" in done.stdout
    assert marker.read_text() == "yes"
    assert arrowline("run", str(bad), "--no-progress").returncode == 1
    assert arrowline("validate", str(project / "missing.yaml")).returncode == 2
    schema = arrowline("schema")  # a long output, all of it through the pipe
    assert schema.returncode == 0
    assert json.loads(schema.stdout)["title"]

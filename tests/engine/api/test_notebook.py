from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

import engine
from engine.api.pipeline import run
from engine.api.project import Project
from engine.core.errors import StateError
from tests.conftest import WritePipeline

PIPELINE = """
    pipeline: nb
    params: {n: 10}
    tasks:
      - id: numbers
        sql: select range as x from range({{ params.n }})
      - id: doubled
        sql: select x, x * 2 as y from numbers
      - id: checked
        validate:
          input: doubled
          schema: {columns: {y: {type: int64, checks: {lt: 10}}}}
          on_fail: quarantine
          max_rejected_fraction: 1
"""


def test_open_gives_runs_tables_sql_and_quarantine(write: WritePipeline, project: Path) -> None:
    path = write("p.yaml", PIPELINE)
    first = run(path)
    second = run(path, params={"n": 3})
    with engine.open(project) as notebook:
        runs = notebook.runs()
        assert runs["run_id"].to_list() == [second.run_id, first.run_id]
        assert notebook.table("doubled").collect()["x"].to_list() == [0, 1, 2]  # latest
        old = notebook.table("doubled", run=first.run_id[:22]).select(pl.len()).collect().item()
        assert old == 10
        assert notebook.sql("select sum(y) as s from doubled").fetchall() == [(6,)]
        assert notebook.sql('select count(*) from "nb"."numbers"').fetchall() == [(3,)]
        assert notebook.quarantine("checked", run=first.run_id).collect()["y"].to_list() == [
            10,
            12,
            14,
            16,
            18,
        ]
        assert set(notebook.tasks()["task_id"].to_list()) == {"numbers", "doubled", "checked"}


def test_helpful_errors(write: WritePipeline, project: Path) -> None:
    with pytest.raises(StateError, match="hold no arrowline state"):
        engine.open(project)
    run(write("p.yaml", PIPELINE))
    with engine.open(project) as notebook:
        with pytest.raises(StateError, match="Did you mean 'doubled'"):
            notebook.table("doubeld")
        with pytest.raises(StateError, match="quarantined no rows"):
            notebook.quarantine("numbers")


def test_an_unknown_task_is_no_such_task_with_did_you_mean(
    write: WritePipeline, project: Path
) -> None:
    first = run(write("p.yaml", PIPELINE))
    with engine.open(project) as notebook:
        with pytest.raises(StateError) as unknown:
            notebook.table("nope")
        assert "no task 'nope'" in unknown.value.message
        assert "successful output" not in unknown.value.message
        with pytest.raises(
            StateError, match=r"no task 'doubeld' in pipeline 'nb'\. Did you mean 'doubled'\?"
        ):
            notebook.table("doubeld")
        with pytest.raises(
            StateError,
            match=rf"run {first.run_id} has no task 'doubeld'\. Did you mean 'doubled'\?",
        ):
            notebook.table("doubeld", run=first.run_id)


def test_a_task_that_never_succeeded_has_no_output_yet(write: WritePipeline, project: Path) -> None:
    path = write(
        "p.yaml",
        """
        pipeline: broken
        tasks:
          - id: boom
            sql: select error('no') as x
        """,
    )
    failed = run(path)
    assert not failed.ok
    with engine.open(project) as notebook:
        with pytest.raises(StateError, match="no successful output of task 'boom' yet"):
            notebook.table("boom")
        with pytest.raises(
            StateError, match=f"run {failed.run_id} has no output of task 'boom': it is FAILED"
        ):
            notebook.table("boom", run=failed.run_id)


def test_a_load_task_says_where_it_loaded(write: WritePipeline, project: Path) -> None:
    path = write(
        "p.yaml",
        PIPELINE
        + """
      - id: publish
        load: {input: checked, to: parquet, path: out/doubled}
""",
    )
    done = run(path)
    with engine.open(project) as notebook:
        for which in (None, done.run_id):
            with pytest.raises(StateError) as load:
                notebook.table("publish", run=which)
            message = load.value.message
            assert f"parquet:{project / 'out' / 'doubled'}" in message
            assert done.run_id in message
            assert "Did you mean" not in message
            assert "checked" in (load.value.hint or "")


def test_open_walks_up_to_the_folder_holding_its_state_as_the_cli_does(
    write: WritePipeline, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(write("p.yaml", PIPELINE))
    deeper = project / "notebooks" / "2024"
    deeper.mkdir(parents=True)
    with engine.open(deeper) as notebook:
        assert notebook.path == project
        assert notebook.table("doubled").select(pl.len()).collect().item() == 10
    monkeypatch.chdir(deeper)
    with engine.open(".") as here, engine.open() as default:
        assert here.path == default.path == project
    elsewhere = project.parent / (project.name + "-empty")
    elsewhere.mkdir()
    with pytest.raises(StateError, match="and the folders above it hold no arrowline state"):
        engine.open(elsewhere)


def test_runs_times_are_datetimes(write: WritePipeline, project: Path) -> None:
    before = datetime.now(UTC)
    run(write("p.yaml", PIPELINE))
    with engine.open(project) as notebook:
        runs = notebook.runs()
    for column in ("started_at", "ended_at", "logical_date"):
        assert runs.schema[column] == pl.Datetime("us", "UTC")
    (row,) = runs.to_dicts()
    assert before <= row["started_at"] <= row["ended_at"] <= datetime.now(UTC)
    assert row["duration_s"] == pytest.approx(
        (row["ended_at"] - row["started_at"]).total_seconds(), abs=1e-3
    )


@pytest.mark.slow
def test_readable_while_another_process_is_running(write: WritePipeline, project: Path) -> None:
    path = write("p.yaml", PIPELINE)
    first = run(path)
    write("udfs.py", "import time\ndef slow(frame):\n    time.sleep(3)\n    return frame\n")
    slow = write(
        "slow.yaml",
        """
        pipeline: slow
        tasks:
          - id: src
            sql: select 1 as x
          - id: wait
            udf: {input: src, function: "udfs.py:slow"}
    """,
    )
    writer = subprocess.Popen(
        [sys.executable, "-m", "engine", "run", str(slow), "--no-progress"],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        seen_running = False
        while time.monotonic() < deadline and not seen_running:
            with engine.open(project) as notebook:
                runs = notebook.runs()  # once: the other process may add its run in between
                states = dict(zip(runs["pipeline"], runs["state"], strict=True))
                seen_running = states.get("slow") == "RUNNING"
                # published outputs stay readable while the other run writes its catalog rows
                assert (
                    notebook.table("doubled", run=first.run_id).select(pl.len()).collect().item()
                    == 10
                )
            time.sleep(0.1)
        assert seen_running
    finally:
        _, stderr = writer.communicate(timeout=60)
    assert writer.returncode == 0, stderr


def test_quarantine_frames_say_their_reasons_in_words_and_keep_the_struct_fields(
    write: WritePipeline, project: Path
) -> None:
    run(write("p.yaml", PIPELINE.replace("{n: 10}", "{n: 6}")))
    with engine.open(project) as notebook:
        frame = notebook.quarantine("checked").collect()
    assert frame.columns[:2] == ["_arrowline_row", "_arrowline_reasons"]
    assert frame["_arrowline_reasons"].to_list() == ["y: less_than(10) (10)"]
    errors = frame.schema["_arrowline_errors"]
    assert isinstance(errors, pl.List)
    assert isinstance(errors.inner, pl.Struct)
    assert [f.name for f in errors.inner.fields] == ["column", "check", "value"]
    assert frame["_arrowline_errors"].to_list() == [
        [{"column": "y", "check": "less_than(10)", "value": "10"}]
    ]
    assert "y: less_than(10) (10)" in frame._repr_html_()  # what a notebook shows


# -- what a notebook shows ------------------------------------------------------------------------

HOSTILE = "<script>alert(1)</script>"


def test_a_run_result_shows_its_tasks_and_gantt_chart_escaped(
    write: WritePipeline, project: Path
) -> None:
    path = write(
        "p.yaml",
        f"""
        pipeline: mixed
        tasks:
          - id: numbers
            sql: select range as x from range(7)
          - id: boom
            sql: select error('{HOSTILE}') as x from numbers
          - id: after
            sql: select * from boom
        """,
    )
    result = run(path)
    html = result._repr_html_()
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the error, readable
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg" class="gantt"') == 1
    for task in ("numbers", "boom"):
        assert f'data-task="{task}"' in html  # a bar per task that ran
    rows = _rows(html)
    assert rows["numbers"][:3] == ["sql", "SUCCESS", "1"]
    assert rows["numbers"][4] == "7"  # rows out
    assert rows["boom"][1:3] == ["FAILED", "1"]
    assert rows["after"][1] == "SKIPPED"
    assert repr(result).startswith(f"<RunResult mixed {result.run_id} FAILED")


def _rows(html: str) -> dict[str, list[str]]:
    """The first table's body rows, by first cell, as text without tags."""
    import re

    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", body):
        cells = [re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        rows[cells[0]] = cells[1:]
    return rows


def test_a_project_shows_each_pipeline_with_its_last_run(
    write: WritePipeline, project: Path
) -> None:
    first = run(write("p.yaml", PIPELINE))
    write("later.yaml", "pipeline: later\ntasks:\n  - id: t\n    sql: select 1 as x\n")
    failed = run(
        write(
            "broken.yaml",
            f"pipeline: broken\ntasks:\n  - id: t\n    sql: select error('{HOSTILE}')\n",
        )
    )
    with engine.open(project) as notebook:
        html = notebook._repr_html_()
        assert repr(notebook) == f"Project({str(project)!r})"
    rows = _rows(html)
    assert rows["nb"][:3] == ["p.yaml", first.run_id, "SUCCESS"]
    assert rows["broken"][:3] == ["broken.yaml", failed.run_id, "FAILED"]
    assert rows["later"][:2] == ["later.yaml", "never run"]
    assert "<script" not in html
    assert "&lt;script&gt;" in html


def test_run_info_draws_a_runs_graph_by_state_its_tasks_and_its_timeline(
    write: WritePipeline, project: Path
) -> None:
    path = write("p.yaml", PIPELINE.replace("pipeline: nb", "pipeline: nb\n    cache: true"))
    first = run(path)
    second = run(path, params={"n": 10})  # the same: everything reused
    with engine.open(project) as notebook:
        shown = notebook.run_info(first.run_id[:20])
        again = notebook.run_info(pipeline="nb")
    assert (shown.run_id, shown.state, again.run_id) == (first.run_id, "SUCCESS", second.run_id)
    assert repr(shown).startswith(f"<Run nb {first.run_id} SUCCESS in ")
    assert set(shown.tasks["task_id"].to_list()) == {"numbers", "doubled", "checked"}
    html = shown._repr_html_()
    assert 'class="dag"' in html
    assert 'class="gantt"' in html
    for task in ("numbers", "doubled", "checked"):
        assert f'data-task="{task}" data-kind=' in html
    assert _rows(html)["checked"][:2] == ["validate", "SUCCESS"]
    assert _rows(html)["checked"][5] == "5"  # rejected
    reused = again._repr_html_()
    assert reused.count('data-state="REUSED"') == 3
    assert _rows(reused)["numbers"][1] == "REUSED"
    assert f"from {first.run_id}" in reused


def test_a_plan_and_a_python_pipeline_show_their_task_graph(
    write: WritePipeline, project: Path
) -> None:
    path = write("p.yaml", PIPELINE.replace("params: {n: 10}", 'params: {n: 10, tag: "<b>"}'))
    with Project.find(project) as notebook:  # nothing ran yet: the folder as the CLI finds it
        plan = notebook.plan(str(path))
    html = plan._repr_html_()
    assert repr(plan) == f"<Plan nb {plan.run_id}: 3 of 3 tasks to run>"
    assert 'class="dag"' in html
    assert "tag=&lt;b&gt;" in html
    assert "<b>" not in html
    assert _rows(html)["doubled"][:4] == ["sql", "run", "new", "numbers"]

    built = engine.Pipeline("built", base_dir=project)
    built.sql("a", "select 1 as x")
    built.sql("b", "select x + 1 as y from a")
    shown = built._repr_html_()
    assert repr(built) == "<Pipeline built: 2 tasks>"
    assert shown.count('class="dag"') == 1
    assert _rows(shown)["b"][:2] == ["sql", "a"]
    built.sql("c", "select * from nowhere")
    assert "nowhere" in built._repr_html_()  # the problem, not a traceback
    assert repr(engine.load(path)).startswith(f"<Definition nb ({path}): 3 tasks")
    loaded = engine.load(path)._repr_html_()
    assert loaded is not None
    assert loaded.count('class="dag"') == 1  # a loaded definition shows its task graph too


def test_a_lineage_answer_is_a_dict_a_notebook_shows_as_a_tree(
    write: WritePipeline, project: Path
) -> None:
    import json

    path = write("p.yaml", PIPELINE)
    run(path)
    with engine.open(project) as notebook:
        report = notebook.lineage(str(path), "checked.y")
    assert isinstance(report, dict)
    assert json.loads(json.dumps(report)) == dict(report)
    assert list(report["tree"]) == ["doubled.y (value)", "doubled.y (filter)"]
    html = report._repr_html_()
    assert "<code>doubled.y (value)</code><ul" in html
    assert "<code>numbers.x (value)</code>" in html


def test_quarantine_errors_give_one_row_per_failing_value(
    write: WritePipeline, project: Path
) -> None:
    run(
        write(
            "p.yaml",
            PIPELINE.replace("{n: 10}", "{n: 7}").replace(
                "checks: {lt: 10}", "checks: {lt: 10, isin: [0, 2, 4, 6, 8, 10]}"
            ),
        )
    )
    with engine.open(project) as notebook:
        errors = notebook.quarantine_errors("checked")
    assert errors.columns == ["_arrowline_row", "column", "check", "value"]
    assert sorted(errors.select("column", "check", "value").rows()) == [
        ("y", "isin([0, 2, 4, 6, 8, 10])", "12"),
        ("y", "less_than(10)", "10"),
        ("y", "less_than(10)", "12"),
    ]
    assert errors.group_by("_arrowline_row").len()["len"].sort().to_list() == [1, 2]


# -- magics ---------------------------------------------------------------------------------------


def test_the_arrowline_magic_runs_plans_and_lists_through_the_project_api(
    write: WritePipeline, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from IPython.core.error import UsageError

    from engine.api.magics import run_line, run_sql
    from engine.execution.results import RunResult
    from engine.planning.build import Plan

    path = write("p.yaml", PIPELINE)
    plan = run_line("plan p.yaml --param n=4")
    assert isinstance(plan, Plan)
    assert plan.params["n"] == 4
    result = run_line(f"run {path} -p n=3 --select doubled")
    assert isinstance(result, RunResult)
    assert result.ok
    assert set(result.tasks) == {"numbers", "doubled"}
    assert run_line("runs nb")["run_id"].to_list() == [result.run_id]
    assert run_line("runs p.yaml")["run_id"].to_list() == [result.run_id]  # a file: its name
    assert run_line("show").run_id == result.run_id
    assert run_sql("select sum(y) as s from doubled").to_dicts() == [{"s": 6}]
    elsewhere = project.parent / (project.name + "-elsewhere")
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert run_line(f"runs --project-dir {project}")["run_id"].to_list() == [result.run_id]
    assert run_line(f"--project-dir {project} show").run_id == result.run_id
    assert run_sql("select count(*) as n from doubled", str(project)).item() == 3
    with pytest.raises(UsageError, match="invalid choice: 'rnu'"):
        run_line("rnu p.yaml")
    with pytest.raises(UsageError, match="the following arguments are required: pipeline"):
        run_line("run")
    assert run_line("run --help") is None  # argparse printed it; the notebook goes on


@pytest.mark.slow
def test_a_real_notebook_loads_the_magics_runs_queries_and_shows_html(
    write: WritePipeline, project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A Jupyter kernel of this environment's Python runs a notebook as a user would."""
    import json

    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError as exc:
        pytest.fail(f"{exc.name} is missing: .venv/bin/pip install -e '.[dev]'")
    try:
        import ipykernel  # noqa: F401  # the kernel the notebook runs on
    except ImportError:
        pytest.fail("ipykernel is missing: .venv/bin/pip install -e '.[dev]'")
    kernels = tmp_path_factory.mktemp("jupyter")
    spec = kernels / "kernels" / "arrowline-test" / "kernel.json"
    spec.parent.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec.write_text(json.dumps({"argv": argv, "display_name": "arrowline", "language": "python"}))
    write("p.yaml", PIPELINE)
    cells = [
        "import sys\nprint(sys.executable)",
        "%load_ext engine",
        "%arrowline run p.yaml --param n=4",
        "%%sql\nselect sum(y) as total from doubled",
        "%arrowline runs nb",
        "import engine\nproject = engine.open('.')\nproject",
        "project.run_info()",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    env = {"JUPYTER_PATH": str(kernels), "JUPYTER_PLATFORM_DIRS": "1"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        NotebookClient(
            notebook,
            kernel_name="arrowline-test",
            timeout=180,
            resources={"metadata": {"path": str(project)}},
        ).execute()
    outputs = [cell.outputs for cell in notebook.cells]
    assert outputs[0][0]["text"].strip() == sys.executable  # the kernel is this environment's
    assert outputs[1] == []

    def html(index: int) -> str:
        (shown,) = [o for o in outputs[index] if o["output_type"] == "execute_result"]
        return str(shown["data"]["text/html"])

    ran = html(2)
    assert 'class="gantt"' in ran
    assert ">SUCCESS</span>" in ran
    assert "<td>12</td>" in html(3)  # polars' own table: 0 + 2 + 4 + 6
    assert "SUCCESS" in html(4)
    assert ">nb</td>" in html(5)
    assert 'class="dag"' in html(6)
    for index in range(len(cells)):
        assert not [o for o in outputs[index] if o["output_type"] == "error"], outputs[index]


def test_a_run_result_whose_catalog_is_gone_charts_each_tasks_start_and_end(
    write: WritePipeline, project: Path
) -> None:
    import shutil

    result = run(write("p.yaml", PIPELINE))
    shutil.rmtree(project / ".arrowline")
    html = result._repr_html_()
    assert html.count('class="bar attempt"') == 3  # one bar per task, none lost
    assert "numbers · attempt 1 · " in html
    assert "each task from its first start to its end (the catalog: no arrowline catalog" in html

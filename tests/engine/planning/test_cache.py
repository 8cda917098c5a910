"""The cache never computes the same thing twice and never hands back a stale output: a task
whose key matches a kept output is reused in every run, each other task says why it runs, and a
recomputed upstream that came out the same keeps the tasks below it (early cutoff)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

import engine
from engine.api.pipeline import plan, run
from engine.core.problems import Problem
from engine.tasks.checks import check_file
from tests.conftest import WritePipeline

CHAIN = """
    pipeline: chain
    cache: true
    params: {min_x: 0}
    tasks:
      - id: a
        extract: {from: files, path: in.csv}
      - id: b
        sql: select x, count(*) as n from a where x >= {{ params.min_x }} group by x order by x
      - id: c
        sql: select sum(n) as total from b
"""


def reasons(path: Path, **kwargs: Any) -> dict[str, str]:
    return {task.id: task.cache.reason if task.cache else "" for task in plan(path, **kwargs).tasks}


def total(project: Path) -> int:
    with engine.open(project) as opened:
        return int(opened.table("c").collect().item())


def touch(path: Path, text: str | None = None) -> None:
    """Rewrite a file (or only move its mtime on), as an editor or a new delivery would."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    if text is not None:
        path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


@pytest.fixture
def chain(write: WritePipeline, project: Path) -> Path:
    (project / "in.csv").write_text("x,y\n1,2\n1,3\n2,4\n", encoding="utf-8")
    return write("p.yaml", CHAIN)


def test_an_unchanged_rerun_reuses_every_output_and_says_which_run(chain: Path) -> None:
    first = run(chain)
    assert first.ok
    assert reasons(chain) == dict.fromkeys("abc", f"cached (run {first.run_id})")
    second = run(chain)
    assert second.ok
    assert {t: r.reused_from for t, r in second.tasks.items()} == dict.fromkeys("abc", first.run_id)


def test_the_first_run_is_new_and_cache_off_or_force_runs_everything(
    chain: Path, write: WritePipeline
) -> None:
    assert reasons(chain) == dict.fromkeys("abc", "new")
    assert run(chain).ok
    assert reasons(chain, force=True) == dict.fromkeys("abc", "forced")
    forced = run(chain, force=True)
    assert [r.reused_from for r in forced.tasks.values()] == [None] * 3
    write("p.yaml", CHAIN.replace("cache: true", "cache: false"))
    assert reasons(chain) == dict.fromkeys("abc", "forced")
    assert [t.action for t in plan(chain).tasks] == ["run"] * 3


def test_a_task_overrides_the_pipelines_cache(chain: Path, write: WritePipeline) -> None:
    assert run(chain).ok
    write("p.yaml", CHAIN.replace("sql: select sum(n)", "cache: false\n        sql: select sum(n)"))
    assert [t.action for t in plan(chain).tasks] == ["reuse", "reuse", "run"]


def test_each_task_says_what_changed_since_its_last_run(
    chain: Path, write: WritePipeline, project: Path
) -> None:
    assert run(chain).ok
    assert reasons(chain, params={"min_x": "2"}) == {
        "a": reasons(chain)["a"],
        "b": "parameter changed",
        "c": "upstream changed",
    }
    write("p.yaml", CHAIN.replace("count(*) as n", "count(y) as n"))
    assert reasons(chain)["b"] == "definition changed"
    write("p.yaml", CHAIN)
    touch(project / "in.csv", "x,y\n1,2\n")
    assert list(reasons(chain).values()) == [
        "input changed",
        "upstream changed",
        "upstream changed",
    ]


def test_sql_layout_keyword_case_and_comments_do_not_change_a_fingerprint(
    chain: Path, write: WritePipeline
) -> None:
    first = run(chain)
    assert first.ok
    reformatted = CHAIN.replace(
        "sql: select sum(n) as total from b",
        "sql: |\n          -- the grand total\n          SELECT   sum(n)  AS total\n"
        "          FROM b /* all of it */",
    )
    assert reformatted != CHAIN
    write("p.yaml", reformatted)
    assert reasons(chain)["c"] == f"cached (run {first.run_id})"
    write("p.yaml", CHAIN.replace("sum(n) as total", "sum(n) + 1 as total"))
    assert reasons(chain)["c"] == "definition changed"


def test_a_recomputed_upstream_with_the_same_output_keeps_the_tasks_below_it(
    chain: Path, project: Path
) -> None:
    first = run(chain)
    assert first.ok
    touch(project / "in.csv")  # a new mtime, the same bytes
    second = run(chain)
    assert second.ok
    assert second.tasks["a"].reused_from is None  # read again: its file looked changed
    assert second.tasks["b"].reused_from == first.run_id  # came out the same: cut off here
    assert second.tasks["c"].reused_from == first.run_id
    with engine.open(project) as opened:
        rows = {r.task_id: r for r in opened.catalog.task_runs(second.run_id)}
    assert rows["b"].details == {"cached_from": first.run_id}
    # the next run plans the whole chain from the contents it now knows
    assert [t.action for t in plan(chain).tasks] == ["reuse"] * 3
    assert total(project) == 3


def test_an_upstream_that_came_out_different_runs_everything_below_it(
    chain: Path, project: Path
) -> None:
    assert run(chain).ok
    touch(project / "in.csv", "x,y\n1,2\n1,3\n2,4\n2,5\n")
    second = run(chain)
    assert second.ok
    assert [r.reused_from for r in second.tasks.values()] == [None] * 3
    assert total(project) == 4


def test_an_output_removed_from_the_workspace_is_run_again(chain: Path, project: Path) -> None:
    first = run(chain)
    assert first.ok
    with engine.open(project) as opened:
        folder = Path(str(opened.catalog.task_run(first.run_id, "c").output_path))  # type: ignore[union-attr]
    for part in folder.iterdir():
        part.unlink()
    folder.rmdir()
    assert reasons(chain)["c"] == "new"
    assert run(chain).ok
    assert total(project) == 3


LOADS = """
    pipeline: loads
    cache: true
    tasks:
      - id: a
        sql: select range as x from range(3)
      - id: out
        load: {{input: a, to: parquet, path: out/a.parquet}}
        {cache}
"""


def test_a_load_is_skipped_only_when_cache_is_set_on_it(
    write: WritePipeline, project: Path
) -> None:
    path = write("p.yaml", LOADS.format(cache=""))
    assert run(path).ok
    assert reasons(path)["out"] == "forced"  # the pipeline's cache does not reach a load
    write("p.yaml", LOADS.format(cache="cache: true"))
    assert run(path).ok  # recorded with its key now
    first = run(path)
    assert first.tasks["out"].reused_from is not None
    (project / "out" / "a.parquet").unlink()  # a load's target is not watched: it said so
    assert plan(path).task("out").action == "reuse"
    write("p.yaml", LOADS.format(cache="cache: true").replace("range(3)", "range(4)"))
    assert [t.action for t in plan(path).tasks] == ["run", "run"]


def _problems(write: WritePipeline, text: str) -> list[Problem]:
    _, problems = check_file(write("bad.yaml", text))
    return problems


def test_validation_refuses_bad_cache_values_with_file_and_line(write: WritePipeline) -> None:
    problems = _problems(
        write,
        """
        pipeline: p
        cache: maybe
        tasks:
          - id: a
            sql: select 1 as x
            cache: {key: select 1}
          - id: b
            sql: select * from a
            cache: 3
        """,
    )
    said = {(p.line, p.task_id, p.code) for p in problems}
    assert (2, None, "invalid-value") in said
    assert (9, "b", "invalid-value") in said


def test_a_cache_key_needs_a_database_source(write: WritePipeline) -> None:
    problems = _problems(
        write,
        """
        pipeline: p
        tasks:
          - id: a
            sql: select 1 as x
            cache: {key: select 1}
        """,
    )
    assert [(p.line, p.code, p.severity) for p in problems] == [(5, "cache-key", "error")]
    assert "needs a database source" in problems[0].message


def test_a_database_extract_without_a_key_is_never_cached_and_is_warned_about(
    write: WritePipeline,
) -> None:
    text = """
        pipeline: p
        cache: true
        connections:
          pg: {kind: postgres, uri: "postgresql://nobody@127.0.0.1:1/none"}
        tasks:
          - id: a
            extract: {from: postgres, connection: pg, table: t}
        """
    problems = _problems(write, text)
    assert [(p.code, p.severity, p.task_id) for p in problems] == [
        ("cache-unkeyed", "warning", "a")
    ]
    planned = plan(write("p.yaml", text)).task("a")
    assert planned.cache is not None
    assert not planned.cache.allowed


def test_the_plan_json_carries_each_tasks_reason(chain: Path, cli: Any) -> None:
    import json

    result: Result = cli("plan", chain, "--format", "json", "--no-schemas")
    assert result.exit_code == 0, result.stderr
    tasks = json.loads(result.stdout)["tasks"]
    assert [(t["id"], t["reason"]) for t in tasks] == [("a", "new"), ("b", "new"), ("c", "new")]


def test_a_new_minor_version_of_a_library_that_computes_outputs_is_a_code_change(
    chain: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.planning import fingerprint

    assert set(fingerprint.library_versions()) == {"duckdb", "polars", "pyarrow", "pandera"}
    assert run(chain).ok
    upgraded = {**fingerprint.library_versions(), "duckdb": "99.0"}
    monkeypatch.setattr(fingerprint, "library_versions", lambda: upgraded)
    decision = plan(chain).task("b").cache
    assert decision is not None
    assert (decision.reason, decision.detail) == ("code changed", "library versions")

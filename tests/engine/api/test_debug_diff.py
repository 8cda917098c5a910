"""`project.debug(task, run)` runs one task again on the inputs a real run gave it, and
`project.diff(task, run_a, run_b)` says what changed in its output between two runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from click.testing import Result

import engine
from engine.api.pipeline import run
from engine.core.errors import SelectionError, StateError, UserCodeError
from tests.conftest import WritePipeline

Cli = Callable[..., Result]

# the UDF of tests/engine/execution/test_dlq_quarantine.py: it fails until a flag file exists
UDFS = """
from pathlib import Path

def needs_flag(frame):
    if not Path("ready.flag").exists():
        raise ConnectionError("upstream service is not ready")
    return frame
"""

FLAKY = """
pipeline: nightly
params: {n: 3}
cache: true
tasks:
  - id: src
    sql: select range as id, {{ params.n }} * 10 as size from range({{ params.n }})
  - id: fussy
    udf: {input: src, function: "udfs.py:needs_flag"}
  - id: doubled
    sql: select id, size * 2 as twice from fussy
  - id: out
    load: {input: doubled, to: parquet, path: out/doubled}
"""


def _runs(cli: Cli, path: Path, *params: str) -> str:
    """Run the pipeline with `--param`s; the run's id."""
    args = [a for p in params for a in ("--param", p)]
    cli("run", path, "--no-progress", *args)
    with engine.open(".") as project:
        return str(project.runs()["run_id"][0])


def test_debug_reruns_the_last_failed_attempt_on_its_inputs_and_raises_its_error(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    write("udfs.py", UDFS)
    path = write("p.yaml", FLAKY)
    (project / "ready.flag").write_text("ok")
    good = _runs(cli, path, "n=2")
    (project / "ready.flag").unlink()
    failed = _runs(cli, path, "n=5")  # its src ran again: other parameters
    (project / "ready.flag").write_text("ok")
    later = _runs(cli, path, "n=4")  # succeeds: not a run in which fussy failed
    with engine.open(project) as notebook:
        assert notebook.runs()["state"].to_list() == ["SUCCESS", "FAILED", "SUCCESS"]
        rows = notebook.debug("fussy")  # last-failed: the n=5 run, not the newest one
        assert rows.sort("id").to_dict(as_series=False) == {
            "id": [0, 1, 2, 3, 4],
            "size": [50] * 5,
        }
        assert notebook.debug("fussy", run=good)["size"].to_list() == [20, 20]
        assert notebook.debug("fussy", run=later).height == 4
        (project / "ready.flag").unlink()
        with pytest.raises(UserCodeError, match="upstream service is not ready") as raised:
            notebook.debug("fussy")
        assert isinstance(raised.value.__cause__, ConnectionError)  # the UDF's own error
        assert notebook.runs()["run_id"].to_list() == [later, failed, good]  # nothing recorded


def test_debug_reads_the_inputs_a_run_reused_from_an_earlier_run(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    write("udfs.py", UDFS)
    path = write("p.yaml", FLAKY)
    (project / "ready.flag").write_text("ok")
    first = _runs(cli, path)
    (project / "ready.flag").unlink()
    write("udfs.py", UDFS.replace("is not ready", "is still not ready"))  # fussy runs again
    second = _runs(cli, path)
    with engine.open(project) as notebook:
        reused = notebook.run_info(second).reused
        assert reused == {"src": first}
        (project / "ready.flag").write_text("ok")
        assert notebook.debug("fussy")["id"].to_list() == [0, 1, 2]  # src of the first run


def test_debug_runs_the_definition_the_run_recorded_or_the_file_as_it_is_now(
    write: WritePipeline, project: Path
) -> None:
    pipeline = """
        pipeline: sums
        params: {k: 2}
        tasks:
          - id: numbers
            sql: select range as x from range(3)
          - id: scaled
            sql: select x * {{ params.k }} as y from numbers
    """
    path = write("p.yaml", pipeline)
    done = run(path, params={"k": 5})
    write("p.yaml", pipeline.replace("x * {{ params.k }}", "x * {{ params.k }} + 1"))
    with engine.open(project) as notebook:
        assert notebook.debug("scaled", run=done.run_id)["y"].to_list() == [0, 5, 10]
        now = notebook.debug("scaled", run=done.run_id, current=True)
        assert now["y"].to_list() == [1, 6, 11]  # the fix, on the run's rows and parameters


def test_debug_refuses_loads_and_says_what_it_cannot_find(
    cli: Cli, write: WritePipeline, project: Path
) -> None:
    write("udfs.py", UDFS)
    (project / "ready.flag").write_text("ok")
    _runs(cli, write("p.yaml", FLAKY))
    with engine.open(project) as notebook:
        with pytest.raises(SelectionError, match="is a load") as load:
            notebook.debug("out", run="last")
        assert "project.debug('doubled'" in (load.value.hint or "")
        with pytest.raises(SelectionError, match=r"no task 'fusy'.*Did you mean 'fussy'"):
            notebook.debug("fusy")
        with pytest.raises(StateError, match="'fussy' failed in none of the last"):
            notebook.debug("fussy")


def test_diff_by_keys_finds_added_removed_and_changed_rows(
    write: WritePipeline, project: Path
) -> None:
    path = write(
        "p.yaml",
        """
        pipeline: shop
        params: {first: 0, n: 4, two: 99}
        tasks:
          - id: orders
            sql: |
              select range as id,
                     case when range = 2 then {{ params.two }} else range * 10 end as amount,
                     'eu' as region
              from range({{ params.first }}, {{ params.n }})
        """,
    )
    a = run(path).run_id  # ids 0..3, id 2 at 99
    b = run(path, params={"first": 1, "n": 5, "two": 7}).run_id  # ids 1..4, id 2 at 7
    with engine.open(project) as notebook:
        change = notebook.diff("orders", a, b, keys=["id"])
        assert change.added.to_dicts() == [{"id": 4, "amount": 40, "region": "eu"}]
        assert change.removed.to_dicts() == [{"id": 0, "amount": 0, "region": "eu"}]
        assert change.changed.to_dicts() == [
            {"id": 2, "_changed": ["amount"], "amount_a": 99, "amount_b": 7}
        ]  # region never changed: not shown
        assert not change.same
        assert repr(change) == (
            f"<TableDiff orders {a} → {b} (by id): 1 added, 1 removed, 1 changed>"
        )
        whole = notebook.diff("orders", a, b)  # whole rows: id 2 is one removed, one added
        assert sorted(whole.added["id"].to_list()) == [2, 4]
        assert sorted(whole.removed["id"].to_list()) == [0, 2]
        assert whole.changed.height == 0
        assert notebook.diff("orders", b, b[:20], keys=["id"]).same  # an id prefix is a run
        html = change._repr_html_()
    for fact in ("added", "removed", "changed", a, b, "by id"):
        assert fact in html
    assert html.count("<table") == 4  # the counts, then the first rows of each answer
    assert "amount_b" in html
    assert "<script" not in html


def test_diff_says_which_columns_came_and_went_and_compares_a_retyped_one_as_text(
    write: WritePipeline, project: Path
) -> None:
    path = write(
        "p.yaml",
        """
        pipeline: drift
        params: {wide: false}
        tasks:
          - id: t
            sql: |
              {% if params.wide %}select range as id, cast(range as varchar) as v, 1 as extra
              {% else %}select range as id, range as v, 2 as gone{% endif %}
              from range(3)
        """,
    )
    a = run(path).run_id
    b = run(path, params={"wide": True}).run_id
    with engine.open(project) as notebook:
        change = notebook.diff("t", a, b, keys=["id"])
    assert (change.columns_added, change.columns_removed) == (("extra",), ("gone",))
    assert change.changed.height == 0  # 1 and '1' read the same as text
    assert change.added.height == change.removed.height == 0


def test_diff_refuses_keys_that_are_missing_or_repeat(write: WritePipeline, project: Path) -> None:
    path = write(
        "p.yaml",
        """
        pipeline: dupes
        tasks:
          - id: t
            sql: select range % 2 as parity, range as n from range(5)
        """,
    )
    a = run(path).run_id
    with engine.open(project) as notebook:
        with pytest.raises(SelectionError, match=r"key column 'parity_' .*Did you mean 'parity'"):
            notebook.diff("t", a, a, keys=["parity_"])
        with pytest.raises(StateError, match=r"key \(parity\) is not unique .*2 keys repeat"):
            notebook.diff("t", a, a, keys=["parity"])
        assert notebook.diff("t", a, a, keys=["n"]).same


def test_the_diff_module_compares_frames_alone() -> None:
    from engine.api.diff import compare

    a = pl.LazyFrame({"k": [1, 2, None], "v": [1.0, None, 3.0]})
    b = pl.LazyFrame({"k": [2, None, 5], "v": [2.0, 3.0, 5.0]})
    added, removed, changed, more, fewer = compare(a, b, ["k"])
    assert added.collect().to_dicts() == [{"k": 5, "v": 5.0}]
    assert removed.collect().to_dicts() == [{"k": 1, "v": 1.0}]
    # a null key matches a null key; a value that became non-null has changed
    assert changed.collect().to_dicts() == [{"k": 2, "_changed": ["v"], "v_a": None, "v_b": 2.0}]
    assert (more, fewer) == ((), ())
    assert isinstance(added, pl.LazyFrame)

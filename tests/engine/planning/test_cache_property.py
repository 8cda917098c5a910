"""Zero stale results: random edits to a small pipeline (its SQL, a parameter, a UDF's body, a
helper the UDF calls, a pandera schema file, the input CSV), each followed by a run with the cache
on, always give what a clean run (cache off, a fresh project) gives."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine.api.pipeline import run

PIPELINE = """\
pipeline: prop
cache: {cache}
params: {{threshold: {threshold}}}
tasks:
  - id: raw
    extract: {{from: files, path: data/in.csv}}
  - id: filtered
    sql: |
{sql}
  - id: scored
    udf: {{input: filtered, function: "udfs.py:score"}}
  - id: checked
    validate: {{input: scored, schema: schemas/s.yaml, on_fail: quarantine,
               max_rejected_fraction: 1.0}}
  - id: total
    sql: select count(*) as n, coalesce(sum(score), 0) as s from checked
"""

SQL = (
    "select id, v from raw where v >= {{ params.threshold }}",
    "select id, v from raw where v > {{ params.threshold }}",
    "select id, v * 2 as v from raw where v >= {{ params.threshold }}",
    "select id, v from raw where v >= {{ params.threshold }} and id % 2 = 0",
)

UDFS = """\
import polars as pl

FACTOR = {factor}


def weight(column):
    return pl.col(column) * FACTOR{helper}


def unrelated():
    return {unrelated}


def score():
    return {{"score": weight("v") + {offset}}}
"""


@dataclass(frozen=True)
class State:
    sql: int = 0
    layout: int = 0
    """A whitespace and comment variant of the same statement."""
    threshold: int = 1
    factor: int = 2
    unrelated: int = 0
    offset: int = 0
    helper: str = ""
    """An edit of the helper's own body."""
    max_score: int = 40
    rows: tuple[tuple[int, int], ...] = ((1, 1), (2, 5), (3, 9))


def _sql(state: State) -> str:
    statement = SQL[state.sql]
    if state.layout % 3 == 1:
        statement = statement.replace(" from ", "\n  FROM   ").replace("select", "SELECT")
    elif state.layout % 3 == 2:
        statement = f"-- edit {state.layout}\n{statement} /* same */"
    return "\n".join("      " + line for line in statement.splitlines())


def write_project(folder: Path, state: State, *, cache: bool) -> Path:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "schemas").mkdir(exist_ok=True)
    rows = "".join(f"{i},{v}\n" for i, v in state.rows)
    files = {
        "data/in.csv": "id,v\n" + rows,
        "udfs.py": UDFS.format(
            factor=state.factor,
            unrelated=state.unrelated,
            offset=state.offset,
            helper=state.helper,
        ),
        "schemas/s.yaml": f"columns:\n  score: {{type: int64, checks: {{le: {state.max_score}}}}}\n",
        "p.yaml": PIPELINE.format(
            cache=str(cache).lower(), threshold=state.threshold, sql=_sql(state)
        ),
    }
    for name, text in files.items():
        path = folder / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    return folder / "p.yaml"


def outputs(folder: Path, result: Any) -> dict[str, list[dict[str, Any]]]:
    assert result.ok, result
    with engine.open(folder) as project:
        return {
            task: project.table(task, run=result.run_id).collect().sort(pl.all()).to_dicts()
            for task in ("filtered", "scored", "checked", "total")
        }


EDITS = st.one_of(
    st.builds(lambda i: {"sql": i}, st.integers(0, len(SQL) - 1)),
    st.builds(lambda i: {"layout": i}, st.integers(0, 5)),
    st.builds(lambda i: {"threshold": i}, st.integers(0, 6)),
    st.builds(lambda i: {"factor": i}, st.integers(1, 4)),
    st.builds(lambda i: {"unrelated": i}, st.integers(0, 3)),
    st.builds(lambda i: {"offset": i}, st.integers(0, 3)),
    st.builds(lambda text: {"helper": text}, st.sampled_from(["", " + 1", " - 2", " * 3"])),
    st.builds(lambda i: {"max_score": i}, st.integers(5, 40)),
    st.builds(
        lambda rows: {"rows": tuple(rows)},
        st.lists(st.tuples(st.integers(1, 9), st.integers(0, 9)), min_size=1, max_size=5),
    ),
)


@contextmanager
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cache-prop-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(edits=st.lists(EDITS, min_size=1, max_size=4))
def test_random_edits_with_the_cache_on_always_match_a_clean_run(
    edits: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    state = State()
    with folder() as cached:
        monkeypatch.chdir(cached)
        outputs(cached, run(write_project(cached, state, cache=True), project_dir=cached))
        for edit in edits:
            state = replace(state, **edit)
            path = write_project(cached, state, cache=True)
            got = outputs(cached, run(path, project_dir=cached))
            with folder() as clean:
                fresh = write_project(clean, state, cache=False)
                expected = outputs(clean, run(fresh, project_dir=clean))
            assert got == expected, (edit, state)


def test_a_whitespace_or_comment_edit_of_sql_is_a_cache_hit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    state = State()
    first = run(write_project(tmp_path, state, cache=True), project_dir=tmp_path)
    assert first.ok
    for layout in (1, 2):
        again = run(write_project(tmp_path, replace(state, layout=layout), cache=True))
        assert {t: r.reused_from for t, r in again.tasks.items()} == dict.fromkeys(
            ["raw", "filtered", "scored", "checked", "total"], first.run_id
        )

"""Adversarial pipeline files: whatever the bytes, `validate` answers with problems that say
where, never with a traceback. Hypothesis generates the files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.tasks.checks import check_file

Cli = Callable[..., Result]

VALID = {
    "pipeline": "fuzzed",
    "params": {"day": "2024-01-01"},
    "defaults": {"retry": {"attempts": 3, "backoff": "1s"}, "timeout": "10m"},
    "tasks": [
        {"id": "raw", "extract": {"from": "files", "path": "data/*.csv"}},
        {"id": "big", "sql": "select * from raw where day >= {{ params.day | sql_literal }}"},
        {
            "id": "checked",
            "validate": {"input": "big", "schema": {"columns": {"v": {"type": "int64"}}}},
        },
        {"id": "out", "load": {"input": "checked", "to": "parquet", "path": "out/x.parquet"}},
    ],
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", "~", "1e400", "-0", "{{", "{{ nope }}", "'; drop table t; --", "\x00"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=25,
)


def check(tmp_path: Path, text: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    definition, problems = check_file(path)
    if definition is None:
        errors = [p for p in problems if p.severity == "error"]
        assert errors, "an unusable file must come with at least one error"
        for problem in errors:
            assert problem.message
            assert problem.location().startswith(str(path))


def mutate(document: Any, path: list[Any], value: Any) -> Any:
    """`document` with the node at `path` (indices into dicts and lists) replaced by `value`."""
    if not path:
        return value
    head, *rest = path
    if isinstance(document, dict) and document:
        key = list(document)[head % len(document)]
        return {**document, key: mutate(document[key], rest, value)}
    if isinstance(document, list) and document:
        index = head % len(document)
        return [*document[:index], mutate(document[index], rest, value), *document[index + 1 :]]
    return value


FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(text=st.text(max_size=300))
def test_any_text_gets_problems_not_a_traceback(tmp_path: Path, text: str) -> None:
    check(tmp_path, text)


@FUZZ
@given(document=values)
def test_any_yaml_structure_gets_problems_not_a_traceback(tmp_path: Path, document: Any) -> None:
    check(tmp_path, yaml.safe_dump(document, allow_unicode=True))


@FUZZ
@given(path=st.lists(st.integers(min_value=0, max_value=50), max_size=6), value=values)
def test_a_valid_pipeline_with_one_node_replaced_gets_problems_not_a_traceback(
    tmp_path: Path, path: list[int], value: Any
) -> None:
    check(tmp_path, yaml.safe_dump(mutate(VALID, path, value), allow_unicode=True))


@pytest.mark.parametrize(
    "text",
    [
        "[" * 50_000 + "]" * 50_000,  # nesting deeper than any parser's recursion
        "a: " + "{b: " * 20_000 + "1" + "}" * 20_000,
        "pipeline: p\ntasks:\n  - id: a\n    retry: {attempts: 99999999999999999999999999}\n"
        "    sql: select 1",
        "pipeline: p\ntasks:\n  - id: a\n    timeout: 1e400\n    sql: select 1",
        "pipeline: p\ntasks:\n  - id: a\n    timeout: 99999999999999999999d\n    sql: select 1",
        "pipeline: p\ntasks: "
        + json.dumps([{"id": f"t{i}", "sql": "select 1"} for i in range(3)])
        + "\n"
        + "x: &a [*a]\n",
        "&a [*a, *a, *a]",
        "a: &a\n  b: *a\n",  # a recursive alias
        "a: &a\n  <<: *a\n  b: 1\n",  # a merge of itself
        "a: &a [1,2,3,4,5,6,7,8,9]\n"  # a billion laughs
        + "".join(
            f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
            for p, c in zip("abcdef", "bcdefg", strict=True)
        ),
        "pipeline: p\ntasks:\n  - !!python/object/apply:os.system ['echo pwned']\n",
        "\ufeffpipeline: p\ntasks: []\n",
        "pipeline: p\ntasks:\n" + "".join(f"  - id: t\n    sql: select {i}\n" for i in range(3)),
    ],
    ids=[
        "deep-lists",
        "deep-maps",
        "huge-int",
        "float-overflow",
        "huge-duration",
        "recursive-anchor-after",
        "recursive-anchor",
        "recursive-alias",
        "recursive-merge",
        "billion-laughs",
        "python-tag",
        "bom-empty-tasks",
        "duplicate-ids",
    ],
)
def test_adversarial_files_get_problems_not_a_traceback(
    tmp_path: Path, cli: Cli, text: str
) -> None:
    check(tmp_path, text)
    result = cli("validate", tmp_path / "p.yaml")
    assert result.exit_code == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert str(tmp_path / "p.yaml") in result.stderr

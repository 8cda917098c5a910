"""The quality bar on SQL the analyser was not tuned on (tests/fixtures/lineage/unseen.yaml):
at least 95% of output columns with exactly the hand-labelled edges, and no wrongly asserted
edge on any column it marks resolved. `pytest tests/lineage/test_unseen_accuracy.py -s` prints
the figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lineage.columns import column_lineage

UNSEEN = Path(__file__).resolve().parents[1] / "fixtures" / "lineage" / "unseen.yaml"


@dataclass
class Score:
    columns: int = 0
    exact: int = 0
    unresolved: int = 0
    wrong_edges: list[str] = field(default_factory=list)
    missing_edges: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.exact / self.columns


def _label(kinds: dict[str, list[str]] | None) -> set[tuple[str, str, str]]:
    return {
        (*source.split("."), kind) for kind, sources in (kinds or {}).items() for source in sources
    }  # type: ignore[misc]


def score(data: dict[str, Any]) -> Score:
    result = Score()
    for case in data["cases"]:
        lineage = column_lineage(case["sql"], data["schemas"])
        whole_statement = any(u.output is None for u in lineage.unresolved)
        for output, kinds in case["expect"].items():
            result.columns += 1
            unresolved = whole_statement or any(u.output == output for u in lineage.unresolved)
            if unresolved or output not in lineage.outputs:
                result.unresolved += 1
                continue
            actual = {(e.table, e.column, e.kind) for e in lineage.edges if e.output == output}
            expected = _label(kinds)
            result.wrong_edges += [f"{case['name']}: {output} <- {e}" for e in actual - expected]
            result.missing_edges += [f"{case['name']}: {output} <- {e}" for e in expected - actual]
            result.exact += actual == expected
    return result


def test_unseen_sql_meets_the_quality_bar() -> None:
    data = yaml.safe_load(UNSEEN.read_text(encoding="utf-8"))
    result = score(data)
    print(
        f"\nunseen SQL: {len(data['cases'])} statements, {result.columns} output columns; "
        f"exact {result.exact} ({result.accuracy:.1%}), unresolved {result.unresolved}, "
        f"wrongly asserted edges {len(result.wrong_edges)}, missing edges "
        f"{len(result.missing_edges)}"
    )
    for line in result.wrong_edges + result.missing_edges:
        print("  ", line)
    assert result.wrong_edges == []
    assert result.accuracy >= 0.95


def test_the_score_counts_misses_and_wrong_edges() -> None:
    schemas = {"t": {"a": "INT", "b": "INT"}}
    case = {"name": "c", "sql": "select a from t where b > 0"}
    right = score(
        {
            "schemas": schemas,
            "cases": [{**case, "expect": {"a": {"value": ["t.a"], "filter": ["t.b"]}}}],
        }
    )
    assert (right.exact, right.wrong_edges, right.missing_edges) == (1, [], [])
    short = score({"schemas": schemas, "cases": [{**case, "expect": {"a": {"value": ["t.a"]}}}]})
    assert short.exact == 0
    assert short.wrong_edges == ["c: a <- ('t', 'b', 'filter')"]
    unknown = score(
        {
            "schemas": schemas,
            "cases": [{"name": "u", "sql": "select nope from t", "expect": {"nope": {}}}],
        }
    )
    assert (unknown.exact, unknown.unresolved) == (0, 1)

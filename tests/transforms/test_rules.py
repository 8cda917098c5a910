"""RowRules decide an inline schema's row rules in one Polars pass: the same failure cases as
pandera, value for value and in pandera's order, on generated frames and schemas; what is not a
row's failure goes to pandera; a run that needs nothing else never imports it."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.errors import DataError, DefinitionError
from transforms.config import InlineSchema, ValidateSpec
from transforms.rules import RowRules
from transforms.validate import (
    ValidationOutcome,
    build_schema,
    check_inline,
    load_rules,
    validate_frames,
)

small = st.integers(-3, 3)
NUMBER_CHECKS = st.one_of(
    st.tuples(st.sampled_from(["ge", "gt", "le", "lt", "eq", "ne"]), small),
    st.tuples(st.just("in_range"), st.tuples(small, small).map(sorted).map(list)),
    st.tuples(st.sampled_from(["isin", "notin"]), st.lists(small, min_size=1, max_size=3)),
)
TEXT_CHECKS = st.one_of(
    st.tuples(st.sampled_from(["str_matches", "str_contains"]), st.sampled_from(["a.", "^b", "c"])),
    st.tuples(st.sampled_from(["str_startswith", "str_endswith"]), st.sampled_from(["a", "bc"])),
    st.tuples(
        st.just("str_length"),
        st.one_of(
            st.fixed_dictionaries({"min": st.integers(0, 2)}),
            st.fixed_dictionaries({"max": st.integers(0, 3)}),
            st.tuples(st.integers(0, 1), st.integers(1, 3)).map(list),
        ),
    ),
    st.tuples(st.sampled_from(["isin", "notin"]), st.lists(st.sampled_from(["a", "bc", ""]))),
    st.tuples(st.sampled_from(["eq", "ne"]), st.sampled_from(["a", "bc"])),
)
DATE_CHECKS = st.tuples(st.sampled_from(["ge", "lt"]), st.just(date(2024, 1, 2)))
TYPES = {"i": ("int64", NUMBER_CHECKS), "f": ("float64", NUMBER_CHECKS)}
TYPES |= {"s": ("string", TEXT_CHECKS), "d": ("date", DATE_CHECKS)}


@st.composite
def schemas(draw: st.DrawFn) -> InlineSchema:
    columns: dict[str, Any] = {}
    for name, (kind, checks) in TYPES.items():
        drawn = draw(st.lists(checks, max_size=3, unique_by=lambda c: c[0]))
        columns[name] = {"type": kind, "nullable": draw(st.booleans()), "checks": dict(drawn)}
    return InlineSchema.model_validate({"columns": columns})


@st.composite
def frames(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(0, 12))
    floats = st.one_of(st.none(), st.sampled_from([-2.5, 0.0, 1.0, 3.0, math.nan, math.inf]))
    return pl.DataFrame(
        {
            "i": draw(st.lists(st.one_of(st.none(), small), min_size=n, max_size=n)),
            "f": draw(st.lists(floats, min_size=n, max_size=n)),
            "s": draw(
                st.lists(
                    st.one_of(st.none(), st.sampled_from(["", "a", "ab", "bc", "xbc", "abcd"])),
                    min_size=n,
                    max_size=n,
                )
            ),
            "d": draw(
                st.lists(
                    st.one_of(st.none(), st.dates(date(2024, 1, 1), date(2024, 1, 3))),
                    min_size=n,
                    max_size=n,
                )
            ),
        },
        schema={"i": pl.Int64, "f": pl.Float64, "s": pl.String, "d": pl.Date},
    )


def pandera_cases(inline: InlineSchema, frame: pl.DataFrame) -> pl.DataFrame | None:
    import pandera.errors as pe

    try:
        build_schema(inline).validate(frame, lazy=True)
    except pe.SchemaErrors as error:
        return error.failure_cases
    return None


def rules_of(inline: InlineSchema) -> RowRules:
    rules = load_rules(inline, Path("."))
    assert isinstance(rules, RowRules)
    return rules


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inline=schemas(), frame=frames())
def test_the_failure_cases_are_pandera_s(inline: InlineSchema, frame: pl.DataFrame) -> None:
    rules = rules_of(inline)
    assert rules.decides(frame)
    theirs = pandera_cases(inline, frame)
    try:
        ours = rules.failure_cases(frame)
    except pl.exceptions.PolarsError:  # left to pandera, which says so for the whole column
        assert theirs is not None
        assert theirs["index"].null_count() > 0
        return
    if theirs is None:
        assert ours is None
        return
    assert ours is not None
    assert ours.to_dicts() == theirs.cast(ours.schema).to_dicts()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("frame", "found"),
    [
        (pl.DataFrame({"id": [1, 2]}), "column 'amount' is missing"),
        (pl.DataFrame({"id": [1], "amount": ["x"]}), "dtype('Float64')"),
        (pl.DataFrame({"id": [1], "amount": [1.0], "extra": [1]}), "not in the schema"),
    ],
)
def test_what_is_not_a_row_s_failure_is_pandera_s(frame: pl.DataFrame, found: str) -> None:
    inline = InlineSchema.model_validate(
        {
            "columns": {"id": {"type": "int64"}, "amount": {"type": "float64"}},
            "strict": True,
        }
    )
    rules = rules_of(inline)
    assert not rules.decides(frame)
    spec = ValidateSpec.model_validate({"input": "t", "schema": inline, "on_fail": "quarantine"})
    with pytest.raises(DataError, match="does not match the schema") as caught:
        list(validate_frames([frame], rules, spec, ValidationOutcome()))
    assert found in caught.value.message


def test_a_check_its_column_cannot_take_is_left_to_pandera() -> None:
    """`gt: "a"` on an integer column: Polars refuses the comparison; pandera reports it."""
    inline = InlineSchema.model_validate(
        {"columns": {"n": {"type": "int64", "checks": {"gt": "a"}}}}
    )
    frame = pl.DataFrame({"n": [1, 2]})
    spec = ValidateSpec.model_validate({"input": "t", "schema": inline, "on_fail": "fail"})
    outcome = ValidationOutcome()
    with pytest.raises(DataError) as caught:
        list(validate_frames([frame], rules_of(inline), spec, outcome))
    assert "greater_than(a)" in caught.value.message


def test_quarantine_is_the_same_through_either(tmp_path: Path) -> None:
    inline = InlineSchema.model_validate(
        {
            "columns": {
                "id": {"type": "int64"},
                "amount": {"type": "float64", "checks": {"ge": 0, "lt": 100}},
                "status": {"type": "string", "nullable": True, "checks": {"isin": ["ok"]}},
            }
        }
    )
    batches = [
        pl.DataFrame({"id": [1, None, 3], "amount": [1.0, -1.0, math.nan], "status": ["ok"] * 3}),
        pl.DataFrame({"id": [4, 5], "amount": [200.0, 2.0], "status": ["no", None]}),
    ]
    spec = ValidateSpec.model_validate(
        {"input": "t", "schema": inline, "on_fail": "quarantine", "max_rejected_fraction": 1}
    )
    results = []
    for schema in (rules_of(inline), build_schema(inline)):
        outcome = ValidationOutcome()
        pairs = list(validate_frames(batches, schema, spec, outcome))
        results.append(
            ([(g.to_dicts(), b.to_dicts() if b is not None else None) for g, b in pairs], outcome)
        )
    (ours, our_outcome), (theirs, their_outcome) = results
    assert repr(ours) == repr(theirs)  # NaN is not equal to itself
    assert our_outcome == their_outcome
    assert our_outcome.rows_rejected == 3


@pytest.mark.parametrize(
    ("checks", "said"),
    [
        ({"in_range": {"min": 1}}, "both min and max"),
        ({"str_length": {}}, "min, max or both"),
        ({"between": 1}, "unknown check 'between'"),
    ],
)
def test_a_range_without_its_bounds_is_refused_before_a_run(
    checks: dict[str, Any], said: str
) -> None:
    inline = InlineSchema.model_validate({"columns": {"n": {"type": "int64", "checks": checks}}})
    with pytest.raises(DefinitionError, match=said):
        check_inline(inline)


def test_a_run_whose_frames_match_their_schema_never_imports_pandera(tmp_path: Path) -> None:
    data = tmp_path / "t.parquet"
    pl.DataFrame({"id": [1, 2, 2], "amount": [1.0, -1.0, 2.0]}).write_parquet(data)
    (tmp_path / "p.yaml").write_text(
        textwrap.dedent(f"""
        pipeline: rules
        tasks:
          - id: t
            extract: {{from: files, path: "{data}"}}
          - id: checked
            validate:
              input: t
              on_fail: quarantine
              max_rejected_fraction: 1
              schema:
                columns:
                  id: {{type: int64, unique: true}}
                  amount: {{type: float64, checks: {{ge: 0}}}}
        """)
    )
    script = (
        "import sys; from engine.api.pipeline import run; "
        f"r = run({str(tmp_path / 'p.yaml')!r}, project_dir={str(tmp_path)!r}); "
        "assert r.ok, r; t = r.tasks['checked']; print(t.rows_out, t.rows_rejected, "
        "'pandera' in sys.modules, 'pandas' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "2", "False", "False"]


def _spec(inline: InlineSchema, on_fail: str) -> ValidateSpec:
    return ValidateSpec.model_validate(
        {"input": "t", "schema": inline, "on_fail": on_fail, "max_rejected_fraction": 1}
    )


def test_uniqueness_of_lists_is_left_to_pandera() -> None:
    """A list key cannot be decided apart (`split_uniqueness` says so): the whole schema goes
    to pandera, which fails both copies."""
    inline = InlineSchema.model_validate({"columns": {"tags": {"unique": True}}})
    frame = pl.DataFrame({"tags": [[1, 2], [1, 2], [3]]})
    outcome = ValidationOutcome()
    pairs = list(validate_frames([frame], rules_of(inline), _spec(inline, "quarantine"), outcome))
    assert outcome.rows_rejected == 2
    assert pairs[0][1] is not None
    assert pairs[0][1]["_arrowline_errors"][0][0]["check"] == "field_uniqueness"


def test_a_list_of_mixed_numbers_is_left_to_pandera() -> None:
    """`isin: [0, 0.5]` on a float column: Polars refuses to build the test; pandera reports
    it for the whole column, which `warn` logs and lets pass."""
    inline = InlineSchema.model_validate(
        {"columns": {"x": {"type": "float64", "checks": {"isin": [0, 0.5]}}}}
    )
    frame = pl.DataFrame({"x": [0.0, 0.5, 1.0]})
    with pytest.raises(DataError, match=r"isin\(\[0, 0.5\]\)"):
        list(
            validate_frames(
                [frame], rules_of(inline), _spec(inline, "quarantine"), ValidationOutcome()
            )
        )
    outcome = ValidationOutcome()
    list(validate_frames([frame], rules_of(inline), _spec(inline, "warn"), outcome))
    assert outcome.rows_passed == 3


@pytest.mark.parametrize(
    ("checks", "said"),
    [
        ({"ge": None}, "needs a value, not null"),
        ({"str_contains": None}, "needs a value, not null"),
        ({"isin": None}, "needs a value, not null"),
        ({"isin": "abc"}, "takes a list of values"),
        ({"in_range": {"min": 3, "max": 1}}, "is above max"),
        ({"str_length": [3, 1]}, "is above max"),
        ({"str_matches": "^\\p{L}$"}, "pattern: bad escape"),
        ({"str_matches": 5}, "takes a string"),
    ],
)
def test_arguments_pandera_s_checks_refuse_are_refused_before_a_run(
    checks: dict[str, Any], said: str
) -> None:
    inline = InlineSchema.model_validate({"columns": {"s": {"checks": checks}}})
    with pytest.raises(DefinitionError, match=said):
        check_inline(inline)


def test_nan_is_missing_only_in_the_float_types_pandera_knows() -> None:
    inline = InlineSchema.model_validate({"columns": {"h": {}, "f": {}}})
    frame = pl.DataFrame(
        {"h": [1.0, math.nan], "f": [1.0, math.nan]},
        schema={"h": pl.Float16, "f": pl.Float32},
    )
    cases = rules_of(inline).failure_cases(frame)
    assert cases is not None
    assert cases.select("column", "index").rows() == [("f", 1)]
    theirs = pandera_cases(inline, frame)
    assert theirs is not None
    assert theirs.select("column", "index").rows() == [("f", 1)]


def test_a_column_named_like_a_pattern_and_nested_values_go_to_pandera() -> None:
    patterned = InlineSchema.model_validate({"columns": {"^a.*$": {"type": "int64"}}})
    assert not isinstance(load_rules(patterned, Path(".")), RowRules)
    nested = InlineSchema.model_validate({"columns": {"s": {"checks": {"ne": 1}}}})
    assert not rules_of(nested).decides(pl.DataFrame({"s": [{"a": 1}]}))


def test_fail_counts_every_failing_row_of_every_batch() -> None:
    inline = InlineSchema.model_validate({"columns": {"n": {"type": "int64", "checks": {"ge": 0}}}})
    values = [1] * 300_000
    for row in (10, 150_000, 250_000):
        values[row] = -1
    frame = pl.DataFrame({"n": values})
    batches = [frame.slice(i, 131_072) for i in range(0, frame.height, 131_072)]
    with pytest.raises(DataError) as caught:
        list(validate_frames(batches, rules_of(inline), _spec(inline, "fail"), ValidationOutcome()))
    assert caught.value.message.startswith("3 of 300000 rows failed validation")

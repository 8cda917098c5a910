from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.errors import DataError, DefinitionError, UserCodeError
from transforms.config import InlineSchema, ValidateSpec
from transforms.validate import (
    QUARANTINE_ERRORS,
    QUARANTINE_ROW,
    ValidationOutcome,
    build_schema,
    duplicate_cases,
    load_schema,
    needs_whole_input,
    split_uniqueness,
    validate_frames,
)

SCHEMA = InlineSchema.model_validate(
    {
        "columns": {
            "id": {"type": "int64"},
            "amount": {"type": "float64", "checks": {"ge": 0}},
            "status": {"type": "string", "checks": {"isin": ["ok", "late"]}},
        }
    }
)


def spec(on_fail: str, **extra: object) -> ValidateSpec:
    return ValidateSpec.model_validate(
        {"input": "t", "schema": SCHEMA, "on_fail": on_fail, **extra}
    )


def run(
    frames: list[pl.DataFrame], on_fail: str, **extra: object
) -> tuple[list[pl.DataFrame], list[pl.DataFrame], ValidationOutcome]:
    outcome = ValidationOutcome()
    good, bad = [], []
    for passed, quarantined in validate_frames(
        frames, build_schema(SCHEMA), spec(on_fail, **extra), outcome
    ):
        if passed is not None:
            good.append(passed)
        if quarantined is not None:
            bad.append(quarantined)
    return good, bad, outcome


FRAME = pl.DataFrame(
    {"id": [1, 2, 3, 4], "amount": [5.0, -1.0, 3.0, -2.0], "status": ["ok", "late", "gone", "ok"]}
)


def test_quarantine_sets_failing_rows_aside_with_column_check_and_value() -> None:
    good, bad, outcome = run([FRAME], "quarantine", max_rejected_fraction=1.0)
    assert pl.concat(good)["id"].to_list() == [1]
    quarantined = pl.concat(bad)
    assert quarantined[QUARANTINE_ROW].to_list() == [1, 2, 3]
    errors = {
        row[QUARANTINE_ROW]: row[QUARANTINE_ERRORS] for row in quarantined.iter_rows(named=True)
    }
    assert errors[1] == [
        {"column": "amount", "check": "greater_than_or_equal_to(0)", "value": "-1.0"}
    ]
    assert errors[2] == [{"column": "status", "check": "isin(['ok', 'late'])", "value": "gone"}]
    assert (outcome.rows_in, outcome.rows_passed, outcome.rows_rejected) == (4, 1, 3)


def test_row_numbers_count_across_batches() -> None:
    _, bad, _ = run([FRAME.head(2), FRAME.tail(2)], "quarantine", max_rejected_fraction=1.0)
    assert pl.concat(bad)[QUARANTINE_ROW].to_list() == [1, 2, 3]


def test_quarantine_fails_the_task_above_the_allowed_share() -> None:
    with pytest.raises(
        DataError,
        match=r"3 of 4 rows \(75.0%\) failed validation, more than max_rejected_fraction 50.0%",
    ):
        run([FRAME], "quarantine", max_rejected_fraction=0.5)


def test_fail_mode_fails_with_a_summary_and_examples() -> None:
    with pytest.raises(DataError, match="3 of 4 rows failed validation") as info:
        run([FRAME], "fail")
    assert info.value.hint is not None
    assert "row 1: column 'amount' failed" in info.value.hint


def test_warn_mode_passes_every_row_and_counts_failures() -> None:
    good, bad, outcome = run([FRAME], "warn")
    assert pl.concat(good).height == 4
    assert bad == []
    assert outcome.rows_failed == 3


def test_schema_failures_cannot_be_quarantined() -> None:
    wrong = FRAME.with_columns(pl.col("id").cast(pl.String))
    with pytest.raises(DataError, match=r"does not match the schema: id: dtype\('Int64'\)"):
        run([wrong], "quarantine")


def test_rows_that_cannot_be_coerced_are_quarantined_and_the_rest_coerced() -> None:
    inline = InlineSchema.model_validate({"columns": {"n": {"type": "int64"}}, "coerce": True})
    config = ValidateSpec.model_validate(
        {"input": "t", "schema": inline, "on_fail": "quarantine", "max_rejected_fraction": 1}
    )
    outcome = ValidationOutcome()
    results = list(
        validate_frames(
            [pl.DataFrame({"n": ["1", "x", "3"]})], build_schema(inline), config, outcome
        )
    )
    good, bad = results[0]
    assert good is not None
    assert good["n"].to_list() == [1, 3]
    assert good["n"].dtype == pl.Int64
    assert bad is not None
    assert bad[QUARANTINE_ROW].to_list() == [1]


def test_uniqueness_needs_the_whole_input() -> None:
    unique = InlineSchema.model_validate({"columns": {"id": {"unique": True}}})
    assert needs_whole_input(build_schema(unique))
    assert not needs_whole_input(build_schema(SCHEMA))
    combined = InlineSchema.model_validate({"columns": {"a": {}, "b": {}}, "unique": ["a", "b"]})
    assert needs_whole_input(build_schema(combined))


def test_loads_yaml_files_and_python_models(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("columns:\n  x: {type: int64, checks: {gt: 0}}\n")
    assert list(load_schema("s.yaml", tmp_path).columns) == ["x"]
    (tmp_path / "bad.yaml").write_text("columns:\n  x: {type: int64, nulable: true}\n")
    with pytest.raises(DefinitionError, match=r"bad.yaml:2: columns.x.nulable"):
        load_schema("bad.yaml", tmp_path)
    (tmp_path / "models.py").write_text(
        "import pandera.polars as pa\n"
        "class Orders(pa.DataFrameModel):\n"
        "    id: int = pa.Field(ge=0)\n"
        "not_a_schema = 3\n"
    )
    assert list(load_schema("models.py:Orders", tmp_path).columns) == ["id"]
    with pytest.raises(UserCodeError, match=r"expected a pandera\.polars DataFrameModel"):
        load_schema("models.py:not_a_schema", tmp_path)


def test_descriptions_of_a_schema_and_its_columns_are_kept_and_check_nothing(
    tmp_path: Path,
) -> None:
    """dbt's property files describe tables and columns; the same words are accepted here and
    reach the pandera schema, where they document, and never decide a row."""
    (tmp_path / "s.yaml").write_text(
        "description: orders as the shop sends them\n"
        "columns:\n"
        "  id: {type: int64, description: the order's number}\n"
        "  amount: {type: float64, checks: {ge: 0}, description: in euros}\n"
    )
    schema = load_schema("s.yaml", tmp_path)
    assert schema.description == "orders as the shop sends them"
    assert schema.columns["amount"].description == "in euros"
    frame = pl.DataFrame({"id": [1, 2], "amount": [1.0, -1.0]})
    outcome = ValidationOutcome()
    inline = InlineSchema.model_validate(
        {"columns": {"id": {"type": "int64", "description": "x"}, "amount": {"checks": {"ge": 0}}}}
    )
    checked = ValidateSpec.model_validate(
        {"input": "t", "schema": inline, "on_fail": "quarantine", "max_rejected_fraction": 1}
    )
    results = list(validate_frames([frame], build_schema(inline), checked, outcome))
    assert [len(bad) for _, bad in results if bad is not None] == [1]


def test_a_missing_column_is_named_as_missing() -> None:
    frame = pl.DataFrame({"id": [1], "amount": [5.0]})
    with pytest.raises(DataError) as info:
        run([frame], "quarantine")
    message = info.value.message
    assert message == "the input does not match the schema: column 'status' is missing"


def _pandera_cases(schema: object, frame: pl.DataFrame) -> set[tuple[object, ...]]:
    import pandera.errors as pe

    try:
        schema.validate(frame, lazy=True)  # type: ignore[attr-defined]
    except pe.SchemaErrors as error:
        cases = error.failure_cases.filter(pl.col("check").str.contains("uniqueness"))
        return {
            (row["index"], row["column"], row["check"], row["failure_case"])
            for row in cases.iter_rows(named=True)
        }
    return set()


keys = st.one_of(
    st.lists(st.one_of(st.none(), st.integers(-3, 3)), min_size=0, max_size=30).map(
        lambda v: pl.Series("k", v, dtype=pl.Int64)
    ),
    st.lists(
        st.one_of(st.none(), st.sampled_from([0.0, -0.0, 1.5, float("nan")])), max_size=30
    ).map(lambda v: pl.Series("k", v, dtype=pl.Float64)),
    st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", ""])), max_size=30).map(
        lambda v: pl.Series("k", v, dtype=pl.String)
    ),
)


@settings(max_examples=150, deadline=None)
@given(key=keys, other=st.lists(st.integers(0, 2), min_size=30, max_size=30))
def test_uniqueness_decided_apart_fails_the_rows_pandera_fails(
    key: pl.Series, other: list[int]
) -> None:
    """The key columns alone, sorted or hashed, find exactly the duplicates pandera finds
    over the whole frame: every copy, NULL and NaN counted as values, for a column's rule and
    for the frame's rule over two columns."""
    frame = pl.DataFrame([key, pl.Series("o", other[: key.len()], dtype=pl.Int64)])
    for inline in (
        {"columns": {"k": {"unique": True, "nullable": True}, "o": {}}},
        {"columns": {"k": {"nullable": True}, "o": {}}, "unique": ["k", "o"]},
    ):
        schema = build_schema(InlineSchema.model_validate(inline))
        apart = split_uniqueness(schema, frame.schema)
        assert apart is not None
        plain, rules = apart
        assert not needs_whole_input(plain)
        assert needs_whole_input(schema)  # the schema it came from is untouched
        found = duplicate_cases(frame.lazy(), rules)
        mine = {
            (row["index"], row["column"], row["check"], row["failure_case"])
            for row in found.iter_rows(named=True)
        }
        if rules[0].column is None:  # pandera writes a struct's JSON its own way
            mine = {(index, column, check, None) for index, column, check, _ in mine}
            theirs = {(i, c, k, None) for i, c, k, _ in _pandera_cases(schema, frame)}
        else:
            theirs = _pandera_cases(schema, frame)
        assert mine == theirs


def test_a_uniqueness_rule_streams_and_fails_duplicates_in_the_batch_they_come_in() -> None:
    inline = InlineSchema.model_validate(
        {"columns": {"id": {"type": "int64", "unique": True}, "amount": {"checks": {"ge": 0}}}}
    )
    frame = pl.DataFrame({"id": [1, 2, 3, 2, 5, 6], "amount": [1.0, 1.0, -1.0, 1.0, 1.0, 1.0]})
    plain, rules = split_uniqueness(build_schema(inline), frame.schema) or (None, [])
    duplicates = duplicate_cases(frame.lazy(), rules)
    config = ValidateSpec.model_validate(
        {"input": "t", "schema": inline, "on_fail": "quarantine", "max_rejected_fraction": 1}
    )
    outcome = ValidationOutcome()
    batches = [frame.slice(0, 2), frame.slice(2, 2), frame.slice(4, 2)]
    results = list(validate_frames(batches, plain, config, outcome, duplicates))
    passed = pl.concat([good for good, _ in results if good is not None])
    quarantined = pl.concat([bad for _, bad in results if bad is not None])
    assert passed["id"].to_list() == [1, 5, 6]
    assert quarantined[QUARANTINE_ROW].to_list() == [1, 2, 3]
    assert outcome.failures_by_check == {
        ("id", "field_uniqueness"): 2,
        ("amount", "greater_than_or_equal_to(0)"): 1,
    }


def test_uniqueness_pandera_must_decide_stays_with_pandera() -> None:
    """Values coerced before they are compared ("01" and "1" are one int), keys of lists."""
    import pandera.polars as pdp

    coerced = InlineSchema.model_validate(
        {"columns": {"id": {"type": "int64", "unique": True}}, "coerce": True}
    )
    texts = pl.Schema({"id": pl.String, "b": pl.Int64, "tags": pl.List(pl.String)})
    assert split_uniqueness(build_schema(coerced), texts) is None
    key_coerced = pdp.DataFrameSchema(
        {"id": pdp.Column(pl.Int64, coerce=True), "b": pdp.Column(pl.Int64)}, unique=["id", "b"]
    )
    assert split_uniqueness(key_coerced, texts) is None
    listed = pdp.DataFrameSchema({"tags": pdp.Column(unique=True)})
    assert split_uniqueness(listed, texts) is None


def test_of_several_frame_rules_the_first_that_fails_is_reported_as_pandera_does() -> None:
    import pandera.polars as pdp

    frame = pl.DataFrame({"a": [1, 1, 2], "b": [1, 2, 2], "c": [1, 2, 3]})
    schema = pdp.DataFrameSchema(
        {"a": pdp.Column(pl.Int64), "b": pdp.Column(pl.Int64), "c": pdp.Column(pl.Int64)},
        unique=[["c"], ["a"], ["b"]],
    )
    _, rules = split_uniqueness(schema, frame.schema) or (None, [])
    found = duplicate_cases(frame.lazy(), rules)
    theirs = {(i, c, k) for i, c, k, _ in _pandera_cases(schema, frame)}
    mine = {(row["index"], row["column"], row["check"]) for row in found.iter_rows(named=True)}
    first_failing = "multiple_fields_uniqueness"
    assert mine == theirs == {(0, None, first_failing), (1, None, first_failing)}  # a's, not b's


def test_validating_a_pipeline_with_an_inline_or_yaml_schema_does_not_import_pandera(
    tmp_path: Path,
) -> None:
    """pandera with pandas takes ~0.5 s to import: `arrowline validate` checks these
    schemas by their own rules, and still refuses a bad one by file and line."""
    import subprocess
    import sys

    (tmp_path / "orders.yaml").write_text("columns:\n  id: {type: int64, checks: {ge: 0}}\n")
    (tmp_path / "bad.yaml").write_text("columns:\n  id: {type: int64, checks: {between: 1}}\n")
    pipeline = (
        "pipeline: v\ntasks:\n  - id: src\n    sql: select 1 as id\n"
        "  - id: a\n    validate: {input: src, schema: SCHEMA}\n"
        "  - id: b\n    validate: {input: src, schema: {columns: {id: {checks: {gt: 0}}}}}\n"
    )
    (tmp_path / "good.p.yaml").write_text(pipeline.replace("SCHEMA", "orders.yaml"))
    (tmp_path / "bad.p.yaml").write_text(pipeline.replace("SCHEMA", "bad.yaml"))
    script = (
        "import sys\nfrom engine.api.pipeline import validate\n"
        "from engine.core.errors import PipelineInvalid\n"
        "validate('good.p.yaml')\n"
        "try:\n    validate('bad.p.yaml')\nexcept PipelineInvalid as e:\n    print(e)\n"
        "print('pandera' in sys.modules)\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    lines = found.stdout.strip().splitlines()
    assert lines[-1] == "False", found.stderr
    assert "bad.p.yaml:6" in found.stdout
    assert "unknown check 'between'" in found.stdout

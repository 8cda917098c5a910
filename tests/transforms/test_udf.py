from pathlib import Path

import polars as pl
import pytest

from engine.core.errors import UserCodeError
from transforms.config import UdfSpec
from transforms.udf import apply_udf, load_udf, udf, udf_mode

FRAME = pl.LazyFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})


def spec(function: object, **extra: object) -> UdfSpec:
    return UdfSpec.model_validate({"input": "t", "function": function, **extra})


def test_expression_mode_adds_columns_and_keeps_the_others() -> None:
    def double(factor: int = 2) -> pl.Expr:
        return (pl.col("a") * factor).alias("a2")

    result = apply_udf(FRAME, double, spec(double, args={"factor": 10})).collect()
    assert result.columns == ["a", "b", "a2"]
    assert result["a2"].to_list() == [10, 20, 30]


def test_mapping_and_select_output() -> None:
    def named() -> dict[str, pl.Expr]:
        return {"n": pl.col("a") + 1}

    result = apply_udf(FRAME, named, spec(named, output="select")).collect()
    assert result.to_dict(as_series=False) == {"n": [2, 3, 4]}


def test_frame_mode_is_chosen_from_the_signature() -> None:
    def top(frame: pl.LazyFrame, n: int = 1) -> pl.LazyFrame:
        return frame.sort("a", descending=True).head(n)

    assert udf_mode(top, spec(top)) == "frame"
    assert apply_udf(FRAME, top, spec(top, args={"n": 2})).collect()["a"].to_list() == [3, 2]


def test_decorator_fixes_the_mode() -> None:
    @udf(mode="frame")
    def passthrough(frame: pl.LazyFrame = FRAME) -> pl.LazyFrame:
        return frame

    assert udf_mode(passthrough, spec(passthrough)) == "frame"


def test_wrong_return_type_is_explained() -> None:
    def bad() -> int:
        return 42

    with pytest.raises(UserCodeError, match="returned int; an expression UDF returns"):
        apply_udf(FRAME, bad, spec(bad))


def test_exception_in_the_udf_names_it_and_the_line() -> None:
    def broken() -> pl.Expr:
        raise ZeroDivisionError("boom")

    with pytest.raises(
        UserCodeError, match=r"UDF .*broken raised ZeroDivisionError: boom \(at .*test_udf.py:\d+\)"
    ):
        apply_udf(FRAME, broken, spec(broken))


def test_loads_a_function_from_a_file_next_to_the_pipeline(tmp_path: Path) -> None:
    (tmp_path / "udfs").mkdir()
    (tmp_path / "udfs" / "score.py").write_text(
        "import polars as pl\ndef score():\n    return pl.col('a') * 3\n"
    )
    function = load_udf(spec("udfs/score.py:score"), tmp_path)
    assert apply_udf(FRAME, function, spec(function)).collect()["a"].to_list() == [3, 6, 9]


def test_import_errors_inside_the_file_are_reported_with_the_line(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("x = 1\nraise RuntimeError('config missing')\n")
    with pytest.raises(
        UserCodeError,
        match=r"importing bad.py raised RuntimeError: config missing \(at .*bad.py:2\)",
    ):
        load_udf(spec("bad.py:f"), tmp_path)

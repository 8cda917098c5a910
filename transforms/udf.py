"""UDFs as Polars expressions, or as LazyFrame -> LazyFrame functions.

Two shapes of function are accepted:

    def score(threshold: float = 100.0):            # expressions: no required positional arg
        return {"score": pl.col("amount") / threshold, "big": pl.col("amount") > threshold}

    def dedupe(orders: pl.LazyFrame) -> pl.LazyFrame:  # frame: the input comes first
        return orders.unique(subset=["order_id"], keep="last")

Expressions may be returned as one `pl.Expr`, a list of them (named by `.alias`), or a mapping
from output name to expression. They are added with `with_columns` (the other columns are kept)
or, with `output: select`, become the only columns. Either way the function only builds a lazy
plan; the data streams through Polars' engine when the task runs, so memory stays bounded.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import polars as pl

from engine.core.errors import UserCodeError
from transforms.config import UdfSpec
from transforms.user_code import load_object, user_frame

__all__ = ["apply_udf", "load_udf", "udf", "udf_expressions", "udf_mode"]

F = TypeVar("F", bound=Callable[..., Any])
_ATTRIBUTE = "__arrowline_udf__"
Mode = Literal["expressions", "frame"]


def udf(
    function: F | None = None,
    *,
    mode: Literal["auto", "expressions", "frame"] = "auto",
) -> Any:
    """Mark a function as an arrowline UDF, optionally fixing its mode.

    >>> @udf
    ... def doubled():
    ...     return pl.col("x") * 2
    """

    def mark(fn: F) -> F:
        setattr(fn, _ATTRIBUTE, {"mode": mode})
        return fn

    return mark(function) if function is not None else mark


def load_udf(spec: UdfSpec, base_dir: Path) -> Callable[..., Any]:
    function = spec.function
    if isinstance(function, str):
        function = load_object(function, base_dir)
    if not callable(function):
        raise UserCodeError(f"UDF {spec.function!r} is a {type(function).__name__}, not a function")
    return function


def udf_mode(function: Callable[..., Any], spec: UdfSpec) -> Mode:
    """The mode from the spec, else the decorator, else the signature."""
    if spec.mode != "auto":
        return spec.mode
    declared = getattr(function, _ATTRIBUTE, {}).get("mode", "auto")
    if declared != "auto":
        return declared  # type: ignore[no-any-return]
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return "expressions"
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return "frame" if positional else "expressions"


def _name(function: Callable[..., Any]) -> str:
    return getattr(function, "__qualname__", repr(function))


def udf_expressions(value: Any, function: Callable[..., Any]) -> list[pl.Expr]:
    if isinstance(value, pl.Expr):
        return [value]
    if isinstance(value, Mapping):
        result = []
        for name, expr in value.items():
            if not isinstance(expr, pl.Expr):
                raise UserCodeError(
                    f"UDF {_name(function)} returned {type(expr).__name__} for {name!r}, "
                    "expected a polars expression"
                )
            result.append(expr.alias(str(name)))
        return result
    if isinstance(value, list | tuple) and value and all(isinstance(e, pl.Expr) for e in value):
        return list(value)
    raise UserCodeError(
        f"UDF {_name(function)} returned {type(value).__name__}; an expression UDF returns a "
        "polars expression, a list of them, or a mapping of name to expression",
        hint="if it takes the frame as its first argument, set `mode: frame`",
    )


def apply_udf(lf: pl.LazyFrame, function: Callable[..., Any], spec: UdfSpec) -> pl.LazyFrame:
    """Build the lazy plan of a UDF over `lf`. Nothing is computed here."""
    mode = udf_mode(function, spec)
    try:
        result = function(lf, **spec.args) if mode == "frame" else function(**spec.args)
    except UserCodeError:
        raise
    except Exception as exc:
        where = user_frame(exc)
        raise UserCodeError(
            f"UDF {_name(function)} raised {type(exc).__name__}: {exc}"
            + (f" (at {where})" if where else "")
        ) from exc
    if mode == "frame":
        if isinstance(result, pl.DataFrame):
            return result.lazy()
        if not isinstance(result, pl.LazyFrame):
            raise UserCodeError(
                f"UDF {_name(function)} returned {type(result).__name__}; a frame UDF returns a "
                "polars LazyFrame (or DataFrame)"
            )
        return result
    expressions = udf_expressions(result, function)
    return lf.select(expressions) if spec.output == "select" else lf.with_columns(expressions)

"""An inline or YAML schema's row rules decided in one Polars pass, as pandera decides them.

pandera's polars backend runs each check as its own query and collects each one's result
(6M rows, five columns: 2.9 s, and a copy of the frame per check in memory). The built-in
checks an inline schema can name are single Polars expressions, so all of them are evaluated
together, once, and pandera's failure cases (column, check, value, row) are built only for the
rows that fail: usually none. The expressions, the NULL and NaN rules and the check names are
pandera's own (`pandera/backends/polars/builtin_checks.py`); a test holds the two to the same
verdict on generated frames.

What is not a row rule goes to pandera, with the schema it would have built: a frame whose
columns are missing, extra (strict) or of another type than declared (whole-column failures,
reported as pandera words them), a schema that coerces, and a check Polars refuses to evaluate.
pandera is imported only then, which spares a run 0.5 s and ~100 MB (it imports pandas).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from engine.core.errors import DefinitionError
from engine.core.problems import did_you_mean
from transforms.config import ColumnRule, InlineSchema

__all__ = ["CHECKS", "RowRules", "check_rule"]

_Build = Callable[[pl.Expr, Any], pl.Expr]


def _compare(op: str) -> _Build:
    return lambda column, value: getattr(column, op)(value)


def _in_range(column: pl.Expr, bounds: tuple[Any, Any]) -> pl.Expr:
    return column.ge(bounds[0]).and_(column.le(bounds[1]))


def _matches(column: pl.Expr, pattern: str) -> pl.Expr:
    return column.str.contains(pattern if pattern.startswith("^") else f"^{pattern}")


def _length(column: pl.Expr, bounds: tuple[Any, Any]) -> pl.Expr:
    low, high = bounds
    chars = column.str.len_chars()
    if low is None:
        return chars.le(high)
    return chars.ge(low) if high is None else chars.is_between(low, high)


@dataclass(frozen=True)
class _Kind:
    build: _Build
    name: str
    """pandera's name of a failed check, formatted with the argument ({0}, or {0} and {1})."""
    ranged: bool = False


CHECKS: dict[str, _Kind] = {
    "ge": _Kind(_compare("ge"), "greater_than_or_equal_to({0})"),
    "gt": _Kind(_compare("gt"), "greater_than({0})"),
    "le": _Kind(_compare("le"), "less_than_or_equal_to({0})"),
    "lt": _Kind(_compare("lt"), "less_than({0})"),
    "eq": _Kind(_compare("eq"), "equal_to({0})"),
    "ne": _Kind(_compare("ne"), "not_equal_to({0})"),
    "isin": _Kind(lambda c, v: c.is_in(v), "isin({0})"),
    "notin": _Kind(lambda c, v: c.is_in(v).not_(), "notin({0})"),
    "in_range": _Kind(_in_range, "in_range({0}, {1})", ranged=True),
    "str_matches": _Kind(_matches, "str_matches('{0}')"),
    "str_contains": _Kind(lambda c, v: c.str.contains(v, literal=False), "str_contains('{0}')"),
    "str_startswith": _Kind(lambda c, v: c.str.starts_with(v), "str_startswith('{0}')"),
    "str_endswith": _Kind(lambda c, v: c.str.ends_with(v), "str_endswith('{0}')"),
    "str_length": _Kind(_length, "str_length({0}, {1})", ranged=True),
}
"""The checks an inline schema names (pandera's built-ins, by their short names)."""


def check_rule(column: str, name: str, argument: Any) -> tuple[Any, ...]:
    """A YAML check's argument as pandera's constructor takes it: (value,) or (min, max).
    Raises DefinitionError for an unknown check or a range without its bounds."""
    if name not in CHECKS:
        raise DefinitionError(
            f"column {column!r}: unknown check {name!r}.{did_you_mean(name, list(CHECKS))} "
            f"Valid checks: {', '.join(CHECKS)}"
        )
    if not CHECKS[name].ranged:
        _refuse_what_pandera_refuses(column, name, argument)
        return (argument,)
    if isinstance(argument, dict):
        unknown = set(argument) - {"min", "max"}
        if unknown:
            raise DefinitionError(f"column {column!r}: {name} takes min and max, not {unknown}")
        bounds = (argument.get("min"), argument.get("max"))
    elif isinstance(argument, list | tuple) and len(argument) == 2:
        bounds = (argument[0], argument[1])
    else:
        raise DefinitionError(f"column {column!r}: {name} takes {{min: ..., max: ...}}")
    both = name == "in_range"
    if (None in bounds) if both else bounds == (None, None):
        needed = "both min and max" if both else "min, max or both"
        raise DefinitionError(f"column {column!r}: {name} takes {needed}")
    if None not in bounds and _above(bounds[0], bounds[1]):
        raise DefinitionError(
            f"column {column!r}: {name} min {bounds[0]!r} is above max {bounds[1]!r}, which "
            "no value satisfies"
        )
    return bounds


def _above(low: Any, high: Any) -> bool:
    try:
        return bool(low > high)
    except TypeError:
        return False


def _refuse_what_pandera_refuses(column: str, name: str, argument: Any) -> None:
    """What pandera's Check constructors raise on, said before a run (they raised at its start,
    and the one-pass rules would have evaluated it)."""
    if argument is None and name not in ("eq", "ne"):
        raise DefinitionError(f"column {column!r}: {name} needs a value, not null")
    if name in ("isin", "notin") and (isinstance(argument, str) or not _listed(argument)):
        raise DefinitionError(f"column {column!r}: {name} takes a list of values")
    if name.startswith("str_") and not isinstance(argument, str):
        raise DefinitionError(f"column {column!r}: {name} takes a string")
    if name in ("str_matches", "str_contains"):
        import re

        try:
            re.compile(argument)
        except re.error as exc:
            raise DefinitionError(f"column {column!r}: {name} pattern: {exc}") from None


def _listed(argument: Any) -> bool:
    return isinstance(argument, list | tuple | set | frozenset)


@dataclass(frozen=True)
class _Check:
    name: str
    """As pandera reports it: greater_than(0), isin(['a', 'b'])."""
    number: int
    build: _Build
    argument: Any


@dataclass(frozen=True)
class _Column:
    name: str
    dtype: pl.DataType | None
    nullable: bool
    required: bool
    checks: tuple[_Check, ...]


_CASES = {
    "failure_case": pl.String,
    "schema_context": pl.String,
    "column": pl.String,
    "check": pl.String,
    "check_number": pl.Int32,
    "index": pl.Int32,
}


@dataclass
class RowRules:
    """An inline schema (no coercion) as Polars expressions. `pandera()` is the same schema
    as pandera builds it, for what is not decided here."""

    inline: InlineSchema
    columns: tuple[_Column, ...]
    unique: tuple[str, ...] | None
    coerce: bool = False
    _pandera: Any = field(default=None, repr=False)

    @classmethod
    def of(cls, inline: InlineSchema, dtype: Callable[[str, ColumnRule], Any]) -> RowRules:
        columns = []
        for name, rule in inline.columns.items():
            checks = []
            for number, (check, argument) in enumerate(rule.checks.items()):
                kind, args = CHECKS[check], check_rule(name, check, argument)
                value = args if kind.ranged else args[0]
                checks.append(_Check(kind.name.format(*args), number, kind.build, value))
            columns.append(
                _Column(name, dtype(name, rule), rule.nullable, rule.required, tuple(checks))
            )
        return cls(inline, tuple(columns), inline.unique)

    def pandera(self) -> Any:
        if self._pandera is None:
            from transforms.validate import build_schema

            self._pandera = build_schema(self.inline)
        return self._pandera

    def decides(self, frame: pl.DataFrame) -> bool:
        """Whether `frame`'s columns are the schema's (present, of the declared types, and no
        others when strict): then every failure is a row's, decided here."""
        if self.unique or any(rule.unique for rule in self.inline.columns.values()):
            return False  # decided over the whole input (`split_uniqueness`), or by pandera
        present = frame.schema
        for column in self.columns:
            if column.name not in present:
                if column.required:
                    return False
            elif column.dtype is not None and present[column.name] != column.dtype:
                return False
            elif present[column.name].is_nested():
                return False  # pandera words their values its own way
        return not self.inline.strict or set(present) <= {c.name for c in self.columns}

    def failure_cases(self, frame: pl.DataFrame) -> pl.DataFrame | None:
        """pandera's failure cases of `frame` (None: every row passes). Call `decides` first.
        Raises polars' error when a check cannot be evaluated on its column."""
        tests = self._tests(frame)
        if not tests:
            return None
        failing = pl.any_horizontal([test for _, _, test in tests])
        if not frame.select(failing.any()).item():
            return None
        rows = frame.with_row_index("index").filter(failing)  # the few that fail
        found = [
            rows.filter(test).select(
                pl.col(column).cast(pl.String).alias("failure_case"),
                pl.lit("Column").alias("schema_context"),
                pl.lit(column).alias("column"),
                pl.lit(check.name if check else "not_nullable").alias("check"),
                pl.lit(check.number if check else None, pl.Int32).alias("check_number"),
                pl.col("index").cast(pl.Int32),
            )
            for column, check, test in tests
        ]
        return pl.concat(found).cast(_CASES)  # type: ignore[arg-type]

    def _tests(self, frame: pl.DataFrame) -> list[tuple[str, _Check | None, pl.Expr]]:
        """(column, check or None for not_nullable, True where a row fails), in pandera's
        order: each column's NULLs first, then its checks in order."""
        tests: list[tuple[str, _Check | None, pl.Expr]] = []
        for column in self.columns:
            if column.name not in frame.schema:
                continue
            values = pl.col(column.name)
            if not column.nullable:
                missing = values.is_null()
                if frame.schema[column.name] in (pl.Float32, pl.Float64):
                    missing = missing | values.is_nan()  # pandera counts NaN as missing
                tests.append((column.name, None, missing))
            for check in column.checks:  # NULL passes a check (pandera's ignore_na)
                passed = check.build(values, check.argument)
                tests.append((column.name, check, passed.not_().fill_null(False)))
        return tests

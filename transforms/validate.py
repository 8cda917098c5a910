"""Pandera validation over a stream of frames, with quarantine of failing rows.

A schema comes from an inline mapping in the pipeline, a YAML file of the same shape, or Python
(`file.py:Model` / `module:Model` naming a pandera `DataFrameModel` or `DataFrameSchema`).

Failures come in two sorts. Row failures (a value out of range, a NULL where none is allowed, a
value that cannot be coerced) have a row number and can be quarantined. Schema failures (a missing
column, a column of the wrong type) concern every row; no row can be set aside for them, so the
task fails whatever `on_fail` says, except `warn`, which logs them.

Frames are validated `batch_rows` at a time so memory stays bounded. Uniqueness cannot be
decided batch by batch: its rules are taken out of the schema and decided first over their key
columns alone, and the rows that repeat a key fail in the batch they come in. Only a schema that
coerces values before comparing them sees the whole input at once.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from engine.core.errors import DataError, DefinitionError, UserCodeError
from engine.core.types import empty_table, parse_type
from transforms.config import ColumnRule, InlineSchema, OnFail, ValidateSpec
from transforms.rules import CHECKS, RowRules, check_rule
from transforms.user_code import load_object

__all__ = [
    "CHECKS",
    "QUARANTINE_ERRORS",
    "QUARANTINE_REASONS",
    "QUARANTINE_ROW",
    "UniqueRule",
    "ValidationOutcome",
    "batch_rows",
    "build_schema",
    "check_schema",
    "duplicate_cases",
    "load_schema",
    "needs_whole_input",
    "reason_texts",
    "schema_file",
    "split_uniqueness",
    "validate_frames",
]

QUARANTINE_ROW = "_arrowline_row"
QUARANTINE_ERRORS = "_arrowline_errors"
QUARANTINE_REASONS = "_arrowline_reasons"
"""Not stored: the reasons in words, added where people read quarantined rows."""


def reason_texts(errors: pl.Expr) -> pl.Expr:
    """A quarantine's reasons (list of column, check, value structs) as a list of
    "column: check (value)" texts: the form people read, in a table or a notebook, where a
    struct shows its values without their field names."""
    reason = pl.element().struct
    column = reason.field("column")
    value = reason.field("value")
    return errors.list.eval(
        pl.concat_str(
            pl.when(column.is_null() | (column == "")).then(pl.lit("(row)")).otherwise(column),
            pl.lit(": "),
            reason.field("check"),
            pl.when(value.is_null())
            .then(pl.lit(""))
            .otherwise(pl.concat_str(pl.lit(" ("), value, pl.lit(")"))),
        )
    )


_ERROR_TYPE = pa.list_(
    pa.struct([("column", pa.string()), ("check", pa.string()), ("value", pa.string())])
)


def _polars_dtype(type_name: str) -> pl.DataType:
    arrow_type = parse_type(type_name)
    frame = pl.from_arrow(empty_table(pa.schema([("t", arrow_type)])))  # pa.array imports pandas
    assert isinstance(frame, pl.DataFrame)
    return frame.schema["t"]


def _check(column: str, name: str, argument: Any) -> Any:
    import pandera.polars as pdp

    args = check_rule(column, name, argument)
    if CHECKS[name].ranged:
        return getattr(pdp.Check, name)(min_value=args[0], max_value=args[1])
    return getattr(pdp.Check, name)(*args)


def _column_dtype(name: str, rule: ColumnRule) -> pl.DataType | None:
    try:
        return _polars_dtype(rule.type) if rule.type else None
    except ValueError as exc:
        raise DefinitionError(f"column {name!r}: {exc}") from None


def check_inline(inline: InlineSchema) -> None:
    """Raise what `build_schema` would refuse (an unknown type or check, a range without its
    bounds) without importing pandera, which takes 0.5 s and ~150 MB with pandas installed:
    `arrowline validate` and `plan` need not pay for it; a run imports it when a validate
    task starts."""
    for name, rule in inline.columns.items():
        _column_dtype(name, rule)
        for check, argument in rule.checks.items():
            check_rule(name, check, argument)


def _column(name: str, rule: ColumnRule) -> Any:
    import pandera.polars as pdp

    dtype = _column_dtype(name, rule)
    checks = [_check(name, check, argument) for check, argument in rule.checks.items()]
    return pdp.Column(
        dtype,
        checks=checks,
        nullable=rule.nullable,
        unique=rule.unique,
        required=rule.required,
        description=rule.description,
    )


def build_schema(inline: InlineSchema) -> Any:
    """An InlineSchema as a pandera polars DataFrameSchema."""
    import pandera.polars as pdp

    columns = {name: _column(name, rule) for name, rule in inline.columns.items()}
    return pdp.DataFrameSchema(
        columns,
        description=inline.description,
        strict=inline.strict,
        coerce=inline.coerce,
        unique=list(inline.unique) if inline.unique else None,
    )


def _inline_from_yaml(path: Path, reference: str) -> InlineSchema:
    from pydantic import ValidationError

    from engine.core.yaml_source import read_yaml_file

    data, source, problems = read_yaml_file(path)
    if problems:
        raise DefinitionError(f"schema {reference!r}: {problems[0].format()}")
    try:
        inline = InlineSchema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        line = source.line_of(tuple(first["loc"]))
        where = f"{path}:{line}" if line else str(path)
        raise DefinitionError(
            f"schema {reference!r}: {where}: {'.'.join(map(str, first['loc']))}: {first['msg']}"
        ) from None
    return inline


def schema_file(reference: Any, base_dir: Path) -> Path | None:
    """The YAML file a `schema:` value names, or None when it is inline or Python."""
    if not isinstance(reference, str) or not reference.endswith((".yaml", ".yml")):
        return None
    path = Path(reference)
    return path if path.is_absolute() else base_dir / path


def _inline_schema_file(path: Path, reference: str) -> InlineSchema:
    if not path.exists():
        raise DefinitionError(f"schema file {reference!r} does not exist ({path})")
    return _inline_from_yaml(path, reference)


def check_schema(reference: Any, base_dir: Path) -> None:
    """Raise what `load_schema` would: inline and YAML schemas are checked without pandera,
    a Python one by loading it (its module imports pandera)."""
    if isinstance(reference, InlineSchema):
        check_inline(reference)
        return
    path = schema_file(reference, base_dir)
    if path is not None:
        check_inline(_inline_schema_file(path, str(reference)))
        return
    load_schema(reference, base_dir)


def load_rules(reference: Any, base_dir: Path) -> Any:
    """What a validate task checks with: an inline or YAML schema as `RowRules` (decided in
    one Polars pass, pandera only for what is not a row's failure), else `load_schema`'s."""
    inline = reference if isinstance(reference, InlineSchema) else None
    path = schema_file(reference, base_dir)
    if path is not None:
        inline = _inline_schema_file(path, str(reference))
    if inline is None or inline.coerce or any(_pattern(name) for name in inline.columns):
        return load_schema(reference, base_dir)
    return RowRules.of(inline, _column_dtype)


def _pattern(name: str) -> bool:
    """pandera reads a column name written ^...$ as a pattern of names."""
    return name.startswith("^") and name.endswith("$")


def load_schema(reference: Any, base_dir: Path) -> Any:
    """Whatever `schema:` holds, as a pandera polars DataFrameSchema."""
    import pandera.api.polars.model as polars_model
    import pandera.polars as pdp

    if isinstance(reference, InlineSchema):
        return build_schema(reference)
    obj = reference
    if isinstance(reference, str):
        path = schema_file(reference, base_dir)
        if path is not None:
            return build_schema(_inline_schema_file(path, reference))
        obj = load_object(reference, base_dir)
    if isinstance(obj, pdp.DataFrameSchema):
        return obj
    if isinstance(obj, type) and issubclass(obj, polars_model.DataFrameModel):
        return obj.to_schema()
    raise UserCodeError(
        f"schema {reference!r} is a {type(obj).__name__}; expected a pandera.polars "
        "DataFrameModel or DataFrameSchema (import pandera.polars, not pandera.pandas)"
    )


def batch_rows(schema: Any, said: int | None) -> int:
    """Rows validated at a time: what the task says, else by who decides the rows (one Polars
    pass gains nothing from larger frames; pandera pays per call)."""
    return said or (131_072 if isinstance(schema, RowRules) else 1_000_000)


def needs_whole_input(schema: Any) -> bool:
    """Uniqueness rules must see every row at once."""
    if isinstance(schema, RowRules):
        return bool(schema.unique) or any(r.unique for r in schema.inline.columns.values())
    if getattr(schema, "unique", None):
        return True
    return any(getattr(column, "unique", False) for column in schema.columns.values())


@dataclass(frozen=True)
class UniqueRule:
    """One uniqueness rule: a column's own (`column` set) or the frame's over `keys`."""

    column: str | None
    keys: tuple[str, ...]


def _nested(dtype: pl.DataType) -> bool:
    return isinstance(dtype, pl.List | pl.Array | pl.Struct | pl.Object)


def split_uniqueness(schema: Any, columns: pl.Schema) -> tuple[Any, list[UniqueRule]] | None:
    """The schema without its uniqueness rules, and the rules, so that rows stream through
    the rest batch by batch while uniqueness is decided over the key columns alone (6M rows:
    a 48 MB key column instead of the whole input in memory). `columns`: the input's. None
    when the rules cannot be decided apart from pandera: values coerced before they are
    compared, a column named by a pattern, a key of lists or structs."""
    if getattr(schema, "coerce", False):
        return None
    if isinstance(schema, RowRules):
        return _split_rules(schema, columns)
    rules: list[UniqueRule] = []
    updates: dict[str, dict[str, Any]] = {}
    for name, column in schema.columns.items():
        if getattr(column, "unique", False):
            rules.append(UniqueRule(name, (name,)))
            updates[name] = {"unique": False}
    frame_rules = getattr(schema, "unique", None) or []
    if frame_rules and all(isinstance(key, str) for key in frame_rules):
        frame_rules = [frame_rules]
    rules.extend(UniqueRule(None, tuple(keys)) for keys in frame_rules)
    for key in {key for rule in rules for key in rule.keys}:
        column = schema.columns.get(key)
        if column is not None and (
            getattr(column, "regex", False) or getattr(column, "coerce", False)
        ):
            return None
        if key in columns and _nested(columns[key]):
            return None
    plain = schema.update_columns(updates) if updates else copy.deepcopy(schema)  # copies
    plain.unique = None
    return plain, rules


def _split_rules(schema: RowRules, columns: pl.Schema) -> tuple[RowRules, list[UniqueRule]] | None:
    keys = {name for name, rule in schema.inline.columns.items() if rule.unique}
    rules = [UniqueRule(name, (name,)) for name in schema.inline.columns if name in keys]
    if schema.unique:
        rules.append(UniqueRule(None, tuple(schema.unique)))
    if any(key in columns and _nested(columns[key]) for rule in rules for key in rule.keys):
        return None
    plain = schema.inline.model_copy(
        update={
            "columns": {
                name: rule.model_copy(update={"unique": False})
                for name, rule in schema.inline.columns.items()
            },
            "unique": None,
        }
    )
    return RowRules.of(plain, _column_dtype), rules


_CASE_SCHEMA = {
    "failure_case": pl.String,
    "schema_context": pl.String,
    "column": pl.String,
    "check": pl.String,
    "check_number": pl.Int32,
    "index": pl.Int64,
}


def duplicate_cases(source: pl.LazyFrame, rules: list[UniqueRule]) -> pl.DataFrame:
    """Every row that repeats a key, as pandera reports it (every copy fails, NULL counts as
    a value): its row number in the whole input, the column or the frame, the check and the
    value. Only the key columns are read."""
    available = set(source.collect_schema().names())
    found: list[pl.DataFrame] = []
    for rule in rules:
        keys = [key for key in rule.keys if key in available]
        if not keys:
            continue
        if rule.column is not None:
            value = pl.col(rule.column).cast(pl.String)
            context, check = "Column", "field_uniqueness"
        else:
            value = pl.struct(keys).struct.json_encode()
            context, check = "DataFrameSchema", "multiple_fields_uniqueness"
        cases = (
            _repeated(source.select(keys).with_row_index("index"), keys)
            .select(
                value.alias("failure_case"),
                pl.lit(context).alias("schema_context"),
                pl.lit(rule.column, pl.String).alias("column"),
                pl.lit(check).alias("check"),
                pl.lit(None, pl.Int32).alias("check_number"),
                pl.col("index").cast(pl.Int64),
            )
            .collect()
        )
        found.append(cases)
        if rule.column is None and not cases.is_empty():
            break  # pandera reports the first frame rule that fails, not the ones after it
    if not found:
        return pl.DataFrame(schema=_CASE_SCHEMA)
    return pl.concat(found).sort("index", maintain_order=True)


def _repeated(rows: pl.LazyFrame, keys: list[str]) -> pl.LazyFrame:
    """The rows whose keys another row has too. One numeric or temporal key: sorted, each
    row compared with its neighbours (6M distinct int64: 0.12 s, where hashing them takes
    0.54 s); otherwise hashed, which is the faster of the two on text and key combinations."""
    dtype = rows.collect_schema()[keys[0]]
    if len(keys) > 1 or not (dtype.is_numeric() or dtype.is_temporal()):
        return rows.filter(pl.struct(keys).is_duplicated())
    key = pl.col(keys[0])
    position = pl.int_range(pl.len())  # a shift brings in a NULL that is no row's value
    ordered = rows.sort(keys[0], nulls_last=True)
    return ordered.filter(
        (key.eq_missing(key.shift(1)) & (position > 0))
        | (key.eq_missing(key.shift(-1)) & (position < pl.len() - 1))
    ).sort("index")


def _cases_in(duplicates: pl.DataFrame | None, offset: int, height: int) -> pl.DataFrame | None:
    """The duplicate rows of one frame, numbered within it."""
    if duplicates is None or duplicates.is_empty():
        return None
    found = duplicates.filter(pl.col("index").is_between(offset, offset + height - 1))
    if found.is_empty():
        return None
    return found.with_columns((pl.col("index") - offset).cast(pl.Int32))


@dataclass
class ValidationOutcome:
    """Counts and failures of one validate task, filled in as frames stream through."""

    rows_in: int = 0
    rows_passed: int = 0
    rows_rejected: int = 0
    rows_failed: int = 0
    """Rows with at least one row-level failure, whatever on_fail did with them."""
    failures_by_check: dict[tuple[str, str], int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def record(self, failures: pl.DataFrame, offset: int) -> None:
        for row in failures.iter_rows(named=True):
            key = (row["column"] or "", row["check"])
            self.failures_by_check[key] = self.failures_by_check.get(key, 0) + 1
            if len(self.examples) < 5:
                self.examples.append(_example(row, offset))

    def summary(self) -> str:
        parts = [
            f"{column or 'frame'}: {check} ({count} failure{'s' if count != 1 else ''})"
            for (column, check), count in sorted(self.failures_by_check.items())
        ]
        return "; ".join(parts)


def _example(row: dict[str, Any], offset: int) -> str:
    """One failure for a hint: the row, column, check and value; a whole-column one in words."""
    if row["index"] is None:
        return "schema: " + _describe_schema_case(row["column"], row["check"], row["failure_case"])
    column = f"column {row['column']!r}" if row["column"] else "frame"
    return (
        f"row {offset + row['index']}: {column} failed {row['check']} "
        f"with value {row['failure_case']!r}"
    )


def _quarantine_rows(frame: pl.DataFrame, failures: pl.DataFrame, offset: int) -> pl.DataFrame:
    reasons = (
        failures.select(
            pl.col("index").cast(pl.Int64).alias("__index"),
            pl.struct(
                pl.col("column").fill_null(""),
                pl.col("check"),
                pl.col("failure_case").alias("value"),
            ).alias(QUARANTINE_ERRORS),
        )
        .group_by("__index", maintain_order=True)
        .agg(pl.col(QUARANTINE_ERRORS))
    )
    rows = frame.with_row_index("__index").with_columns(pl.col("__index").cast(pl.Int64))
    bad = rows.join(reasons, on="__index", how="inner").sort("__index")
    return bad.with_columns((pl.col("__index") + offset).alias(QUARANTINE_ROW)).drop("__index")


def _split_failures(cases: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    return cases.filter(pl.col("index").is_not_null()), cases.filter(pl.col("index").is_null())


def _describe_schema_case(column: str | None, check: str, found: object) -> str:
    """A failure of a whole column in words: pandera reports a missing column as
    `column_in_dataframe` with the column as its "failure case", which reads as the opposite."""
    if check == "column_in_dataframe":
        return f"column {found!r} is missing"
    if check == "column_in_schema":
        return f"column {found!r} is not in the schema (strict)"
    return f"{column or 'frame'}: {check} (found {found})"


def _schema_failure(cases: pl.DataFrame) -> DataError:
    details = "; ".join(
        _describe_schema_case(row["column"], row["check"], row["failure_case"])
        for row in cases.iter_rows(named=True)
    )
    return DataError(
        f"the input does not match the schema: {details}",
        hint="these failures concern whole columns, so no row can be quarantined for them",
    )


def _validate(schema: Any, frame: pl.DataFrame) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    """(the validated frame, None) when every row passes, else (None, pandera's failure cases)."""
    if isinstance(schema, RowRules) and schema.decides(frame):
        try:
            cases = schema.failure_cases(frame)
        except (pl.exceptions.PolarsError, TypeError, ValueError):
            cases = _UNDECIDED  # a check its column cannot take: pandera says what is wrong
        if cases is not _UNDECIDED:
            return (frame, None) if cases is None else (None, cases)
    import pandera.errors as pe

    try:
        return _pandera(schema).validate(frame, lazy=True), None
    except pe.SchemaErrors as error:
        return None, error.failure_cases


def _pandera(schema: Any) -> Any:
    return schema.pandera() if isinstance(schema, RowRules) else schema


_UNDECIDED: Any = object()


def _failure_cases(
    schema: Any, frame: pl.DataFrame, duplicates: pl.DataFrame | None, offset: int
) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    """(the validated frame, None) when every row passes, else (None, the failure cases)."""
    good, cases = _validate(schema, frame)
    repeated = _cases_in(duplicates, offset, frame.height)
    if repeated is None:
        return good, cases
    if cases is None:
        return None, repeated
    return None, pl.concat([cases, repeated], how="vertical_relaxed")


def _rows_failed(outcome: ValidationOutcome) -> DataError:
    return DataError(
        f"{outcome.rows_failed} of {outcome.rows_in} rows failed validation: {outcome.summary()}",
        hint="examples: " + " | ".join(outcome.examples[:3]),
    )


def validate_frames(
    frames: Iterable[pl.DataFrame],
    schema: Any,
    spec: ValidateSpec,
    outcome: ValidationOutcome,
    duplicates: pl.DataFrame | None = None,
) -> Iterator[tuple[pl.DataFrame | None, pl.DataFrame | None]]:
    """Validate frame by frame; yield (rows that go on, quarantined rows) for each.
    `duplicates`: rows of the whole input that repeat a key (`duplicate_cases`), failed in
    the frame they come in.

    Raises DataError when on_fail is `fail` and anything fails, or when a failure concerns the
    schema rather than rows.
    """

    offset = 0
    for frame in frames:
        outcome.rows_in += frame.height
        good, cases = _failure_cases(schema, frame, duplicates, offset)
        if cases is not None:
            row_cases, schema_cases = _split_failures(cases)
            outcome.record(cases, offset)
            outcome.rows_failed += row_cases["index"].n_unique()
            if spec.on_fail is OnFail.WARN:
                outcome.rows_passed += frame.height
                yield frame, None
                offset += frame.height
                continue
            if row_cases.is_empty():
                raise _schema_failure(schema_cases) from None
            if spec.on_fail is OnFail.FAIL and not schema_cases.is_empty():
                raise _rows_failed(outcome) from None
            if spec.on_fail is OnFail.FAIL:  # the rest is checked too, to count every failure
                offset += frame.height
                continue
            bad_index = row_cases["index"].unique()
            quarantined = _quarantine_rows(frame, row_cases, offset)
            remaining = (
                frame.with_row_index("__index")
                .filter(~pl.col("__index").is_in(bad_index.cast(pl.UInt32).implode()))
                .drop("__index")
            )
            outcome.rows_rejected += quarantined.height
            if schema_cases.is_empty() and not getattr(schema, "coerce", False):
                # Lazy validation reports every failing row, so the rest passes as it is.
                good = remaining
            else:
                # A schema failure such as a wrong dtype can come from the bad rows themselves
                # (coercion); validate the rest again to know whether it stands on its own, and
                # to get it coerced.
                import pandera.errors as pe

                try:
                    good = _pandera(schema).validate(remaining, lazy=True)
                except pe.SchemaErrors as second:
                    raise _schema_failure(second.failure_cases) from None
            outcome.rows_passed += good.height
            yield good, quarantined
        else:
            assert good is not None
            outcome.rows_passed += good.height
            yield good, None
        offset += frame.height
    if spec.on_fail is OnFail.FAIL and outcome.rows_failed:
        raise _rows_failed(outcome)
    if spec.on_fail is OnFail.QUARANTINE and outcome.rows_in:
        share = outcome.rows_rejected / outcome.rows_in
        if share > spec.max_rejected_fraction:
            raise DataError(
                f"{outcome.rows_rejected} of {outcome.rows_in} rows ({share:.1%}) failed "
                f"validation, more than max_rejected_fraction {spec.max_rejected_fraction:.1%}: "
                f"{outcome.summary()}",
                hint="examples: " + " | ".join(outcome.examples[:3]),
            )


def quarantine_schema(input_schema: pa.Schema) -> pa.Schema:
    """Arrow schema of quarantined rows: the input's columns, the row number and the reasons."""
    return input_schema.append(pa.field(QUARANTINE_ROW, pa.int64())).append(
        pa.field(QUARANTINE_ERRORS, _ERROR_TYPE)
    )

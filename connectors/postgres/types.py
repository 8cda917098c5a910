"""PostgreSQL <-> Arrow types.

Reading: ADBC hands NUMERIC over as text (an opaque extension carrying the typmod), enums and
other unknown types as opaque bytes, and INTERVAL as month_day_nano, which Parquet cannot store.
`SourceConversion` turns each into the type a user expects, column by column, in Arrow:

    numeric(p,s)     -> decimal128(p,s) (decimal256 above 38 digits), exact
    numeric          -> the source's `unconstrained_numeric` (default decimal(38,9); a value
                        that does not fit fails the task, it is never rounded)
    enum, other text -> string (read as their text: see numeric_rewrite)
    interval         -> duration[us], months counted as 30 days (PostgreSQL's own EXTRACT(EPOCH)
                        convention; exact for intervals without months)
    uuid, json(b)    -> arrow.uuid, arrow.json (kept: Parquet, DuckDB and ADBC all know them)
    arrays           -> lists of the converted element type

Writing: binary COPY needs every value in exactly its column's wire type (int4 data into a
bigint column is rejected), so `target_arrow_type` gives the Arrow type that encodes a column's
type, and `pg_type` the column type a new table gets for an Arrow type.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from engine.core.errors import DataError, DefinitionError
from engine.core.types import parse_type

__all__ = ["SourceConversion", "numeric_rewrite", "pg_type", "target_arrow_type"]

_US_PER_DAY = 86_400_000_000
_US_PER_MONTH = 30 * _US_PER_DAY

Convert = Callable[[pa.Array], pa.Array]


def _pg_name(field: pa.Field) -> str:
    meta = field.metadata or {}
    return (meta.get(b"POSTGRESQL:type") or b"").decode()


def _typmod(field: pa.Field) -> int:
    meta = field.metadata or {}
    try:
        return int(meta.get(b"POSTGRESQL:typmod", b"-1"))
    except ValueError:
        return -1


def _numeric_target(typmod: int, unconstrained: pa.DataType) -> pa.DataType:
    if typmod < 4:
        return unconstrained
    precision, scale = (typmod - 4) >> 16, (typmod - 4) & 0xFFFF
    return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)


def _first_bad(values: pa.Array, target: pa.DataType) -> str | None:
    """The first text value that cannot become `target` (only called once a cast failed)."""
    for value in values.to_pylist():
        if value is None:
            continue
        try:
            pc.cast(pa.array([value]), target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return str(value)
    return None


def _numeric(column: str, target: pa.DataType) -> Convert:
    def convert(array: pa.Array) -> pa.Array:
        storage = array.storage if isinstance(array, pa.ExtensionArray) else array
        try:
            return pc.cast(storage, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            bad = _first_bad(storage, target)
            raise DataError(
                f"column {column!r}: NUMERIC value {bad!r} does not fit {target} without loss",
                hint="declare the column with the precision you need, cast it in a query, or set "
                "unconstrained_numeric: float64 (approximate) or string (exact text)",
            ) from None

    return convert


def _scaled_integer(target: pa.DataType) -> Convert:
    """A NUMERIC(p,s) the server sent as (value * 10^s)::int8 becomes decimal(p,s): the integer
    is exactly the decimal's unscaled value, so a cast to decimal128(19,0) and a view suffice."""

    def convert(array: pa.Array) -> pa.Array:
        return pc.cast(array, pa.decimal128(19, 0)).view(target)

    return convert


def _text(array: pa.Array) -> pa.Array:
    storage = array.storage if isinstance(array, pa.ExtensionArray) else array
    return pc.cast(storage, pa.string())


def _interval(array: pa.Array) -> pa.Array:
    """month_day_nano -> duration[us] without a Python loop: read the 16-byte values as ints."""
    count = len(array)
    if count == 0:
        return pa.array([], pa.duration("us"))
    buffer = array.buffers()[1]
    int32 = pa.Array.from_buffers(pa.int32(), 4 * (array.offset + count), [None, buffer])
    int64 = pa.Array.from_buffers(pa.int64(), 2 * (array.offset + count), [None, buffer])
    start = array.offset
    months = int32.take(pa.array(range(4 * start, 4 * (start + count), 4))).cast(pa.int64())
    days = int32.take(pa.array(range(4 * start + 1, 4 * (start + count), 4))).cast(pa.int64())
    nanos = int64.take(pa.array(range(2 * start + 1, 2 * (start + count), 2)))
    micros = pc.add(
        pc.add(pc.multiply(months, _US_PER_MONTH), pc.multiply(days, _US_PER_DAY)),
        pc.divide(nanos, 1000),
    )
    micros = pc.if_else(array.is_valid(), micros, pa.scalar(None, pa.int64()))
    return micros.cast(pa.duration("us"))


def _list(inner: Convert, target: pa.DataType) -> Convert:
    def convert(array: pa.Array) -> pa.Array:
        values = inner(array.values)
        return pa.ListArray.from_arrays(
            array.offsets, values, type=pa.list_(target), mask=array.is_null()
        )

    return convert


def _plan(field: pa.Field, unconstrained: pa.DataType) -> tuple[pa.DataType, Convert | None]:
    """The output type of one column and the conversion to it (None when none is needed)."""
    data_type = field.type
    if isinstance(data_type, pa.BaseExtensionType) and data_type.extension_name == "arrow.opaque":
        if data_type.type_name == "numeric":
            target = _numeric_target(_typmod(field), unconstrained)
            if pa.types.is_string(target):
                return target, _text
            if pa.types.is_floating(target):
                return target, lambda a: pc.cast(a.storage, target)
            return target, _numeric(field.name, target)
        return pa.string(), _text  # enums, citext, ltree, ...: their text form
    if pa.types.is_interval(data_type):
        return pa.duration("us"), _interval
    if pa.types.is_list(data_type):
        element = pa.field("item", data_type.value_type, metadata=field.metadata)
        target, inner = _plan(element, unconstrained)
        if inner is None:
            return data_type, None
        return pa.list_(target), _list(inner, target)
    return data_type, None


@dataclass(frozen=True)
class SourceConversion:
    """How the batches of one query become arrowline's types."""

    schema: pa.Schema
    converters: tuple[Convert | None, ...]

    @classmethod
    def for_schema(
        cls,
        schema: pa.Schema,
        unconstrained_numeric: str,
        scaled: dict[str, pa.DataType] | None = None,
    ) -> SourceConversion:
        """`scaled`: NUMERIC columns the query sends as scaled integers (see numeric_rewrite)."""
        policy = unconstrained_numeric.strip().lower()
        try:
            unconstrained = pa.string() if policy == "string" else parse_type(policy)
        except ValueError as exc:
            raise DefinitionError(f"unconstrained_numeric: {exc}") from None
        if not (
            pa.types.is_decimal(unconstrained)
            or pa.types.is_floating(unconstrained)
            or pa.types.is_string(unconstrained)
        ):
            raise DefinitionError(
                f"unconstrained_numeric must be decimal(P,S), float64 or string, not {policy!r}"
            )
        fields: list[pa.Field] = []
        converters: list[Convert | None] = []
        for field in schema:
            if scaled and field.name in scaled:
                target = scaled[field.name]
                fields.append(
                    pa.field(
                        field.name,
                        target,
                        nullable=field.nullable,
                        metadata={b"POSTGRESQL:type": b"numeric"},
                    )
                )
                converters.append(_scaled_integer(target))
                continue
            target, convert = _plan(field, unconstrained)
            fields.append(
                pa.field(field.name, target, nullable=field.nullable, metadata=field.metadata)
            )
            converters.append(convert)
        return cls(pa.schema(fields), tuple(converters))

    @property
    def identity(self) -> bool:
        return all(c is None for c in self.converters)

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self.identity:
            return batch
        columns = [
            column if convert is None else convert(column)
            for column, convert in zip(batch.columns, self.converters, strict=True)
        ]
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)


def _opaque_name(data_type: pa.DataType) -> str | None:
    """The PostgreSQL type name of an opaque column (one ADBC has no Arrow type for)."""
    if isinstance(data_type, pa.BaseExtensionType) and data_type.extension_name == "arrow.opaque":
        return str(data_type.type_name)
    return None


def _output_text(value: str) -> str:
    """The value as its type's output function writes it, NULL kept: `format('%s', ...)`,
    because a cast to text is not always that (inet::text adds a /32 to a host address)."""
    return f"case when {value} is null then null else format('%s', {value}) end"


def numeric_rewrite(schema: pa.Schema, sql: str) -> tuple[str, dict[str, pa.DataType]]:
    """Ask the server for each column in the form that reads fastest and right.

    NUMERIC(p,s) with p <= 18 as (value * 10^s)::bigint: ADBC turns every NUMERIC into text,
    which then has to be parsed again; a bigint comes over in 8 bytes and is exactly the
    decimal's unscaled value (a table with one such column reads about 1.5x faster).

    Types ADBC does not know (inet, cidr, macaddr, hstore, ltree, point, timetz, ranges, ...,
    and arrays of them) as text, as psql shows them: ADBC hands their binary wire form over
    as opaque bytes, which are no text (an inet came out as '\x02\x08...', a point failed as
    invalid UTF-8).
    Enums and other types whose wire form is their text read the same either way.

    Columns with more digits keep the text path; a query with two columns of the same name
    is left as it is (its columns cannot be named from outside).
    """
    from engine.core.sqltext import quote_identifier

    names = schema.names
    if len(set(names)) != len(names):
        return sql, {}
    scaled: dict[str, pa.DataType] = {}
    columns = []
    rewritten = False
    for field in schema:
        quoted = quote_identifier(field.name)
        data_type = field.type
        opaque = _opaque_name(data_type)
        element = _opaque_name(data_type.value_type) if pa.types.is_list(data_type) else None
        typmod = _typmod(field)
        if opaque == "numeric" and typmod >= 4:
            precision, scale = (typmod - 4) >> 16, (typmod - 4) & 0xFFFF
            if 1 <= precision <= 18:
                factor = f" * 1{'0' * scale}" if scale else ""
                columns.append(f"({quoted}{factor})::int8 as {quoted}")
                scaled[field.name] = pa.decimal128(precision, scale)
                rewritten = True
                continue
        if opaque is not None and opaque != "numeric":
            columns.append(f"{_output_text(quoted)} as {quoted}")
            rewritten = True
            continue
        if element is not None and element != "numeric":
            each = _output_text("e")
            columns.append(
                f"case when {quoted} is null then null else "
                f"array(select {each} from unnest({quoted}) as e) end as {quoted}"
            )
            rewritten = True
            continue
        columns.append(quoted)
    if not rewritten:
        return sql, {}
    return f"select {', '.join(columns)} from ({sql}) as arrowline_numeric", scaled


# ---------------------------------------------------------------------------------------------
# Arrow -> PostgreSQL


def pg_type(field: pa.Field) -> str:
    """The column type a new table gets for an Arrow field."""
    data_type = field.type
    if isinstance(data_type, pa.BaseExtensionType):
        name = data_type.extension_name
        if name == "arrow.uuid":
            return "uuid"
        if name == "arrow.json":
            return "jsonb"
        data_type = data_type.storage_type
    if pa.types.is_dictionary(data_type):
        return pg_type(pa.field(field.name, data_type.value_type))
    simple: list[tuple[Callable[[pa.DataType], bool], str]] = [
        (pa.types.is_boolean, "boolean"),
        (lambda t: t in (pa.int8(), pa.int16(), pa.uint8()), "smallint"),
        (lambda t: t in (pa.int32(), pa.uint16()), "integer"),
        (lambda t: t in (pa.int64(), pa.uint32()), "bigint"),
        (lambda t: t == pa.uint64(), "numeric(20,0)"),
        (lambda t: t in (pa.float16(), pa.float32()), "real"),
        (lambda t: t == pa.float64(), "double precision"),
        (
            lambda t: (
                pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
            ),
            "text",
        ),
        (
            lambda t: (
                pa.types.is_binary(t)
                or pa.types.is_large_binary(t)
                or pa.types.is_fixed_size_binary(t)
                or pa.types.is_binary_view(t)
            ),
            "bytea",
        ),
        (pa.types.is_date, "date"),
        (pa.types.is_time, "time"),
        (pa.types.is_duration, "interval"),
        (pa.types.is_interval, "interval"),
        (pa.types.is_null, "text"),
    ]
    for matches, name in simple:
        if matches(data_type):
            return name
    if pa.types.is_timestamp(data_type):
        return "timestamptz" if data_type.tz else "timestamp"
    if pa.types.is_decimal(data_type):
        return f"numeric({data_type.precision},{data_type.scale})"
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        return pg_type(pa.field(field.name, data_type.value_type)) + "[]"
    raise DataError(
        f"column {field.name!r} has type {data_type}, which has no PostgreSQL column type here",
        hint="convert it in an upstream sql task, e.g. to_json(col) for a struct",
    )


_NUMERIC = re.compile(r"^numeric\((\d+),(\d+)\)$")


def target_arrow_type(column_type: str) -> pa.DataType | None:
    """The Arrow type whose binary COPY encoding an existing column accepts, or None when no
    cheap cast exists (the sink then stages the rows and casts in SQL)."""
    text = column_type.strip().lower()
    text = {
        "timestamptz": "timestamp with time zone",
        "timestamp": "timestamp without time zone",
        "time": "time without time zone",
    }.get(text, text)  # DDL spellings, as pg_type writes
    if text.endswith("[]"):
        inner = target_arrow_type(text[:-2])
        return pa.list_(inner) if inner is not None else None
    exact = {
        "smallint": pa.int16(),
        "integer": pa.int32(),
        "bigint": pa.int64(),
        "real": pa.float32(),
        "double precision": pa.float64(),
        "boolean": pa.bool_(),
        "text": pa.string(),
        "date": pa.date32(),
        "timestamp without time zone": pa.timestamp("us"),
        "timestamp with time zone": pa.timestamp("us", "UTC"),
        "time without time zone": pa.time64("us"),
        "interval": pa.duration("us"),
        "bytea": pa.binary(),
        "uuid": pa.uuid(),
        "json": pa.json_(),
        "jsonb": pa.json_(),
    }
    if text in exact:
        return exact[text]
    if text.startswith(("character varying", "character(", "character", "bpchar")):
        return pa.string()
    match = _NUMERIC.match(text)
    if match:
        return (
            pa.decimal128(int(match.group(1)), int(match.group(2)))
            if int(match.group(1)) <= 38
            else None
        )
    return None

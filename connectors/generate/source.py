"""Generate deterministic synthetic rows as an Arrow stream.

Rows are drawn in fixed blocks of 65,536, each column's block from its own seeded stream
(`pyarrow.compute.random`), then cut into batches of the configured size. A row's values depend
on the seed, the column's position and spec, and the row's number, never on the batch size, so
changing `batch_size` reorganises the same rows. Memory is one block plus one batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from connectors.base import ConnectorContext
from connectors.generate.config import GeneratedColumn, GenerateSource
from engine.core.errors import DefinitionError
from engine.core.types import parse_type

__all__ = ["BLOCK_ROWS", "column_problems", "generate_schema", "open_generate"]

BLOCK_ROWS = 65_536
_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Draw = Callable[[int, int, int], pa.Array]
"""(first row, rows, stream seed) -> the column's values for those rows."""


def generate_schema(config: GenerateSource) -> pa.Schema:
    """The schema of the rows, known without drawing any."""
    return pa.schema(
        [pa.field(name, parse_type(column.type)) for name, column in config.columns.items()]
    )


def column_problems(config: GenerateSource) -> list[tuple[str, str]]:
    """(column, what is wrong) for every column spec its type cannot take."""
    problems = []
    for field in generate_schema(config):
        try:
            _drawer(field.name, field.type, config.columns[field.name])
        except DefinitionError as exc:
            problems.append((field.name, exc.message))
    return problems


def open_generate(config: GenerateSource, ctx: ConnectorContext) -> list[pa.RecordBatchReader]:
    schema = generate_schema(config)
    draws = [
        _with_nulls(
            _drawer(field.name, field.type, config.columns[field.name]),
            config.columns[field.name].nulls,
            field.type,
        )
        for field in schema
    ]
    blocks = _blocks(config, schema, draws, ctx)
    return [pa.RecordBatchReader.from_batches(schema, _rebatch(blocks, config.batch_size))]


def _stream_seed(seed: int, column: int, block: int, salt: int) -> int:
    """Independent streams per (seed, column, block, purpose), stable across versions."""
    mixed = seed * 0x9E3779B97F4A7C15 + (column + 1) * 0xBF58476D1CE4E5B9
    mixed += block * 0x94D049BB133111EB + salt * 0x2545F4914F6CDD1D
    return mixed % (2**63)


def _blocks(
    config: GenerateSource, schema: pa.Schema, draws: list[Draw], ctx: ConnectorContext
) -> Iterator[pa.RecordBatch]:
    for block in range(math.ceil(config.rows / BLOCK_ROWS)):
        ctx.raise_if_cancelled()
        first = block * BLOCK_ROWS
        rows = min(BLOCK_ROWS, config.rows - first)
        arrays = [
            draw(first, rows, _stream_seed(config.seed, index, block, 0))
            for index, draw in enumerate(draws)
        ]
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def _rebatch(blocks: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    pending: list[pa.RecordBatch] = []
    held = 0
    for block in blocks:
        offset = 0
        while offset < block.num_rows:
            take = min(size - held, block.num_rows - offset)
            pending.append(block.slice(offset, take))
            held += take
            offset += take
            if held == size:
                yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)
                pending, held = [], 0
    if held:
        yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)


def _uniform(rows: int, seed: int) -> pa.Array:
    return pc.random(rows, initializer=seed)


def _with_nulls(draw: Draw, share: float, data_type: pa.DataType) -> Draw:
    if share <= 0:
        return draw

    def drawn(first: int, rows: int, seed: int) -> pa.Array:
        values = draw(first, rows, seed)
        mask = pc.less(_uniform(rows, seed ^ 0x5DEECE66D), share)
        return pc.if_else(mask, pa.scalar(None, data_type), values)

    return drawn


def _drawer(name: str, data_type: pa.DataType, spec: GeneratedColumn) -> Draw:
    """How a column is drawn; a spec its type cannot take is a DefinitionError naming it."""

    def refuse(what: str) -> DefinitionError:
        return DefinitionError(f"generate column {name!r} ({spec.type}): {what}")

    if spec.values is not None:
        return _choices(name, data_type, spec, refuse)
    if spec.sequence:
        if not pa.types.is_integer(data_type):
            raise refuse("'sequence' needs an integer type")
        return _sequence(data_type, spec, refuse)
    if pa.types.is_boolean(data_type):
        share = spec.true_share
        return lambda first, rows, seed: pc.less(_uniform(rows, seed), share)
    if pa.types.is_integer(data_type):
        low, high = _int_bounds(data_type, spec, refuse)
        return _int_range(low, high, data_type)
    if pa.types.is_floating(data_type):
        low_f = float(_number(spec.min, 0.0, refuse))
        high_f = float(_number(spec.max, 1.0, refuse))
        _ordered(low_f, high_f, refuse)
        return lambda first, rows, seed: pc.cast(
            pc.add(low_f, pc.multiply(_uniform(rows, seed), high_f - low_f)), data_type
        )
    if pa.types.is_decimal(data_type):
        return _decimal(data_type, spec, refuse)
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return _strings(name, data_type, spec)
    if pa.types.is_date(data_type):
        low_d = _day(spec.min, date(2020, 1, 1), refuse)
        high_d = _day(spec.max, date(2024, 12, 31), refuse)
        _ordered(low_d, high_d, refuse)
        ints = _int_range(low_d, high_d, pa.int32())
        return lambda first, rows, seed: pc.cast(ints(first, rows, seed), data_type)
    if pa.types.is_timestamp(data_type):
        per_second = _UNITS[data_type.unit]
        low_t = _instant(spec.min, datetime(2020, 1, 1, tzinfo=UTC), per_second, refuse)
        high_t = _instant(
            spec.max, datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC), per_second, refuse
        )
        _ordered(low_t, high_t, refuse)
        ints = _int_range(low_t, high_t, pa.int64())
        return lambda first, rows, seed: ints(first, rows, seed).cast(data_type)
    raise refuse(
        "this type cannot be generated (integers, floats, decimals, bool, strings, dates and "
        "timestamps can)"
    )


def _ordered(low: Any, high: Any, refuse: Callable[[str], DefinitionError]) -> None:
    if low > high:
        raise refuse(f"min {low!r} is greater than max {high!r}")


def _number(value: Any, default: Any, refuse: Callable[[str], DefinitionError]) -> Any:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise refuse(f"bound {value!r} is not a number")
    return value


def _int_bounds(
    data_type: pa.DataType, spec: GeneratedColumn, refuse: Callable[[str], DefinitionError]
) -> tuple[int, int]:
    info = pa.types
    bits = data_type.bit_width
    signed = info.is_signed_integer(data_type)
    least, most = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    low = _number(spec.min, max(least, 0), refuse)
    high = _number(spec.max, min(most, 1_000_000), refuse)
    if int(low) != low or int(high) != high:
        raise refuse("integer bounds must be whole numbers")
    low, high = int(low), int(high)
    _ordered(low, high, refuse)
    if low < least or high > most:
        raise refuse(f"bounds {low}..{high} do not fit the type ({least}..{most})")
    return low, high


def _int_range(low: int, high: int, data_type: pa.DataType) -> Draw:
    span = float(high - low + 1)

    def draw(first: int, rows: int, seed: int) -> pa.Array:
        offsets = pc.floor(pc.multiply(_uniform(rows, seed), span))
        values = pc.add(pc.cast(offsets, pa.int64()), pa.scalar(low, pa.int64()))
        # float rounding at the top of a huge range may land one past `high`
        return pc.cast(pc.min_element_wise(values, pa.scalar(high, pa.int64())), data_type)

    return draw


def _sequence(
    data_type: pa.DataType, spec: GeneratedColumn, refuse: Callable[[str], DefinitionError]
) -> Draw:
    start = _number(spec.min, 1, refuse)
    if int(start) != start:
        raise refuse("a sequence starts at a whole number")

    def draw(first: int, rows: int, seed: int) -> pa.Array:
        ones = pa.repeat(pa.scalar(1, pa.int64()), rows)
        return pc.cast(pc.cumulative_sum(ones, start=int(start) + first - 1), data_type)

    return draw


def _decimal(
    data_type: pa.DataType, spec: GeneratedColumn, refuse: Callable[[str], DefinitionError]
) -> Draw:
    scale = data_type.scale
    ceiling = min(Decimal(10) ** (data_type.precision - scale) - 1, Decimal(1_000_000))
    low = Decimal(str(_number(spec.min, 0, refuse)))
    high = Decimal(str(_number(spec.max, ceiling, refuse)))
    _ordered(low, high, refuse)
    step = Decimal(1).scaleb(-scale)
    # whole numbers of the smallest step, drawn as int64, then written with their decimal point
    # and parsed as decimals: exact at any scale, where arithmetic on decimals runs out of digits
    least, most = int(low / step), int(high / step)
    if max(abs(least), abs(most)) >= 2**62:
        raise refuse(f"min..max at scale {scale} is too wide to draw; narrow it")
    units = _int_range(least, most, pa.int64())
    unit = pa.scalar(10**scale, pa.int64())

    def draw(first: int, rows: int, seed: int) -> pa.Array:
        drawn = units(first, rows, seed)
        if scale == 0:
            return pc.cast(pc.cast(drawn, pa.string()), data_type)
        magnitude = pc.abs(drawn)
        whole = pc.divide(magnitude, unit)  # integer division of integers
        fraction = pc.subtract(magnitude, pc.multiply(whole, unit))
        text = pc.binary_join_element_wise(
            pc.if_else(pc.less(drawn, 0), "-", ""),
            pc.cast(whole, pa.string()),
            ".",
            pc.utf8_lpad(pc.cast(fraction, pa.string()), scale, "0"),
            "",
        )
        return pc.cast(text, data_type)

    return draw


def _strings(name: str, data_type: pa.DataType, spec: GeneratedColumn) -> Draw:
    distinct = spec.cardinality
    prefix = pa.scalar(f"{name}_", pa.string())

    def draw(first: int, rows: int, seed: int) -> pa.Array:
        if distinct is None:  # one value per row: its row number
            numbers = pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), rows), start=first)
        else:
            numbers = _int_range(1, distinct, pa.int64())(first, rows, seed)
        text = pc.binary_join_element_wise(prefix, pc.cast(numbers, pa.string()), "")
        return pc.cast(text, data_type)

    return draw


def _choices(
    name: str,
    data_type: pa.DataType,
    spec: GeneratedColumn,
    refuse: Callable[[str], DefinitionError],
) -> Draw:
    assert spec.values is not None
    try:
        values = pa.array(list(spec.values)).cast(data_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise refuse(f"its values do not fit the type: {exc}") from None
    weights = spec.weights or tuple(1.0 for _ in spec.values)
    total = sum(weights)
    edges, running = [], 0.0
    for weight in weights[:-1]:
        running += weight / total
        edges.append(running)

    def draw(first: int, rows: int, seed: int) -> pa.Array:
        u = _uniform(rows, seed)
        index = pa.repeat(pa.scalar(0, pa.int32()), rows)
        for edge in edges:  # the value whose cumulative share first exceeds u
            index = pc.add(index, pc.cast(pc.greater_equal(u, edge), pa.int32()))
        return pc.take(values, index)

    return draw


def _day(value: Any, default: date, refuse: Callable[[str], DefinitionError]) -> int:
    when = default if value is None else value
    if isinstance(when, str):
        try:
            when = date.fromisoformat(when)
        except ValueError:
            raise refuse(f"bound {value!r} is not a date (YYYY-MM-DD)") from None
    if isinstance(when, datetime):
        when = when.date()
    if not isinstance(when, date):
        raise refuse(f"bound {value!r} is not a date")
    return (when - date(1970, 1, 1)).days


def _instant(
    value: Any, default: datetime, per_second: int, refuse: Callable[[str], DefinitionError]
) -> int:
    when = default if value is None else value
    if isinstance(when, str):
        try:
            when = datetime.fromisoformat(when)
        except ValueError:
            raise refuse(f"bound {value!r} is not an ISO date or timestamp") from None
    if isinstance(when, date) and not isinstance(when, datetime):
        when = datetime(when.year, when.month, when.day)
    if not isinstance(when, datetime):
        raise refuse(f"bound {value!r} is not a timestamp")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - _EPOCH
    return (
        delta.days * 86_400 + delta.seconds
    ) * per_second + delta.microseconds * per_second // 1_000_000

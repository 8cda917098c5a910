"""Keys of keyed loads, checked the same way by every database sink.

A config's mode and keys must fit (`merge` needs keys; some flags apply to one mode only), and
the rows of a merge must have keys that are set and unique: a row without a key cannot be
matched, and two rows with one key would update the same target row twice. A database sink
asks its own connection (`check_merge_keys`); a table sink (Delta, Iceberg) reads the input's
key columns into Arrow and asks them (`input_keys`, `check_key_values`), which needs no
database engine loaded: DuckDB alone is ~40 MB of a merge process's peak.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from engine.core.errors import DataError
from engine.core.sqltext import quote_identifier

if TYPE_CHECKING:
    import pyarrow as pa

    from engine.core.tables import InputTable

__all__ = [
    "check_key_columns",
    "check_key_values",
    "check_load_keys",
    "check_merge_keys",
    "input_keys",
]


def check_load_keys(mode: str, keys: Sequence[str], **flags: tuple[bool, str]) -> None:
    """The rule every keyed sink shares: `merge` needs `keys`; each flag that only applies to
    one mode (`delete_missing`: (set, "merge")) is refused with any other. For a pydantic
    model validator: raises ValueError."""
    if mode in ("merge", "apply") and not keys:
        raise ValueError(f"mode: {mode} needs 'keys', the columns that identify a row")
    for name, (given, only) in flags.items():
        if given and mode != only:
            raise ValueError(f"{name} applies to mode: {only}")


def check_key_columns(
    keys: Sequence[str], given: Sequence[str], table: Sequence[str] | None
) -> None:
    """Refuse merge keys the input (`given`'s columns) or an existing table lacks."""
    missing = [key for key in keys if key not in given]
    if missing:
        raise DataError(f"merge keys {missing} are not columns of the input ({list(given)})")
    absent = [key for key in keys if table is not None and key not in table]
    if absent:
        raise DataError(
            f"merge keys {absent} are not columns of the table ({list(table or [])})",
            hint="rows are matched on columns both have; replace the table to change its keys",
        )


def check_merge_keys(
    rows: Callable[[str], Sequence[Sequence[Any]]], relation: str, keys: Sequence[str]
) -> None:
    """Refuse NULL or repeated `keys` in `relation` (staged input rows), naming counts and
    examples. `rows(sql)` runs one query on the sink's connection (PostgreSQL and DuckDB
    both speak this SQL)."""
    quoted = [quote_identifier(key) for key in keys]
    nulls = rows(
        "select "
        + ", ".join(f"count(*) filter (where {q} is null)" for q in quoted)
        + f" from {relation}"
    )[0]
    _refuse_nulls(keys, nulls)
    grouped = f"from {relation} group by {', '.join(quoted)} having count(*) > 1"
    duplicates = rows(
        f"select {', '.join(quoted)}, count(*) {grouped} order by count(*) desc limit 5"
    )
    if duplicates:
        (total,) = rows(f"select count(*) from (select 1 {grouped}) d")[0]
        _refuse_duplicates(keys, duplicates, total)


def input_keys(source: InputTable, keys: Sequence[str]) -> pa.Table:
    """The input's key columns, every row, read from its files a column at a time (an
    integer key holds 8 bytes a row: 24 MB for 3,000,000 rows). A merge's input is files,
    read twice (keys, then rows), never a stream."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def batches() -> Iterator[pa.RecordBatch]:
        for path in source.files:
            with pq.ParquetFile(path) as parquet:
                yield from parquet.iter_batches(batch_size=1 << 20, columns=list(keys))

    read = list(batches())
    return pa.Table.from_batches(read) if read else source.schema.empty_table().select(keys)


def check_key_values(found: pa.Table, keys: Sequence[str]) -> None:
    """`check_merge_keys` over key columns in Arrow (`input_keys`): the same refusals. The
    keys are sorted and each compared with the next, which holds a sorted copy (300,000
    integer keys: ~10 MB, 8 ms) where a hash aggregation held ~35 MB; the repeated keys are
    counted only when there are some."""
    import pyarrow as pa
    import pyarrow.compute as pc

    _refuse_nulls(keys, [found.column(key).null_count for key in keys])
    if found.num_rows < 2:
        return
    try:
        ordered, repeated = _neighbours_equal(found, keys)
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError):  # a struct or list key
        _check_in_duckdb(found, keys)
        return
    if not pc.any(repeated).as_py():
        return
    counts = found.group_by(list(keys), use_threads=False).aggregate([([], "count_all")])
    counts = counts.filter(pc.greater(counts.column("count_all"), 1))
    if not counts.num_rows:  # equal, not the same bits (0.0 and -0.0, NaNs): shown as sorted
        again = ordered.slice(1).filter(repeated).slice(0, 5)
        shown = [(*(again.column(k)[i].as_py() for k in keys), 2) for i in range(again.num_rows)]
        _refuse_duplicates(keys, shown, pc.sum(repeated).as_py())
    shown = counts.sort_by([("count_all", "descending")]).slice(0, 5)
    columns = [shown.column(key).to_pylist() for key in keys]
    examples = [
        (*(column[i] for column in columns), shown.column("count_all")[i].as_py())
        for i in range(shown.num_rows)
    ]
    _refuse_duplicates(keys, examples, counts.num_rows)


def _neighbours_equal(found: pa.Table, keys: Sequence[str]) -> tuple[pa.Table, pa.Array]:
    """`found` sorted by `keys`, and whether each of its rows after the first has the keys
    of the row before it; NaN equals NaN, as in a database's GROUP BY."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ordered = found.sort_by([(key, "ascending") for key in keys])
    repeated = None
    for key in keys:
        column = ordered.column(key).combine_chunks()
        after, before = column.slice(1), column.slice(0, len(column) - 1)
        same = pc.equal(after, before)
        if pa.types.is_floating(column.type):
            same = pc.or_(same, pc.and_(pc.is_nan(after), pc.is_nan(before)))
        repeated = same if repeated is None else pc.and_(repeated, same)
    return ordered, repeated


def _check_in_duckdb(found: pa.Table, keys: Sequence[str]) -> None:
    """`check_merge_keys` of key columns Arrow cannot sort (structs, lists), in DuckDB."""
    import duckdb

    with duckdb.connect() as connection:
        connection.register("arrowline_keys", found)
        check_merge_keys(lambda sql: connection.execute(sql).fetchall(), "arrowline_keys", keys)


def _refuse_nulls(keys: Sequence[str], nulls: Sequence[int]) -> None:
    with_nulls = {k: n for k, n in zip(keys, nulls, strict=True) if n}
    if with_nulls:
        counts = ", ".join(f"{k}: {n}" for k, n in with_nulls.items())
        raise DataError(
            f"merge keys must not be NULL, but some are ({counts} rows); a row without a key "
            "cannot be matched",
            hint="filter or fill those rows upstream, or choose keys that are always set",
        )


def _refuse_duplicates(
    keys: Sequence[str], duplicates: Sequence[Sequence[Any]], total: int
) -> None:
    """`duplicates`: up to five repeated keys, each its values and then its rows."""
    examples = "; ".join(
        ", ".join(f"{k}={v!r}" for k, v in zip(keys, row[:-1], strict=True)) + f" ({row[-1]} rows)"
        for row in duplicates
    )
    raise DataError(
        f"{total} merge keys appear more than once in the input, e.g. {examples}",
        hint="deduplicate upstream (qualify row_number() over (partition by the keys order "
        "by updated_at desc) = 1) so each key has one row",
    )

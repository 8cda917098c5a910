"""Keys of keyed loads, checked the same way by every database sink.

A config's mode and keys must fit (`merge` needs keys; some flags apply to one mode only), and
the rows of a merge must have keys that are set and unique: a row without a key cannot be
matched, and two rows with one key would update the same target row twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from engine.core.errors import DataError
from engine.core.sqltext import quote_identifier

__all__ = ["check_key_columns", "check_load_keys", "check_merge_keys"]


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
    with_nulls = {k: n for k, n in zip(keys, nulls, strict=True) if n}
    if with_nulls:
        counts = ", ".join(f"{k}: {n}" for k, n in with_nulls.items())
        raise DataError(
            f"merge keys must not be NULL, but some are ({counts} rows); a row without a key "
            "cannot be matched",
            hint="filter or fill those rows upstream, or choose keys that are always set",
        )
    grouped = f"from {relation} group by {', '.join(quoted)} having count(*) > 1"
    duplicates = rows(
        f"select {', '.join(quoted)}, count(*) {grouped} order by count(*) desc limit 5"
    )
    if duplicates:
        (total,) = rows(f"select count(*) from (select 1 {grouped}) d")[0]
        examples = "; ".join(
            ", ".join(f"{k}={v!r}" for k, v in zip(keys, row[:-1], strict=True))
            + f" ({row[-1]} rows)"
            for row in duplicates
        )
        raise DataError(
            f"{total} merge keys appear more than once in the input, e.g. {examples}",
            hint="deduplicate upstream (qualify row_number() over (partition by the keys order "
            "by updated_at desc) = 1) so each key has one row",
        )

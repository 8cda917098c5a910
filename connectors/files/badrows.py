"""Malformed rows in CSV and NDJSON files: set them aside with their place and reason, or stop.

`on_bad_row: fail` (the default) stops the extract at the first bad row with the file and the
line (or data row) and what is wrong with it. `on_bad_row: quarantine` keeps going: each bad row
goes to the extract's quarantine (`arrowline quarantine show TASK`) with the file, its line or
row number, the reason and the raw text, and the good rows go on. Past `max_bad_rows` the
extract fails anyway: a file that is mostly garbage is a wrong file, not a few bad rows.

What counts as a bad row:

- CSV: a row with the wrong number of fields (Arrow's parser reports its line), and a value that
  does not convert to its column's type. In quarantine mode typed columns are read as text and
  converted here, batch by batch, so one bad value costs one row and not the whole block.
- NDJSON: a line that is not a JSON object, or whose values do not fit the schema. The fast
  reader runs until it meets a broken block; the rest of that file is then read line by line.

Rows are numbered as people count them: `line` is the 1-based line in the file (CSV field
counts, NDJSON), `row` the 1-based data row (CSV conversion errors, whose line Arrow does not
know when quoted fields span lines).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pyarrow as pa

from connectors.rejects import Reject, Rejects
from engine.core.types import empty_table

__all__ = [
    "convert_checked",
    "first_bad_utf8",
    "json_problem",
    "ndjson_line_by_line",
]


def convert_checked(
    batch: pa.RecordBatch,
    schema: pa.Schema,
    shown: str,
    first_row: int,
    rejects: Rejects,
) -> pa.RecordBatch:
    """Cast a batch read as text to `schema`; rows whose values do not convert are rejected
    (numbered from `first_row`, 1-based) and dropped."""
    import polars as pl

    frame = pl.from_arrow(batch)
    assert isinstance(frame, pl.DataFrame)
    target = pl.from_arrow(empty_table(schema))
    assert isinstance(target, pl.DataFrame)
    bad = pl.repeat(False, frame.height, eager=True)
    converted = {}
    failures: list[tuple[str, pl.Series]] = []
    for name, dtype in target.schema.items():
        source = frame.get_column(name)
        if source.dtype == dtype:
            converted[name] = source
            continue
        cast = source.cast(dtype, strict=False)
        failed = source.is_not_null() & cast.is_null()
        if failed.any():
            failures.append((name, failed))
            bad = bad | failed
        converted[name] = cast
    if not failures:
        return pa.RecordBatch.from_arrays(
            [converted[f.name].to_arrow().cast(f.type) for f in schema], schema=schema
        )
    indices = bad.arg_true().to_list()
    for index in indices:
        reasons = [
            (name, str(frame.get_column(name)[index])) for name, failed in failures if failed[index]
        ]
        column, value = reasons[0]
        rejects.add(
            Reject(
                shown,
                first_row + index,
                "row",
                f"cannot convert {value!r} to {schema.field(column).type}"
                + (f" (and {len(reasons) - 1} more columns)" if len(reasons) > 1 else ""),
                column=column,
                value=value,
                text=",".join("" if v is None else str(v) for v in frame.row(index)),
            )
        )
    keep = frame.filter(~bad)
    return (
        pa.RecordBatch.from_arrays(
            [converted[f.name].filter(~bad).to_arrow().cast(f.type) for f in schema], schema=schema
        )
        if keep.height
        else pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)
    )


def ndjson_line_by_line(
    stream: io.BufferedIOBase,
    schema: pa.Schema,
    shown: str,
    skip_good: int,
    batch_rows: int,
    rejects: Rejects,
) -> Iterator[pa.RecordBatch]:
    """The slow path for a broken NDJSON file: check each line, reject the broken ones, and
    yield the good ones as batches. The first `skip_good` lines (not counting blank ones) were
    read by the fast path before it met the broken block; they are counted, not parsed."""
    import pyarrow.json as pa_json

    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
    pending: list[tuple[int, bytes]] = []

    def flush() -> Iterator[pa.RecordBatch]:
        if not pending:
            return
        try:
            table = pa_json.read_json(
                io.BytesIO(b"\n".join(line for _, line in pending)), parse_options=options
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # Some line does not fit the schema: find which, one line at a time.
            good = []
            for number, line in pending:
                try:
                    pa_json.read_json(io.BytesIO(line), parse_options=options)
                except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                    reason = str(exc).strip().splitlines()[0]
                    rejects.add(Reject(shown, number, "line", reason, text=_text(line)))
                else:
                    good.append(line)
            table = pa_json.read_json(io.BytesIO(b"\n".join(good)), parse_options=options)
        pending.clear()
        yield from table.to_batches()

    skipped = 0
    for number, raw in enumerate(stream, start=1):
        line = raw.strip()
        if not line:
            continue
        if skipped < skip_good:
            skipped += 1
            continue
        reason = json_problem(line)
        if reason is not None:
            rejects.add(Reject(shown, number, "line", reason, text=_text(line)))
            continue
        pending.append((number, line))
        if len(pending) >= batch_rows:
            yield from flush()
    yield from flush()


def _text(line: bytes) -> str:
    return line.decode("utf-8", "replace")


class _RepeatedKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _distinct_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """An object's keys must be distinct: Python keeps the last of two, Arrow refuses both."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _RepeatedKey(key)
        seen.add(key)
    return dict(pairs)


def json_problem(line: bytes) -> str | None:
    """What makes one NDJSON line unreadable (not JSON, not an object, a key named twice)."""
    try:
        value = json.loads(line, object_pairs_hook=_distinct_keys)
    except _RepeatedKey as exc:
        return f"the object names key {exc.key!r} twice"
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return f"not valid JSON: {getattr(exc, 'msg', exc)}"
    if not isinstance(value, dict):
        return f"not a JSON object but a {type(value).__name__}"
    return None


def first_bad_utf8(path_stream: io.BufferedIOBase) -> tuple[int, str] | None:
    """(line, excerpt) of the first byte sequence that is not UTF-8, or None."""
    for number, raw in enumerate(path_stream, start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return number, raw[max(0, exc.start - 20) : exc.end + 20].decode("utf-8", "replace")
    return None

"""The file formats a files source reads: which one a file is, and Arrow's readers for CSV and
NDJSON set up to stream in blocks sized by `batch_size` (bad rows handed to `rejects`)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json

from connectors.files.config import FilesSource
from connectors.rejects import Reject, Rejects
from engine.core.errors import DataError, DefinitionError
from engine.core.types import parse_type

__all__ = [
    "RowErrors",
    "block_size",
    "csv_reader",
    "explicit_types",
    "infer_format",
    "line_too_long",
    "ndjson_reader",
    "open_stream",
]

_COMPRESSIONS = (".gz", ".bz2", ".zst", ".lz4")

_FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def infer_format(path: Path) -> str:
    name = path.name.lower()
    for suffix in _COMPRESSIONS:
        name = name.removesuffix(suffix)
    extension = os.path.splitext(name)[1]
    if extension not in _FORMATS:
        raise DefinitionError(
            f"cannot tell the format of {path.name!r} from its extension; set `format:` "
            f"to one of csv, ndjson, parquet"
        )
    return _FORMATS[extension]


class RowErrors:
    """Sees each CSV row with the wrong number of fields: remembers the first, so the error can
    quote it, or with a quarantine hands it to `rejects` and skips it."""

    def __init__(self, rejects: Rejects | None = None, shown: str = "") -> None:
        self.first: str | None = None
        self.rejects = rejects if rejects is not None and rejects.policy == "quarantine" else None
        self.shown = shown
        self.failure: DataError | None = None
        """Raised by `rejects` (too many bad rows); Arrow cannot carry it out of the callback."""

    def __call__(self, row: pa_csv.InvalidRow) -> str:
        reason = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        if self.rejects is not None and self.failure is None:
            try:
                self.rejects.add(Reject(self.shown, row.number or 0, "line", reason, text=row.text))
            except DataError as exc:
                self.failure = exc
                return "error"
            return "skip"
        if self.first is None:
            where = f"line {row.number}: " if row.number is not None else ""
            self.first = f"{where}{reason}: {row.text[:200]!r}"
        return "error"


BYTES_PER_ROW = 128

MAX_BLOCK = 64 << 20


def block_size(config: FilesSource) -> int:
    # CSV and JSON are read in blocks of bytes; ~128 bytes per row turns rows into bytes.
    return max(1 << 20, min(MAX_BLOCK, config.batch_size * BYTES_PER_ROW))


def open_stream(path: Path) -> pa.NativeFile:
    return pa.input_stream(str(path), compression="detect")


def csv_reader(
    path: Path,
    config: FilesSource,
    types: dict[str, pa.DataType],
    errors: RowErrors | None,
    *,
    use_threads: bool = True,
) -> pa_csv.CSVStreamingReader:
    """Arrow's streaming CSV reader. With threads, Arrow parses blocks in parallel and cannot
    number the lines of malformed rows; the paths that must name lines read without.

    With a row handler (`errors`), the text must be UTF-8 first: pyarrow decodes a malformed
    row for the handler and fails noisily when it cannot, so those paths call `_require_utf8`.
    The fast path has no handler; on a malformed row it reads again to locate it."""
    options = config.csv
    read = pa_csv.ReadOptions(
        use_threads=use_threads,
        block_size=block_size(config),
        skip_rows=options.skip_rows,
        column_names=list(options.column_names) if options.column_names else None,
        autogenerate_column_names=not options.header and not options.column_names,
        encoding=options.encoding,
    )
    delimiter = (
        "\t"
        if path.name.lower().split(".")[-1] == "tsv" and options.delimiter == ","
        else options.delimiter
    )
    parse = pa_csv.ParseOptions(
        delimiter=delimiter,
        quote_char=options.quote_char if options.quote_char is not None else False,
        escape_char=options.escape_char if options.escape_char is not None else False,
        invalid_row_handler=errors,
    )
    convert = pa_csv.ConvertOptions(
        column_types=types,
        null_values=list(options.null_values),
        strings_can_be_null=True,
    )
    return pa_csv.open_csv(open_stream(path), read, parse, convert)


def ndjson_reader(
    path: Path, config: FilesSource, schema: pa.Schema | None
) -> pa.RecordBatchReader:
    read = pa_json.ReadOptions(block_size=block_size(config))
    parse = pa_json.ParseOptions(
        explicit_schema=schema,
        unexpected_field_behavior="error" if schema is not None else "infer",
    )
    return pa_json.open_json(open_stream(path), read_options=read, parse_options=parse)


def explicit_types(config: FilesSource) -> dict[str, pa.DataType]:
    types: dict[str, pa.DataType] = {}
    for name, text in (config.columns or {}).items():
        try:
            types[name] = parse_type(text)
        except ValueError as exc:
            raise DefinitionError(f"columns.{name}: {exc}") from None
    return types


def longest_line(path: Path) -> int:
    """Bytes in the longest line of a (possibly compressed) text file, read in chunks."""
    longest = current = 0
    with open_stream(path) as stream:
        while chunk := stream.read(1 << 20):
            pieces = chunk.split(b"\n")
            current += len(pieces[0])
            for piece in pieces[1:]:
                longest = max(longest, current)
                current = len(piece)
    return max(longest, current)


def line_too_long(path: Path, shown: str, config: FilesSource) -> DataError:
    """Arrow parses CSV and NDJSON in blocks and cannot parse a line longer than one; its advice
    ("increase block size") names an option arrowline does not have: the block follows
    `batch_size`, so say which `batch_size` reads the file."""
    longest = longest_line(path)
    block = block_size(config)
    if longest + 1 > MAX_BLOCK:
        return DataError(
            f"cannot read {shown}: a line of {longest:,} bytes is longer than the largest read "
            f"block ({MAX_BLOCK >> 20} MiB)",
            hint="write one record per line, each shorter than that",
        )
    rows = -(-(longest + 1) // BYTES_PER_ROW)
    wanted = 1 << (rows - 1).bit_length()  # the next power of two
    return DataError(
        f"cannot read {shown}: a line of {longest:,} bytes is longer than the read block of "
        f"{block:,} bytes (batch_size {config.batch_size:,} x {BYTES_PER_ROW} bytes)",
        hint=f"set `batch_size: {wanted}` (or more) on the extract; CSV and NDJSON are read in "
        f"blocks of batch_size x {BYTES_PER_ROW} bytes, at most {MAX_BLOCK >> 20} MiB",
    )

"""Stream CSV, NDJSON and Parquet files as one Arrow stream.

The schema is fixed before the first row is returned: explicit `columns:` types, the rest
inferred from the first file. Every later file is read with that schema, so a column that is an
integer in January and text in February fails with both file names instead of a type mismatch
deep inside a downstream task. Files are opened one at a time and read in blocks, so memory is
bounded by the batch size, not by the size of the files.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from connectors.base import ConnectorContext
from connectors.files.config import FilesSource
from connectors.types import parse_type
from engine.errors import DataError, DefinitionError

__all__ = ["expand_paths", "infer_format", "open_files"]

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


def expand_paths(config: FilesSource, base_dir: Path) -> list[Path]:
    """Every file the config names, sorted within each pattern, each once."""
    patterns = (config.path,) if isinstance(config.path, str) else config.path
    found: dict[Path, None] = {}
    for pattern in patterns:
        full = Path(pattern).expanduser()
        full = full if full.is_absolute() else base_dir / full
        matches = sorted(glob.glob(str(full), recursive=True))
        files = [Path(m) for m in matches if os.path.isfile(m)]
        if not files:
            raise DataError(
                f"no file matches {pattern!r} (looked for {full})",
                hint="paths are relative to the pipeline file; check the name and that the "
                "files exist before the run",
            )
        for file in files:
            found.setdefault(file, None)
    return list(found)


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


def _explicit_types(config: FilesSource) -> dict[str, pa.DataType]:
    types: dict[str, pa.DataType] = {}
    for name, text in (config.columns or {}).items():
        try:
            types[name] = parse_type(text)
        except ValueError as exc:
            raise DefinitionError(f"columns.{name}: {exc}") from None
    return types


class _RowErrors:
    """Remembers the first malformed CSV row, so the error can quote it."""

    def __init__(self) -> None:
        self.first: str | None = None

    def __call__(self, row: pa_csv.InvalidRow) -> str:
        if self.first is None:
            where = f"line {row.number}: " if row.number is not None else ""
            self.first = (
                f"{where}expected {row.expected_columns} columns, found {row.actual_columns}: "
                f"{row.text[:200]!r}"
            )
        return "error"


def _block_size(config: FilesSource) -> int:
    # CSV and JSON are read in blocks of bytes; ~128 bytes per row turns rows into bytes.
    return max(1 << 20, min(64 << 20, config.batch_size * 128))


def _open_stream(path: Path) -> pa.NativeFile:
    return pa.input_stream(str(path), compression="detect")


def _csv_reader(
    path: Path, config: FilesSource, types: dict[str, pa.DataType], errors: _RowErrors
) -> pa_csv.CSVStreamingReader:
    options = config.csv
    read = pa_csv.ReadOptions(
        block_size=_block_size(config),
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
    return pa_csv.open_csv(_open_stream(path), read, parse, convert)


def _ndjson_reader(
    path: Path, config: FilesSource, schema: pa.Schema | None
) -> pa.RecordBatchReader:
    read = pa_json.ReadOptions(block_size=_block_size(config))
    parse = pa_json.ParseOptions(
        explicit_schema=schema,
        unexpected_field_behavior="error" if schema is not None else "infer",
    )
    return pa_json.open_json(_open_stream(path), read_options=read, parse_options=parse)


def _describe(path: Path, base_dir: Path) -> str:
    try:
        return str(path.relative_to(base_dir))
    except ValueError:
        return str(path)


def _file_error(
    path: Path, base_dir: Path, exc: Exception, row_errors: _RowErrors | None
) -> DataError:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if row_errors is not None and row_errors.first is not None:
        message = f"malformed row, {row_errors.first}"
    return DataError(f"cannot read {_describe(path, base_dir)}: {message}")


def _first_schema(
    path: Path, fmt: str, config: FilesSource, types: dict[str, pa.DataType], base_dir: Path
) -> pa.Schema:
    errors = _RowErrors()
    try:
        if fmt == "csv":
            return _csv_reader(path, config, types, errors).schema
        if fmt == "ndjson":
            schema = _ndjson_reader(path, config, None).schema
        else:
            schema = pq.read_schema(path)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError) as exc:
        raise _file_error(path, base_dir, exc, errors) from None
    for name, data_type in types.items():  # explicit types win over inference
        index = schema.get_field_index(name)
        if index >= 0:
            schema = schema.set(index, pa.field(name, data_type))
    return schema


def _conform(batch: pa.RecordBatch, schema: pa.Schema, shown: str) -> pa.RecordBatch:
    """Reorder and cast a later file's batch to the first file's schema."""
    try:
        return pa.RecordBatch.from_arrays(
            [batch.column(f.name).cast(f.type) for f in schema], schema=schema
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(
            f"{shown}: columns do not match the types of the first file ({exc}); "
            "set their types under `columns:`"
        ) from None


def _file_batches(
    path: Path, fmt: str, config: FilesSource, schema: pa.Schema, base_dir: Path
) -> Iterator[pa.RecordBatch]:
    errors = _RowErrors()
    shown = _describe(path, base_dir)
    try:
        if fmt == "csv":
            reader: pa.RecordBatchReader = _csv_reader(
                path, config, {f.name: f.type for f in schema}, errors
            )
        elif fmt == "ndjson":
            reader = _ndjson_reader(path, config, schema)
        else:
            parquet = pq.ParquetFile(path)
            reader = pa.RecordBatchReader.from_batches(
                parquet.schema_arrow, parquet.iter_batches(batch_size=config.batch_size)
            )
        if set(reader.schema.names) != set(schema.names):
            raise DataError(
                f"{shown} has columns {reader.schema.names}, but the first file has "
                f"{schema.names}; files of one extract must share their columns"
            )
        for batch in reader:
            yield batch if batch.schema == schema else _conform(batch, schema, shown)
    except DataError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError) as exc:
        raise _file_error(path, base_dir, exc, errors) from None


def open_files(config: FilesSource, ctx: ConnectorContext) -> list[pa.RecordBatchReader]:
    """One Arrow stream over every file the config names."""
    base_dir, cancel = ctx.base_dir, ctx.cancel
    paths = expand_paths(config, base_dir)
    formats = {path: config.format or infer_format(path) for path in paths}
    if len(set(formats.values())) > 1:
        kinds = ", ".join(sorted(set(formats.values())))
        raise DefinitionError(f"the files mix formats ({kinds}); one extract reads one format")
    types = _explicit_types(config)
    first = paths[0]
    schema = _first_schema(first, formats[first], config, types, base_dir)
    out_schema = schema
    if config.file_column:
        if config.file_column in schema.names:
            raise DefinitionError(
                f"file_column {config.file_column!r} is already a column of the data"
            )
        out_schema = schema.append(pa.field(config.file_column, pa.string()))

    def batches() -> Iterator[pa.RecordBatch]:
        for path in paths:
            name = _describe(path, base_dir)
            for batch in _file_batches(path, formats[path], config, schema, base_dir):
                if cancel is not None:
                    cancel.raise_if_cancelled()
                if not config.file_column:
                    yield batch
                    continue
                column = pa.repeat(pa.scalar(name, pa.string()), batch.num_rows)
                yield pa.RecordBatch.from_arrays([*batch.columns, column], schema=out_schema)

    return [pa.RecordBatchReader.from_batches(out_schema, batches())]

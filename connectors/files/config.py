"""Configuration of file sources (`extract: {from: files}`) and Parquet sinks
(`load: {to: parquet}`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from engine.core.config import PATH, ConfigModel
from engine.core.sqltext import name_clash

__all__ = ["CsvOptions", "FilesSource", "ParquetSink"]


class CsvOptions(ConfigModel):
    """How CSV text is split into rows and columns."""

    delimiter: str = Field(",", min_length=1, max_length=1, description="Field separator.")
    header: bool = Field(True, description="The first row holds column names.")
    column_names: tuple[str, ...] | None = Field(
        None, description="Column names when the file has no header row."
    )
    quote_char: str | None = Field('"', max_length=1, description="null disables quoting.")
    escape_char: str | None = Field(
        None, max_length=1, description="Character escaping the next one; null for none."
    )
    null_values: tuple[str, ...] = Field(
        ("", "NULL", "null", "NA", "N/A"), description="Text read as NULL."
    )
    skip_rows: int = Field(0, ge=0, description="Rows skipped before the header.")
    encoding: str = Field("utf-8", description="Text encoding of the files.")

    @model_validator(mode="after")
    def _distinct_column_names(self) -> CsvOptions:
        clash = name_clash(self.column_names or ())
        if clash is not None:
            raise ValueError(f"column_names names {clash.describe()}")
        return self


class FilesSource(ConfigModel):
    """Stream CSV, NDJSON or Parquet files (one path, a glob, or a list of either)."""

    from_: Literal["files"] = Field(alias="from", description="Selects this source.")
    path: str | Annotated[tuple[str, ...], Field(min_length=1)] = Field(
        description="File path or glob (`**` recurses), relative to the pipeline file; or a list.",
        json_schema_extra=PATH,
    )
    format: Literal["csv", "ndjson", "parquet"] | None = Field(
        None,
        description="Inferred from the extension (.csv .tsv .ndjson .jsonl .json .parquet, "
        "optionally compressed: .gz .bz2 .zst) when omitted.",
    )
    columns: dict[str, str] | None = Field(
        None,
        description="Column types by name (int64, float64, string, bool, date, "
        "timestamp[us], decimal(12,2), ...). Unlisted columns are inferred from the first file.",
    )
    csv: CsvOptions = Field(default_factory=CsvOptions, description="CSV parsing options.")
    batch_size: int = Field(
        65_536,
        ge=1,
        description="Rows per record batch (approximate for CSV and NDJSON, which are read in "
        "blocks of bytes); bounds memory on the streaming path.",
    )
    file_column: str | None = Field(
        None, description="Add a column with each row's source file path."
    )
    on_bad_row: Literal["fail", "quarantine"] = Field(
        "fail",
        description="A CSV row with the wrong number of fields or a value that does not convert, "
        "or an NDJSON line that does not parse: stop with its file and line (`fail`), or set it "
        "aside in the task's quarantine with its file, line and reason (`quarantine`).",
    )
    max_bad_rows: int = Field(
        1000, ge=0, description="With `quarantine`: fail anyway past this many bad rows."
    )


class ParquetSink(ConfigModel):
    """Write Parquet: one file (path ends in .parquet) or a directory, optionally partitioned."""

    input: str = Field(description="Id of the task whose output is loaded.")
    to: Literal["parquet"] = Field(description="Selects this sink.")
    path: str = Field(
        description="Target file or directory, relative to the pipeline file.",
        json_schema_extra=PATH,
    )
    mode: Literal["replace", "append"] = Field(
        "replace",
        description="replace: the target is swapped atomically; append: this run's files are "
        "added, named by run id so a re-run overwrites instead of duplicating.",
    )
    partition_by: tuple[str, ...] = Field((), description="Hive-style partition columns.")
    compression: Literal["zstd", "snappy", "lz4", "gzip", "none"] = Field(
        "zstd", description="Parquet compression codec."
    )
    max_rows_per_file: int = Field(10_000_000, ge=1, description="Split larger outputs into files.")

    @model_validator(mode="after")
    def _file_or_directory(self) -> ParquetSink:
        if self.path.endswith(".parquet") and (self.partition_by or self.mode == "append"):
            raise ValueError(
                "a single .parquet file can only be replaced; use a directory path for "
                "partition_by or mode: append"
            )
        return self

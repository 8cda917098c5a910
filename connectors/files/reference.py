"""The files connector's sections of `docs/pipeline-reference.md`."""

from __future__ import annotations

from connectors.base import Section
from connectors.files.config import CsvOptions, FilesSource, ParquetSink

__all__ = ["SECTIONS"]

SECTIONS = (
    Section(
        "extract: from: files",
        FilesSource,
        "Streams files as Arrow record batches. The schema "
        "comes from `columns:` and the first file; every other file must match it.",
        """\
extract:
  from: files
  path: data/orders/*.csv           # or a list: [a.csv, b.csv]
  columns: {order_id: int64, amount: decimal(12,2)}
  csv: {delimiter: ";", null_values: ["", "n/a"]}
  file_column: source_file""",
    ),
    Section(
        "extract: csv",
        CsvOptions,
        "How CSV text is parsed.",
        """\
csv: {delimiter: "\\t", header: false, column_names: [id, name], skip_rows: 2,
      encoding: latin-1}""",
    ),
    Section(
        "load: to: parquet",
        ParquetSink,
        "Publishes atomically: a file by rename, a directory by "
        "an atomic swap (Linux `renameat2`). `append` names files `part-<run_id>-<n>.parquet`, so "
        "loading a run again replaces that run's files instead of duplicating rows.",
        """\
load: {input: checked, to: parquet, path: out/orders, partition_by: [country], mode: replace}""",
    ),
)

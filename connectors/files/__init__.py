"""Files: CSV, NDJSON and Parquet sources (paths, globs, lists); Parquet sinks."""

from connectors.files.capabilities import CAPABILITIES
from connectors.files.config import CsvOptions, FilesSource, ParquetSink
from connectors.files.sink import write_parquet
from connectors.files.source import observe_files, open_files

__all__ = [
    "CAPABILITIES",
    "CsvOptions",
    "FilesSource",
    "ParquetSink",
    "observe_files",
    "open_files",
    "write_parquet",
]

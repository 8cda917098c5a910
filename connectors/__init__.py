"""Sources and sinks. Every source returns a `pyarrow.RecordBatchReader`; every sink accepts a
task input (Parquet files in the workspace, readable as an Arrow stream)."""

from loguru import logger

__all__: list[str] = []

# A library does not log until its user says so (loguru's convention); the CLI enables it.
logger.disable("connectors")

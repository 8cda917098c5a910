"""Transformations: DuckDB SQL, Polars UDFs and Pandera validation."""

from loguru import logger

__all__: list[str] = []

# A library does not log until its user says so (loguru's convention); the CLI enables it.
logger.disable("transforms")

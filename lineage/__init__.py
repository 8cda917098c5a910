"""Lineage from SQL and UDFs. Today: which tables a SQL statement reads."""

from loguru import logger

from lineage.tables import SqlSyntaxError, TableRef, parse_select, referenced_tables

__all__ = ["SqlSyntaxError", "TableRef", "parse_select", "referenced_tables"]

# A library does not log until its user says so (loguru's convention); the CLI enables it.
logger.disable("lineage")

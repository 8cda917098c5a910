"""Workloads: each module lists its contenders, prepares data, runs one contender as a child
process (`python -m benchmarks.workloads.<name> CONTENDER ...`) and summarizes the outcomes.

Modules are imported on demand, so a contender process loads only its own workload (the
plain-Python floor of `orchestration` must not carry pyarrow in its memory figure).
"""

from __future__ import annotations

import importlib
from types import ModuleType

NAMES = (
    "orchestration",
    "stream_memory",
    "pg_extract",
    "pg_parquet",
    "handoff",
    "pg_load",
    "pg_merge",
    "sql_dag",
    "sql_project",
    "udf",
    "validate",
    "e2e",
    "quickstart",
    "rest_extract",
    "scheduler",
    "lakehouse",
    "pg_cdc",
    "ui",
    "objectstore",
    "ray",
)


def workload(name: str) -> ModuleType:
    return importlib.import_module(f"benchmarks.workloads.{name}")

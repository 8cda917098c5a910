"""Merging into PostgreSQL: 1,000,000 changed rows (900k updates, 100k inserts) into a
10,000,000-row table keyed by id, arrowline against a hand-written COPY + ON CONFLICT and dlt's
merge. The contenders run through `benchmarks.workloads.pg_load`, which holds the data and the
loaders of both load workloads.
"""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks.harness import Contender, Outcome
from benchmarks.workloads import pg_load

prepare = pg_load.prepare


def contenders(args: argparse.Namespace) -> list[Contender]:
    return pg_load.contenders_of(pg_load.MERGE_NAMES, args)


def summarize(outcomes: list[Outcome], params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    return pg_load.summarize(outcomes, params)

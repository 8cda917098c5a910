"""The README's first command, on a small copy of the quickstart: the real CLI, real files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

import engine

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart"


@pytest.mark.slow
def test_quickstart_runs_end_to_end(tmp_path: Path) -> None:
    example = tmp_path / "quickstart"
    shutil.copytree(QUICKSTART, example, ignore=shutil.ignore_patterns("data", "out", ".arrowline"))
    subprocess.run(
        [sys.executable, str(example / "generate.py"), "--rows", "40000", "--customers", "500"],
        check=True,
        capture_output=True,
    )
    done = subprocess.run(
        [sys.executable, "-m", "engine", "run", str(example / "pipeline.yaml"), "--no-progress"],
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "SUCCESS" in done.stdout

    bad_rows = 3  # generate.py plants max(3, rows // 20000) invalid orders
    with engine.open(tmp_path) as project:
        assert project.table("orders").select(pl.len()).collect().item() == 40_000
        assert project.table("checked").select(pl.len()).collect().item() == 40_000 - bad_rows
        quarantined = project.quarantine("checked").collect()
        assert quarantined.height == bad_rows
        checks = {e["check"] for errors in quarantined["_arrowline_errors"] for e in errors}
        assert checks == {
            "greater_than(0)",
            "not_nullable",
            "isin(['placed', 'shipped', 'delivered', 'returned'])",
        }
        expected = project.sql(
            "select count(*) from checked where status <> 'returned'"
        ).fetchall()[0][0]

    published = pl.read_parquet(
        example / "out" / "orders" / "**" / "*.parquet", hive_partitioning=True
    )
    assert published.height == 40_000 - bad_rows
    assert {p.name.split("=")[0] for p in (example / "out" / "orders").iterdir()} == {"country"}
    connection = duckdb.connect(str(example / "out" / "warehouse.duckdb"), read_only=True)
    try:
        total = connection.execute("select sum(orders) from analytics.daily_revenue").fetchone()
    finally:
        connection.close()
    assert total == (expected,)


def test_the_rest_example_starts_its_api_and_loads_what_it_serves(tmp_path: Path) -> None:
    example = tmp_path / "rest"
    source = QUICKSTART.parent / "rest"
    shutil.copytree(source, example, ignore=shutil.ignore_patterns("out", ".arrowline"))
    done = subprocess.run(
        [sys.executable, str(example / "run.py")],
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "2000 orders read" in done.stdout
    connection = duckdb.connect(str(example / "out" / "shop.duckdb"), read_only=True)
    try:
        days, orders = connection.execute("select count(*), sum(orders) from daily").fetchone() or (
            0,
            0,
        )
    finally:
        connection.close()
    assert orders == 2000
    assert days == 584  # 2,000 orders 7 hours apart

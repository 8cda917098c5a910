"""The cache over a database and on both catalogs: a PostgreSQL extract is reused while its key
query returns the same rows, the rows are hashed and never stored, and an unchanged re-run of
the quickstart writes nothing to the workspace."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import engine
from engine.api.pipeline import plan, run
from tests.conftest import PgSchema, WritePipeline

QUICKSTART = Path(__file__).resolve().parents[3] / "examples" / "quickstart"


def keyed(pg: PgSchema) -> str:
    return f"""
        pipeline: {pg.schema}
        connections:
          wh: {{kind: postgres, uri: "${{env:TEST_PG_URI}}"}}
        tasks:
          - id: src
            extract: {{from: postgres, connection: wh, table: {pg.table("source")}}}
            cache: {{key: "select max(updated_at), count(*) from {pg.table("source")}"}}
          - id: total
            sql: select sum(v) as total from src
            cache: true
    """


@pytest.mark.usefixtures("each_catalog")
def test_a_postgres_extract_is_reused_while_its_key_query_returns_the_same_rows(
    pg: PgSchema, write: WritePipeline, project: Path
) -> None:
    source = pg.table("source")
    pg.execute(
        f"create table {source} (id int, v int, updated_at timestamptz)",
        f"insert into {source} values (1, 10, '2024-01-01'), (2, 20, '2024-01-02')",
    )
    path = write("p.yaml", keyed(pg))
    first = run(path)
    assert first.ok
    assert plan(path).task("src").action == "reuse"
    assert run(path).tasks["src"].reused_from == first.run_id

    pg.execute(f"insert into {source} values (3, 30, '2024-01-03')")
    assert plan(path).task("src").cache.reason == "input changed"  # type: ignore[union-attr]
    third = run(path)
    assert third.tasks["src"].reused_from is None
    with engine.open(project) as opened:
        assert opened.table("total").collect().item() == 60
        row = opened.catalog.task_run(third.run_id, "src")
    assert row is not None
    assert row.cache_key is not None
    stored = repr(row) + repr(row.fingerprint_parts)
    assert "2024-01-03" not in stored  # the key's rows are hashed, never kept


def test_a_postgres_extract_without_a_key_runs_every_time(
    pg: PgSchema, write: WritePipeline
) -> None:
    source = pg.table("source")
    pg.execute(f"create table {source} (v int)", f"insert into {source} values (1)")
    text = keyed(pg).replace(
        f'cache: {{key: "select max(updated_at), count(*) from {source}"}}', "cache: true"
    )
    path = write("p.yaml", text)
    assert run(path).ok
    decision = plan(path).task("src").cache
    assert decision is not None
    assert (decision.reason, decision.allowed) == ("forced", False)


@pytest.mark.slow
def test_an_unchanged_rerun_of_the_quickstart_writes_nothing_to_the_workspace(
    tmp_path: Path,
) -> None:
    example = tmp_path / "quickstart"
    shutil.copytree(QUICKSTART, example, ignore=shutil.ignore_patterns("data", "out", ".arrowline"))
    subprocess.run(
        [sys.executable, str(example / "generate.py"), "--rows", "20000", "--customers", "200"],
        check=True,
        capture_output=True,
    )
    command = [sys.executable, "-m", "engine", "run", str(example / "pipeline.yaml")]
    first = subprocess.run(
        [*command, "--no-progress"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert first.returncode == 0, first.stderr
    workspace = tmp_path / ".arrowline" / "workspace"
    out = example / "out"

    def files(root: Path) -> dict[str, tuple[int, int]]:
        return {
            str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    before, targets = files(workspace), files(out)
    again = subprocess.run(
        [*command, "--no-progress"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert again.returncode == 0, again.stderr
    assert files(workspace) == before
    assert files(out) == targets  # both loads opted in, and were skipped
    with engine.open(tmp_path) as project:
        last = project.catalog.runs("quickstart")[0]
        reused = project.catalog.reused(last.run_id)
    assert len(reused) == 9


@pytest.mark.usefixtures("each_catalog")
def test_an_incremental_extract_is_read_again_when_its_committed_watermark_moved(
    pg: PgSchema, write: WritePipeline
) -> None:
    source = pg.table("source")
    pg.execute(
        f"create table {source} (id int, v int, updated_at timestamptz)",
        f"insert into {source} values (1, 10, '2024-01-01'), (2, 20, '2024-01-02')",
    )
    path = write(
        "p.yaml",
        f"""
        pipeline: {pg.schema}
        connections:
          wh: {{kind: postgres, uri: "${{env:TEST_PG_URI}}"}}
        tasks:
          - id: src
            extract:
              from: postgres
              connection: wh
              table: {source}
              incremental: {{cursor: updated_at, key: [id]}}
            cache: {{key: "select count(*) from {source}"}}
          - id: out
            load: {{input: src, to: duckdb, path: out/w.duckdb, table: t, mode: merge, keys: [id]}}
        """,
    )
    assert run(path).tasks["src"].rows_out == 2
    # the load committed a watermark the first read started without: the same key, a new input
    assert plan(path).task("src").cache.reason == "input changed"  # type: ignore[union-attr]
    second = run(path)
    assert (second.tasks["src"].reused_from, second.tasks["src"].rows_out) == (None, 0)
    assert plan(path).task("src").action == "reuse"  # nothing moved since

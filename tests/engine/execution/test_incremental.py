"""Incremental extraction end to end: PostgreSQL -> PostgreSQL and DuckDB, watermarks committed
with the data, repaired after a crash, changed by hand with an audit trail."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from click.testing import Result

from engine.api.pipeline import run
from engine.core.watermark import Watermark
from engine.state.catalog import CatalogReader
from engine.state.db import catalog_location
from tests.conftest import PgSchema, WritePipeline

# every test here runs on the embedded catalog and again on a shared PostgreSQL one
pytestmark = pytest.mark.usefixtures("each_catalog")

Cli = Callable[..., Result]
T0 = "2024-01-01 10:00:00+00"


def pipeline(pg: PgSchema, duckdb_sink: bool = True, lookback: str | None = None) -> str:
    extra = f", lookback: {lookback}" if lookback else ""
    text = f"""
        pipeline: {pg.schema}
        connections:
          wh: {{kind: postgres, uri: "${{env:TEST_PG_URI}}"}}
        tasks:
          - id: changes
            extract:
              from: postgres
              connection: wh
              table: {pg.table("source")}
              incremental: {{cursor: updated_at, key: [id]{extra}}}
          - id: to_pg
            load: {{input: changes, to: postgres, connection: wh, table: {pg.table("target")}, mode: merge, keys: [id]}}
    """
    if duckdb_sink:
        text += """
          - id: to_duckdb
            load: {input: changes, to: duckdb, path: out/w.duckdb, table: target, mode: merge, keys: [id]}
        """
    return text


def seed(pg: PgSchema) -> None:
    pg.execute(
        f"create table {pg.table('source')} (id int primary key, v text, updated_at timestamptz)",
        f"insert into {pg.table('source')} select g, 'v' || g, timestamptz '{T0}' + g * interval '1 minute' "
        "from generate_series(1, 5) g",
    )


def pg_state(pg: PgSchema) -> Watermark | None:
    rows = pg.rows(
        f"select value from arrowline_state.watermarks where pipeline = '{pg.schema}' and sink = 'to_pg'"
    )
    return Watermark.from_json(rows[0][0]) if rows else None


def extracted(result) -> int:  # type: ignore[no-untyped-def]
    return result.tasks["changes"].rows_out  # type: ignore[no-any-return]


def test_incremental_runs_read_only_what_is_new(
    write: WritePipeline, pg: PgSchema, project: Path, cli: Cli
) -> None:
    seed(pg)
    path = write("p.yaml", pipeline(pg))
    first = run(path)
    assert first.ok, {k: t.error for k, t in first.tasks.items()}
    assert extracted(first) == 5
    mark = pg_state(pg)
    assert mark is not None
    assert mark.key == (5,)
    assert mark.cursor.isoformat() == "2024-01-01T10:05:00+00:00"

    src = pg.table("source")
    pg.execute(
        f"update {src} set v = 'changed', updated_at = timestamptz '{T0}' + interval '10 minutes' where id = 2",
        f"insert into {src} values (6, 'v6', timestamptz '{T0}' + interval '10 minutes')",
        # the same cursor value as the watermark, a larger key: must not be lost
        f"insert into {src} values (7, 'v7', timestamptz '{T0}' + interval '5 minutes')",
    )
    second = run(path)
    assert second.ok
    assert extracted(second) == 3
    assert pg.rows(f"select id, v from {pg.table('target')} order by id") == [
        (1, "v1"),
        (2, "changed"),
        (3, "v3"),
        (4, "v4"),
        (5, "v5"),
        (6, "v6"),
        (7, "v7"),
    ]
    connection = duckdb.connect(str(project / "out" / "w.duckdb"), read_only=True)
    assert connection.execute("select count(*), max(v) from target").fetchone() == (7, "v7")
    connection.close()
    assert pg_state(pg) == Watermark(mark.cursor.replace(minute=10), (6,))

    assert extracted(run(path)) == 0  # nothing new: nothing read, watermark unchanged
    assert pg_state(pg) == Watermark(mark.cursor.replace(minute=10), (6,))
    assert extracted(run(path, full_refresh=True)) == 7

    with CatalogReader(catalog_location(project)) as catalog:
        mirror = {
            row.sink_id: Watermark.from_json(row.value) for row in catalog.watermarks(pg.schema)
        }
        assert mirror == {"to_pg": pg_state(pg), "to_duckdb": pg_state(pg)}
        actions = [a.action for a in catalog.watermark_audit(pg.schema)]
        assert actions.count("advance") == 4  # two sinks, two runs that moved them


def test_state_cli_shows_sets_and_resets_with_an_audit(
    write: WritePipeline, pg: PgSchema, project: Path, cli: Cli
) -> None:
    seed(pg)
    path = write("p.yaml", pipeline(pg))
    run(path)
    shown = cli("state", "show", path, "--audit")
    assert shown.exit_code == 0, shown.stderr
    assert "to_pg" in shown.stdout
    assert "to_duckdb" in shown.stdout
    assert "2024-01-01 10:05:00+00:00" in shown.stdout
    assert "advance" in shown.stdout

    changed = cli(
        "state", "set", path, "changes", "--cursor", "2024-01-01T10:03:00+00:00", "--key", "3"
    )
    assert changed.exit_code == 0, changed.stderr
    assert pg_state(pg) == Watermark(datetime(2024, 1, 1, 10, 3, tzinfo=UTC), (3,))
    assert extracted(run(path)) == 2  # rows 4 and 5 again

    reset = cli("state", "reset", path)
    assert reset.exit_code == 0
    assert pg_state(pg) is None
    assert extracted(run(path)) == 5
    with CatalogReader(catalog_location(project)) as catalog:
        actions = [a.action for a in catalog.watermark_audit(pg.schema)]
    assert "set" in actions
    assert "reset" in actions
    bad = cli("state", "set", path, "to_pg", "--cursor", "1")
    assert bad.exit_code == 2
    assert "not an incremental extract" in bad.stderr


def test_a_failed_load_keeps_its_watermark_and_the_extract_starts_from_the_least(
    write: WritePipeline, pg: PgSchema, project: Path
) -> None:
    seed(pg)
    path = write("p.yaml", pipeline(pg))
    assert run(path).ok
    # Break the PostgreSQL target: the next load of it fails, the DuckDB one succeeds.
    pg.execute(f"alter table {pg.table('target')} alter column v type int using 0")
    pg.execute(
        f"insert into {pg.table('source')} values (8, 'v8', timestamptz '{T0}' + interval '20 minutes')"
    )
    broken = run(path)
    assert broken.tasks["to_pg"].state.value == "FAILED"
    assert broken.tasks["to_duckdb"].state.value == "SUCCESS"
    assert pg_state(pg) is not None
    assert pg_state(pg).key == (5,)
    pg.execute(f"alter table {pg.table('target')} alter column v type text")
    fixed = run(path)
    assert fixed.ok
    assert extracted(fixed) == 1  # re-read from the PostgreSQL sink's watermark, the least one
    assert pg.rows(f"select v from {pg.table('target')} where id = 8") == [("v8",)]


@pytest.mark.slow
def test_kill_between_load_and_commit_leaves_data_and_watermark_consistent(
    write: WritePipeline, pg: PgSchema, project: Path
) -> None:
    seed(pg)
    path = write("p.yaml", pipeline(pg, duckdb_sink=False))
    assert run(path).ok
    before_rows = pg.rows(f"select id, v from {pg.table('target')} order by id")
    before_state = pg_state(pg)
    pg.execute(
        f"insert into {pg.table('source')} select g, 'new' || g, timestamptz '{T0}' + interval '1 hour' + g * interval '1 second' "
        "from generate_series(100, 2000) g"
    )
    env = {**os.environ, "ARROWLINE_FAULT": "postgres.before_commit"}
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "run", str(path), "--no-progress"],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "ARROWLINE_FAULT reached postgres.before_commit" in line:
            break
    else:
        pytest.fail("the run never reached the commit")
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    process.stderr.close()

    # Rows were copied but not committed: neither they nor the watermark are visible.
    assert pg.rows(f"select id, v from {pg.table('target')} order by id") == before_rows
    assert pg_state(pg) == before_state

    again = run(path)
    assert again.ok
    assert extracted(again) == 1901
    assert pg.rows(f"select count(*) from {pg.table('target')}") == [(5 + 1901,)]
    assert pg_state(pg) is not None
    assert pg_state(pg).key == (2000,)


def test_runs_shows_schema_changes_and_watermarks(
    write: WritePipeline, pg: PgSchema, project: Path, cli: Cli
) -> None:
    seed(pg)
    path = write("p.yaml", pipeline(pg, duckdb_sink=False))
    assert run(path).ok
    src = pg.table("source")
    pg.execute(
        f"alter table {src} add column extra int",
        f"insert into {src} values (9, 'v9', timestamptz '{T0}' + interval '1 hour', 42)",
    )
    assert run(path).ok  # fail_on_breaking adds the new column to the target
    shown = cli("runs", "last")
    assert shown.exit_code == 0
    assert "to_pg: schema change: column 'extra' added (integer)" in shown.stdout
    assert (
        "changes: read rows after 2024-01-01 10:05:00+00:00, key (5,); new watermark"
        in shown.stdout
    )

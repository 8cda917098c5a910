"""Delta tables in whole pipelines, through the CLI: an incremental extract whose watermark the
Delta sink commits with its rows, a Delta table read incrementally by version into another,
`state` commands on a Delta sink, `plan` knowing a Delta source's schema, and the example."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import Result
from deltalake import DeltaTable, write_deltalake

import engine
from tests.conftest import PgSchema, WritePipeline

Cli = Callable[..., Result]


def orders_pipeline(pg: PgSchema) -> str:
    return f"""
pipeline: lake
connections:
  wh: {{kind: postgres, uri: "${{env:TEST_PG_URI}}"}}
tasks:
  - id: orders
    extract:
      from: postgres
      connection: wh
      table: {pg.table("orders")}
      incremental: {{cursor: updated_at, key: [id]}}
  - id: to_lake
    load: {{input: orders, to: delta, path: lake/orders, mode: merge, keys: [id]}}
"""


def lake(project: Path, path: str = "lake/orders", sort: str = "id") -> list[dict[str, object]]:
    return DeltaTable(str(project / path)).to_pyarrow_table().sort_by(sort).to_pylist()


def ledger(project: Path, path: str = "lake/orders") -> list[dict[str, object]]:
    history = DeltaTable(str(project / path)).history()
    return [json.loads(c["arrowline"]) for c in history if "arrowline" in c]


def test_an_incremental_extract_into_delta_keeps_its_watermark_in_the_table(
    write: WritePipeline, project: Path, cli: Cli, pg: PgSchema
) -> None:
    pg.execute(
        f"create table {pg.table('orders')} (id int primary key, amount float8, "
        "updated_at timestamptz)",
        f"insert into {pg.table('orders')} values (1, 1.5, '2026-01-01 10:00+00'), "
        "(2, 2.5, '2026-01-01 11:00+00')",
    )
    write("p.yaml", orders_pipeline(pg))
    result = cli("run", "p.yaml", "--no-progress")
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in lake(project)] == [1, 2]
    (entry,) = ledger(project)
    assert list(entry["watermarks"]) == ["orders"]  # type: ignore[call-overload]

    pg.execute(
        f"update {pg.table('orders')} set amount = 20, updated_at = '2026-01-02 09:00+00' "
        "where id = 2",
        f"insert into {pg.table('orders')} values (3, 3.5, '2026-01-02 10:00+00')",
    )
    result = cli("run", "p.yaml", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "2 rows in" in result.output  # only the changed rows were read
    assert [(r["id"], r["amount"]) for r in lake(project)] == [(1, 1.5), (2, 20.0), (3, 3.5)]
    newest = ledger(project)[0]
    value = newest["watermarks"]["orders"][0]  # type: ignore[index]
    assert "2026-01-02T10:00:00" in value

    shown = cli("state", "show", "p.yaml")
    assert shown.exit_code == 0
    assert shown.output.count("2026-01-02 10:00:00") == 2  # the catalog and the sink agree

    assert cli("state", "reset", "p.yaml").exit_code == 0
    assert "orders" not in ledger(project)[0]["watermarks"]  # type: ignore[operator]
    assert len(lake(project)) == 3  # a reset commits no row
    result = cli("run", "p.yaml", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "3 rows in" in result.output  # everything read again
    assert len(lake(project)) == 3  # merged on its keys


def test_a_delta_table_feeds_another_incrementally_by_version(
    write: WritePipeline, project: Path, cli: Cli
) -> None:
    source = str(project / "lake/events")
    write_deltalake(source, pa.table({"id": [1, 2], "kind": ["a", "heartbeat"]}))
    write(
        "p.yaml",
        """
        pipeline: copy
        tasks:
          - id: events
            extract: {from: delta, path: lake/events, filter: "kind <> 'heartbeat'", incremental: true}
          - id: keep
            load: {input: events, to: delta, path: lake/kept, mode: append}
        """,
    )
    plan = cli("plan", "p.yaml", "--format", "json")
    assert plan.exit_code == 0, plan.output
    schemas = json.loads(plan.stdout)["schemas"]["schemas"]
    assert [c["name"] for c in schemas["events"]] == ["id", "kind", "_delta_version"]
    assert cli("run", "p.yaml", "--no-progress").exit_code == 0
    assert [(r["id"], r["_delta_version"]) for r in lake(project, "lake/kept")] == [(1, 0)]
    write_deltalake(source, pa.table({"id": [3, 4], "kind": ["b", "heartbeat"]}), mode="append")
    assert cli("run", "p.yaml", "--no-progress").exit_code == 0
    assert [(r["id"], r["_delta_version"]) for r in lake(project, "lake/kept")] == [
        (1, 0),
        (3, 1),
    ]
    assert cli("run", "p.yaml", "--no-progress").exit_code == 0  # nothing new
    assert len(lake(project, "lake/kept")) == 2

    # a notebook opens the sink's table as each run's load left it
    with engine.open(project) as notebook:
        assert sorted(notebook.table("keep").collect()["id"]) == [1, 3]
        first = notebook.runs()["run_id"][-1]
        assert notebook.table("keep", run=first).collect()["id"].to_list() == [1]


def test_bad_delta_configs_fail_validation_with_the_key_and_line(
    write: WritePipeline, project: Path, cli: Cli
) -> None:
    write(
        "p.yaml",
        """
        pipeline: bad
        tasks:
          - id: t
            sql: select 1 as id
          - id: out
            load: {input: t, to: delta, path: lake/x, mode: append, delete_missing: true}
        """,
    )
    result = cli("validate", "p.yaml")
    assert result.exit_code != 0
    assert "p.yaml:6" in result.output
    assert "delete_missing applies to mode: merge" in result.output


def test_the_example_pipeline_writes_delta(project: Path, cli: Cli) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples" / "lakehouse"
    shutil.copytree(examples, project / "lakehouse")
    result = cli("run", "lakehouse/pipeline.yaml", "--no-progress")
    assert result.exit_code == 0, result.output
    rows = lake(project, "lakehouse/lake/daily_revenue", "day")
    assert len(rows) == 90  # 30 days x 3 regions
    assert {"day", "region", "orders", "revenue"} == set(rows[0])
    with engine.open(project) as notebook:  # the Iceberg table, as its load committed it
        orders = notebook.table("iceberg_orders").collect()
        assert orders.height == 200_000
        assert orders["order_id"].n_unique() == 200_000
    again = cli("run", "lakehouse/pipeline.yaml", "--no-progress")
    assert again.exit_code == 0, again.output
    assert len(lake(project, "lakehouse/lake/orders", "order_id")) == 200_000


@pytest.mark.parametrize("mode", ["append", "replace", "merge"])
def test_a_load_into_a_folder_that_is_no_delta_table_is_refused_clearly(
    write: WritePipeline, project: Path, cli: Cli, mode: str
) -> None:
    (project / "lake/x").mkdir(parents=True)
    (project / "lake/x/_delta_log").write_text("not a folder")
    keys = ", keys: [id]" if mode == "merge" else ""
    write(
        "p.yaml",
        f"""
        pipeline: p
        tasks:
          - id: t
            sql: select 1 as id
          - id: out
            load: {{input: t, to: delta, path: lake/x, mode: {mode}{keys}}}
        """,
    )
    result = cli("run", "p.yaml", "--no-progress")
    assert result.exit_code != 0
    assert "lake/x" in result.output


def test_table_maintenance_compacts_vacuums_and_expires_without_losing_watermarks(
    write: WritePipeline, project: Path, cli: Cli
) -> None:
    source = str(project / "lake/events")
    write_deltalake(source, pa.table({"id": [0], "kind": ["a"]}))
    write(
        "p.yaml",
        """
        pipeline: small
        tasks:
          - id: events
            extract: {from: delta, path: lake/events, incremental: true}
          - id: keep
            load: {input: events, to: delta, path: lake/kept, mode: append}
        """,
    )
    for i in range(1, 6):  # six small loads: six small files
        assert cli("run", "p.yaml", "--no-progress").exit_code == 0
        write_deltalake(source, pa.table({"id": [i], "kind": ["a"]}), mode="append")
    kept = DeltaTable(str(project / "lake/kept"))
    assert len(kept.file_uris()) == 5
    (project / "lake/kept/orphan.parquet").write_bytes(b"left by a killed load")

    result = cli("table", "optimize", "p.yaml", "keep")
    assert result.exit_code == 0, result.output
    assert "files removed: 5, files added: 1" in result.output
    assert len(DeltaTable(str(project / "lake/kept")).file_uris()) == 1

    result = cli("table", "vacuum", "p.yaml", "keep", "--retention", "0s")
    assert result.exit_code != 0
    assert "--unsafe-retention" in result.output
    result = cli(
        "table", "vacuum", "p.yaml", "keep", "--retention", "0s", "--unsafe-retention", "--dry-run"
    )
    assert result.exit_code == 0, result.output
    assert "would remove: 5" in result.output  # the five compacted files
    assert (project / "lake/kept/orphan.parquet").exists()
    result = cli("table", "vacuum", "p.yaml", "keep", "--retention", "0s", "--unsafe-retention")
    assert result.exit_code == 0, result.output
    assert "files removed: 5" in result.output

    # the log older than the table's retention goes; the watermark it held does not
    DeltaTable(str(project / "lake/kept")).alter.set_table_properties(
        {"delta.logRetentionDuration": "interval 0 seconds"}
    )
    result = cli("table", "expire-snapshots", "p.yaml", "keep")
    assert result.exit_code == 0, result.output
    assert not (project / "lake/kept/_delta_log" / f"{0:020d}.json").exists()
    run = cli("run", "p.yaml", "--no-progress")
    assert run.exit_code == 0, run.output
    assert sorted(r["id"] for r in lake(project, "lake/kept")) == [0, 1, 2, 3, 4, 5]

    wrong = cli("table", "optimize", "p.yaml", "kep")
    assert wrong.exit_code != 0
    assert "did you mean 'keep'" in wrong.output.lower()


def test_parameters_cannot_point_a_table_outside_or_rewrite_a_filter(
    write: WritePipeline, project: Path, cli: Cli, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside")
    write_deltalake(str(project / "lake/events"), pa.table({"id": [1], "region": ["EU"]}))
    write(
        "p.yaml",
        """
        pipeline: p
        params: {name: kept, region: EU}
        tasks:
          - id: events
            extract: {from: delta, path: lake/events, filter: "region = {{ params.region | sql_literal }}"}
          - id: keep
            load: {input: events, to: delta, path: "lake/{{ params.name }}"}
        """,
    )
    escaped = cli("run", "p.yaml", "--no-progress", "-p", f"name=file://{outside}/x")
    assert escaped.exit_code != 0
    assert "leave" in escaped.output
    assert not any(outside.iterdir())
    result = cli("run", "p.yaml", "--no-progress", "-p", "region=EU' or '1'='1")
    assert result.exit_code == 0, result.output
    assert not (project / "lake/kept").exists() or len(lake(project, "lake/kept")) == 0

    write(
        "raw.yaml",
        """
        pipeline: raw
        params: {region: EU}
        tasks:
          - id: events
            extract: {from: delta, path: lake/events, filter: "region = {{ params.region }}"}
        """,
    )
    refused = cli("validate", "raw.yaml")  # printed raw: a value would be the condition
    assert refused.exit_code != 0
    assert "unquoted-parameter" in refused.output
    quoted = write(
        "quoted.yaml",
        (project / "raw.yaml")
        .read_text()
        .replace("region = {{ params.region }}", "region = '{{ params.region }}'")
        .replace("pipeline: raw", "pipeline: quoted"),
    )
    assert cli("validate", quoted).exit_code == 0  # dbt's quoting: one string, quotes doubled
    attack = cli("run", quoted, "--no-progress", "-p", "region=EU' or '1'='1")
    assert attack.exit_code == 0, attack.output
    with engine.open(project) as opened:
        assert opened.table("events", pipeline="quoted").collect().height == 0

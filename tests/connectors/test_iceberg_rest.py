"""Iceberg tables through a REST catalog: the `rest_catalog` fixture's server on loopback speaks
the Iceberg REST protocol over HTTP and wants a bearer token (or an OAuth client credential it
exchanges for one). Whole pipelines from a file load every mode, read back in full, as of a
snapshot and incrementally, keep their ledger in the table's properties, run maintenance, and
open in a notebook; a wrong token, an unknown table and a server that is not there are clear
errors; the token is in no output, log or state file; two writers at once lose nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import Result

import engine
from connectors.base import ConnectorContext
from connectors.iceberg.catalog import resolve
from connectors.iceberg.config import IcebergConnection, IcebergSink
from connectors.iceberg.sink import write_iceberg
from engine.core.errors import TransientTaskError
from tests.conftest import WritePipeline, at_once
from tests.connectors.test_iceberg import staged
from tests.iceberg_rest import RestCatalog

Cli = Callable[..., Result]


def connections(auth: str, uri: str) -> str:
    return f"""
connections:
  lake:
    kind: iceberg
    uri: {uri}
    properties: {{{auth}: "${{env:LAKE_SECRET}}"}}
"""


@pytest.fixture
def lake(rest_catalog: RestCatalog, monkeypatch: pytest.MonkeyPatch) -> RestCatalog:
    monkeypatch.setenv("LAKE_SECRET", rest_catalog.token)
    return rest_catalog


def server_rows(lake: RestCatalog, table: str, sort: str = "id") -> list[dict[str, Any]]:
    from pyiceberg.catalog import load_catalog

    catalog = load_catalog("check", type="rest", uri=lake.uri, token=lake.token)
    return catalog.load_table(table).scan().to_arrow().sort_by(sort).to_pylist()


def no_secret_in(folder: Path, secret: str, *outputs: str) -> None:
    for output in outputs:
        assert secret not in output
    for path in folder.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_a_pipeline_loads_every_mode_through_a_rest_catalog_and_reads_it_back(
    lake: RestCatalog, write: WritePipeline, project: Path, cli: Cli
) -> None:
    table = f"{lake.namespace}.orders"
    write(
        "load.yaml",
        connections("token", lake.uri)
        + f"""
pipeline: to_lake
params: {{k: 1, upto: 100}}
tasks:
  - id: orders
    sql: select range as id, range * {{{{ params.k }}}} as v,
                case when range % 2 = 0 then 'EU' else 'US' end as region
         from range({{{{ params.upto }}}})
  - id: lake
    load: {{input: orders, to: iceberg, connection: lake, table: {table}, mode: merge,
           keys: [id], partition_by: [region]}}
""",
    )
    write(
        "back.yaml",
        connections("token", lake.uri)
        + f"""
pipeline: from_lake
tasks:
  - id: new
    extract: {{from: iceberg, connection: lake, table: {table}, incremental: true}}
  - id: eu
    extract: {{from: iceberg, connection: lake, table: {table}, filter: "region = 'EU'",
              columns: [id, v]}}
  - id: keep_new
    load: {{input: new, to: parquet, path: out/new.parquet}}
  - id: keep_eu
    load: {{input: eu, to: parquet, path: out/eu.parquet}}
""",
    )
    outputs, new_rows = [], []
    for args in (
        ("run", "load.yaml"),
        ("run", "back.yaml"),
        ("run", "load.yaml"),  # the same rows: merged, not added; nothing new to read
        ("run", "back.yaml"),
        ("run", "load.yaml", "--param", "k=3", "--param", "upto=120"),
        ("run", "back.yaml"),
    ):
        result = cli(*args, "--no-progress")
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
        if args[1] == "back.yaml":
            new_rows.append(pq.read_table(project / "out/new.parquet").num_rows)
        if len(outputs) <= 2:  # a plan reaches no server: it says so, then knows the table
            planned = cli("plan", "back.yaml", "--format", "json")
            assert planned.exit_code == 0, planned.output
            plan = json.loads(planned.stdout)["schemas"]
            if new_rows:  # from what the run read
                names = [c["name"] for c in plan["schemas"]["new"]]
                assert names == ["id", "v", "region", "_iceberg_sequence"]
            else:
                assert "connection 'lake'" in plan["unknown"]["new"], plan
    # the second load merged the same rows again: a copy-on-write merge rewrites the rows its
    # keys match, so an incremental reader is given them again, and the table holds each once
    assert new_rows == [100, 100, 120]
    assert server_rows(lake, table) == [
        {"id": i, "v": i * 3, "region": "EU" if i % 2 == 0 else "US"} for i in range(120)
    ]
    eu = pq.read_table(project / "out/eu.parquet")
    assert eu.column_names == ["id", "v"]
    assert sorted(eu.column("id").to_pylist()) == list(range(0, 120, 2))
    from pyiceberg.catalog import load_catalog

    server = load_catalog("check", type="rest", uri=lake.uri, token=lake.token).load_table(table)
    ledger = json.loads(server.properties["arrowline.load.to_lake.lake"])
    assert ledger["sequence"] == 3  # each load committed its run with its snapshot
    first = server.snapshots()[0].snapshot_id
    write(
        "then.yaml",
        connections("token", lake.uri)
        + f"""
pipeline: then
tasks:
  - id: first
    extract: {{from: iceberg, connection: lake, table: {table}, snapshot_id: {first}}}
  - id: keep
    load: {{input: first, to: parquet, path: out/first.parquet}}
""",
    )
    result = cli("run", "then.yaml", "--no-progress")
    assert result.exit_code == 0, result.output
    first_rows = pq.read_table(project / "out/first.parquet").sort_by("id").to_pylist()
    assert [(r["id"], r["v"]) for r in first_rows] == [(i, i) for i in range(100)]
    with engine.open(project / "load.yaml") as notebook:
        assert notebook.table("lake").collect().height == 120
    no_secret_in(project, lake.token, *outputs, result.output)


def test_replace_append_and_maintenance_through_a_rest_catalog(
    lake: RestCatalog,
    write: WritePipeline,
    project: Path,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LAKE_SECRET", lake.credential)  # an OAuth client, exchanged for a token
    table = f"{lake.namespace}.nested.events"  # a REST catalog nests namespaces
    write(
        "p.yaml",
        connections("credential", lake.uri)
        + f"""
pipeline: events
params: {{day: 1}}
tasks:
  - id: day
    sql: select range as id, {{{{ params.day }}}} as day from range(10)
  - id: lake
    load: {{input: day, to: iceberg, connection: lake, table: {table}, mode: replace,
           predicate: "day = {{{{ params.day }}}}"}}
  - id: log
    load: {{input: day, to: iceberg, connection: lake, table: {lake.namespace}.log, mode: append}}
""",
    )
    outputs = []
    for day in (1, 2, 1):
        result = cli("run", "p.yaml", "--no-progress", "--param", f"day={day}")
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    events = server_rows(lake, table, "day")
    assert sorted((r["day"], r["id"]) for r in events) == sorted(
        (d, i) for d in (1, 2) for i in range(10)
    )
    assert len(server_rows(lake, f"{lake.namespace}.log")) == 30
    for args in (
        ("optimize", "p.yaml", "log"),
        ("expire-snapshots", "p.yaml", "log", "--retention", "0s", "--unsafe-retention"),
        ("vacuum", "p.yaml", "log", "--retention", "0s", "--unsafe-retention"),
    ):
        result = cli("table", *args)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert "files removed: 3, files added: 1" in outputs[3]
    from pyiceberg.catalog import load_catalog

    server = load_catalog("c", type="rest", uri=lake.uri, token=lake.token)
    log = server.load_table(f"{lake.namespace}.log")
    assert len(log.snapshots()) == 1
    assert len(list(log.scan().plan_files())) == 1
    assert log.scan().to_arrow().num_rows == 30
    assert json.loads(log.properties["arrowline.load.events.log"])["sequence"] == 3
    no_secret_in(project, lake.credential.split(":", 1)[1], *outputs)
    assert lake.issued()  # the credential was exchanged for access tokens: none is kept either
    for token in lake.issued():
        no_secret_in(project, token, *outputs)


def test_a_wrong_token_an_unknown_table_and_no_server_are_clear_errors(
    lake: RestCatalog,
    write: WritePipeline,
    project: Path,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = f"{lake.namespace}.missing"
    write(
        "p.yaml",
        connections("token", lake.uri)
        + f"""
pipeline: bad
tasks:
  - id: t
    extract: {{from: iceberg, connection: lake, table: {table}}}
  - id: keep
    load: {{input: t, to: parquet, path: out/t.parquet}}
""",
    )
    write(
        "seed.yaml",
        connections("token", lake.uri)
        + f"""
pipeline: seed
tasks:
  - id: one
    sql: select 1 as id
  - id: lake
    load: {{input: one, to: iceberg, connection: lake, table: {lake.namespace}.missed}}
""",
    )
    assert cli("run", "seed.yaml", "--no-progress").exit_code == 0
    unknown = cli("run", "p.yaml", "--no-progress")
    assert unknown.exit_code != 0
    said = " ".join(unknown.output.split())
    assert (
        f"no Iceberg table {table} in connection 'lake'. Did you mean '{lake.namespace}.missed'?"
        in said
    )
    wrong = "Wr0ngToken-" + lake.token[:4]
    monkeypatch.setenv("LAKE_SECRET", wrong)
    refused = cli("run", "p.yaml", "--no-progress")
    assert refused.exit_code != 0
    assert "NotAuthorizedException: a valid bearer token is needed" in refused.output
    assert lake.uri in refused.output  # which catalog said no
    (project / "p.yaml").write_text(  # nothing listens on the discard port
        (project / "p.yaml").read_text().replace(lake.uri, "http://127.0.0.1:9")
    )
    absent = cli("run", "p.yaml", "--no-progress")
    assert absent.exit_code != 0
    assert "127.0.0.1:9" in absent.output, absent.output
    no_secret_in(project, wrong, unknown.output, refused.output, absent.output)
    no_secret_in(project, lake.token, unknown.output, refused.output, absent.output)
    assert not (project / "out/t.parquet").exists()


def test_two_merges_through_the_rest_catalog_at_once_lose_nothing(
    lake: RestCatalog, tmp_path: Path
) -> None:
    spec = IcebergConnection(kind="iceberg", uri=lake.uri, properties={"token": lake.token})
    resolved = resolve("lake", spec, tmp_path)
    config = IcebergSink.model_validate(
        {
            "input": "t",
            "to": "iceberg",
            "table": f"{lake.namespace}.t",
            "connection": "lake",
            "mode": "merge",
            "keys": ["id"],
        }
    )
    import pyarrow as pa

    def ctx(run_id: str) -> ConnectorContext:
        return ConnectorContext(tmp_path, "p", run_id, "load", connections={"lake": resolved})

    first = staged(tmp_path, pa.table({"id": list(range(100)), "v": ["a"] * 100}), "first")
    write_iceberg(first, config, ctx("r0"))
    a = staged(tmp_path, pa.table({"id": [1, 200], "v": ["A", "new"]}), "a")
    b = staged(tmp_path, pa.table({"id": [1, 300], "v": ["B", "new"]}), "b")
    outcomes = at_once(
        lambda: write_iceberg(a, config, ctx("ra")), lambda: write_iceberg(b, config, ctx("rb"))
    )
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failures) <= 1
    for failure in failures:  # the server's 409: the task is retried, nothing half-written
        assert isinstance(failure, TransientTaskError), failure
    found = server_rows(lake, f"{lake.namespace}.t")
    ids = [r["id"] for r in found]
    assert len(ids) == len(set(ids)) == 100 + (2 - len(failures))
    assert {r["id"]: r["v"] for r in found}[1] in {"A", "B"}


def test_a_rest_catalogs_warehouse_and_oauth_endpoint_pass_as_written(tmp_path: Path) -> None:
    spec = IcebergConnection(
        kind="iceberg",
        uri="https://catalog.example.com/api/catalog/",
        warehouse="analytics",
        properties={"credential": "client:s3cret"},
    )
    properties = resolve("rest", spec, tmp_path).properties
    assert properties["warehouse"] == "analytics"  # a name the catalog serves, not a folder
    assert (
        properties["oauth2-server-uri"] == "https://catalog.example.com/api/catalog/v1/oauth/tokens"
    )
    local = IcebergConnection(kind="iceberg", uri="sqlite:///c.db", warehouse="wh")
    assert resolve("l", local, tmp_path).properties["warehouse"] == (tmp_path / "wh").as_uri()

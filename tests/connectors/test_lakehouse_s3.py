"""Delta and Iceberg tables on S3-compatible object storage, against moto's server on loopback
(the `s3` fixture): a Delta table by its s3:// path (delta-rs reads the AWS_* environment; a store
other than AWS needs AWS_ALLOW_HTTP for http and AWS_CONDITIONAL_PUT=etag for safe concurrent
commits), an Iceberg catalog whose warehouse is on the store. Merges run twice load each key
once, the table reads back whole and as of its first version, and the files are in the bucket."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

import engine
from engine.api.pipeline import run
from engine.api.reader import LoadedElsewhere
from engine.core.errors import TaskError
from tests.conftest import WritePipeline
from tests.s3_server import GuardedStore, S3Bucket

Cli = Callable[..., Result]


@pytest.fixture
def lake(s3: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    monkeypatch.setenv("AWS_CONDITIONAL_PUT", "etag")
    return s3


SOURCE = """
params: {k: 1}
tasks:
  - id: src
    sql: select range as id, range * {{ params.k }} as v from range(1000)
"""


def _rows(result: object, task: str) -> list[tuple[int, int]]:
    import pyarrow.parquet as pq

    output = result.tasks[task].output  # type: ignore[attr-defined]
    table = pq.ParquetDataset([str(f) for f in output.files]).read()
    return sorted(zip(table.column("id").to_pylist(), table.column("v").to_pylist(), strict=True))


def test_a_delta_table_on_s3_merges_once_per_key_and_reads_back_by_version(
    lake: S3Bucket, write: WritePipeline, project: Path
) -> None:
    table = f"s3://{lake.bucket}/tables/orders"
    text = (
        "pipeline: delta_s3\n"
        + SOURCE
        + f"""  - id: to_lake
    load: {{input: src, to: delta, path: "{table}", mode: merge, keys: [id]}}
  - id: back
    extract: {{from: delta, path: "{table}"}}
    depends_on: [to_lake]
  - id: first
    extract: {{from: delta, path: "{table}", version: 0}}
    depends_on: [to_lake]
"""
    )
    path = write("p.yaml", text)
    once = run(path, params={"k": 1})
    assert once.ok, {k: t.error for k, t in once.tasks.items() if t.error}
    again = run(path, params={"k": 1})  # the same rows again: merged, not added
    assert again.ok
    assert len(_rows(again, "back")) == 1000
    changed = run(path, params={"k": 3})
    assert changed.ok
    assert _rows(changed, "back") == [(i, i * 3) for i in range(1000)]
    assert _rows(changed, "first") == [(i, i) for i in range(1000)]  # time travel on S3
    keys = lake.keys("tables/orders")
    assert any("/_delta_log/" in k for k in keys)
    assert any(k.endswith(".parquet") for k in keys)
    from deltalake import DeltaTable

    history = DeltaTable(table).history()  # each load committed with its run id
    runs = {c.get("arrowline", "") for c in history}
    assert any(once.run_id in r for r in runs), history


def test_an_iceberg_catalog_keeps_its_warehouse_on_s3(
    lake: S3Bucket, write: WritePipeline, project: Path
) -> None:
    text = (
        f"""pipeline: iceberg_s3
connections:
  ice:
    kind: iceberg
    uri: "sqlite:///catalog.db"
    warehouse: "s3://{lake.bucket}/warehouse"
    properties:
      s3.endpoint: "{lake.endpoint}"
      s3.region: us-east-1
      s3.access-key-id: "${{env:AWS_ACCESS_KEY_ID}}"
      s3.secret-access-key: "${{env:AWS_SECRET_ACCESS_KEY}}"
"""
        + SOURCE
        + """  - id: to_lake
    load: {input: src, to: iceberg, connection: ice, table: shop.orders, mode: merge, keys: [id]}
  - id: back
    extract: {from: iceberg, connection: ice, table: shop.orders}
    depends_on: [to_lake]
"""
    )
    path = write("p.yaml", text)
    assert run(path, params={"k": 1}).ok
    changed = run(path, params={"k": 5})
    assert changed.ok, {k: t.error for k, t in changed.tasks.items() if t.error}
    assert _rows(changed, "back") == [(i, i * 5) for i in range(1000)]
    keys = lake.keys("warehouse")
    assert any(k.endswith(".parquet") for k in keys), keys
    assert any(k.endswith(".metadata.json") for k in keys), keys
    import os

    secret = os.environ["AWS_SECRET_ACCESS_KEY"].encode()
    for file in project.rglob("*"):  # the catalog, run logs, outputs: no secret
        if file.is_file():
            assert secret not in file.read_bytes(), file


def test_a_delta_table_is_read_and_written_with_its_s3_connection(
    guarded_s3: GuardedStore,
    write: WritePipeline,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli: Cli,
) -> None:
    """`connection:` on a Delta source and sink: a store that checks signatures refuses the
    environment's key, and takes the connection's; its secret reaches no file. The source
    reads incrementally (its log read with the connection too), `plan` knows the schema is
    the run's to find, and a notebook does not read the sink's table with the environment's
    key."""
    monkeypatch.setenv("LAKE_KEY_ID", guarded_s3.access_key)
    monkeypatch.setenv("LAKE_SECRET", guarded_s3.secret_key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "not-the-lakes")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-lakes-either")
    for name in ("AWS_ENDPOINT_URL", "AWS_ALLOW_HTTP", "AWS_CONDITIONAL_PUT"):
        monkeypatch.delenv(name, raising=False)
    table = f"s3://{guarded_s3.bucket()}/tables/orders"
    text = f"""pipeline: delta_conn
connections:
  lake:
    kind: s3
    endpoint: "{guarded_s3.endpoint}"
    access_key_id: "${{env:LAKE_KEY_ID}}"
    secret_access_key: "${{env:LAKE_SECRET}}"
params: {{start: 0}}
tasks:
  - id: src
    sql: select range + {{{{ params.start }}}} as id, range as v from range(500)
  - id: to_lake
    load: {{input: src, to: delta, path: "{table}", connection: lake, mode: merge, keys: [id]}}
  - id: back
    extract: {{from: delta, path: "{table}", connection: lake, incremental: true}}
    depends_on: [to_lake]
"""
    path = write("p.yaml", text)
    planned = cli("plan", str(path))
    assert planned.exit_code == 0, planned.output
    once = run(path, params={"start": 0})
    assert once.ok, {k: t.error for k, t in once.tasks.items() if t.error}
    more = run(path, params={"start": 500})  # new keys only: a new file beside the old
    assert more.ok, {k: t.error for k, t in more.tasks.items() if t.error}
    assert [i for i, _ in _rows(once, "back")] == list(range(500))
    # incremental by version: only what the second merge added, read with the connection
    assert [i for i, _ in _rows(more, "back")] == list(range(500, 1000))
    from connectors.delta.source import _log_entries
    from connectors.delta.table import TableAt
    from engine.core.s3 import S3Credentials

    named = S3Credentials(
        "lake", guarded_s3.endpoint, None, guarded_s3.access_key, guarded_s3.secret_key
    )
    assert _log_entries(TableAt(table, named), 1) is not None  # the log read with the key
    wrong = S3Credentials(
        "lake", guarded_s3.endpoint, None, guarded_s3.access_key, "not-the-lakes-secret-7f3a"
    )
    with pytest.raises(TaskError, match="reading the log"):  # refused is no "log gone"
        _log_entries(TableAt(table, wrong), 1)
    with engine.open(project) as notebook, pytest.raises(LoadedElsewhere):
        notebook.table("to_lake").collect()  # never read with the environment's key
    # the control: the same tables without the connection, the store named by the environment
    monkeypatch.setenv("AWS_ENDPOINT_URL", guarded_s3.endpoint)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    without = text.replace(", connection: lake", "").replace("delta_conn", "delta_env")
    said = r"opening the Delta table s3://.*InvalidAccessKeyId: The AWS Access Key"
    with pytest.raises(TaskError, match=said):  # what the store said, not "Generic S3 error"
        run(write("q.yaml", without), params={"start": 1000})
    for file in project.rglob("*"):
        if file.is_file():
            assert guarded_s3.secret_key.encode() not in file.read_bytes(), file


def test_a_delta_connection_goes_with_an_s3_path_and_kinds_are_still_checked(
    write: WritePipeline,
) -> None:
    from engine.tasks.checks import check_file

    path = write(
        "p.yaml",
        "pipeline: w\nconnections:\n  lake: {kind: s3}\n"
        "  pg: {kind: postgres, uri: 'postgresql://x/y'}\n"
        "tasks:\n  - id: a\n    extract: {from: delta, path: lake/orders, connection: lake}\n"
        "  - id: b\n    extract: {from: delta, path: 's3://b/t', connection: pg}\n"
        "  - id: c\n    extract: {from: postgres, connection: lake, table: t}\n",
    )
    _, problems = check_file(path)
    said = {(p.code, p.task_id): p.message for p in problems}
    assert ("connection-path", "a") in said, problems
    assert "needs a `kind: s3` connection" in said["connection-kind", "b"]
    assert "needs a `kind: postgres` connection" in said["connection-kind", "c"]


def test_a_delta_tables_storage_options_follow_its_connection() -> None:
    from connectors.delta.table import TableAt
    from engine.core.s3 import S3Credentials

    safe = TableAt("s3://b/t", S3Credentials("lake", "http://h:9000", None, "key", "sekrit-1"))
    assert safe.options is not None
    assert safe.options["AWS_CONDITIONAL_PUT"] == "etag"
    assert safe.options["AWS_ALLOW_HTTP"] == "true"
    assert "sekrit-1" not in repr(safe)
    assert str(safe) == "s3://b/t"
    bare = S3Credentials("lake", "https://h", None, "key", "s", conditional_put=False)
    options = TableAt("s3://b/t", bare).options
    assert options is not None
    assert "AWS_CONDITIONAL_PUT" not in options
    assert "AWS_ALLOW_HTTP" not in options
    assert options["AWS_S3_ALLOW_UNSAFE_RENAME"] == "true"

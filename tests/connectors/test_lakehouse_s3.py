"""Delta and Iceberg tables on S3-compatible object storage, against moto's server on loopback
(the `s3` fixture): a Delta table by its s3:// path (delta-rs reads the AWS_* environment; a store
other than AWS needs AWS_ALLOW_HTTP for http and AWS_CONDITIONAL_PUT=etag for safe concurrent
commits), an Iceberg catalog whose warehouse is on the store. Merges run twice load each key
once, the table reads back whole and as of its first version, and the files are in the bucket."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.api.pipeline import run
from tests.conftest import WritePipeline
from tests.s3_server import S3Bucket


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

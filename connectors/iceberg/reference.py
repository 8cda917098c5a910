"""The Iceberg connector's sections of `docs/pipeline-reference.md`."""

from __future__ import annotations

from connectors.base import Section
from connectors.iceberg.config import IcebergConnection, IcebergSink, IcebergSource

__all__ = ["SECTIONS"]

SECTIONS = (
    Section(
        "connections: kind: iceberg",
        IcebergConnection,
        "An Iceberg catalog (needs `pip install 'arrowline[iceberg]'`). Without a connection, "
        "tables live in the embedded catalog: `.arrowline/iceberg/` beside the pipeline file, "
        "SQLite and a local warehouse, nothing to run. A REST catalog (Polaris, Lakekeeper, "
        "Gravitino, Nessie, ...) takes a bearer `token` or an OAuth `credential` in "
        "`properties`; a table's namespace may then be nested (`a.b.table`), its parents "
        "created as needed.",
        """\
connections:
  lake: {kind: iceberg, uri: "postgresql://etl:${env:CATALOG_PW}@db/catalog",
         warehouse: s3://lake/warehouse, properties: {s3.endpoint: "http://minio:9000"}}
  rest: {kind: iceberg, uri: "https://catalog.example.com/api/catalog", warehouse: analytics,
         properties: {credential: "${env:CATALOG_CLIENT}", scope: PRINCIPAL_ROLE:ALL}}""",
    ),
    Section(
        "extract: from: iceberg",
        IcebergSource,
        "Streams an Iceberg table as Arrow record batches. `snapshot_id` or `as_of` read an "
        "older snapshot; `incremental: true` reads only the rows written since the snapshot "
        "the last run read up to (a merge's rewritten rows among them), and adds the column "
        "`_iceberg_sequence`, the run's watermark. `plan` knows the schema from the table's "
        "metadata in the embedded catalog; through a connection (a server), from the last run "
        "that read it.",
        """\
extract: {from: iceberg, table: sales.orders, filter: "region = 'EU'", incremental: true}""",
    ),
    Section(
        "load: to: iceberg",
        IcebergSink,
        "One transaction per load: schema changes, the snapshot and arrowline's ledger (the "
        "run and the watermarks of the extracts feeding the load, in the table property "
        "`arrowline.load.<pipeline>.<task>`) commit together, so a resumed run whose load "
        "committed writes nothing again. A new table is created with its first rows. `merge` "
        "rewrites only the files holding the input's keys (copy-on-write) and refuses NULL or "
        "repeated keys in the input. `apply` plays a change stream (a `cdc` extract's "
        "output) the same way in one snapshot: per key its last change, deletes removed, an "
        "unchanged TOASTed value read from the file it is rewritten out of; after a truncate "
        "(a snapshot starts with one) the table becomes the upserts. A lost commit race is "
        "retried like any transient error.",
        """\
load:
  input: daily_orders
  to: iceberg
  table: sales.orders
  mode: merge
  keys: [order_id]
  partition_by: [day(ordered_at), region]""",
    ),
)

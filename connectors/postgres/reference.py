"""The PostgreSQL connector's sections of `docs/pipeline-reference.md`."""

from __future__ import annotations

from connectors.base import IncrementalSpec, Section
from connectors.postgres.config import (
    CdcSpec,
    PartitionSpec,
    PostgresConnection,
    PostgresSink,
    PostgresSource,
)

__all__ = ["SECTIONS"]

SECTIONS = (
    Section(
        "connections: kind: postgres",
        PostgresConnection,
        "A named PostgreSQL server, referred to by `connection:` in extract and load tasks. A "
        "value may be or contain `${env:NAME}` or `${file:PATH}`; references are resolved when a "
        "run starts (not at validation), and every resolved secret, like any password in a "
        "URI, is masked as *** in logs, errors, the catalog and `arrowline render`. "
        "`arrowline check PIPELINE` tries every connection.",
        """\
connections:
  warehouse: {kind: postgres, uri: "${env:WAREHOUSE_URI}"}
  replica:
    kind: postgres
    host: db.internal
    user: reporting
    password: "${file:/run/secrets/reporting_password}"
    database: sales
    options: {sslmode: require}""",
    ),
    Section(
        "extract: from: postgres",
        PostgresSource,
        "Streams rows through ADBC's COPY path in batches of about `batch_bytes`, so memory does "
        "not grow with the table. Types: NUMERIC(p,s) arrives as decimal(p,s); NUMERIC without "
        "precision (and arrays of NUMERIC, whose precision the driver does not report) per "
        "`unconstrained_numeric`; enums and unknown types as text; INTERVAL as "
        "duration[us] (a month counts 30 days, as EXTRACT(EPOCH) does); uuid and json(b) keep "
        "their Arrow extension types; timestamptz is UTC; arrays become lists. Values reach the "
        "statement as typed literals, because bound parameters make ADBC abandon COPY and "
        "buffer the whole result.",
        """\
extract:
  from: postgres
  connection: warehouse
  table: public.orders
  partition: {column: order_id, count: 4}
  incremental: {cursor: updated_at, key: [order_id], lookback: 10m}""",
    ),
    Section(
        "extract: partition",
        PartitionSpec,
        "Splits the column's range into `count` parts read on as many connections in parallel. "
        "The first connection exports its snapshot (`pg_export_snapshot()`) and every reader "
        "imports it, so the parts together are one consistent view of the table even while it "
        "is being written. The first part also holds rows where the column is NULL. With "
        "`executor: ray`, each part is a Ray task of its own (holding the task's `resources`), "
        "on whichever nodes are free, and the driver holds the exported snapshot until every "
        "part is read: the parts are one view of the table across hosts too.",
        """\
partition: {column: created_at, count: 8}""",
    ),
    Section(
        "extract: incremental",
        IncrementalSpec,
        "Reads only rows past the watermark: `(cursor, key...) > (watermark)` as a row "
        "comparison, so rows sharing a cursor value are neither lost nor read twice; with a "
        "`lookback`, `cursor >= watermark - lookback`. The first run reads everything; "
        "`arrowline run --full-refresh` does again. The watermark advances only with committed "
        "data: a PostgreSQL or DuckDB load writes it to `arrowline_state.watermarks` in the same "
        "transaction as the rows, and the catalog keeps a mirror; with several loads downstream "
        "the extract starts from the least advanced one. A load reading the extract directly "
        "with `mode: append` whose own watermark is further ahead (another load failed) gets "
        "only the rows past it, so it stores none twice; what each sink held is kept with the "
        "extract's output, so a resume sends the same. Other modes, a `lookback`, a text "
        "cursor or key (ordered by the database's collation) and loads through a transform "
        "get those rows again: use `merge` keys. `arrowline state show|set|reset` "
        "inspects and changes watermarks, each change audited.",
        """\
incremental: {cursor: updated_at, key: [id], lookback: 5m, nulls: exclude}""",
    ),
    Section(
        "extract: cdc",
        CdcSpec,
        "Change data capture: the table's snapshot on the first run, then every insert, "
        "update, delete and truncate committed since, from a logical replication slot "
        "(pgoutput). Needs wal_level = logical, a role with REPLICATION, a primary key or "
        "replica identity on the table, and `pip install 'arrowline[postgres]'` (the slot is "
        "created on a replication connection, exporting its snapshot, under which the first "
        "run reads the table with the normal extract, `partition` included: no gap, no "
        "overlap). Each later run reads the slot's changes up to the WAL position when it "
        "started, decoded into the types the normal extract gives the table, with `_op` "
        "(snapshot, insert, update, delete, truncate), `_lsn` (the transaction's commit "
        "position), `_seq` (the change's place in it), `_xid`, `_commit_ts` (UTC) and "
        "`_unchanged_toast` (columns an update did not change and the server did not send: "
        "NULL here, kept by `mode: apply`). A delete carries the key columns; an update that "
        "changes the primary key comes with a delete of the old key; a snapshot starts with a "
        "`truncate` row, so a full refresh or reset replaces what the loads held. A "
        "publication that would drop changes (no truncates, a column list, a row filter) is "
        "refused. The position "
        "is the extract's watermark, committed by the loads with their rows; the slot is "
        "advanced only after every load committed (and at the next run's start if the process "
        "died in between), so a kill -9 anywhere loses and duplicates nothing, and a run "
        "leaves the slot holding no WAL it has loaded. Columns added, dropped or retyped at "
        "the source are mapped by name onto the table's columns when the run starts; the "
        "load's `schema_change` decides. A slot that is gone, invalidated, or moved past the "
        "committed position by another consumer fails the task: `arrowline state reset "
        "PIPELINE TASK --yes` starts over from a new snapshot (asked first without --yes). "
        "`arrowline cdc status PIPELINE` shows "
        "each slot's position, lag (in WAL bytes, and in time: the loads hold every change "
        "committed before `complete_as_of`, so the lag is at most the time since) and retained "
        "WAL, without touching the slot. One slot per CDC task. With `tables` instead of "
        "`table`, several tables share one slot and publication: the task becomes a task per "
        "table (`shop__orders`, `shop__customers` below; `--select shop`, `state reset PIPELINE "
        "shop` and `cdc status PIPELINE shop` name them all), each "
        "with its own position, snapshot and loads; they take turns at the slot (an advisory "
        "lock on the server), and once a run ends the slot moves to the least position all of "
        "them committed, so one table whose loads failed, or that a `--select` left out, "
        "keeps its changes in the slot. A table added to the list is added to the "
        "publication and starts from a snapshot of its own; a reset of one table keeps the "
        "slot, which the others read on from. What is shared is the slot, its retained WAL "
        "and its publication, not the decoding: each table's task reads the slot's range and "
        "keeps its own table's changes, so the server decodes the range once per table (a "
        "table far behind the others makes theirs re-read what they already hold). A "
        "`partition` reads each table's snapshot in ranges of that column (every table must "
        "have it); the slot keeps, of runs in which no table committed, what the outputs a "
        "resume may still load need, and nothing when there are none.",
        """extract:
  from: postgres
  connection: warehouse
  table: public.orders
  cdc: {slot: orders_cdc, publication: orders_cdc, max_retained_wal: 10GB}

# several tables, one slot: the tasks shop__orders and shop__customers
- id: shop
  extract:
    from: postgres
    connection: warehouse
    cdc: {tables: [public.orders, public.customers], max_retained_wal: 10GB}""",
    ),
    Section(
        "load: to: postgres",
        PostgresSink,
        "One transaction per load, through COPY (ADBC). `append` creates a missing table (with "
        "a primary key on `keys`) and COPYs the rows; `replace` COPYs into a new table and swaps "
        "it in by rename, so readers see old or new rows, never none (indexes, grants and "
        "dependent views of the old table are not carried over); `merge` stages the rows, "
        "refuses NULL or repeated keys, then runs INSERT ... ON CONFLICT (MERGE when no unique "
        "index covers the keys); `apply` plays a change stream (a `cdc` extract's output) into the "
        "table: per key its net change, computed in DuckDB and staged, then truncate, "
        "DELETE, UPDATE (a column no change sent keeps its value) and INSERT. Schema "
        "changes, per `schema_change`: evolve adds new columns, "
        "widens types and fills missing nullable columns with NULL; fail_on_breaking (default; "
        "`fail` is the same) adds new columns and widens types but refuses missing columns and "
        "incompatible types; freeze refuses every difference. Each change is reported per "
        "column in `arrowline runs RUN_ID`.",
        """\
load:
  input: checked
  to: postgres
  connection: warehouse
  table: analytics.orders
  mode: merge
  keys: [order_id]
  delete_missing: false
  schema_change: evolve""",
    ),
)

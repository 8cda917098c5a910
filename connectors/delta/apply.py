"""`mode: apply` into a Delta table: a change stream's net changes (connectors.changes) in one
delta-rs merge, so the table moves by one commit, with the load's ledger entry.

Per key: its last change a delete, the row is deleted; otherwise updated (a column no change
sent, an unchanged TOASTed value, keeps the table's value) or inserted. After a truncate in the
stream (a snapshot starts with one), the table's rows no change names are deleted too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from connectors.changes import DELETE, keep_column, net_sql, table_columns
from connectors.evolution import fit_batch
from engine.core.sqltext import quote_identifier
from engine.core.tables import InputTable

if TYPE_CHECKING:
    from deltalake import DeltaTable

__all__ = ["apply_changes", "upserts"]

_NET = "arrowline_net"


class NetChanges:
    """The stream reduced to one row per key, in a DuckDB of this process."""

    def __init__(self, stream: InputTable, keys: tuple[str, ...]) -> None:
        import duckdb

        self.connection = duckdb.connect()
        self.columns = table_columns(stream.schema)
        self.connection.execute(f"create view changes as select * from {stream.duckdb_source()}")
        self.connection.execute(f"create table {_NET} as {net_sql('changes', stream.schema, keys)}")
        ((self.truncated,),) = self.connection.execute(
            f"select coalesce(bool_or(_truncated), false) from {_NET}"
        ).fetchall()

    def reader(self, schema: pa.Schema, *, upserts_only: bool) -> pa.RecordBatchReader:
        """The net rows: the table's columns fitted to `schema`, then `_op` and the keep
        flags (only the table's columns with `upserts_only`)."""
        where = f" where _op <> '{DELETE}'" if upserts_only else ""
        source = self.connection.sql(f"select * from {_NET}{where}").to_arrow_reader(65_536)
        extra = (
            []
            if upserts_only
            else [f for f in source.schema if f.name == "_op" or f.name.startswith("_keep_")]
        )
        shape = pa.schema([*schema, *extra])

        def batches() -> Iterator[pa.RecordBatch]:
            for batch in source:
                fitted = fit_batch(batch.select(self.columns), schema)
                tail = [batch.column(f.name) for f in extra]
                yield pa.RecordBatch.from_arrays([*fitted.columns, *tail], schema=shape)

        return pa.RecordBatchReader.from_batches(shape, batches())

    def close(self) -> None:
        self.connection.close()


def upserts(net: NetChanges, schema: pa.Schema) -> pa.RecordBatchReader:
    """The rows a new table starts with."""
    return net.reader(schema, upserts_only=True)


def apply_changes(
    table: DeltaTable,
    net: NetChanges,
    schema: pa.Schema,
    keys: tuple[str, ...],
    properties: Any,
    writer: Any,
) -> dict[str, Any]:
    name = quote_identifier
    on = " and ".join(f"t.{name(k)} = s.{name(k)}" for k in keys)
    merger = table.merge(
        net.reader(schema, upserts_only=False),
        predicate=on,
        source_alias="s",
        target_alias="t",
        writer_properties=writer,
        commit_properties=properties,
    )
    deleted = f"s.{name('_op')} = '{DELETE}'"
    merger = merger.when_matched_delete(predicate=deleted)
    updates = {
        name(c): f"CASE WHEN s.{name(keep_column(i))} THEN t.{name(c)} ELSE s.{name(c)} END"
        for i, c in enumerate(net.columns)
        if c not in keys
    }
    if updates:
        merger = merger.when_matched_update(updates, predicate=f"not ({deleted})")
    values = {name(c): f"s.{name(c)}" for c in net.columns}
    merger = merger.when_not_matched_insert(values, predicate=f"not ({deleted})")
    if net.truncated:  # what the table held before the truncate and no change names
        merger = merger.when_not_matched_by_source_delete()
    metrics: dict[str, Any] = merger.execute()
    return metrics

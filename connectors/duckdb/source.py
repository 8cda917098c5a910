"""Stream a table or a query out of a DuckDB database file, opened read-only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from connectors.base import ConnectorContext
from connectors.duckdb.config import DuckDBSource
from connectors.duckdb.errors import translate
from engine.core.errors import DataError
from engine.core.files import FileVersion, file_versions
from engine.core.sqltext import quote_table

if TYPE_CHECKING:
    pass

__all__ = ["observe_duckdb", "open_duckdb"]


def _utc_schema(schema: pa.Schema) -> pa.Schema:
    """DuckDB labels TIMESTAMPTZ with the session's zone (the machine's); an output's schema must
    not depend on where it ran. Arrow timestamps are UTC instants, so relabelling copies nothing."""
    fields = [
        field.with_type(pa.timestamp(field.type.unit, "UTC"))
        if pa.types.is_timestamp(field.type) and field.type.tz not in (None, "UTC")
        else field
        for field in schema
    ]
    changed = pa.schema(fields, metadata=schema.metadata)
    return schema if changed.equals(schema) else changed


def _database_file(config: DuckDBSource, base_dir: Path) -> Path:
    path = Path(config.path).expanduser()
    return path if path.is_absolute() else base_dir / path


def observe_duckdb(config: DuckDBSource, base_dir: Path) -> tuple[FileVersion, ...]:
    """The database file (and its write-ahead log) as it is now: a write since the last run
    changes its size or modification time, so that run's output is not reused."""
    path = _database_file(config, base_dir)
    return file_versions([path, path.with_name(path.name + ".wal")])


def open_duckdb(config: DuckDBSource, ctx: ConnectorContext) -> list[pa.RecordBatchReader]:
    import duckdb

    cancel = ctx.cancel
    path = _database_file(config, ctx.base_dir)
    if not path.exists():
        raise DataError(f"DuckDB file {config.path!r} does not exist ({path})")
    what = f"reading {config.table or 'query'} from {path.name}"
    try:
        connection = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise translate(exc, what) from None
    unregister = cancel.on_cancel(connection.interrupt) if cancel else None
    try:
        sql = (
            config.query
            if config.query is not None
            else f"select * from {quote_table(config.table or '')}"
        )
        reader = connection.sql(sql).to_arrow_reader(config.batch_size)
    except BaseException as exc:
        if unregister:
            unregister()
        connection.close()
        if isinstance(exc, duckdb.Error):
            raise translate(exc, what) from None
        raise

    schema = _utc_schema(reader.schema)

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for batch in reader:
                yield batch if schema is reader.schema else batch.cast(schema)
        except duckdb.Error as exc:
            if cancel is not None:
                cancel.raise_if_cancelled()
            raise translate(exc, what) from None
        finally:
            if unregister:
                unregister()
            connection.close()

    return [pa.RecordBatchReader.from_batches(schema, batches())]

"""Where data outside a pipeline lives: the place a source reads or a sink writes.

A connector's descriptor names the place of each of its configs; the engine shows it to people
(`postgres:warehouse#public.orders`), lineage uses it for the nodes outside the pipeline, and
OpenLineage for dataset names (`postgres://host:5432` + `database.schema.table`, `file` + an
absolute path, `duckdb:///abs/file.duckdb` + `main.table`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Place"]


@dataclass(frozen=True)
class Place:
    system: str
    """The config's tag and where it points, as written: `postgres:warehouse`,
    `files:data/*.csv`, `duckdb:out/warehouse.duckdb`."""
    namespace: str
    """OpenLineage namespace of its datasets."""
    table: str | None = None
    """The table the config names; None for files, or for a source that runs a query."""
    query: str | None = None
    """The SQL a source runs instead of naming a table: lineage traces the tables it reads."""
    dialect: str | None = None
    """sqlglot's name for the dialect of `query`."""
    paths: tuple[str, ...] = ()
    """For files: their absolute paths or globs, which are their dataset names."""
    default_schema: str | None = None
    """The schema an unqualified table is in (`public`, `main`), for dataset names."""
    database: str | None = None
    """The database that prefixes dataset names (`sales` -> `sales.public.orders`)."""
    generated: tuple[str, ...] = ()
    """Columns a source makes itself, no column of its table (a change stream's `_op`,
    `_lsn`, ...): lineage gives them no upstream column."""

    @property
    def label(self) -> str:
        """For people and lineage: `postgres:warehouse#public.orders`."""
        return self.system + (f"#{self.table}" if self.table else "")

    def table_label(self, table: str) -> str:
        return f"{self.system}#{table}"

    def dataset_name(self, table: str) -> str:
        qualified = table
        if "." not in table and self.default_schema is not None:
            qualified = f"{self.default_schema}.{table}"
        return f"{self.database}.{qualified}" if self.database else qualified

    def datasets(self, tables: Iterable[str] = ()) -> list[tuple[str, str]]:
        """(namespace, name) of each dataset: its files, its table, or `tables` (those its
        query reads)."""
        if self.paths:
            return [(self.namespace, path) for path in self.paths]
        chosen = [self.table] if self.table else list(tables)
        return [(self.namespace, self.dataset_name(table)) for table in chosen]

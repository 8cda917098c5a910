"""Column lineage as each run recorded it when it ended (lineage.graph.LineageGraph data,
stored as JSON): what `arrowline lineage` and the OpenLineage export read back."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.state.db import Database

__all__ = ["LineageStore"]


@dataclass(frozen=True)
class LineageStore:
    db: Database

    def lineage(self, run_id: str) -> dict[str, Any] | None:
        """The column lineage recorded when the run ended (lineage.graph.LineageGraph data)."""
        rows = self.db.execute("select graph from run_lineage where run_id = ?", (run_id,))
        return json.loads(rows[0]["graph"]) if rows else None

    def record_lineage(self, run_id: str, graph: Mapping[str, Any]) -> None:
        with self.db.transaction() as connection:
            connection.execute(
                "insert into run_lineage (run_id, graph) values (?, ?) "
                "on conflict (run_id) do update set graph = excluded.graph",
                (run_id, json.dumps(graph, sort_keys=True)),
            )

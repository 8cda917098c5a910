"""Malformed rows a source sets aside instead of failing: where they were and why.

A source that can skip a bad record (a CSV row with the wrong number of fields, an NDJSON line
that does not parse) hands it to the attempt's `Rejects`; the extract task writes them to its
quarantine (`arrowline quarantine show TASK`), with the file, the line or row, the reason and the
raw text. The policy (`fail` at the first, or `quarantine` up to a limit) is the source's config.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pyarrow as pa

from engine.core.errors import DataError

__all__ = ["REJECT_SCHEMA", "Reject", "Rejects"]

REJECT_SCHEMA = pa.schema(
    [
        pa.field("_arrowline_file", pa.string()),
        pa.field("_arrowline_row", pa.int64()),
        pa.field(
            "_arrowline_errors",
            pa.list_(
                pa.struct([("column", pa.string()), ("check", pa.string()), ("value", pa.string())])
            ),
        ),
        pa.field("_arrowline_text", pa.string()),
    ]
)

_TEXT_LIMIT = 2000


@dataclass(frozen=True)
class Reject:
    file: str
    number: int
    """Line (unit 'line') or data row (unit 'row'), 1-based."""
    unit: str
    reason: str
    column: str | None = None
    value: str | None = None
    text: str | None = None

    def describe(self) -> str:
        where = f"{self.file} {self.unit} {self.number}"
        column = f", column {self.column!r}" if self.column else ""
        return f"{where}{column}: {self.reason}"


class Rejects:
    """Collects the bad rows of one extract attempt (thread-safe; partitions share one)."""

    def __init__(self, policy: str, limit: int) -> None:
        self.policy = policy
        self.limit = limit
        self.items: list[Reject] = []
        self._lock = threading.Lock()

    def add(self, reject: Reject) -> None:
        if self.policy == "fail":
            raise DataError(
                f"malformed row at {reject.describe()}"
                + (f": {reject.text[:200]!r}" if reject.text else ""),
                hint="fix the file, or set `on_bad_row: quarantine` to set such rows aside",
            )
        with self._lock:
            self.items.append(reject)
            count = len(self.items)
        if count > self.limit:
            raise DataError(
                f"more than {self.limit} malformed rows (max_bad_rows); the first was at "
                f"{self.items[0].describe()}",
                hint="a file this broken is probably the wrong file; raise max_bad_rows if not",
            )

    def table(self) -> pa.Table:
        with self._lock:
            items = list(self.items)
        return pa.Table.from_pylist(
            [
                {
                    "_arrowline_file": r.file,
                    "_arrowline_row": r.number,
                    "_arrowline_errors": [
                        {"column": r.column or "(row)", "check": r.reason, "value": r.value}
                    ],
                    "_arrowline_text": (r.text or "")[:_TEXT_LIMIT],
                }
                for r in items
            ],
            schema=REJECT_SCHEMA,
        )

"""The Delta connector's sections of `docs/pipeline-reference.md`."""

from __future__ import annotations

from connectors.base import Section
from connectors.delta.config import DeltaSink, DeltaSource

__all__ = ["SECTIONS"]

SECTIONS = (
    Section(
        "extract: from: delta",
        DeltaSource,
        "Streams a Delta Lake table as Arrow record batches (needs `pip install "
        "'arrowline[delta]'`). `version` or `as_of` read an older version; `incremental: true` "
        "reads only the files written since the version the last run read up to, and adds "
        "the column `_delta_version`, the run's watermark. `plan` knows the schema from the "
        "table's log before any data moves.",
        """\
extract:
  from: delta
  path: lake/events
  columns: [event_id, user_id, kind, at]
  filter: "kind <> 'heartbeat'"
  incremental: true""",
    ),
    Section(
        "load: to: delta",
        DeltaSink,
        "One commit per load (a widened column adds one commit before it, changing no row). "
        "The commit's metadata holds the run and the watermarks of the extracts feeding the "
        "load, with a Delta application transaction `arrowline:<pipeline>:<task>`: a resumed "
        "run whose load already committed writes nothing again, and two writers of one load "
        "cannot both commit. A lost commit race is retried like any transient error. `merge` "
        "refuses NULL or repeated keys in the input. `apply` plays a change stream (a `cdc` "
        "extract's output) in one delta-rs merge: per key its last change, deletes deleted, "
        "an unchanged TOASTed value kept, and after a truncate (a snapshot starts with one) "
        "the rows no change names deleted; a new column is added by a commit of its own first.",
        """\
load:
  input: daily_events
  to: delta
  path: lake/daily_events
  mode: merge
  keys: [event_id]
  partition_by: [day]""",
    ),
)

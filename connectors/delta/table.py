"""What the Delta source and sink share: where a table is, opening it, its Arrow schema, its
errors as arrowline's, and the ledger of arrowline's loads in its commit log.

The ledger: every load commits one `arrowline` entry in its commit's metadata (Delta's
commitInfo), JSON holding the pipeline, the load task, the run, the rows, a sequence number,
and the watermarks of every extract whose rows the table holds. The same commit carries a
Delta application transaction (`txn`) `arrowline:<pipeline>:<task>` at that sequence number,
so two writers of one load conflict instead of both committing. The newest entry of a
(pipeline, task) is therefore the truth about it, committed atomically with the rows. Table
maintenance by arrowline (connectors.delta.maintenance) carries every load's newest entry into
its own commit, so the log's cleanup does not take them away.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from engine.core.errors import ArrowlineError, DataError, TaskError, TransientTaskError, disk_full
from engine.core.s3 import S3Credentials, s3_filesystem
from engine.core.watermark import Watermark

if TYPE_CHECKING:
    from deltalake import DeltaTable

__all__ = [
    "CARRIED_KEY",
    "LEDGER_KEY",
    "REWRITE_KEY",
    "Load",
    "TableAt",
    "arrow_schema",
    "history",
    "last_load",
    "ledger",
    "located",
    "open_table",
    "table_location",
    "translate",
]

LEDGER_KEY = "arrowline"
"""The commitInfo key of arrowline's entry."""
REWRITE_KEY = "arrowline.rewrite"
"""The commitInfo key of a commit that rewrote files without changing a row (a widened column):
incremental readers skip its files, as they skip a compaction's."""
CARRIED_KEY = "arrowline.ledger"
"""The commitInfo key under which a maintenance commit carries the newest entry of every load,
so that cleaning old commits out of the log never loses one."""


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: str) -> bool:
    """`s3://...`, `file:///...`: a scheme at the start (not a `://` further in)."""
    return bool(_SCHEME.match(path))


def table_location(path: str, base_dir: Path) -> str:
    """A URI as it is; a local folder made absolute (relative to the pipeline file)."""
    if is_uri(path) and not path.startswith("file://"):
        return path
    local = Path(path.removeprefix("file://")).expanduser()
    return str(local if local.is_absolute() else (base_dir / local).resolve())


@dataclass(frozen=True)
class TableAt:
    """Where a Delta table is: its URI (or absolute folder), and the `kind: s3` connection it
    is opened with (None: delta-rs reads the AWS_* environment). Said in messages as its URI."""

    uri: str
    credentials: S3Credentials | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return self.uri

    @property
    def options(self) -> dict[str, str] | None:
        """delta-rs's storage options for the connection: its endpoint (http allowed when it
        says http), region and keys; commits made safe with conditional puts, which S3 and
        the S3-compatible stores arrowline is tested against (moto) honour, unless the
        connection says its store has none (`conditional_put: false`: one writer at a time)."""
        named = self.credentials
        if named is None:
            return None
        pairs = {
            "AWS_ENDPOINT_URL": named.endpoint,
            "AWS_REGION": named.region,
            "AWS_ACCESS_KEY_ID": named.access_key,
            "AWS_SECRET_ACCESS_KEY": named.secret_key,
            "AWS_SESSION_TOKEN": named.session_token,
            "AWS_ALLOW_HTTP": "true" if (named.endpoint or "").startswith("http:") else None,
            "AWS_CONDITIONAL_PUT": "etag" if named.conditional_put else None,
            "AWS_S3_ALLOW_UNSAFE_RENAME": None if named.conditional_put else "true",
        }
        return {key: value for key, value in pairs.items() if value}

    def filesystem(self) -> tuple[Any, str]:
        """A pyarrow filesystem and the table's path in it (to read its log directly)."""
        import pyarrow.fs as pafs

        if self.credentials is None:
            filesystem, root = pafs.FileSystem.from_uri(self.uri)
            return filesystem, root
        return s3_filesystem(self.credentials), self.uri.split("://", 1)[1]


def located(config: Any, ctx: Any) -> TableAt:
    """Where a source's or sink's table is, with its connection resolved for this run."""
    uri = table_location(config.path, ctx.base_dir)
    name = getattr(config, "connection", None)
    if name is None:
        return TableAt(uri)
    named = ctx.connection(name)
    if not isinstance(named, S3Credentials):
        raise DataError(f"connection {name!r} of the Delta table {uri} is not a `kind: s3` one")
    return TableAt(uri, named)


def _library() -> Any:
    try:
        import deltalake
    except ImportError as exc:  # pragma: no cover - the extra is part of dev
        from engine.core.errors import DefinitionError

        raise DefinitionError(
            "Delta tables need the deltalake library", hint="pip install 'arrowline[delta]'"
        ) from exc
    return deltalake


def open_table(
    location: TableAt | str, *, version: int | None = None, as_of: Any = None
) -> DeltaTable | None:
    """The table at `location` (at `version`, or as of a datetime), None when there is none.
    A version the table does not have, or a time before its first commit, is an error."""
    deltalake = _library()
    at = location if isinstance(location, TableAt) else TableAt(location)
    try:
        if not deltalake.DeltaTable.is_deltatable(at.uri, storage_options=at.options):
            return None
        table: DeltaTable = deltalake.DeltaTable(at.uri, storage_options=at.options)
        if version is not None and version != table.version():
            if version > table.version():
                raise DataError(
                    f"the Delta table {location} has no version {version} (its newest is "
                    f"{table.version()})"
                )
            table.load_as_version(version)
        if as_of is not None:
            table.load_as_version(as_of)
            _committed_by(table, as_of, at)
    except DataError:
        raise
    except Exception as exc:
        raise translate(exc, f"opening the Delta table {location}") from None
    return table


def _committed_by(table: DeltaTable, as_of: Any, location: TableAt) -> None:
    """Refuse `as_of` before the table's first commit, where delta-rs loads its first version
    anyway. (The history of a table loaded as of a time is read from a fresh one: delta-rs
    numbers a time-travelled table's history wrongly.)"""
    from datetime import UTC

    import deltalake

    if table.version() != 0:
        return
    moment = as_of if as_of.tzinfo is not None else as_of.replace(tzinfo=UTC)
    fresh = deltalake.DeltaTable(location.uri, storage_options=location.options)
    for commit in fresh.history():
        if int(commit["version"]) == 0 and int(commit["timestamp"]) > moment.timestamp() * 1000:
            raise DataError(
                f"the Delta table {location} has no version as of {as_of.isoformat()}: its "
                "first commit came later"
            )


def arrow_schema(table: DeltaTable) -> pa.Schema:
    """The table's schema as pyarrow's (delta-rs hands over an arro3 schema)."""
    return pa.schema(table.schema().to_arrow())


@dataclass(frozen=True)
class Load:
    """One arrowline load as its commit recorded it."""

    version: int
    run_id: str
    rows: int
    sequence: int
    watermarks: dict[str, tuple[Watermark, str]] = field(default_factory=dict)
    """extract -> (watermark, the run that committed it)."""
    runs: dict[str, int] = field(default_factory=dict)
    """The runs whose load committed, newest last (at most RECENT_RUNS), with their rows: a
    resume of any of them, not only of the newest, finds its rows loaded."""

    def entry(self, pipeline: str, task: str) -> str:
        return json.dumps(
            {
                "pipeline": pipeline,
                "task": task,
                "run_id": self.run_id,
                "rows": self.rows,
                "sequence": self.sequence,
                "watermarks": {
                    extract: [value.to_json(), run]
                    for extract, (value, run) in self.watermarks.items()
                },
                "runs": self.runs,
            }
        )

    def committed(self, run_id: str) -> int | None:
        """The rows `run_id`'s load committed, None when it has not."""
        if run_id == self.run_id:
            return self.rows
        return self.runs.get(run_id)

    def with_run(self, run_id: str, rows: int) -> dict[str, int]:
        """`runs` after `run_id` committed `rows`."""
        runs = {**self.runs, self.run_id: self.rows, run_id: rows}
        return dict(list(runs.items())[-RECENT_RUNS:])


RECENT_RUNS = 64
"""Runs a ledger entry remembers: a resume comes long before 64 later runs of its load."""


def app_id(pipeline: str, task: str) -> str:
    """The Delta application transaction of one load."""
    return f"arrowline:{pipeline}:{task}"


def history(table: DeltaTable) -> Iterator[dict[str, Any]]:
    """The table's commits, newest first, read a growing page at a time (most questions are
    answered by the last few commits)."""
    seen, limit = 0, 16
    while True:
        page = table.history(limit)
        yield from page[seen:]
        if len(page) < limit:
            return
        seen, limit = len(page), limit * 4


def _entries(commit: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The ledger entries a commit holds: its load's, and those a maintenance commit carried."""
    own = commit.get(LEDGER_KEY)
    if isinstance(own, str):
        yield json.loads(own)
    carried = commit.get(CARRIED_KEY)
    if isinstance(carried, str):
        yield from json.loads(carried)


def _load(entry: dict[str, Any], version: int) -> Load:
    return Load(
        version=version,
        run_id=str(entry["run_id"]),
        rows=int(entry["rows"]),
        sequence=int(entry["sequence"]),
        watermarks={
            extract: (Watermark.from_json(value), str(run))
            for extract, (value, run) in entry.get("watermarks", {}).items()
        },
        runs={str(run): int(rows) for run, rows in entry.get("runs", {}).items()},
    )


def last_load(table: DeltaTable, pipeline: str, task: str) -> Load | None:
    """The newest load of (pipeline, task) the commit log holds. When the table says the load
    committed (its application transaction) but the log no longer holds the commit (log
    retention removed it, and no maintenance by arrowline carried it), that is said rather
    than taken as 'never'."""
    newest = table.transaction_version(app_id(pipeline, task))
    if newest is None:
        return None
    for commit in history(table):
        for entry in _entries(commit):
            if (entry.get("pipeline"), entry.get("task")) != (pipeline, task):
                continue
            # the entry of the newest sequence: a maintenance commit may carry an older one
            # (a load committed while it ran)
            if int(entry.get("sequence", -1)) == newest:
                return _load(entry, int(commit["version"]))
    raise TaskError(
        f"the Delta table {table.table_uri} says load {task!r} of pipeline {pipeline!r} "
        "committed, but its commit is no longer in the table's log (log retention removed it); "
        "its watermarks cannot be read from the table",
        hint="set the watermark again with `arrowline state set` (or run with --full-refresh); "
        "`arrowline table expire-snapshots` keeps them, other tools' log cleanup does not",
    )


def ledger(table: DeltaTable) -> list[dict[str, Any]]:
    """The newest entry of every load the log holds, for a maintenance commit to carry."""
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for commit in history(table):
        for entry in _entries(commit):
            key = (str(entry.get("pipeline")), str(entry.get("task")))
            if int(entry.get("sequence", -1)) > int(newest.get(key, {}).get("sequence", -1)):
                newest[key] = entry
    return list(newest.values())


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_XML_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<]{1,200})</Message>")


def _said(exc: BaseException) -> str:
    """delta-rs's message: its first line, and when that is only "Generic S3 error" (or the
    like), the innermost cause it chains below it ("403 Forbidden", a DNS failure)."""
    lines = [
        _ANSI.sub("", line).strip().lstrip("↳").strip() for line in str(exc).strip().splitlines()
    ]
    lines = [line for line in lines if line]
    if not lines:
        return type(exc).__name__
    first, last = lines[0], lines[-1]
    if len(lines) > 1 and first.startswith("Generic") and first.endswith("error"):
        code, text = _XML_CODE.search(last), _XML_MESSAGE.search(last)  # an S3 error body
        if code is not None:
            last = code.group(1) + (f": {text.group(1)}" if text is not None else "")
        return f"{first}: {last[:300]}"
    return first


def translate(
    exc: BaseException, what: str, path: str | None = None, *, data_hint: str | None = None
) -> ArrowlineError:
    """A deltalake exception as an arrowline error: a lost commit race may go away on retry,
    a schema mismatch or rows that fail the table's checks are about the data (`data_hint`
    says what the load asked of them), the rest is terminal."""
    from deltalake.exceptions import CommitFailedError, SchemaMismatchError

    if isinstance(exc, ArrowlineError):
        return exc
    if path is not None and not is_uri(path):
        full = disk_full(exc, Path(path))
        if full is not None:
            return full
    message = _said(exc)
    if isinstance(exc, CommitFailedError):
        return TransientTaskError(
            f"{what}: another writer committed to the table first ({message})",
            hint="the load is retried from its start; give the task more `retry` attempts "
            "when writers of one table often overlap",
        )
    if isinstance(exc, SchemaMismatchError | pa.ArrowInvalid) or "Invalid data found" in message:
        return DataError(
            f"{what}: {message.removeprefix('Generic DeltaTable error: ')}", hint=data_hint
        )
    return TaskError(f"{what}: {message}")

"""The worker's side of `executor: ray` (engine.execution.remote is the driver's): what an
attempt, or one range of a split extract, is as it travels (`RemoteAttempt`, `RemotePart`), what
comes back (`RemoteResult`), and the functions a Ray worker runs. A worker resolves the task's
connections and the workspace's from its own node's environment, copies the inputs it reads
from the object-store workspace, runs the task as the local executor would, uploads what it
wrote, and hands its log lines back masked; on the way it tells the run's progress actor the
rows it has written.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from loguru import logger

from engine.core.cancel import CancelToken
from engine.core.errors import TaskError, TransientTaskError
from engine.core.files import remove_tree
from engine.core.s3 import ObjectStoreLocation
from engine.core.watermark import RowsAfter, Watermark, WatermarkUpdate
from engine.state.manifests import manifest_schema
from engine.state.objectstore import ObjectStoreWorkspace, ensure_local
from engine.tasks import TaskContext, TaskOutcome, run_task
from engine.tasks.base import StagedElsewhere, TaskWatermarks

__all__ = [
    "NAMESPACE",
    "REPORT_EVERY_S",
    "FixedWatermarks",
    "PartWritten",
    "Progress",
    "RemoteAttempt",
    "RemotePart",
    "RemoteResult",
    "attempt_remotely",
    "read_part_remotely",
]


@dataclass(frozen=True)
class FixedWatermarks:
    """What an attempt asks of the run's watermarks, asked on the driver before it is shipped
    (the worker has no catalog): an extract's start, a load's watermarks to commit and the rows
    it is sent."""

    start: Watermark | None = None
    pending: tuple[WatermarkUpdate, ...] = ()
    rows_after: Mapping[str, RowsAfter | None] = field(default_factory=dict)

    @classmethod
    def asked(
        cls, watermarks: TaskWatermarks | None, inputs: tuple[str, ...], incremental: bool
    ) -> FixedWatermarks:
        if watermarks is None:
            return cls()
        after = {name: watermarks.rows_after(name) for name in inputs}
        start = watermarks.start() if incremental else None  # a catalog read: only if used
        return cls(start, watermarks.pending(), after)

    def for_task(self) -> TaskWatermarks:
        return TaskWatermarks(
            start=lambda: self.start,
            pending=lambda: self.pending,
            rows_after=self.rows_after.get,
        )


@dataclass(frozen=True)
class RemoteAttempt:
    """One attempt as it is shipped: plain values, nothing that reaches the driver's state."""

    pipeline: str
    run_id: str
    base_dir: Path
    task: Any
    """The planned task (engine.planning.build.PlannedTask)."""
    attempt: int
    inputs: dict[str, Any]
    workspace: str
    """The workspace setting (`s3://...`): the worker opens it with its own credentials."""
    connections: Mapping[str, Any]
    """The task's own connections, and the workspace's, as written (`${env:...}` references
    unresolved): the worker resolves them from its environment, so no secret travels through
    Ray."""
    watermarks: FixedWatermarks | None
    upload: str
    """The prefix the worker uploads the output under, chosen here so that the driver can
    delete it when the attempt is cancelled or lost after uploading."""
    cpus: float = 1.0
    """What the attempt holds on its node: its DuckDB uses as many threads."""
    memory: int | None = None
    progress: str | None = None
    """The name of the run's progress actor (`Progress`), which the worker tells the rows it
    has written so far, once a second, when the driver has made it; None: it says nothing."""


@dataclass(frozen=True)
class RemotePart:
    """One part of a split extract as it is shipped: its attempt, and the piece it reads."""

    attempt: RemoteAttempt
    piece: Any
    """What `Connector.split` gave for this part (picklable, no secret)."""
    index: int


@dataclass(frozen=True)
class PartWritten:
    """What a worker wrote and uploaded of one part."""

    name: str
    size: int
    rows: int
    digest: bytes
    schema: bytes
    """The part file's schema, serialized (the manifest's schema is the first part's)."""
    watermark: Watermark | None


class Progress:
    """A Ray actor per run, made by the driver once an attempt has run a while: the rows each
    remote attempt (each range of a split extract) has written so far, as its worker says."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}

    def report(self, key: str, rows: int) -> None:
        self.rows[key] = rows

    def rows_of(self, prefix: str) -> int:
        return sum(rows for key, rows in self.rows.items() if key.startswith(prefix))

    def forget(self, prefix: str) -> None:
        for key in [k for k in self.rows if k.startswith(prefix)]:
            del self.rows[key]


NAMESPACE = "arrowline"
"""The Ray namespace of arrowline's named actors."""
REPORT_EVERY_S = 1.0
"""How often a worker tells the rows it wrote, and the driver asks."""


class _Reporter:
    """A worker's progress callback: at most once a second, the rows so far go to the run's
    progress actor, once the driver has made it (looked up by name; best effort: a row count
    that does not arrive costs a progress display, never the attempt)."""

    def __init__(self, name: str | None, key: str) -> None:
        self.name, self.key = name, key
        self.handle: Any = None
        self.last = time.monotonic()

    def __call__(self, rows: int) -> None:
        now = time.monotonic()
        if self.name is None or now - self.last < REPORT_EVERY_S:
            return
        self.last = now
        try:
            import ray

            if self.handle is None:
                self.handle = ray.get_actor(self.name, namespace=NAMESPACE)
            self.handle.report.remote(self.key, rows)
        except Exception:  # not made yet, or gone with its driver
            self.handle = None


@dataclass
class RemoteResult:
    outcome: TaskOutcome | PartWritten | None
    error: BaseException | None
    logs: list[tuple[str, str]]
    """(level, message) of each line the attempt logged, said again on the driver."""
    node: str


def attempt_remotely(shipped: RemoteAttempt) -> RemoteResult:
    """On a Ray worker: run one attempt, upload its output, and hand back its outcome."""
    return _on_worker(shipped, lambda: _attempt(shipped), f"attempt {shipped.attempt}")


def read_part_remotely(part: RemotePart) -> RemoteResult:
    """On a Ray worker: read one part of a split extract and upload it; what it wrote."""
    what = f"part {part.index} of attempt {part.attempt.attempt}"
    return _on_worker(part.attempt, lambda: _read_part(part), what)


def _on_worker(
    shipped: RemoteAttempt, work: Callable[[], TaskOutcome | PartWritten], what: str
) -> RemoteResult:
    """`work` on a Ray worker, its log lines kept (masked) for the driver's log."""
    from engine.core.secrets import redact

    logs: list[tuple[str, str]] = []
    logger.remove()  # no line of the attempt's goes to Ray's own log files, masked or not
    for package in ("engine", "connectors", "transforms", "lineage"):  # quiet as a library
        logger.enable(package)
    sink = logger.add(
        lambda m: logs.append((m.record["level"].name, redact(str(m.record["message"])))),
        level="INFO",
    )
    node = _node()
    try:
        with logger.contextualize(
            pipeline=shipped.pipeline, run_id=shipped.run_id, task_id=shipped.task.id
        ):
            started = time.monotonic()
            outcome = work()
            logger.info("{} ran on Ray node {} in {:.2f}s", what, node, time.monotonic() - started)
        return RemoteResult(outcome, None, logs, node)
    except BaseException as exc:  # handed to the driver, which classifies and retries
        return RemoteResult(None, _shippable(exc), logs, node)
    finally:
        logger.remove(sink)


_OPENED: dict[tuple[str, int], ObjectStoreWorkspace] = {}
_DATABASES: dict[tuple[int, int | None], Any] = {}


def _database(cpus: float, memory: int | None, scratch: Path) -> Any:
    """A DuckDB database per worker process and size, kept between attempts as the local
    executor keeps one per run (starting one costs ~25 ms): each attempt works in a schema of
    its own (transforms.sql.DuckDatabase), with as many threads as its CPUs and 80% of its
    memory."""
    from transforms.sql import DuckDatabase, DuckDBSettings

    key = (max(1, int(cpus)), memory)
    if key not in _DATABASES:
        _DATABASES[key] = DuckDatabase(
            DuckDBSettings(
                threads=key[0],
                memory_limit=f"{memory * 8 // 10 // 2**20}MB" if memory else None,
                temp_directory=scratch / "duckdb",
            )
        )
    return _DATABASES[key]


def _opened(shipped: RemoteAttempt, scratch: Path) -> ObjectStoreWorkspace:
    """The workspace, opened (its bucket checked) once per worker process, not per attempt;
    the connection it is read with resolved again for every attempt, from this node's
    environment (credentials that were rotated take effect)."""
    from engine.spec.settings import use_workspace_connection

    setting = shipped.workspace
    use_workspace_connection(setting, shipped.connections, shipped.base_dir)
    # by the store's client too: one made with credentials since rotated is not reused
    key = (setting, id(ObjectStoreLocation.parse(setting).filesystem()))
    if key not in _OPENED:
        _OPENED[key] = ObjectStoreWorkspace.open(setting, scratch=scratch)
    return _OPENED[key]


def _node() -> str:
    """The Ray node this worker belongs to (its host name and the node id's first digits)."""
    try:
        import ray

        return f"{os.uname().nodename}/{ray.get_runtime_context().get_node_id()[:8]}"
    except Exception:
        return os.uname().nodename


def _shippable(exc: BaseException) -> BaseException:
    """`exc`, or when it cannot be pickled back to the driver, a TaskError saying the same
    (transient when it was)."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        kind = TransientTaskError if getattr(exc, "transient", False) else TaskError
        return kind(f"{type(exc).__name__}: {exc}")


def _scratch() -> Path:
    return Path(tempfile.gettempdir()) / "arrowline-ray" / str(os.getuid())


def _context(
    shipped: RemoteAttempt,
    workspace: ObjectStoreWorkspace,
    staging: Path,
    scratch: Path,
    part: int | None = None,
) -> TaskContext:
    """The attempt's context on this worker: its connections resolved here (secrets: this
    node's), its inputs copied here."""
    from connectors.registry import connector_of

    connections = {
        name: connector_of(spec).resolve(name, spec, shipped.base_dir)
        for name, spec in shipped.connections.items()
    }
    inputs = {name: ensure_local(table, workspace.cache) for name, table in shipped.inputs.items()}
    return TaskContext(
        shipped.pipeline,
        shipped.run_id,
        shipped.base_dir,
        shipped.task,
        shipped.attempt,
        inputs,
        staging,
        CancelToken(),
        progress=_Reporter(shipped.progress, _progress_key(shipped, part)),
        duckdb=_database(shipped.cpus, shipped.memory, scratch),
        connections=connections,
        watermarks=shipped.watermarks.for_task() if shipped.watermarks else None,
    )


def _progress_key(shipped: RemoteAttempt, part: int | None = None) -> str:
    """An attempt's key in the progress actor; a split extract's ranges each have their own
    under it (the driver sums them)."""
    return f"{shipped.task.id}#{shipped.attempt}/" + ("" if part is None else str(part))


def _read_part(part: RemotePart) -> PartWritten:
    from engine.execution.cache import part_digest
    from engine.tasks.extract import write_part

    shipped = part.attempt
    scratch = _scratch()
    workspace = _opened(shipped, scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="part-", dir=scratch))  # parts may share a node
    try:
        context = _context(shipped, workspace, folder / "staging", scratch, part.index)
        path, rows, watermark = write_part(context, part.piece, part.index)
        task_id = shipped.task.id
        workspace.send_file(
            path, path.name, shipped.pipeline, task_id, shipped.run_id, shipped.upload
        )
        schema = pq.read_schema(path).serialize().to_pybytes()
        return PartWritten(
            path.name, path.stat().st_size, rows, part_digest(path), schema, watermark
        )
    finally:
        remove_tree(folder)


def _attempt(shipped: RemoteAttempt) -> TaskOutcome:
    scratch = _scratch()
    workspace = _opened(shipped, scratch)
    task_id = shipped.task.id
    staging = workspace.staging(shipped.pipeline, task_id, shipped.run_id, shipped.attempt)
    context = _context(shipped, workspace, staging, scratch)
    outcome = run_task(context)
    if outcome.produces_output and staging.is_dir():
        from engine.execution.cache import content_hash

        digest = content_hash(staging)
        manifest = workspace.send(
            staging, shipped.pipeline, task_id, shipped.run_id, upload=shipped.upload
        )
        final = workspace.output_dir(shipped.pipeline, task_id, shipped.run_id)
        workspace.keep_copy(staging, final, manifest["upload"])  # read here without a download
        schema = manifest_schema(manifest) if manifest["schema"] else None  # read once, there
        outcome = replace(outcome, elsewhere=StagedElsewhere(manifest, digest, schema))
    return outcome

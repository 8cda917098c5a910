"""Task attempts on a Ray cluster: `executor: ray` (or `arrowline run --executor ray`).

The driver, this process, keeps what it keeps with the local executor: the plan, the state
machine, the catalog, the run lock, retries, timeouts and retention. Only an attempt's work moves:
`RayRunner` is the executor's task runner, and each call ships one attempt to a Ray worker as a
Ray task holding the task's declared `resources:` (CPUs, memory). On the worker,
`attempt_remotely` copies the attempt's inputs from the object-store workspace, runs the task as
the local executor would (engine.tasks.run_task), uploads the output under an upload of its own
and hands back the outcome with what the driver needs of the output (`StagedElsewhere`: the
manifest, the content hash, the schema), and the log lines it wrote. The driver then commits
the upload with its manifest, as it commits a local attempt's (engine.state.objectstore).

An extract whose source reads in parts (`Connector.split`: a partitioned PostgreSQL read) is
spread further: the driver opens the split, which holds what the parts share (the snapshot it
exported) while every part runs as a Ray task of its own (`read_part_remotely`) that reads its
piece and uploads its one part file into the attempt's upload; then the driver writes the
manifest naming them all. A part that fails cancels the others, and the upload is deleted.

So the workspace must be an object store every node reaches; every node needs the project's
files at the same path (a shared volume or the image), and the credentials of the store and of
the pipeline's connections in its environment: secrets never travel through Ray.

An attempt a timeout or Ctrl-C stops is cancelled on its worker (`ray.cancel`, force); one whose
worker or node dies is a transient failure, retried by the task's retry policy on a live node.
Loads commit through the same ledgers as locally, so a retried attempt loads each row once.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pyarrow.parquet as pq
from loguru import logger

from engine.core.cancel import CancelToken
from engine.core.errors import Cancelled, DefinitionError, TaskError, TransientTaskError
from engine.core.files import remove_tree
from engine.core.s3 import ObjectStoreLocation, workspace_connection
from engine.core.watermark import RowsAfter, Watermark, WatermarkUpdate
from engine.planning.build import Plan
from engine.state.manifests import manifest_schema, new_upload, parts_manifest
from engine.state.objectstore import ObjectStoreWorkspace, ensure_local
from engine.state.workspace import Workspace
from engine.tasks import TaskContext, TaskOutcome, run_task
from engine.tasks.base import StagedElsewhere, TaskWatermarks

__all__ = [
    "RAY_INSTALL",
    "RayRunner",
    "attempt_remotely",
    "read_part_remotely",
    "refuse_streams",
]

RAY_INSTALL = "pip install 'arrowline[ray]'"
_POLL_S = 0.1
_SETTLE_S = 30.0


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
    shipped: RemoteAttempt, workspace: ObjectStoreWorkspace, staging: Path, scratch: Path
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
        duckdb=_database(shipped.cpus, shipped.memory, scratch),
        connections=connections,
        watermarks=shipped.watermarks.for_task() if shipped.watermarks else None,
    )


def _read_part(part: RemotePart) -> PartWritten:
    from engine.execution.cache import part_digest
    from engine.tasks.extract import write_part

    shipped = part.attempt
    scratch = _scratch()
    workspace = _opened(shipped, scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="part-", dir=scratch))  # parts may share a node
    try:
        context = _context(shipped, workspace, folder / "staging", scratch)
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


class RayRunner:
    """The executor's task runner when attempts run on a Ray cluster."""

    def __init__(self, plan: Plan, workspace: Workspace, address: str | None) -> None:
        self.remote = True
        """Read by the workspace's attempt wrapper (through functools.wraps, which copies an
        instance's attributes): inputs are copied where the attempt runs, not here."""
        if not isinstance(workspace, ObjectStoreWorkspace):
            raise DefinitionError(
                "executor: ray runs attempts on other hosts, and the workspace is this host's "
                f"folder ({workspace.describe()})",
                hint="set `workspace: s3://bucket/prefix` (or $ARROWLINE_WORKSPACE) to an "
                "object store every node reaches",
            )
        self.plan = plan
        self.workspace = workspace
        self.workspace_uri = workspace.setting
        self.ray = _connect(address)
        self._function = self.ray.remote(attempt_remotely)
        self._part = self.ray.remote(read_part_remotely)
        _check_resources(self.ray, plan)

    def __call__(self, context: TaskContext) -> TaskOutcome:
        task = context.task
        resources = getattr(task.spec, "resources", None)
        options: dict[str, Any] = {"max_retries": 0, "num_cpus": 1.0}
        if resources is not None:
            options["num_cpus"] = resources.cpu
            if resources.memory:
                options["memory"] = resources.memory
        shipped = self.shipped(context, options)
        try:
            split = self._split(context, shipped, options)
            if split is not None:
                return split
            reference = self._function.options(**options).remote(shipped)
            (result,) = self._results(context, [reference])
        except BaseException:  # stopped, failed or lost, perhaps after (a part) uploaded
            final = self.workspace.output_dir(context.pipeline, task.id, context.run_id)
            self.workspace.drop_upload(final, shipped.upload)
            raise
        assert isinstance(result.outcome, TaskOutcome)
        return result.outcome

    def shipped(self, context: TaskContext, options: Mapping[str, Any]) -> RemoteAttempt:
        """The attempt as it travels: the task's connections unresolved, nothing else."""
        task = context.task
        named = {task.spec.connection, workspace_connection(self.workspace_uri)} - {None}
        return RemoteAttempt(
            context.pipeline,
            context.run_id,
            context.base_dir,
            task,
            context.attempt,
            dict(context.inputs),
            self.workspace_uri,
            {n: spec for n, spec in self.plan.connections.items() if n in named},
            FixedWatermarks.asked(
                context.watermarks, tuple(context.inputs), getattr(task, "incremental", False)
            ),
            new_upload(),
            options["num_cpus"],
            options.get("memory"),
        )

    def _split(
        self, context: TaskContext, shipped: RemoteAttempt, options: Mapping[str, Any]
    ) -> TaskOutcome | None:
        """An extract whose source reads in parts (`Connector.split`: a partitioned PostgreSQL
        read) runs each part as a Ray task of its own, with the task's resources, on whichever
        nodes have them; the driver holds what the parts share (the exported snapshot) until
        every part is read, and writes the one manifest naming all of them. None: the task is
        no such extract."""
        from engine.execution.cache import combined_digest
        from engine.tasks.extract import extract_outcome

        spec = context.task.spec
        owner, config = spec.connector, spec.extract
        if owner is None or config is None:
            return None
        start = shipped.watermarks.start if shipped.watermarks else None
        splitting = owner.split(config, context.connector(watermark=start))
        if splitting is None:
            return None
        with splitting as pieces:
            references = [
                self._part.options(**options).remote(RemotePart(shipped, piece, index))
                for index, piece in enumerate(pieces)
            ]
            results = self._results(context, references)
        written = [cast(PartWritten, result.outcome) for result in results]
        schema = pa.ipc.read_schema(pa.py_buffer(written[0].schema))
        manifest = parts_manifest(
            shipped.upload, [(w.name, w.size, w.rows) for w in written], schema
        )
        nodes = sorted({result.node for result in results})
        details: dict[str, Any] = {"streams": len(written), "ray_nodes": nodes}
        rows = sum(w.rows for w in written)
        outcome = extract_outcome(context, rows, 0, start, [w.watermark for w in written], details)
        digest = combined_digest(w.digest for w in written)
        return replace(outcome, elsewhere=StagedElsewhere(manifest, digest, schema))

    def _results(self, context: TaskContext, references: list[Any]) -> list[RemoteResult]:
        """What each Ray task returned, in order, its log lines said in the run's log. The
        first that failed (or was lost) is raised, and the others are cancelled; so are all
        when the attempt is stopped."""
        ray = self.ray
        pending, done = list(references), {}
        try:
            while pending:
                if context.cancel.cancelled:
                    raise Cancelled(f"attempt {context.attempt} was stopped on its Ray worker")
                ready, pending = ray.wait(pending, num_returns=1, timeout=_POLL_S)
                for reference in ready:
                    result = self._get(context, reference)
                    self._say(context, result)
                    if result.error is not None:
                        raise result.error
                    done[reference] = result
        except BaseException:
            for reference in pending:
                ray.cancel(reference, force=True)
            # Settled before the caller deletes the upload, so that no part lands after it
            # (a cancelled task that was sending its file finishes or dies first).
            if pending:
                ray.wait(pending, num_returns=len(pending), timeout=_SETTLE_S)
            raise
        return [done[reference] for reference in references]

    def _get(self, context: TaskContext, reference: Any) -> RemoteResult:
        errors = self.ray.exceptions
        try:
            return cast(RemoteResult, self.ray.get(reference))
        except errors.TaskCancelledError:
            raise Cancelled(f"attempt {context.attempt} was cancelled on its Ray worker") from None
        except errors.RayTaskError as exc:  # not the task's own error (that comes back as a
            # value): the attempt could not even start there, and would not the next time
            raise TaskError(f"the attempt could not run on its Ray worker: {exc}") from None
        except errors.RayError as exc:  # the node, the worker or the object went away
            first = str(exc).splitlines()[0]
            raise TransientTaskError(
                f"the Ray worker running attempt {context.attempt} was lost: {first}",
                hint="the task's retry policy runs it again on a live node",
            ) from None

    def _say(self, context: TaskContext, result: RemoteResult) -> None:
        task = context.task
        for level, message in result.logs:  # the worker's lines, in the run's own log
            logger.bind(task_id=task.id, node=result.node).log(level, message)
        if result.error is not None:
            logger.bind(task_id=task.id).info(
                "attempt {} failed on Ray node {}", context.attempt, result.node
            )


def _connect(address: str | None) -> Any:
    """Ray, connected to the cluster at `address` (None: one started in this process)."""
    try:
        import ray
    except ImportError:
        raise DefinitionError(
            "executor: ray needs Ray, which is not installed", hint=RAY_INSTALL
        ) from None
    if not ray.is_initialized():
        started = time.monotonic()
        _answers(address)
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise DefinitionError(
                f"the Ray cluster at {address or 'a new local instance'} does not answer: {exc}",
                hint="`ray status` on a node says whether the cluster is up; `auto` joins the "
                "cluster this host belongs to, `ray://host:10001` a remote one",
            ) from None
        logger.debug("joined the Ray cluster in {:.1f}s", time.monotonic() - started)
    return ray


def _answers(address: str | None) -> None:
    """A cluster's address (`ray://host:port`, or a head's `host:port`) takes a TCP connection
    within 5 s, or the cluster is said not to answer (Ray's own client retries for half a
    minute, and its driver for ever)."""
    import socket
    from urllib.parse import urlsplit

    if address is None or address == "auto":
        return
    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    if parts.hostname is None or parts.port is None:
        raise DefinitionError(f"Ray address {address!r} is not ray://host:port")
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=5).close()
    except OSError as exc:
        raise DefinitionError(
            f"the Ray cluster at {address} does not answer: {exc}",
            hint="is its head's Ray Client server (port 10001 by default) reachable from here?",
        ) from None


def _check_resources(ray: Any, plan: Plan) -> None:
    """A task that asks more than any live node has would wait forever: refused before the run."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    most_cpu = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    most_memory = max((n.get("memory", 0.0) for n in nodes), default=0.0)
    for task in plan.to_run:
        resources = getattr(task.spec, "resources", None)
        cpu = resources.cpu if resources is not None else 1.0
        memory = resources.memory if resources is not None else None
        if not any(  # one node with both
            n.get("CPU", 0.0) >= cpu and (memory is None or n.get("memory", 0.0) >= memory)
            for n in nodes
        ):
            asked = f"{cpu:g} CPU" + (f", {memory:,} bytes of memory" if memory else "")
            raise DefinitionError(
                f"task {task.id!r}{task.at} asks for {asked}, and no node of the Ray cluster has "
                f"that much (the most any has: {most_cpu:g} CPU, {most_memory:,.0f} bytes)",
                hint="lower its `resources:`, or add a larger node",
            )


def refuse_streams(plan: Plan) -> None:
    """An extract that keeps no output (`materialize: ephemeral`) lives only as a stream to
    its loads in one process: it cannot run with attempts on several hosts."""
    for task in plan.to_run:
        if task.spec.materialize == "ephemeral" and task.spec.extract is not None:
            raise DefinitionError(
                f"task {task.id!r}{task.at} is an extract with materialize: ephemeral, which "
                "streams to its loads inside one process; with executor: ray each attempt runs "
                "on its own worker",
                hint="keep its output (remove materialize: ephemeral) to run it on Ray",
            )

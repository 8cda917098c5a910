"""Task attempts on a Ray cluster: `executor: ray` (or `arrowline run --executor ray`).

The driver, this process, keeps what it keeps with the local executor: the plan, the state
machine, the catalog, the run lock, retries, timeouts and retention. Only an attempt's work moves:
`RayRunner` is the executor's task runner, and each call ships one attempt to a Ray worker as a
Ray task holding the task's declared `resources:` (CPUs, memory). On the worker,
`attempt_remotely` (engine.execution.ray_worker) copies the attempt's inputs from the
object-store workspace, runs the task as the local executor would (engine.tasks.run_task),
uploads the output under an upload of its own and hands back the outcome with what the driver
needs of the output (`StagedElsewhere`: the manifest, the content hash, the schema), and the
log lines it wrote. The driver then commits the upload with its manifest, as it commits a local
attempt's (engine.state.objectstore).

An extract whose source reads in parts (`Connector.split`: a partitioned PostgreSQL read) is
spread further: the driver opens the split, which holds what the parts share (the snapshot it
exported) while every part runs as a Ray task of its own (`read_part_remotely`) that reads its
piece and uploads its one part file into the attempt's upload; then the driver writes the
manifest naming them all. A part that fails cancels the others, and the upload is deleted.

An attempt that runs longer than a second shows its rows as a local one does: the driver makes
the run's progress actor (`Progress`), which workers tell the rows they wrote once a second,
and asks it as often; the actor goes when the run ends.

So the workspace must be an object store every node reaches; every node needs the project's
files at the same path (a shared volume or the image), and the credentials of the store and of
the pipeline's connections in its environment: secrets never travel through Ray.

An attempt a timeout or Ctrl-C stops is cancelled on its worker (`ray.cancel`, force); one whose
worker or node dies is a transient failure, retried by the task's retry policy on a live node.
Loads commit through the same ledgers as locally, so a retried attempt loads each row once.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, cast

import pyarrow as pa
from loguru import logger

from engine.core.errors import Cancelled, DefinitionError, TaskError, TransientTaskError
from engine.core.s3 import workspace_connection
from engine.execution.ray_worker import (
    NAMESPACE,
    REPORT_EVERY_S,
    FixedWatermarks,
    PartWritten,
    Progress,
    RemoteAttempt,
    RemotePart,
    RemoteResult,
    attempt_remotely,
    read_part_remotely,
)
from engine.planning.build import Plan
from engine.state.manifests import new_upload, parts_manifest
from engine.state.objectstore import ObjectStoreWorkspace
from engine.state.workspace import Workspace
from engine.tasks import TaskContext, TaskOutcome
from engine.tasks.base import StagedElsewhere

__all__ = ["RAY_INSTALL", "RayRunner", "refuse_streams"]

RAY_INSTALL = "pip install 'arrowline[ray]'"
_POLL_S = 0.1
_SETTLE_S = 30.0


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
        self._progress_name = f"progress-{plan.pipeline}-{plan.run_id}"
        self._progress: Any = None
        self._progress_lock = threading.Lock()
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
            self._progress_name,
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
        asked, answer = time.monotonic(), None
        key = f"{context.task.id}#{context.attempt}/"
        try:
            while pending:
                if context.cancel.cancelled:
                    raise Cancelled(f"attempt {context.attempt} was stopped on its Ray worker")
                if time.monotonic() - asked >= REPORT_EVERY_S:
                    asked = time.monotonic()
                    answer = self._ask_progress(context, key, answer)
                ready, pending = ray.wait(pending, num_returns=1, timeout=_POLL_S)
                for reference in ready:
                    result = self._get(context, reference)
                    self._say(context, result)
                    if result.error is not None:
                        raise _from_node(result.error, result.node)
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

    def _ask_progress(self, context: TaskContext, key: str, answer: Any) -> Any:
        """The rows the attempt's worker(s) said they wrote, into the run's progress display,
        without waiting: `answer` is the question asked a second ago, taken when it is there;
        the next one is returned. The run's progress actor is made the first time an attempt
        has run a second (a run of short tasks never makes it). Best effort: a failure costs
        the display only."""
        try:
            with self._progress_lock:
                if self._progress is None:
                    actor = self.ray.remote(num_cpus=0)(Progress)
                    self._progress = actor.options(
                        name=self._progress_name, namespace=NAMESPACE, get_if_exists=True
                    ).remote()
            if answer is not None:
                if not self.ray.wait([answer], timeout=0)[0]:
                    return answer  # not answered yet (the actor is still starting)
                rows = self.ray.get(answer)
                if rows:
                    context.progress(rows)
            return self._progress.rows_of.remote(key)
        except Exception as exc:
            logger.bind(task_id=context.task.id).debug("no progress from Ray: {}", exc)
            return None

    def close(self) -> None:
        """The run ended: its progress actor goes (a scheduler's process runs many)."""
        with self._progress_lock:
            actor, self._progress = self._progress, None
        if actor is not None:
            with contextlib.suppress(Exception):
                self.ray.kill(actor)

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


def _from_node(error: BaseException, node: str) -> BaseException:
    """A worker's error as the run says it: on which node; and an environment variable a
    connection names that the node lacks is the node's (the environment its `ray start` ran
    in), not the shell that ran arrowline, which has it when the run got this far."""
    from engine.core.errors import ArrowlineError

    if not isinstance(error, ArrowlineError):
        return error
    error.message = f"on Ray node {node}: {error.message}"
    if "environment variable" in error.message and "is not set" in error.message:
        error.hint = (
            "a Ray node resolves connections from its own environment: set the variable "
            "where its `ray start` runs (or in the cluster's pod spec), then restart it"
        )
    elif "cannot be reached" in error.message or "ACCESS_DENIED" in error.message:
        error.hint = (
            (error.hint + "; ") if error.hint else ""
        ) + "the node's own credentials are used (the environment its `ray start` ran in)"
    return error


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


_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
"""An HTTP/2 client's preface and an empty SETTINGS frame: a gRPC server (Ray's GCS, its Client
server) answers with a SETTINGS frame of its own."""


def _answers(address: str | None) -> None:
    """A cluster's address (`ray://host:port`, or a head's `host:port`) takes a TCP connection
    within 5 s and answers as a gRPC server does, or the cluster is said not to answer (Ray's
    own client retries for half a minute, and its driver for ever, whatever listens there)."""
    import os
    import socket
    from urllib.parse import urlsplit

    if address is None or address == "auto":
        return
    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    if parts.hostname is None or parts.port is None:
        raise DefinitionError(f"Ray address {address!r} is not ray://host:port")
    head = (
        "its Ray Client server (port 10001 by default)"
        if parts.scheme == "ray"
        else ("its head's GCS (`ray start --head --port`, 6379 by default)")
    )
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=5) as probe:
            if os.environ.get("RAY_USE_TLS", "0") in ("0", "", "false"):  # TLS: not asked
                probe.settimeout(5)
                probe.sendall(_HTTP2_HELLO)
                frame = probe.recv(9)
                if len(frame) < 4 or frame[3] != 0x04:
                    raise DefinitionError(
                        f"{address} answers, but not as a Ray cluster: {frame[:40]!r}",
                        hint=f"give {head}; `ray status` on the head prints its address",
                    )
    except OSError as exc:
        raise DefinitionError(
            f"the Ray cluster at {address} does not answer: {exc}",
            hint=f"is {head} reachable from here?",
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

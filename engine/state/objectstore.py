"""The workspace on S3-compatible object storage: `workspace: s3://bucket/prefix`.

An object store moves no folders, so an output is published by a marker written last:

    <prefix>/<pipeline>/<task>/<run_id>/<upload>/part-00000.parquet      the rows
    <prefix>/<pipeline>/<task>/<run_id>/<upload>/quarantine/part-...     rows set aside
    <prefix>/<pipeline>/<task>/<run_id>/MANIFEST.json                    names <upload>
    <prefix>/<pipeline>/<task>/LATEST

An attempt uploads its parts under a prefix of its own (`<upload>`, unique) on its own thread,
then the run's dispatcher writes the manifest in one PUT: a reader that finds no manifest finds
no output, and one that finds it finds every part it names, with their sizes, the schema and
the row count. Publishing again for the same run (a resumed task) writes a new upload and a new
manifest, then deletes the upload the old manifest named. A process killed between its upload
and its manifest leaves an upload no manifest names: the next run of the pipeline (recovery
sweeps the run's staging) or retention removes it.

Tasks read their inputs from local paths (DuckDB, Polars and Arrow open files), so a published
output is copied into a local cache, `<cache>/<store>/<bucket>/<key>/<upload>/`, by the attempt
about to read it (`ensure_local`), never by the dispatcher; an upload never changes, and a
cached copy is used only while its files are the ones, and the sizes, its manifest names. The
output an attempt has just published is moved into the cache instead of being downloaded again.
The catalog records an output by its locator, `s3://bucket/key` (engine.core.s3.locate).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from engine.core.errors import StateError
from engine.core.faults import fault_point
from engine.core.files import remove_tree
from engine.core.s3 import ObjectStoreLocation, is_object_store, locate, named_connection, trust
from engine.core.tables import InputTable, output_parts, quarantine_parts
from engine.state.manifests import (
    MANIFEST,
    manifest_schema,
    new_upload,
    read_manifest,
    staged_manifest,
)
from engine.state.workspace import LATEST, QUARANTINE_DIR, FileSystemWorkspace, Runner

if TYPE_CHECKING:
    pass

__all__ = [
    "CACHE_ENV",
    "MANIFEST",
    "ObjectStoreWorkspace",
    "ensure_local",
    "is_object_store",
    "local_output",
    "output_present",
    "output_schema",
]

CACHE_ENV = "ARROWLINE_CACHE_DIR"


def default_cache_dir() -> Path:
    """Where outputs read from an object store are copied: $ARROWLINE_CACHE_DIR, else the
    user's cache folder."""
    named = os.environ.get(CACHE_ENV)
    if named:
        return Path(named)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "arrowline" / "objects"


class ObjectStoreWorkspace(FileSystemWorkspace):
    """Outputs under `location` in its S3 filesystem; attempts staged under the local `scratch`,
    outputs read through the local `cache`."""

    def __init__(self, location: ObjectStoreLocation, scratch: Path, cache: Path | None = None):
        super().__init__(location.filesystem(), location.root, scratch)
        self.location = location
        self.cache = cache if cache is not None else default_cache_dir()
        self._uploads: dict[Path, tuple[Path, dict[str, Any]]] = {}
        """staging folder -> (its output folder, the manifest of its upload): uploaded on
        the attempt's thread, committed by `publish`."""
        self._discarded: set[Path] = set()
        """Staging folders dropped while their attempt was still running (an abandoned one):
        its upload, when it comes, is deleted at once."""
        self._committed: dict[Path, dict[str, Any]] = {}
        """output folder -> the manifest this process wrote there (what it reads back)."""
        self._lock = threading.Lock()

    @classmethod
    def open(cls, uri: str, scratch: Path, cache: Path | None = None) -> ObjectStoreWorkspace:
        """The workspace `uri` names, its bucket checked (StateError when it cannot be reached);
        from now on this process reads that bucket at this endpoint (engine.core.s3.trust)."""
        workspace = cls(ObjectStoreLocation.parse(uri), scratch, cache)
        workspace.check()
        trust(workspace.location)
        return workspace

    def check(self) -> None:
        """Whether the bucket answers; StateError naming the location (never a secret)."""
        try:
            info = self.filesystem.get_file_info(self.location.bucket)
        except OSError as exc:
            named = self.location.connection
            held = (
                f"of connection {named!r}"
                if named
                else "in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            )
            raise StateError(
                f"workspace {self.location.describe()} cannot be reached: {exc}",
                hint=f"check the endpoint, the credentials {held}, and that the bucket exists",
            ) from exc
        if info.type == pafs.FileType.NotFound:
            raise StateError(
                f"workspace {self.location.describe()}: bucket {self.location.bucket!r} "
                "does not exist",
                hint="create it first; arrowline does not create buckets",
            )

    def describe(self) -> str:
        return self.location.describe()

    def locator(self, directory: Path) -> str:
        return self.location.locator(directory)

    def holds(self, locator: str) -> bool:
        return is_object_store(locator) and locator.startswith(
            self.location.locator(self.root) + "/"
        )

    def dataset(self) -> tuple[str, str]:
        return (f"s3://{self.location.bucket}", self.location.prefix)

    @property
    def setting(self) -> str:
        """The workspace as a setting another host opens (`s3://...?endpoint=&region=`, and
        the connection it resolves its credentials from): the store and where it answers,
        never a credential."""
        location = self.location
        named = named_connection(location.connection, location.bucket, location.prefix)
        pairs: tuple[tuple[str, str | None], ...] = (
            ("endpoint", None if named and named.endpoint else location.endpoint),
            ("region", None if named and named.region else location.region),
            ("connection", location.connection),  # each host resolves it: it says the rest
        )
        options = "&".join(f"{key}={value}" for key, value in pairs if value)
        return f"s3://{location.root.as_posix()}" + (f"?{options}" if options else "")

    # -- publishing: upload (on the attempt's thread), then the manifest ---------------------

    def uploading(self, runner: Runner) -> Runner:
        """On the attempt's thread: its inputs copied here first (an attempt run elsewhere,
        `remote`, copies them there), then its output uploaded as soon as it is written, so
        uploads of tasks running at once overlap and the dispatcher only writes manifests. An
        output uploaded elsewhere (`outcome.elsewhere`) is adopted as it is."""
        here = not getattr(runner, "remote", False)

        @functools.wraps(runner)
        def run(context: Any) -> Any:
            if here:
                context.inputs = {n: ensure_local(t, self.cache) for n, t in context.inputs.items()}
            outcome = runner(context)
            staging, elsewhere = context.staging_path, getattr(outcome, "elsewhere", None)
            if elsewhere is not None:
                final = self.output_dir(context.pipeline, context.task.id, context.run_id)
                self._uploaded(staging, final, elsewhere.manifest)
            elif outcome.produces_output and staging.is_dir():
                self.upload(staging, context.pipeline, context.task.id, context.run_id)
            return outcome

        return cast(Runner, run)

    def upload(self, staging: Path, pipeline: str, task_id: str, run_id: str) -> dict[str, Any]:
        """Copy a staged output under an upload prefix of its own, named by no manifest yet;
        its manifest. `publish` commits it; `discard` deletes it."""
        manifest = self.send(staging, pipeline, task_id, run_id)
        self._uploaded(staging, self.output_dir(pipeline, task_id, run_id), manifest)
        return manifest

    def send(
        self, staging: Path, pipeline: str, task_id: str, run_id: str, upload: str | None = None
    ) -> dict[str, Any]:
        """The upload alone (as `upload`, else a new one), for an attempt on another host whose
        driver commits it: its manifest."""
        upload = upload or new_upload()
        for file in (*output_parts(staging), *quarantine_parts(staging)):
            self.send_file(
                file, file.relative_to(staging).as_posix(), pipeline, task_id, run_id, upload
            )
        return staged_manifest(staging, upload)

    def send_file(
        self, file: Path, name: str, pipeline: str, task_id: str, run_id: str, upload: str
    ) -> None:
        """One file of an upload (a part of a split extract, sent by the host that read it)."""
        final = self.output_dir(pipeline, task_id, run_id)
        pafs.copy_files(
            str(file),
            f"{final / upload}/{name}",
            source_filesystem=pafs.LocalFileSystem(),
            destination_filesystem=self.filesystem,
        )

    def _uploaded(self, staging: Path, final: Path, manifest: dict[str, Any]) -> None:
        with self._lock:
            dropped = staging in self._discarded
            if not dropped:
                self._uploads[staging] = (final, manifest)
        if dropped:  # its attempt was abandoned meanwhile: nobody will publish it
            self._delete_upload(final, manifest["upload"])

    def drop_upload(self, final: Path, upload: str) -> None:
        """Delete an upload no manifest will name (an attempt stopped or lost after it sent);
        one never made is no error."""
        self._delete_upload(final, upload)

    def _delete_upload(self, final: Path, upload: str) -> None:
        with contextlib.suppress(OSError):
            self.filesystem.delete_dir(str(final / upload))

    def discard(self, staging: Path) -> None:
        with self._lock:
            uploaded = self._uploads.pop(staging, None)
            if uploaded is None:
                self._discarded.add(staging)
        if uploaded is not None:
            self._delete_upload(uploaded[0], uploaded[1]["upload"])
        super().discard(staging)

    def publish(self, staging: Path, pipeline: str, task_id: str, run_id: str) -> Path:
        final = self.output_dir(pipeline, task_id, run_id)
        with self._lock:
            uploaded = self._uploads.pop(staging, None)
        if uploaded is None or uploaded[0] != final:
            self.upload(staging, pipeline, task_id, run_id)
            with self._lock:
                uploaded = self._uploads.pop(staging)
        manifest = uploaded[1]
        upload = manifest["upload"]
        fault_point("objectstore.before_manifest")
        previous = read_manifest(self.filesystem, final)
        with self.filesystem.open_output_stream(str(final / MANIFEST)) as stream:
            stream.write(json.dumps(manifest).encode())
        with self._lock:
            self._committed[final] = manifest
        if previous is not None and previous["upload"] != upload:
            self._delete_upload(final, previous["upload"])
        self._write_latest(pipeline, task_id, run_id)
        self.keep_copy(staging, final, upload)
        return final

    def _write_latest(self, pipeline: str, task_id: str, run_id: str) -> None:
        """One PUT: an object store replaces an object whole."""
        latest = self.task_dir(pipeline, task_id) / LATEST
        with self.filesystem.open_output_stream(str(latest)) as stream:
            stream.write((run_id + "\n").encode())

    def keep_copy(self, staging: Path, final: Path, upload: str) -> None:
        """The staged files become the cached copy of what was just uploaded (none when the
        attempt ran on another host: its staging is there)."""
        target = _cached_folder(self.cache, self.location, final, upload)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(staging, target) if not target.exists() else remove_tree(staging)
        except OSError:  # not here, or another filesystem: the first reader copies it
            remove_tree(staging)

    # -- reading: the manifest here, the files where they are read ----------------------------

    def _manifest(self, directory: Path) -> dict[str, Any] | None:
        """The output's manifest: the one this process committed, else the store's."""
        with self._lock:
            committed = self._committed.get(directory)
        return committed if committed is not None else read_manifest(self.filesystem, directory)

    def table(self, task_id: str, run_id: str, directory: Path) -> InputTable:
        manifest = self._manifest(directory)
        if manifest is None:
            raise StateError(
                f"output of task {task_id!r} from run {run_id} is missing "
                f"({self.locator(directory)}: no manifest)",
                hint="the workspace was cleaned, or the upload never finished; run the task again",
            )
        if not manifest["parts"]:
            raise StateError(
                f"output of task {task_id!r} from run {run_id} has no rows' file "
                f"({self.locator(directory)})"
            )
        # nothing is downloaded here: the attempt that reads it copies it (`ensure_local`)
        folder = _cached_folder(self.cache, self.location, directory, manifest["upload"])
        files = tuple(folder / name for name, _ in manifest["parts"])
        size = sum(size for _, size in manifest["parts"])
        schema, rows = manifest_schema(manifest), manifest["rows"]
        locator = self.locator(directory)
        return InputTable(task_id, run_id, files, schema, rows, size, locator=locator)

    def quarantine_files(self, directory: Path) -> tuple[Path, ...]:
        manifest = self._manifest(directory)
        if manifest is None:
            return ()  # as a folder that is not there holds no files
        folder = _localize(self.filesystem, self.location, directory, self.cache, manifest)
        return quarantine_parts(folder)

    # -- retention and recovery ---------------------------------------------------------------

    def output_bytes(self, directory: Path) -> int:
        """What the manifest names (the parts and the quarantine); an upload no manifest names
        counts whole."""
        manifest = read_manifest(self.filesystem, directory)
        if manifest is None:
            return super().output_bytes(directory)
        return sum(size for _, size in (*manifest["parts"], *manifest["quarantine"]))

    def remove_output(self, directory: Path) -> None:
        with self._lock:
            self._committed.pop(directory, None)
        with contextlib.suppress(FileNotFoundError):
            self.filesystem.delete_dir(str(directory))
        remove_tree(_cache_key_dir(self.cache, self.location, directory))

    def prune_copies(self, pipeline: str) -> int:
        top = _cache_key_dir(self.cache, self.location, self.root / pipeline)
        removed = 0
        for run_dir in sorted(top.glob("*/*")) if top.is_dir() else []:
            directory = self.root / pipeline / run_dir.parent.name / run_dir.name
            manifest = read_manifest(self.filesystem, directory)
            for copy in run_dir.iterdir():
                if manifest is None or copy.name != manifest["upload"]:
                    remove_tree(copy)
                    removed += 1
        return removed

    def sweep_staging(self, pipeline: str, run_id: str) -> None:
        """Local staging of the run, and uploads of the run that no manifest names (an attempt
        killed between its upload and its manifest)."""
        super().sweep_staging(pipeline, run_id)
        for task in self._folders(self.root / pipeline):
            run_dir = Path(task.path) / run_id
            manifest = read_manifest(self.filesystem, run_dir)
            named = manifest["upload"] if manifest is not None else None
            for upload in self._folders(run_dir):
                if upload.base_name != named:
                    with contextlib.suppress(OSError):
                        self.filesystem.delete_dir(upload.path)


# -- the local cache ---------------------------------------------------------------------------


def _cache_key_dir(cache: Path, location: ObjectStoreLocation, directory: Path) -> Path:
    return cache / location.store_key / Path(*directory.parts)


def _cached_folder(
    cache: Path, location: ObjectStoreLocation, directory: Path, upload: str
) -> Path:
    return _cache_key_dir(cache, location, directory) / upload


def _complete(folder: Path, manifest: dict[str, Any]) -> bool:
    """A cached copy holds exactly the files, of the sizes, its manifest names."""
    for subfolder, listed in (("", manifest["parts"]), (QUARANTINE_DIR, manifest["quarantine"])):
        where = folder / subfolder if subfolder else folder
        found = {p.name: p.stat().st_size for p in where.glob("part-*.parquet")}
        if found != dict(listed):
            return False
    return True


_LOCALIZING = threading.Lock()


def _sweep_incoming(target: Path) -> None:
    """Half-downloaded copies of `target` whose process is gone (killed while copying)."""
    if not target.parent.is_dir():
        return
    for folder in target.parent.glob(f".{target.name}.*"):
        pid = folder.name.split(".")[2] if folder.name.count(".") >= 3 else ""
        if pid.isdigit() and not _alive(int(pid)):
            remove_tree(folder)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _localize(
    filesystem: Any,
    location: ObjectStoreLocation,
    directory: Path,
    cache: Path,
    manifest: dict[str, Any] | None = None,
) -> Path:
    """The output the manifest in `directory` names (`manifest`, when read already), copied
    into `cache` unless a complete copy is there."""
    shown = location.locator(directory)
    if manifest is None:
        manifest = read_manifest(filesystem, directory)
    if manifest is None:
        raise StateError(
            f"output {shown} is missing (no manifest: removed, or its upload never finished)",
            hint="the workspace was cleaned; run the task again",
        )
    upload = manifest["upload"]
    target = _cached_folder(cache, location, directory, upload)
    if target.is_dir() and _complete(target, manifest):
        return target
    _sweep_incoming(target)
    incoming = target.with_name(f".{upload}.{os.getpid()}.{threading.get_ident()}")
    remove_tree(incoming)
    names = [("", name, size) for name, size in manifest["parts"]]
    names += [(QUARANTINE_DIR, name, size) for name, size in manifest["quarantine"]]
    for folder, name, size in names:
        local = incoming / folder / name if folder else incoming / name
        local.parent.mkdir(parents=True, exist_ok=True)
        remote = f"{directory / upload}/{folder + '/' if folder else ''}{name}"
        try:
            pafs.copy_files(
                remote,
                str(local),
                source_filesystem=filesystem,
                destination_filesystem=pafs.LocalFileSystem(),
            )
        except OSError as exc:
            remove_tree(incoming)
            raise StateError(f"output {shown}: {name} cannot be read: {exc}") from exc
        if local.stat().st_size != size:
            remove_tree(incoming)
            raise StateError(f"output {shown}: {name} is not the size its manifest says")
    incoming.mkdir(parents=True, exist_ok=True)  # an output with no rows' file at all
    with _LOCALIZING:
        if target.is_dir() and not _complete(target, manifest):
            remove_tree(target)  # a damaged copy: replaced by the whole one
        try:
            os.rename(incoming, target)
        except OSError:  # another reader cached it first
            remove_tree(incoming)
    return target


# -- outputs by their locator (the catalog's output_path) ---------------------------------------


def ensure_local(table: InputTable, cache: Path | None = None) -> InputTable:
    """`table` with its files on this disk: an output in an object store is copied into
    `cache` (default: this host's) unless a complete copy is here; an ephemeral query's inputs
    likewise. Called on the thread (or host) of the attempt about to read it."""
    if table.query is not None:
        inputs = {n: ensure_local(t, cache) for n, t in table.query.inputs.items()}
        return replace(table, query=replace(table.query, inputs=inputs))
    if table.locator is None:
        return table
    planned = table.files[0].parent.name if table.files else None  # the upload it was read from
    location, directory = locate(table.locator)
    if planned is not None:  # a complete copy of that very upload here: no request at all
        here = _cached_folder(cache or default_cache_dir(), location, directory, planned)
        names = [f.name for f in table.files]
        found = sorted(here.glob("part-*.parquet")) if here.is_dir() else []
        if [f.name for f in found] == names and sum(f.stat().st_size for f in found) == table.bytes:
            return replace(table, files=tuple(found))
    folder = local_output(table.locator, cache)
    if planned is not None and folder.name != planned:
        raise StateError(
            f"the output of task {table.task_id!r} from run {table.run_id} was published again "
            f"after this run planned with it ({table.locator})",
            hint="run again: it plans with the output as it is now",
        )
    return replace(table, files=output_parts(folder))


def output_present(locator: str) -> bool:
    """Whether the output a catalog row names is still published. StateError when the store
    cannot be asked: a planner must not take an unreachable store for a deleted output."""
    if not is_object_store(locator):
        return Path(locator).exists()
    location, directory = locate(locator)
    return read_manifest(location.filesystem(), directory) is not None


def local_output(locator: str, cache: Path | None = None) -> Path:
    """The output a catalog row names, as a local folder (part-*.parquet, quarantine/): itself
    when it is on this disk, else a complete copy in the cache."""
    if not is_object_store(locator):
        return Path(locator)
    location, directory = locate(locator)
    folder = cache if cache is not None else default_cache_dir()
    return _localize(location.filesystem(), location, directory, folder)


def output_schema(locator: str) -> Any:
    """The Arrow schema of the output a catalog row names (nothing is downloaded); None when
    it is not (or no longer) there."""
    if not is_object_store(locator):
        files = output_parts(Path(locator))
        try:
            return pq.read_schema(files[0]) if files else None
        except OSError:
            return None
    location, directory = locate(locator)
    manifest = read_manifest(location.filesystem(), directory)
    if manifest is None or manifest.get("schema") is None:
        return None
    return manifest_schema(manifest)

"""The workspace on S3-compatible object storage: `workspace: s3://bucket/prefix`.

    s3://bucket/prefix[?endpoint=http://host:port&region=name]

Endpoint and region may also come from the environment (AWS_ENDPOINT_URL_S3 or
AWS_ENDPOINT_URL, AWS_REGION or AWS_DEFAULT_REGION); credentials come only from the environment
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, or the SDK's own chain), never from
the URI, which is written into the catalog and the logs.

An object store moves no folders, so an output is published by a marker written last:

    <prefix>/<pipeline>/<task>/<run_id>/<upload>/part-00000.parquet      the rows
    <prefix>/<pipeline>/<task>/<run_id>/<upload>/quarantine/part-...     rows set aside
    <prefix>/<pipeline>/<task>/<run_id>/MANIFEST.json                    names <upload>
    <prefix>/<pipeline>/<task>/LATEST

An attempt uploads its parts under a prefix of its own (`<upload>`, unique), then writes the
manifest in one PUT: a reader that finds no manifest finds no output, and one that finds it
finds every part it names. Publishing again for the same run (a resumed task) writes a new
upload and a new manifest, then deletes the upload the old manifest named. A process killed
between its upload and its manifest leaves an upload no manifest names: the next run of the
pipeline (recovery sweeps the run's staging) or retention removes it.

Tasks read their inputs from local paths (DuckDB, Polars and Arrow open files), so a published
output is copied once into a local cache, `<cache>/<bucket>/<key path>/<upload>/`, before it is
read; an upload never changes, so a cached copy is never stale. The output an attempt has just
published is moved into the cache instead of being downloaded again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any, cast

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from engine.core.errors import StateError
from engine.core.faults import fault_point
from engine.core.files import remove_tree
from engine.core.s3 import ObjectStoreLocation, is_object_store
from engine.core.tables import InputTable, output_parts, quarantine_parts
from engine.state.workspace import LATEST, QUARANTINE_DIR, FileSystemWorkspace, Runner

__all__ = [
    "CACHE_ENV",
    "MANIFEST",
    "ObjectStoreWorkspace",
    "is_object_store",
    "local_output",
    "output_present",
]

MANIFEST = "MANIFEST.json"
CACHE_ENV = "ARROWLINE_CACHE_DIR"


def _unique() -> str:
    return f"{uuid.uuid4().hex[:16]}"


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
        self._committed: dict[Path, dict[str, Any]] = {}
        """output folder -> the manifest this process wrote there (what it reads back)."""
        self._lock = threading.Lock()

    @classmethod
    def open(cls, uri: str, scratch: Path, cache: Path | None = None) -> ObjectStoreWorkspace:
        """The workspace `uri` names, its bucket checked: StateError when it cannot be reached."""
        workspace = cls(ObjectStoreLocation.parse(uri), scratch, cache)
        workspace.check()
        return workspace

    def check(self) -> None:
        """Whether the bucket answers; StateError naming the location (never a secret)."""
        try:
            info = self.filesystem.get_file_info(self.location.bucket)
        except OSError as exc:
            raise StateError(
                f"workspace {self.location.describe()} cannot be reached: {exc}",
                hint="check the endpoint, the credentials in AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY, and that the bucket exists",
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

    def dataset(self) -> tuple[str, str]:
        return (f"s3://{self.location.bucket}", self.location.prefix)

    # -- publishing: upload (on the attempt's thread), then the manifest ---------------------

    def uploading(self, runner: Runner) -> Runner:
        """The attempt's thread uploads its output as soon as it is written, so uploads of
        tasks running at once overlap and the run's dispatcher only writes manifests."""

        def run(context: Any) -> Any:
            outcome = runner(context)
            staging = context.staging_path
            if outcome.produces_output and staging.is_dir():
                self.upload(staging, context.pipeline, context.task.id, context.run_id)
            return outcome

        return cast(Runner, run)

    def upload(self, staging: Path, pipeline: str, task_id: str, run_id: str) -> str:
        """Copy a staged output under an upload prefix of its own, named by no manifest yet;
        its id. `publish` commits it; `discard` deletes it."""
        final = self.output_dir(pipeline, task_id, run_id)
        upload = _unique()
        files = (*output_parts(staging), *quarantine_parts(staging))
        for file in files:
            relative = file.relative_to(staging).as_posix()
            pafs.copy_files(
                str(file),
                f"{final / upload}/{relative}",
                source_filesystem=pafs.LocalFileSystem(),
                destination_filesystem=self.filesystem,
            )
        manifest = {
            "format": 1,
            "upload": upload,
            "parts": [[p.name, p.stat().st_size] for p in output_parts(staging)],
            "quarantine": [[p.name, p.stat().st_size] for p in quarantine_parts(staging)],
        }
        with self._lock:
            self._uploads[staging] = (final, manifest)
        return upload

    def discard(self, staging: Path) -> None:
        with self._lock:
            uploaded = self._uploads.pop(staging, None)
        if uploaded is not None:
            final, manifest = uploaded
            with contextlib.suppress(OSError):
                self.filesystem.delete_dir(str(final / manifest["upload"]))
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
        previous = _read_manifest(self.filesystem, final)
        with self.filesystem.open_output_stream(str(final / MANIFEST)) as stream:
            stream.write(json.dumps(manifest).encode())
        with self._lock:
            self._committed[final] = manifest
        if previous is not None and previous["upload"] != upload:
            with contextlib.suppress(OSError):
                self.filesystem.delete_dir(str(final / previous["upload"]))
        self._write_latest(pipeline, task_id, run_id)
        self._keep_local(staging, final, upload)
        return final

    def _write_latest(self, pipeline: str, task_id: str, run_id: str) -> None:
        """One PUT: an object store replaces an object whole."""
        latest = self.task_dir(pipeline, task_id) / LATEST
        with self.filesystem.open_output_stream(str(latest)) as stream:
            stream.write((run_id + "\n").encode())

    def _keep_local(self, staging: Path, final: Path, upload: str) -> None:
        """The staged files become the cached copy of what was just uploaded."""
        target = _cached_folder(self.cache, final, upload)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(staging, target) if not target.exists() else remove_tree(staging)
        except OSError:  # another filesystem: the cache is filled on the first read instead
            remove_tree(staging)

    # -- reading: through the local cache -----------------------------------------------------

    def _manifest(self, directory: Path) -> dict[str, Any] | None:
        """The output's manifest: the one this process committed, else the store's."""
        with self._lock:
            committed = self._committed.get(directory)
        return committed if committed is not None else _read_manifest(self.filesystem, directory)

    def table(self, task_id: str, run_id: str, directory: Path) -> InputTable:
        manifest = self._manifest(directory)
        if manifest is None:
            raise StateError(
                f"output of task {task_id!r} from run {run_id} is missing "
                f"({self.locator(directory)}: no manifest)",
                hint="the workspace was cleaned, or the upload never finished; run the task again",
            )
        local = _localize(self.filesystem, directory, self.cache, self.locator(directory), manifest)
        files = output_parts(local)
        if not files:
            raise StateError(
                f"output of task {task_id!r} from run {run_id} has no rows' file "
                f"({self.locator(directory)})"
            )
        schema = pq.read_schema(files[0])
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        size = sum(f.stat().st_size for f in files)
        return InputTable(task_id, run_id, files, schema, rows, size)

    def quarantine_files(self, directory: Path) -> tuple[Path, ...]:
        manifest = self._manifest(directory)
        if manifest is None:
            return ()  # as a folder that is not there holds no files
        shown = self.locator(directory)
        return quarantine_parts(_localize(self.filesystem, directory, self.cache, shown, manifest))

    def present(self, directory: Path) -> bool:
        return _read_manifest(self.filesystem, directory) is not None

    # -- retention and recovery ---------------------------------------------------------------

    def output_bytes(self, directory: Path) -> int:
        """What the manifest names (the parts and the quarantine); an upload no manifest names
        counts whole."""
        manifest = _read_manifest(self.filesystem, directory)
        if manifest is None:
            return super().output_bytes(directory)
        named = (*manifest["parts"], *manifest.get("quarantine", []))
        return sum(int(size) for _, size in named)

    def remove_output(self, directory: Path) -> None:
        with self._lock:
            self._committed.pop(directory, None)
        with contextlib.suppress(FileNotFoundError):
            self.filesystem.delete_dir(str(directory))
        remove_tree(_cache_key_dir(self.cache, directory))

    def sweep_staging(self, pipeline: str, run_id: str) -> None:
        """Local staging of the run, and uploads of the run that no manifest names (an attempt
        killed between its upload and its manifest)."""
        super().sweep_staging(pipeline, run_id)
        for task in self._folders(self.root / pipeline):
            run_dir = Path(task.path) / run_id
            manifest = _read_manifest(self.filesystem, run_dir)
            named = manifest["upload"] if manifest is not None else None
            for upload in self._folders(run_dir):
                if upload.base_name != named:
                    with contextlib.suppress(OSError):
                        self.filesystem.delete_dir(upload.path)


def _read_manifest(filesystem: Any, directory: Path) -> dict[str, Any] | None:
    try:
        with filesystem.open_input_stream(str(directory / MANIFEST)) as stream:
            found = json.loads(bytes(stream.read()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        if "NoSuchKey" in str(exc) or "not found" in str(exc).lower():
            return None
        raise StateError(f"the manifest of {directory} cannot be read: {exc}") from exc
    if not isinstance(found, dict) or not isinstance(found.get("upload"), str):
        raise StateError(f"the manifest of {directory} is not arrowline's")
    if not re.fullmatch(r"[0-9a-f]{16}", found["upload"]):
        raise StateError(f"the manifest of {directory} names an unknown upload")
    return found


def _cache_key_dir(cache: Path, directory: Path) -> Path:
    return cache / Path(*directory.parts)


def _cached_folder(cache: Path, directory: Path, upload: str) -> Path:
    return _cache_key_dir(cache, directory) / upload


_LOCALIZING = threading.Lock()


def _localize(
    filesystem: Any,
    directory: Path,
    cache: Path,
    shown: str,
    manifest: dict[str, Any] | None = None,
) -> Path:
    """The output the manifest in `directory` names (`manifest`, when read already), copied
    into `cache` once."""
    if manifest is None:
        manifest = _read_manifest(filesystem, directory)
    if manifest is None:
        raise StateError(
            f"output {shown} is missing (no manifest: removed, or its upload never finished)",
            hint="the workspace was cleaned; run the task again",
        )
    upload = manifest["upload"]
    target = _cached_folder(cache, directory, upload)
    if target.is_dir():
        return target
    incoming = target.with_name(f".{upload}.{os.getpid()}.{threading.get_ident()}")
    remove_tree(incoming)
    names = [("", name, size) for name, size in manifest["parts"]]
    names += [(QUARANTINE_DIR, name, size) for name, size in manifest.get("quarantine", [])]
    for folder, name, size in names:
        if not re.fullmatch(r"part-[0-9]{5}\.parquet", name):
            raise StateError(f"the manifest of {shown} names a file {name!r} it cannot hold")
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
        except (FileNotFoundError, OSError) as exc:
            remove_tree(incoming)
            raise StateError(f"output {shown}: {name} cannot be read: {exc}") from exc
        if local.stat().st_size != size:
            remove_tree(incoming)
            raise StateError(f"output {shown}: {name} is not the size its manifest says")
    incoming.mkdir(parents=True, exist_ok=True)  # an output with no rows' file at all
    with _LOCALIZING:
        try:
            os.rename(incoming, target)
        except OSError:  # another reader cached it first
            remove_tree(incoming)
    return target


# -- outputs by their locator (the catalog's output_path) ---------------------------------------


def _split_locator(locator: str) -> tuple[ObjectStoreLocation, Path]:
    location = ObjectStoreLocation.parse(locator)
    return location, location.root


def output_present(locator: str) -> bool:
    """Whether the output a catalog row names is still published (any host may ask)."""
    if not is_object_store(locator):
        return Path(locator).exists()
    location, directory = _split_locator(locator)
    try:
        return _read_manifest(location.filesystem(), directory) is not None
    except (OSError, StateError):
        return False


def local_output(locator: str, cache: Path | None = None) -> Path:
    """The output a catalog row names, as a local folder (part-*.parquet, quarantine/): itself
    when it is on this disk, else a copy in the cache."""
    if not is_object_store(locator):
        return Path(locator)
    location, directory = _split_locator(locator)
    folder = cache if cache is not None else default_cache_dir()
    return _localize(location.filesystem(), directory, folder, locator)


def output_schema(locator: str) -> Any:
    """The Arrow schema of the output a catalog row names, from its first part's footer alone
    (nothing is downloaded); None when it is not (or no longer) there."""
    try:
        if not is_object_store(locator):
            files = output_parts(Path(locator))
            return pq.read_schema(files[0]) if files else None
        location, directory = _split_locator(locator)
        filesystem = location.filesystem()
        manifest = _read_manifest(filesystem, directory)
        if manifest is None or not manifest["parts"]:
            return None
        first = f"{directory / manifest['upload']}/{manifest['parts'][0][0]}"
        return pq.read_schema(first, filesystem=filesystem)
    except (OSError, StateError):
        return None

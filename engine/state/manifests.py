"""An object-store output's manifest: the one object whose write publishes it.

    {"format": 1, "upload": "<16 hex>", "parts": [[name, bytes], ...],
     "quarantine": [[name, bytes], ...], "rows": n, "schema": "<base64 Arrow IPC schema>"}

It names the upload whose files are the output (engine.state.objectstore), with what a reader
checks a copy against (names and sizes) and what planning needs without a download (schema,
rows). A manifest read from the store is checked whole: a forged or foreign object is refused,
never followed.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pyarrow.parquet as pq

from engine.core.errors import StateError
from engine.core.tables import output_parts, quarantine_parts

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "MANIFEST",
    "is_missing",
    "manifest_schema",
    "new_upload",
    "parts_manifest",
    "read_manifest",
    "staged_manifest",
]

MANIFEST = "MANIFEST.json"
_PART_NAME = re.compile(r"part-[0-9]{5}\.parquet")
_UPLOAD = re.compile(r"[0-9a-f]{16}")


def new_upload() -> str:
    """A fresh upload's name (16 hex digits, as manifests name them)."""
    return uuid.uuid4().hex[:16]


def staged_manifest(staging: Path, upload: str) -> dict[str, Any]:
    """The manifest of a staged output uploaded as `upload`: its files with their sizes, and
    its schema and row count (so a run's dispatcher never downloads an output to plan with)."""
    parts = output_parts(staging)
    return parts_manifest(
        upload,
        [(p.name, p.stat().st_size, pq.ParquetFile(p).metadata.num_rows) for p in parts],
        pq.read_schema(parts[0]) if parts else None,
        [(p.name, p.stat().st_size) for p in quarantine_parts(staging)],
    )


def parts_manifest(
    upload: str,
    parts: Sequence[tuple[str, int, int]],
    schema: pa.Schema | None,
    quarantine: Sequence[tuple[str, int]] = (),
) -> dict[str, Any]:
    """The manifest of an upload of `parts` (name, bytes, rows), wherever they were written."""
    return {
        "format": 1,
        "upload": upload,
        "parts": [[name, size] for name, size, _ in parts],
        "quarantine": [[name, size] for name, size in quarantine],
        "rows": sum(rows for _, _, rows in parts),
        "schema": base64.b64encode(schema.serialize().to_pybytes()).decode() if schema else None,
    }


def manifest_schema(manifest: dict[str, Any]) -> pa.Schema:
    import pyarrow as pa

    try:
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(manifest["schema"])))
    except (TypeError, ValueError, pa.ArrowException) as exc:
        raise StateError(f"an output's manifest holds no readable schema: {exc}") from None


def is_missing(exc: OSError) -> bool:
    """An object that is not there, as pyarrow's S3 filesystem says it (a 404)."""
    return isinstance(exc, FileNotFoundError) or "NoSuchKey" in str(exc) or "404" in str(exc)


def read_manifest(filesystem: Any, directory: Path) -> dict[str, Any] | None:
    """The manifest in `directory`, checked whole; None when there is none. StateError when
    the store cannot be asked (never "no output": a timeout is not a deletion) or the object
    is not a manifest arrowline wrote."""
    try:
        with filesystem.open_input_stream(str(directory / MANIFEST)) as stream:
            raw = bytes(stream.read(1 << 20))
    except OSError as exc:
        if is_missing(exc):
            return None
        raise StateError(
            f"the workspace cannot be read at {directory}: {exc}",
            hint="check that the object store answers (endpoint, credentials, network)",
        ) from exc
    try:
        found = json.loads(raw)
    except ValueError:
        found = None
    if not _well_formed(found):
        raise StateError(f"{directory / MANIFEST} is not a manifest arrowline wrote")
    return cast(dict[str, Any], found)


def _well_formed(found: Any) -> bool:
    def files(value: Any) -> bool:
        return isinstance(value, list) and all(
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and _PART_NAME.fullmatch(item[0]) is not None
            and type(item[1]) is int
            and item[1] >= 0
            for item in value
        )

    return (
        isinstance(found, dict)
        and found.get("format") == 1
        and isinstance(found.get("upload"), str)
        and _UPLOAD.fullmatch(found["upload"]) is not None
        and files(found.get("parts"))
        and files(found.get("quarantine"))
        and type(found.get("rows")) is int
        and found["rows"] >= 0
        and (found.get("schema") is None or isinstance(found["schema"], str))
    )

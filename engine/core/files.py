"""Publishing files and directories so that readers see the old version or the new, never half.

A file is replaced with `os.replace` (atomic on POSIX within one file system). A directory cannot
be replaced that way when it is not empty; on Linux `renameat2(RENAME_EXCHANGE)` swaps two
directories atomically, and elsewhere (or on file systems without it) two renames leave a moment
where the target is missing, which `publish_directory` reports through its return value.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "FileVersion",
    "file_versions",
    "publish_directory",
    "remove_tree",
    "shown_path",
    "staging_path",
]

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@functools.cache
def _exchange_function() -> Any:
    """libc's renameat2 on Linux (glibc 2.28+), else None."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    function = getattr(libc, "renameat2", None)
    if function is not None:
        function.argtypes = [
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_uint,
        ]
        function.restype = ctypes.c_int
    return function


def _exchange(a: Path, b: Path) -> bool:
    function = _exchange_function()
    if function is None:
        return False
    result = function(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return bool(result == 0)


def staging_path(target: Path, run_id: str) -> Path:
    """A hidden sibling of `target` for this run's unpublished output."""
    return target.with_name(f".{target.name}.arrowline-staging-{run_id}")


def remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def publish_directory(staged: Path, target: Path) -> bool:
    """Make `staged` the content of `target`. Returns True when the swap was atomic."""
    if not target.exists():
        os.rename(staged, target)
        return True
    if _exchange(staged, target):
        remove_tree(staged)  # now holds the previous version
        return True
    previous = target.with_name(f".{target.name}.arrowline-previous")
    remove_tree(previous)
    os.rename(target, previous)
    os.rename(staged, target)
    remove_tree(previous)
    return False


FileVersion = tuple[str, int, int]
"""One input file as it is now: (path, size in bytes, modification time in ns)."""


def file_versions(paths: Iterable[Path]) -> tuple[FileVersion, ...]:
    """Size and modification time of each file that exists. Cheap (no file is read), and
    enough to tell that a source would read something else than the last time."""
    versions = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue  # gone: leaving it out is what makes the set differ from before
        versions.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(versions)


def shown_path(path: Path) -> str:
    """`path` as messages name files: relative to the working directory when it is below it
    (as the user typed the pipeline's), else whole."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)

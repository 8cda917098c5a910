"""Load user code named in a pipeline: `path/to/file.py:name` or `package.module:name`.

File references are relative to the pipeline file and are loaded under a private module name, so
two pipelines with a `udfs.py` each do not collide. Every failure says which reference failed and
why, with the file and line for syntax errors and exceptions raised at import.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import threading
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from engine.core.errors import UserCodeError
from engine.core.problems import did_you_mean

__all__ = ["load_object", "user_frame"]

_LOCK = threading.Lock()
_FILE_MODULES: dict[tuple[str, int], ModuleType] = {}


def _split(reference: str) -> tuple[str, str]:
    module, sep, attribute = reference.rpartition(":")
    if not sep or not module or not attribute:
        raise UserCodeError(
            f"cannot read reference {reference!r}: write 'path/to/file.py:name' or "
            "'package.module:name'"
        )
    return module, attribute


def user_frame(exc: BaseException, inside: str | None = None) -> str:
    """`file.py:12` of the innermost traceback frame in user code (or under `inside`)."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if inside is None or frame.filename.startswith(inside):
            if "site-packages" in frame.filename and inside is None:
                continue
            return f"{frame.filename}:{frame.lineno}"
    return ""


def _load_file(path: Path, reference: str) -> ModuleType:
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise UserCodeError(f"{reference!r}: file {str(path)!r} does not exist") from None
    key = (str(path.resolve()), stat.st_mtime_ns)
    with _LOCK:
        cached = _FILE_MODULES.get(key)
        if cached is not None:
            return cached
        digest = hashlib.sha1(key[0].encode()).hexdigest()[:10]
        name = f"arrowline_user_{path.stem}_{digest}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise UserCodeError(f"{reference!r}: {str(path)!r} is not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look modules up by name
        try:
            spec.loader.exec_module(module)
        except SyntaxError as exc:
            sys.modules.pop(name, None)
            raise UserCodeError(
                f"{reference!r}: syntax error in {exc.filename}:{exc.lineno}: {exc.msg}"
            ) from None
        except Exception as exc:
            sys.modules.pop(name, None)
            where = user_frame(exc, str(path.parent))
            raise UserCodeError(
                f"{reference!r}: importing {path.name} raised {type(exc).__name__}: {exc}"
                + (f" (at {where})" if where else "")
            ) from exc
        _FILE_MODULES[key] = module
        return module


def _load_module(name: str, reference: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise UserCodeError(
            f"{reference!r}: no module named {exc.name!r}",
            hint="use 'path/to/file.py:name' for a file next to the pipeline, or install the "
            "package that provides the module",
        ) from None
    except SyntaxError as exc:
        raise UserCodeError(
            f"{reference!r}: syntax error in {exc.filename}:{exc.lineno}: {exc.msg}"
        ) from None
    except Exception as exc:
        raise UserCodeError(
            f"{reference!r}: importing {name} raised {type(exc).__name__}: {exc}"
        ) from exc


def load_object(reference: str, base_dir: Path) -> Any:
    """The object a reference names. Raises UserCodeError with the reason."""
    module_part, attribute = _split(reference)
    if module_part.endswith(".py") or "/" in module_part or "\\" in module_part:
        path = Path(module_part)
        module = _load_file(path if path.is_absolute() else base_dir / path, reference)
    else:
        module = _load_module(module_part, reference)
    target: Any = module
    owner = module_part
    for part in attribute.split("."):
        if not hasattr(target, part):
            names = [n for n in dir(target) if not n.startswith("_")]
            raise UserCodeError(
                f"{reference!r}: {owner} has no attribute {part!r}.{did_you_mean(part, names)}"
            )
        target = getattr(target, part)
        owner = f"{owner}:{part}"
    return target

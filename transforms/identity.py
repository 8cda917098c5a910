"""The identity of user code: a UDF, a pandera class or schema, and whatever it captures,
described as text that changes exactly when what it computes changes.

Code counts by the syntax tree of its definition and of every module-level name it reaches in
the same file (helpers, constants, imports), so a helper's body counts but comments and layout
do not; a function also by what its closure, defaults and plain global values hold, which its
source cannot show; installed packages by their files' sizes and times. Fingerprints use it to
tell a changed UDF from an unchanged one (`engine.planning.fingerprint`).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import json
import linecache
import marshal
import sysconfig
from collections.abc import Iterator, Mapping
from datetime import date, time, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from types import CodeType, FunctionType, ModuleType
from typing import Any

from engine.core.files import file_versions

__all__ = ["describe_object", "digest", "file_digest"]

_MAX_DEPTH = 12
"""How deep object state is described; below it, `repr` (which may not be stable: then the task
is run rather than reused, never the other way round)."""
_PLAIN = (type(None), bool, int, float, str, bytes, Decimal, date, time, timedelta, Enum, Path)


def digest(payload: Any) -> str:
    """A short, stable hash of JSON-able data."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "missing"  # the task fails when it runs; no earlier output was made from this


def describe_object(value: Any) -> str:
    """A Python object of a definition (a UDF, a pandera class or schema) as text that changes
    when what it computes changes: its name and a digest of its code and captured values."""
    return f"{_name(value)}@{digest(_Describer().describe(value, 0))}"


def _name(value: Any) -> str:
    module = getattr(value, "__module__", type(value).__module__)
    return f"{module}:{getattr(value, '__qualname__', type(value).__qualname__)}"


class _Describer:
    """A JSON-able description of one object graph: plain data as itself, code by its source,
    modules by their file, other objects by their type and attributes."""

    def __init__(self) -> None:
        self.seen: dict[int, Any] = {}
        """Objects described so far, by id (kept alive so an id is not reused): a cycle, such as
        a closure holding its own function, is described once."""

    def describe(self, value: Any, depth: int) -> Any:
        if isinstance(value, bool | int | float | str) or value is None:
            return value
        if isinstance(value, _PLAIN):
            return f"{type(value).__name__}:{value!r}"
        if isinstance(value, ModuleType):
            file = getattr(value, "__file__", None)
            return {"module": value.__name__, "file": file_versions([Path(file)] if file else [])}
        if depth > _MAX_DEPTH:
            return f"{_name(type(value))}:{value!r}"
        if id(value) in self.seen:
            return f"<described above: {_name(type(value))}>"
        self.seen[id(value)] = value
        return self._compound(value, depth + 1)

    def _compound(self, value: Any, depth: int) -> Any:
        if isinstance(value, Mapping):
            return {str(key): self.describe(item, depth) for key, item in list(value.items())}
        if isinstance(value, list | tuple):
            return [self.describe(item, depth) for item in value]
        if isinstance(value, set | frozenset):
            return sorted((self.describe(item, depth) for item in value), key=repr)
        if inspect.ismethod(value):
            return [self.describe(value.__func__, depth), self.describe(value.__self__, depth)]
        if inspect.isfunction(value) or inspect.isclass(value):
            return self._code(value, depth)
        state = getattr(value, "__dict__", None)
        if isinstance(state, dict):
            attributes = {key: self.describe(item, depth) for key, item in list(state.items())}
            return {"type": _name(type(value)), "state": attributes}
        return f"{_name(type(value))}:{value!r}"

    def _code(self, value: Any, depth: int) -> dict[str, Any]:
        target = inspect.unwrap(value) if inspect.isfunction(value) else value
        identity: dict[str, Any] = {"name": _name(target)}
        file = _source_file(target)
        if file is not None and _installed(file):
            # a library: its version is its files, and parsing them on every plan is slow
            identity["file"] = file_versions([Path(file)])
            return identity
        source = _source_in_file(file, target.__qualname__) if file is not None else None
        identity["source"] = source if source is not None else self._compiled(target, depth)
        if isinstance(target, FunctionType):
            identity["captured"] = self.describe(_captured(target), depth)
        return identity

    def _compiled(self, value: Any, depth: int) -> Any:
        """Without source: a function by its bytecode, a class by its attributes."""
        if isinstance(value, FunctionType):
            try:
                return hashlib.sha256(marshal.dumps(value.__code__)).hexdigest()
            except ValueError:
                return repr(value.__code__)
        members = {k: v for k, v in vars(value).items() if not k.startswith("__")}
        return self.describe(members, depth)


def _source_file(value: Any) -> str | None:
    try:
        return inspect.getsourcefile(value)
    except (TypeError, OSError):
        return None  # built in, or defined where no source is kept


@functools.cache
def _library_dirs() -> tuple[str, ...]:
    names = ("stdlib", "platstdlib", "purelib", "platlib")
    return tuple({path for path in map(sysconfig.get_path, names) if path})


def _installed(file: str) -> bool:
    return file.startswith(_library_dirs())


def _captured(function: FunctionType) -> dict[str, Any]:
    """What a function computes with besides its code: defaults, closure cells, and the plain
    values (numbers, text, ...) of the globals it reads."""
    closure = []
    for cell in function.__closure__ or ():
        try:
            closure.append(cell.cell_contents)
        except ValueError:  # a cell not yet filled
            closure.append(None)
    scope = function.__globals__
    plain = {
        name: scope[name]
        for name in sorted(_global_names(function.__code__))
        if name in scope and _is_plain(scope[name])
    }
    return {
        "defaults": function.__defaults__,
        "kwdefaults": function.__kwdefaults__,
        "closure": closure,
        "globals": plain,
    }


def _global_names(code: CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _global_names(const)
    return names


def _is_plain(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, list | tuple | set | frozenset):
        return all(_is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(_is_plain(k) and _is_plain(v) for k, v in value.items())
    return False


# ---------------------------------------------------------------------------------------------
# Source: a definition and the module-level names it reaches, as syntax trees


def _source_in_file(file: str, qualname: str) -> list[str] | None:
    """The syntax trees (no positions, no comments) of the top-level statement defining
    `qualname` and of every top-level statement binding a name it reaches, in file order."""
    linecache.checkcache(file)  # re-read a file edited since it was cached
    lines = linecache.getlines(file)
    try:
        tree = ast.parse("".join(lines))
    except (SyntaxError, ValueError):
        return None
    bindings: dict[str, list[ast.stmt]] = {}
    for statement in tree.body:
        for name in _bound_by(statement):
            bindings.setdefault(name, []).append(statement)
    # a method or nested function: the top-level definition holding it
    root = qualname.split(".", maxsplit=1)[0]
    if root not in bindings:
        return None
    chosen: dict[int, ast.stmt] = {}
    pending, seen = [root], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for statement in bindings.get(name, ()):
            if id(statement) not in chosen:
                chosen[id(statement)] = statement
                pending.extend(_names_used(statement))
    ordered = sorted(chosen.values(), key=lambda statement: statement.lineno)
    return [ast.dump(statement) for statement in ordered]


def _bound_by(statement: ast.stmt) -> set[str]:
    """Module-level names a top-level statement binds."""
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {statement.name}
    names = set()
    for node in ast.walk(statement):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.alias) and node.name != "*":
            names.add((node.asname or node.name).split(".")[0])
    return names


def _names_used(statement: ast.stmt) -> Iterator[str]:
    """Names a statement reads, including those in string annotations (`from __future__ import
    annotations`), which pandera models read for column types."""
    for node in ast.walk(statement):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Store):
            yield node.id
        for annotation in _annotations(node):
            for part in ast.walk(annotation):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    yield from _names_in_text(part.value)


def _annotations(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.AnnAssign):
        return [node.annotation]
    if isinstance(node, ast.arg) and node.annotation is not None:
        return [node.annotation]
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns is not None:
        return [node.returns]
    return []


def _names_in_text(text: str) -> list[str]:
    try:
        expression = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        return []
    return [node.id for node in ast.walk(expression) if isinstance(node, ast.Name)]

"""Which tasks `--select` and `--exclude` name, in dbt's selector grammar.

One `--select` value holds terms separated by spaces, and a value may be given several times:
the tasks of every term (a union). A term joins atoms with commas: the tasks every atom names
(an intersection). An atom names tasks, then widens them along the graph:

    orders            the task `orders`; `stg_*` every task whose id the pattern matches;
                      a task written as several (a `cdc` extract of several tables) names
                      every one of them
    tag:nightly       tasks with that tag (`tags:` on the task)
    kind:sql          tasks of that kind: extract, sql, udf, validate, load
    config.materialized:view   tasks materialized so: table, ephemeral, view or incremental
    path:udfs.py      tasks defined in or reading that file, or a file under that folder (the
                      pipeline file, a sql `file:`, a UDF's module, a validate schema file,
                      the file a files extract reads: a seed's CSV),
                      relative to the pipeline's folder; a glob matches too
    state:modified    tasks whose definition, parameters or code differ from their last
                      successful run, and tasks that never succeeded; `state:new` only those

    +orders   orders and every task upstream of it;  2+orders  up to two levels up
    orders+   orders and every task downstream;      orders+1  one level down
    @orders   orders, everything downstream, and everything those read

`--exclude` takes the same grammar and removes what it names. A name that is no task fails with
a did-you-mean, and so does a selection that leaves no task: a typo never runs everything, or
nothing, silently. (A selection by `state:` may leave none: nothing changed, nothing runs.) A
comma intersects, as in dbt (it used to unite): `-s a,b` names the tasks that are both;
`-s "a b"` or `-s a -s b` names either.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from engine.core.errors import SelectionError
from engine.core.graph import Graph
from engine.core.problems import did_you_mean
from engine.planning.fingerprint import Fingerprint
from engine.spec.definition import Definition
from engine.spec.model import TaskSpec
from engine.state.catalog import CatalogReader

__all__ = ["SelectableTask", "excluded_tasks", "select_tasks", "selectable"]

_ATOM = re.compile(r"(?P<at>@)?(?:(?P<up>\d*)\+)?(?P<body>[^+@\s]+?)(?:\+(?P<down>\d*))?")
_METHODS = ("tag", "kind", "config.materialized", "path", "state")
_STATES = ("modified", "new")
_KINDS = ("extract", "sql", "udf", "validate", "load")
_MATERIALIZED = ("table", "ephemeral", "view", "incremental")


@dataclass(frozen=True)
class SelectableTask:
    """What a selector can ask of a task."""

    id: str
    kind: str
    tags: tuple[str, ...]
    materialized: str
    files: tuple[PurePosixPath, ...]
    """The files it is defined in or reads its code from, relative to the pipeline's folder."""
    state: Callable[[], str | None]
    """'new', 'modified' or None (unchanged since its last success); asked only by state:."""
    written_as: str | None = None
    """The task as the pipeline writes it, when it stands for several (a `cdc` extract of
    several tables): its name selects all of them."""


def select_tasks(
    select: Sequence[str] | None,
    exclude: Sequence[str] | None,
    graph: Graph,
    tasks: Mapping[str, SelectableTask],
    base_dir: Path | None = None,
) -> set[str] | None:
    """The task ids `select` minus `exclude` name; None when neither is given (every task).
    `base_dir`: the pipeline's folder, which `path:` values are relative to. Raises
    SelectionError naming what is wrong."""
    if not select and not exclude:
        return None
    scope = _Scope(graph, tasks, base_dir)
    chosen = scope.union(select, "--select") if select else set(graph.order)
    if exclude:
        chosen -= scope.union(exclude, "--exclude")
    if not chosen and scope.by_state:
        return chosen  # nothing changed since: a run of nothing, as CI asks "what changed?"
    if not chosen:
        said = " ".join(f"--select {v!r}" for v in select or ()) + "".join(
            f" --exclude {v!r}" for v in exclude or ()
        )
        comma = any("," in value for value in [*(select or ()), *(exclude or ())])
        raise SelectionError(
            f"{said.strip()} leaves no task",
            hint="a comma intersects (tasks named by both sides); separate terms with a space, "
            "or repeat --select, for either"
            if comma
            else None,
        )
    return chosen


def excluded_tasks(
    exclude: Sequence[str],
    graph: Graph,
    tasks: Mapping[str, SelectableTask],
    base_dir: Path | None = None,
) -> set[str]:
    """What `--exclude` names (a plan checks that none of it has to run)."""
    return _Scope(graph, tasks, base_dir).union(exclude, "--exclude")


class _Scope:
    """One evaluation of selectors over a pipeline's tasks."""

    def __init__(
        self, graph: Graph, tasks: Mapping[str, SelectableTask], base_dir: Path | None
    ) -> None:
        self.graph, self.tasks, self.base_dir = graph, tasks, base_dir
        self.by_state = False
        """Some atom selected by state: (which may rightly select nothing)."""

    def union(self, values: Sequence[str], option: str) -> set[str]:
        found: set[str] = set()
        for value in values:
            terms = value.split()
            if not terms:
                raise SelectionError(f"{option} is given an empty value")
            for term in terms:
                atoms = term.split(",")
                if not all(atoms):
                    raise SelectionError(
                        f"{option} {term!r} has an empty part between commas",
                        hint="a comma joins selectors a task must all match, with no space "
                        "around it; to name either, separate them with a space",
                    )
                named = [self.atom(atom, option) for atom in atoms]
                found |= set.intersection(*named)
        return found

    def atom(self, text: str, option: str) -> set[str]:
        graph = self.graph
        match = _ATOM.fullmatch(text)
        if match is None or (match["at"] and match["up"] is not None) or match["body"].isdigit():
            raise SelectionError(
                f"{option} {text!r} is not a selector",
                hint="NAME, +NAME, N+NAME, NAME+, NAME+N, @NAME, or METHOD:VALUE with the same "
                f"operators; methods: {', '.join(_METHODS)}",
            )
        named = self.named(match["body"], option)
        result = set(named)
        if match["at"]:
            below = _closure(named, graph.downstream, None)
            return result | below | _closure(result | below, graph.upstream, None)
        if match["up"] is not None:
            result |= _closure(named, graph.upstream, _depth(match["up"]))
        if match["down"] is not None:
            result |= _closure(named, graph.downstream, _depth(match["down"]))
        return result

    def named(self, body: str, option: str) -> set[str]:
        tasks = self.tasks
        method, colon, value = body.partition(":")
        if not colon:
            if any(char in body for char in "*?["):
                found = {task_id for task_id in tasks if fnmatch.fnmatchcase(task_id, body)}
                if not found:
                    raise SelectionError(f"{option} {body!r} matches no task id")
                return found
            members = {task_id for task_id, task in tasks.items() if task.written_as == body}
            if body not in tasks and members:  # a task written as several: all of them
                return members
            if body not in tasks:
                raise SelectionError(
                    f"{option} names unknown task {body!r}.{did_you_mean(body, list(tasks))}",
                    hint=f"tasks: {', '.join(tasks)}",
                )
            return {body}
        if method not in _METHODS:
            raise SelectionError(
                f"{option} {body!r}: unknown selector method {method!r}."
                f"{did_you_mean(method, list(_METHODS))}",
                hint=f"methods: {', '.join(_METHODS)}",
            )
        if not value:
            raise SelectionError(f"{option} {body!r} gives {method}: no value")
        test = self.test(method, value, option)
        found = {task_id for task_id, task in tasks.items() if test(task)}
        if method == "state":
            self.by_state = True
        elif not found:  # a typo must not quietly select, or exclude, nothing
            raise SelectionError(f"{option} {body!r} names no task", hint=self.known(method))
        return found

    def known(self, method: str) -> str | None:
        if method == "tag":
            tags = sorted({tag for task in self.tasks.values() for tag in task.tags})
            return f"tags in this pipeline: {', '.join(tags) or 'none'}"
        if method == "path":
            return "a path is relative to the pipeline's folder"
        return None

    def test(self, method: str, value: str, option: str) -> Callable[[SelectableTask], bool]:
        if method == "tag":
            return lambda task: any(fnmatch.fnmatchcase(tag, value) for tag in task.tags)
        if method in ("kind", "config.materialized"):
            allowed = _KINDS if method == "kind" else _MATERIALIZED
            if value not in allowed:
                raise SelectionError(
                    f"{option} {method}:{value}: one of {', '.join(allowed)}."
                    f"{did_you_mean(value, list(allowed))}"
                )
            if method == "kind":
                return lambda task: task.kind == value
            return lambda task: task.materialized == value
        if method == "state":
            if value not in _STATES:
                raise SelectionError(
                    f"{option} state:{value}: the states are {', '.join(_STATES)}."
                    f"{did_you_mean(value, list(_STATES))}"
                )
            if value == "new":
                return lambda task: task.state() == "new"
            return lambda task: task.state() is not None
        wanted = self.path(value)
        return lambda task: any(_under(file, wanted) for file in task.files)

    def path(self, value: str) -> PurePosixPath:
        """A `path:` value as the task files are kept: relative to the pipeline's folder (a
        path that exists from the working directory is taken from there), `..` resolved."""
        if self.base_dir is None or any(char in value for char in "*?["):
            return PurePosixPath(Path(value).as_posix().rstrip("/") or ".")
        typed = Path(value)
        if not typed.is_absolute() and not (self.base_dir / typed).exists() and typed.exists():
            typed = typed.resolve()
        return _relative(typed, self.base_dir)


def _depth(text: str) -> int | None:
    return int(text) if text else None


def _under(file: PurePosixPath, wanted: PurePosixPath) -> bool:
    if str(wanted) == ".":
        return True
    return file == wanted or wanted in file.parents or fnmatch.fnmatchcase(str(file), str(wanted))


def _closure(
    start: Iterable[str], edges: Mapping[str, Sequence[str]], depth: int | None
) -> set[str]:
    """What `edges` reach from `start` (not counting it), up to `depth` steps (None: all)."""
    seen: set[str] = set()
    frontier = list(start)
    steps = 0
    while frontier and (depth is None or steps < depth):
        following = []
        for node in frontier:
            for nxt in edges.get(node, ()):
                if nxt not in seen:
                    seen.add(nxt)
                    following.append(nxt)
        frontier, steps = following, steps + 1
    return seen


_DECLARED = ("definition", "params", "code")
"""What state:modified compares: what the task is, not what it reads (dbt's state too)."""


def selectable(
    definition: Definition,
    tasks: Iterable[str],
    fingerprints: Mapping[str, Fingerprint],
    catalog: CatalogReader | None,
) -> dict[str, SelectableTask]:
    """Every task of `definition` as the selector methods see it."""
    spec = definition.spec
    own = _relative(definition.file, definition.base_dir) if definition.file else None

    def state(task_id: str) -> Callable[[], str | None]:
        def ask() -> str | None:
            previous = catalog.last_success(spec.name, task_id) if catalog else None
            if previous is None:
                return "new"
            recorded = previous.fingerprint_parts or {}
            parts = fingerprints[task_id].parts
            changed = any(recorded.get(part) != parts[part] for part in _DECLARED)
            return "modified" if changed else None

        return ask

    found = {}
    for task_id in tasks:
        task = spec.task(task_id)
        files = [own] if own is not None else []
        files += [_relative(f, definition.base_dir) for f in _code_files(task)]
        files += _read_files(task, definition.base_dir)
        found[task_id] = SelectableTask(
            task_id,
            str(task.kind.value),
            task.tags,
            "incremental" if task.sql is not None and task.sql.incremental else task.materialize,
            tuple(dict.fromkeys(files)),
            state(task_id),
            task.expanded_from,
        )
    return found


def _code_files(task: TaskSpec) -> list[str]:
    """The files a task's definition names for its code: a sql `file:`, a UDF's module, a
    validate schema file (not a `package.module:name` reference)."""
    named: list[str] = []
    if task.sql is not None and task.sql.file:
        named.append(task.sql.file)
    if task.udf is not None and isinstance(task.udf.function, str):
        named.append(task.udf.function)
    if task.validate_ is not None and isinstance(task.validate_.schema_, str):
        named.append(task.validate_.schema_)
    files = []
    for text in named:
        path = text.partition(":")[0] if ".py:" in text else text
        if path.endswith((".py", ".sql", ".yaml", ".yml")):
            files.append(path)
    return files


def _read_files(task: TaskSpec, base: Path) -> list[PurePosixPath]:
    """The files an extract reads, as its source sees them now (a SQL project's seed)."""
    from engine.core.errors import ArrowlineError

    owner, config = task.connector, task.extract
    if owner is None or config is None:
        return []
    try:
        found = owner.observe(config, base) or ()
    except (ArrowlineError, OSError):  # not there yet: validation says so elsewhere
        return []
    return [_relative(path, base) for path, _, _ in found]


def _relative(path: str | Path, base: Path) -> PurePosixPath:
    resolved = (base / path).resolve()
    try:
        return PurePosixPath(resolved.relative_to(base.resolve()).as_posix())
    except ValueError:
        return PurePosixPath(resolved.as_posix())

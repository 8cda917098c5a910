"""A database error of a sql task's statement, said where the statement is written: the file a
model (or any `sql: {file: ...}`) is in, and the line there when the database points at one
that can be told.

DuckDB names the line of the text it read; transforms.sql makes that the line of the statement
it was given (`TaskError.statement_line`). A template's lines are not its rendered statement's:
a loop makes several of one, a `{% set %}` none. So the rendered lines are lined up with the
template's by their text (difflib): a rendered line the template holds as it is is that
template line. A rendered line in a run the template changed (a value printed, a loop's
lines) is the one line of the template's run it could be: the line's text outside its prints
and tags, in order, from its start to its end, where that text has a word in it. Any other (a
line of prints and punctuation alone, two template lines that could have made it, or a run
holding a macro's call, whose lines could be any) is said as the file alone, with the line of the
rendered SQL, not a line of the file that might be the wrong one.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.core.errors import Cancelled, TaskError
from engine.core.files import shown_path
from engine.spec.quoted import literal_prints
from engine.tasks.base import RenderedTask

__all__ = ["said_in_file", "template_line"]


@contextmanager
def said_in_file(task: RenderedTask, base_dir: Path, statement: str) -> Iterator[None]:
    """Errors the database raises running `statement` (the task's rendered SQL, or a
    statement holding it) name the file the task's SQL is written in, and its line there."""
    try:
        yield
    except TaskError as exc:
        if not exc.transient and not isinstance(exc, Cancelled):
            _locate(exc, task, base_dir, statement)
        raise


def _locate(error: TaskError, task: RenderedTask, base_dir: Path, statement: str) -> None:
    spec = task.spec.sql
    rendered = task.sql
    if spec is None or spec.template_file is None or rendered is None:
        return  # inline: said at the task's line in the pipeline file, as every error is
    path = Path(spec.template_file).expanduser()
    path = path if path.is_absolute() else base_dir / path
    shown = shown_path(path)
    told = error.statement_line
    at = _rendered_line(statement, rendered, told) if told is not None else None
    line = None
    if at is not None:
        try:
            line = template_line(literal_prints(path.read_text(encoding="utf-8")), rendered, at)
        except (OSError, UnicodeDecodeError):
            line = None  # changed under the run: the file alone
    message = error.message
    if told is not None:
        label = f"LINE {line}:" if line is not None else f"rendered LINE {at}:" if at else ""
        message = message.replace(f"LINE {told}:", label, 1)
    error.message = f"{shown}{f':{line}' if line is not None else ''}: {message}"
    error.written_at = (shown, line)


def _rendered_line(statement: str, rendered: str, line: int) -> int | None:
    """The line of `rendered` that line `line` of `statement` is: the same text, or a
    statement made around it (an incremental model's), where it is found once."""
    if statement == rendered:
        return line
    head = rendered.strip()[:200]
    if not head or statement.count(head) != 1:
        return None
    around = statement[: statement.index(head)].count("\n")
    found = line - around + rendered[: rendered.index(head)].count("\n")
    return found if 1 <= found <= len(rendered.splitlines()) else None


def template_line(template: str, rendered: str, line: int) -> int | None:
    """The line of `template` that line `line` of its rendering comes from, when it can be
    told (see the module's docstring); None otherwise."""
    ours = [text.strip() for text in rendered.splitlines()]
    theirs = [text.strip() for text in template.splitlines()]
    if not 1 <= line <= len(ours):
        return None
    matcher = difflib.SequenceMatcher(None, theirs, ours, autojunk=False)
    for tag, start, end, first, last in matcher.get_opcodes():
        if first <= line - 1 < last:
            if tag == "equal":
                return start + (line - 1 - first) + 1
            if tag != "replace":
                return None
            if any(_prints_lines(text) for text in theirs[start:end]):
                return None  # a macro's lines could be any of the run's
            could = [n for n in range(start, end) if _renders_as(theirs[n], ours[line - 1])]
            return could[0] + 1 if len(could) == 1 else None
    return None


_TAGS = re.compile(r"{{.*?}}|{%.*?%}|{#.*?#}")
_CALLS = re.compile(r"{{[^}]*?(?<![\w.])(\w+)\s*\(")
_ONE_LINE = frozenset({"ref", "source", "var", "config", "is_incremental", "env_var", "this"})
"""Template functions that print a name or a value, never lines of SQL."""


def _prints_lines(template: str) -> bool:
    """Whether a template line calls something that may print several lines (a macro)."""
    return any(name not in _ONE_LINE for name in _CALLS.findall(template))


def _renders_as(template: str, rendered: str) -> bool:
    """Whether a template line could have rendered as `rendered`: it has text outside its
    prints and tags (a line of prints alone could be any), and `rendered` is that text in
    order, starting and ending as the line does, with anything where the prints were."""
    parts = _TAGS.split(template)
    if not any(c.isalnum() for c in "".join(parts)):
        return False  # prints with punctuation (`{{ col }},`) could have made many lines
    if len(parts) == 1:
        return template == rendered
    first, *middle, last = parts
    end = len(rendered) - len(last)
    if not (rendered.startswith(first) and rendered.endswith(last)) or end < len(first):
        return False
    at = len(first)
    for part in middle:
        found = rendered.find(part, at, end)
        if found < 0:
            return False
        at = found + len(part)
    return True

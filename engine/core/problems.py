"""A problem found in a pipeline definition: what is wrong, and exactly where."""

from __future__ import annotations

from dataclasses import dataclass
from difflib import get_close_matches
from typing import Literal

__all__ = ["Finding", "Problem", "did_you_mean"]

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One finding of validation. Errors stop a run; warnings are printed and let it go on."""

    code: str
    """Stable machine-readable kind, e.g. `unknown-dependency`, `cycle`, `sql-parse`."""
    message: str
    severity: Severity = "error"
    file: str | None = None
    line: int | None = None
    column: int | None = None
    task_id: str | None = None
    hint: str | None = None

    def location(self) -> str:
        """`file:line:col` (as much as is known), the way editors and compilers print it."""
        if self.file is None:
            return "<pipeline>"
        text = self.file
        if self.line is not None:
            text += f":{self.line}"
            if self.column is not None:
                text += f":{self.column}"
        return text

    def format(self) -> str:
        task = f" [task {self.task_id}]" if self.task_id else ""
        text = f"{self.location()}: {self.severity}{task}: {self.message} ({self.code})"
        if self.hint:
            text += f"\n      hint: {self.hint}"
        return text

    def to_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "task_id": self.task_id,
            "hint": self.hint,
        }


@dataclass(frozen=True)
class Finding:
    """A problem of one config, found by the code that owns it (a connector, a task kind),
    located by its key path inside the config; the checks turn it into a Problem with the
    pipeline file's line."""

    code: str
    message: str
    key: tuple[str | int, ...] = ()
    severity: Severity = "error"
    hint: str | None = None


def did_you_mean(word: str, choices: list[str] | tuple[str, ...] | set[str]) -> str:
    """` Did you mean 'x'?` when a close match exists, else ''. Choices that extend the word
    (`shop__orders` and `shop__customers` of `shop`: the tasks a task written as several
    became) are all offered."""
    extending = sorted(choice for choice in choices if choice.startswith(f"{word}__"))
    if len(extending) > 1:
        return f" Did you mean one of {', '.join(map(repr, extending))}?"
    if extending:
        return f" Did you mean {extending[0]!r}?"
    matches = get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" Did you mean {matches[0]!r}?" if matches else ""

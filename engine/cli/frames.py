"""How the CLI prints data frames: CSV without nested columns, and quarantined rows with their
reasons first (`arrowline show --quarantine`, `arrowline quarantine show`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

from engine.cli.common import out

if TYPE_CHECKING:
    import polars as pl

__all__ = ["print_quarantine", "to_csv"]


def to_csv(frame: pl.DataFrame) -> str:
    """CSV has no nested values: a quarantine's reasons go as their text column alone."""
    from transforms.validate import QUARANTINE_ERRORS, QUARANTINE_REASONS

    if QUARANTINE_REASONS in frame.columns:
        frame = frame.drop(QUARANTINE_ERRORS)
    return frame.write_csv()


_CELL_WIDTH = 24
"""The widest a data column of a quarantine table gets: its values are context, the reasons
are the point."""


def print_quarantine(preview: pl.DataFrame) -> None:
    """Quarantined rows for a terminal: the row number, its reasons whole and one per line
    ("column: check (value)"), then as many of the row's columns as fit, each on one line."""
    import polars as pl

    from transforms.validate import (
        QUARANTINE_ERRORS,
        QUARANTINE_REASONS,
        QUARANTINE_ROW,
        reason_texts,
    )

    texts = preview.select(reason_texts(pl.col(QUARANTINE_ERRORS))).to_series().to_list()
    reasons = ["\n".join(lines or []) for lines in texts]
    rows = [str(r) for r in preview[QUARANTINE_ROW].to_list()]
    row_width = max([len("row"), *map(len, rows)])
    longest = max([len("reasons"), *(len(line) for text in reasons for line in text.split("\n"))])
    reason_width = min(longest, max(40, out.width // 2))
    table = Table()
    table.add_column("row", justify="right", width=row_width, no_wrap=True)
    table.add_column("reasons", width=reason_width, overflow="fold")
    room = out.width - 1 - (row_width + 3) - (reason_width + 3)  # a column's border and padding
    columns: list[list[str]] = [rows, reasons]
    skip = {QUARANTINE_ROW, QUARANTINE_REASONS, QUARANTINE_ERRORS}
    names = [name for name in preview.columns if name not in skip]
    left_out: list[str] = []
    for name in names:
        cells = ["null" if v is None else str(v) for v in preview[name].to_list()]
        width = min(_CELL_WIDTH, max([len(name), *map(len, cells)]))
        if left_out or width + 3 > room:
            left_out.append(name)
            continue
        room -= width + 3
        table.add_column(name, width=width, no_wrap=True, overflow="ellipsis")
        columns.append(cells)
    for values in zip(*columns, strict=True):
        table.add_row(*values)
    out.print(table)
    if left_out:
        out.print(
            Text(
                f"not shown for width: {', '.join(left_out)} (--format json shows every column)",
                style="dim",
            )
        )

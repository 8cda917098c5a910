"""The `arrowline` command: a thin root group that lists its subgroups, one module per group."""

from engine.cli.commands import main

__all__ = ["main"]

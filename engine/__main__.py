"""`python -m engine` is the `arrowline` command."""

from engine.cli import console

console()

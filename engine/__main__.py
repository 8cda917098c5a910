"""`python -m engine` is the `arrowline` command."""

from engine.cli.commands import main

main()

"""The `arrowline` command: this root group lists its subgroups, one module per group.

    common      the options every command shares, the consoles, errors -> exit codes
    run         validate, plan, check, render, run
    runs        runs [list | compare], show
    state       state show | set | reset
    lineage     lineage
    dlq         dlq list | show | requeue | resolve
    quarantine  quarantine show | replay
    schedule    scheduler, schedule list | pause | resume, trigger, backfill
    status      status, metrics
    catalog     catalog copy
    gc          gc
    ui          ui, graph
    tools       bench, schema

A command module exports its commands as COMMANDS and never imports this root, so they depend
on `common` and the application (engine.api), never on each other's helpers. Every command
calls the one `Project` (engine.api.project) and prints what it returns.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading

import click

from engine.cli import (
    catalog,
    cdc,
    dlq,
    gc,
    lineage,
    quarantine,
    run,
    runs,
    schedule,
    state,
    status,
    tables,
    tools,
    ui,
)

__all__ = ["console", "main"]

_GROUPS = (
    run,
    runs,
    state,
    cdc,
    tables,
    lineage,
    dlq,
    quarantine,
    schedule,
    status,
    catalog,
    gc,
    ui,
    tools,
)


@click.group(
    commands=[command for group in _GROUPS for command in group.COMMANDS],
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="arrowline", prog_name="arrowline")
def main() -> None:
    """arrowline: Arrow-native batch pipelines (DuckDB SQL, Polars UDFs, Pandera checks)."""


def console() -> None:
    """The `arrowline` console script and `python -m engine`: the command, then a quick exit.

    When a command returns, its work is committed, its files closed and its output written;
    what is left is the interpreter freeing every module and object (Polars, DuckDB, pyarrow,
    the pipeline models' schemas): about 0.5 s of a one-second command on the shared machine,
    spent on nothing the user sees. So the exit is what the interpreter's would be without the
    teardown: other threads that are not daemons are woken and waited for, the exit handlers
    run (the libraries' own, Ray's shutdown among them), the streams are flushed, and the
    process ends with the command's exit code. An exception the command did not turn into an
    exit code still takes the ordinary way out, with its traceback."""
    try:
        main(prog_name="arrowline")
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if code is None:
        code = 0
    elif not isinstance(code, int):  # as sys.exit("message") does
        print(code, file=sys.stderr)
        code = 1
    # What the interpreter's own exit does first: the threading module's exit hooks (they
    # wake idle concurrent.futures workers, such as a library's pool never shut down), then
    # a join of every thread that is not a daemon.
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (`| head`)
            stream.flush()
    os._exit(code)

"""The child side of a workload: run one contender in this process and print its RESULT line."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

Runner = Callable[[Path, Path], dict[str, Any]]


def child_main(runners: Mapping[str, Runner], needs: Mapping[str, str] | None = None) -> None:
    """`python -m benchmarks.workloads.<name> CONTENDER --data PATH`: run it in a scratch folder.
    `needs` maps a contender to the modules it imports (space-separated); a missing one exits
    with a message the harness reports (a peer that is not installed is missing, not
    dropped)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("contender", choices=sorted(runners))
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()
    for module in ((needs or {}).get(args.contender) or "").split():
        if importlib.util.find_spec(module) is None:
            sys.exit(f"{module} is not installed: pip install 'arrowline[bench]'")
    with tempfile.TemporaryDirectory() as directory:
        print("RESULT " + json.dumps(runners[args.contender](args.data, Path(directory))))
    # The measurement is done and said: end without the interpreter's teardown, where a
    # peer's native threads can abort the process (delta-rs once exited 250 here with
    # "terminate called without an active exception" after its work) and fail a finished run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def free_port() -> int:
    """A loopback port nothing listens on at this moment (for a server a workload starts)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def engine_table(outcomes: list[Any]) -> tuple[dict[str, Any], list[str]]:
    """Median engine time, wall time and peak RSS per contender, as summary data and Markdown
    rows; a failed or missing contender gets its error in place of figures."""
    rows = ["| contender | median engine | median wall | peak RSS |", "|---|---|---|---|"]
    summary: dict[str, Any] = {}
    for o in outcomes:
        if o.error or not o.samples:
            rows.append(f"| {o.contender} | {(o.error or 'missing').splitlines()[-1][:80]} | | |")
            continue
        summary[o.contender] = {
            "engine_s": o.median("engine_s"),
            "wall_s": o.median("wall_s"),
            "peak_rss_mb": o.median("peak_rss_mb"),
        }
        rows.append(
            f"| {o.contender} | {o.median('engine_s'):.2f} s | {o.median('wall_s'):.2f} s "
            f"| {o.median('peak_rss_mb'):.0f} MB |"
        )
    return summary, rows

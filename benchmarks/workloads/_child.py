"""The child side of a workload: run one contender in this process and print its RESULT line."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

Runner = Callable[[Path, Path], dict[str, Any]]


def child_main(runners: Mapping[str, Runner], needs: Mapping[str, str] | None = None) -> None:
    """`python -m benchmarks.workloads.<name> CONTENDER --data PATH`: run it in a scratch folder.
    `needs` maps a contender to the module it imports; a missing one exits with a message the
    harness reports (a peer that is not installed is missing, not dropped)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("contender", choices=sorted(runners))
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()
    module = (needs or {}).get(args.contender)
    if module and importlib.util.find_spec(module) is None:
        sys.exit(f"{module} is not installed: pip install 'arrowline[bench]'")
    with tempfile.TemporaryDirectory() as directory:
        print("RESULT " + json.dumps(runners[args.contender](args.data, Path(directory))))

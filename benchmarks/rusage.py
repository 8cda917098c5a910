"""Run a command and report its own CPU time and peak RSS: `python -m benchmarks.rusage -- CMD`.

The command's stdout passes through; a `RESULT` line gets the usage added under `__rusage__`.
`timed_process` and `process_usage` do the same for a workload that times a whole process itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def timed_process(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None
) -> tuple[float, float]:
    """Wall time and peak RSS (MB) of one process, from `wait4`; exits when it fails."""
    elapsed, _, rss = process_usage(argv, cwd, env)
    return elapsed, rss


def process_usage(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None
) -> tuple[float, float, float]:
    """Wall time, CPU time (user + system, its children's included) and peak RSS (MB) of one
    process, from `wait4`; exits when it fails."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{argv[0]} exited with {code}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> int:
    argv = sys.argv[sys.argv.index("--") + 1 :]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    lines = process.stdout.read().splitlines()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    rusage = {"cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}
    reported = False
    for line in lines:
        if not line.startswith("RESULT "):
            print(line)
            continue
        payload = json.loads(line[len("RESULT ") :])
        payload["__rusage__"] = rusage
        print("RESULT " + json.dumps(payload))
        reported = True
    if not reported:
        print("RESULT " + json.dumps({"__rusage__": rusage}))
    return process.returncode


if __name__ == "__main__":
    sys.exit(main())

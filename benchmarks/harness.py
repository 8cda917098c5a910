"""Run contenders in fresh processes and measure them from the outside.

A contender is a command line. The harness starts it, samples nothing inside it, and reads what
the kernel kept: wall time, user + system CPU, and peak resident memory (`wait4`'s ru_maxrss, the
high-water mark of the process). A contender may print one JSON line starting with `RESULT ` to
report what it measured inside (for example time spent in the engine, excluding interpreter
start-up) and a checksum of its output, which the harness compares across contenders before any
timing counts.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Contender:
    name: str
    argv: tuple[str, ...]
    group: str = ""
    """Contenders in one group must agree on their output checksum."""
    env: tuple[tuple[str, str], ...] = ()
    unsupported: str = ""
    """Why this tree cannot run the contender yet (a feature still to come): it is reported as
    not supported in its place, never run and never counted as a failure."""


@dataclass
class Sample:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    reported: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    contender: str
    group: str
    samples: list[Sample]
    error: str | None = None
    unsupported: bool = False

    def median(self, key: str) -> float:
        values = [getattr(s, key) if hasattr(s, key) else s.reported[key] for s in self.samples]
        return float(statistics.median(values))

    def spread(self, key: str) -> tuple[float, float]:
        values = [getattr(s, key) if hasattr(s, key) else s.reported[key] for s in self.samples]
        return min(values), max(values)


def measure(contender: Contender, cwd: Path, timeout: float = 1800) -> Sample:
    """Run one contender once, as the only child of `benchmarks.rusage`, so `wait4` reports
    exactly its CPU time and peak RSS."""
    argv = [sys.executable, "-m", "benchmarks.rusage", "--", *contender.argv]
    env = {**os.environ, **dict(contender.env), "PYTHONHASHSEED": "0"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    started = time.perf_counter()
    try:
        done = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{contender.name} did not finish within {timeout:.0f}s") from None
    wall = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"{contender.name} exited with {done.returncode}:\n{tail}")
    reported: dict[str, Any] = {}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            reported = json.loads(line[len("RESULT ") :])
    usage = reported.pop("__rusage__", {})
    return Sample(wall, usage.get("cpu_s", 0.0), usage.get("peak_rss_mb", 0.0), reported)


def run_interleaved(
    contenders: list[Contender], repeat: int, cwd: Path, warmup: int = 1, log: Any = print
) -> list[Outcome]:
    outcomes = {c.name: Outcome(c.name, c.group, []) for c in contenders}
    for contender in contenders:
        if contender.unsupported:
            outcome = outcomes[contender.name]
            outcome.error, outcome.unsupported = f"not supported: {contender.unsupported}", True
            log(f"  {contender.name}: not supported ({contender.unsupported})")
    for round_number in range(warmup + repeat):
        label = "warm-up" if round_number < warmup else f"run {round_number - warmup + 1}/{repeat}"
        # Rotate who goes first each round: a contender that always follows a heavy one
        # (a database still flushing the last load, say) would otherwise carry that cost alone.
        shift = round_number % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            outcome = outcomes[contender.name]
            if outcome.error:
                continue
            try:
                sample = measure(contender, cwd)
            except RuntimeError as exc:
                outcome.error = str(exc)
                log(f"  {contender.name}: FAILED {str(exc).strip().splitlines()[-1]}")
                continue
            log(
                f"  {label:>10} {contender.name:<32} {sample.wall_s:8.3f}s wall "
                f"{sample.peak_rss_mb:8.1f} MB"
            )
            if round_number >= warmup:
                outcome.samples.append(sample)
    _check_agreement(list(outcomes.values()))
    return list(outcomes.values())


def _check_agreement(outcomes: list[Outcome]) -> None:
    """A contender whose output differs from its group's is wrong, not fast."""
    groups: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        if outcome.group and outcome.samples:
            groups.setdefault(outcome.group, []).append(outcome)
    for members in groups.values():
        sums = {o.contender: o.samples[-1].reported.get("checksum") for o in members}
        reference = next((v for v in sums.values() if v is not None), None)
        for outcome in members:
            if sums[outcome.contender] != reference:
                outcome.error = (
                    f"output checksum {sums[outcome.contender]} differs from "
                    f"{reference}: reported as wrong, not timed"
                )


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for package in (
        "arrowline",
        "pyarrow",
        "duckdb",
        "polars",
        "pandera",
        "sqlglot",
        "pandas",
        "connectorx",
        "dlt",
        "dagster",
        "prefect",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "hostname": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "load_average_at_start": os.getloadavg(),
    }


def save(
    workload: str, outcomes: list[Outcome], params: dict[str, Any], summary: dict[str, Any]
) -> Path:
    """Write a result file; quick runs go to `*-quick.json`, never over a real measurement."""
    RESULTS.mkdir(exist_ok=True)
    info = machine()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    size = params.get("rows") or params.get("append_rows")
    suffix = (f"-{size}" if isinstance(size, int) else "") + (
        "-quick" if params.get("quick") else ""
    )
    if params.get("only"):  # a partial run never replaces a complete one
        suffix += "-only-" + "".join(c if c.isalnum() else "_" for c in params["only"])[:40]
    path = RESULTS / f"{stamp}-{info['hostname']}-{workload}{suffix}.json"
    payload = {
        "workload": workload,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "params": params,
        "summary": summary,
        "outcomes": [
            {
                "contender": o.contender,
                "group": o.group,
                "error": o.error,
                "unsupported": o.unsupported,
                "samples": [asdict(s) for s in o.samples],
            }
            for o in outcomes
        ],
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return path

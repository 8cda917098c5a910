"""What a run cost the process that ran it: CPU seconds and peak resident memory, from
`getrusage`, recorded with the run in the catalog (engine.state.transitions) so that
`arrowline runs compare` can set two runs side by side.

Both are of the whole process, which is what a run is on the command line. Where one process
runs several pipelines (the scheduler, a notebook, `arrowline run --repeat`), the CPU time is
still the run's own (a difference over the run), but the peak is the highest the process
reached so far: memory given back is not counted down.

Without the `resource` module (Windows) nothing is measured and the catalog keeps NULLs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

__all__ = ["RunUsage", "UsageMeter"]


@dataclass(frozen=True)
class RunUsage:
    cpu_s: float
    """User plus system CPU seconds of the process's threads, and of child processes that
    ended, over the run."""
    peak_rss_bytes: int
    """The process's peak resident set size at the run's end."""


def _now() -> tuple[float, int] | None:
    """(CPU seconds so far, peak RSS in bytes), or None where getrusage does not exist."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    # ru_maxrss is in kilobytes on Linux and the BSDs, in bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return cpu, own.ru_maxrss * scale


class UsageMeter:
    """Started when a run starts; `spent()` when it ends."""

    def __init__(self) -> None:
        self._start = _now()

    def spent(self) -> RunUsage | None:
        end = _now()
        if self._start is None or end is None:
            return None
        return RunUsage(cpu_s=max(0.0, end[0] - self._start[0]), peak_rss_bytes=end[1])

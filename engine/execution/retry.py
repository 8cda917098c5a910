"""Retry delays: exponential backoff with full jitter, capped, honouring Retry-After.

Attempt n (1-based) failed; the delay before attempt n + 1 is drawn uniformly from
[0, min(max_backoff, backoff * 2**(n-1))] with full jitter, or is exactly that bound without.
When the remote side said how long to wait (HTTP Retry-After), the delay is at least that.
Randomness is passed in, so tests assert exact delays.
"""

from __future__ import annotations

import random

from engine.spec.model import RetryPolicy

__all__ = ["backoff_delay"]


def backoff_delay(
    policy: RetryPolicy,
    failed_attempt: int,
    rng: random.Random,
    retry_after: float | None = None,
) -> float:
    base = policy.backoff.total_seconds()
    cap = policy.max_backoff.total_seconds()
    bound = min(cap, base * (2 ** max(0, failed_attempt - 1)))
    delay = rng.uniform(0.0, bound) if policy.jitter == "full" else bound
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay

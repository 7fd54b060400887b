"""Exponential backoff with jitter, as a pure function.

Room: with pool. Imports nothing of rrd.
"""

from __future__ import annotations

import random


def backoff_delay(
    failures: int,
    *,
    base: float = 0.1,
    maximum: float = 10.0,
    jitter: float = 0.2,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before the next start after `failures` consecutive failed starts.

    The first failure retries at once (a one-off crash costs nothing); then base, 2*base,
    4*base... up to `maximum`, each spread by +-`jitter` so a fleet does not restart in step.
    """
    if failures <= 1:
        return 0.0
    delay = min(maximum, base * 2.0 ** min(failures - 2, 64))  # 2**1024 would overflow
    spread = (rng or random).uniform(-jitter, jitter)
    return max(0.0, min(maximum, delay * (1 + spread)))

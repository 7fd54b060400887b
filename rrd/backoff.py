"""Exponential backoff with jitter, as a pure function.

Room: with pool. Imports nothing of rrd.
"""

from __future__ import annotations

import random


def backoff_delay(
    attempt: int,
    *,
    initial: float = 0.1,
    maximum: float = 30.0,
    multiplier: float = 2.0,
    jitter: float = 0.2,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before starting again after `attempt` consecutive failed starts.

    `initial`, then `initial * multiplier`, `initial * multiplier**2`... up to `maximum`, each
    spread by +-`jitter` (a fraction) so that a fleet does not restart in step; 0 for none yet.
    """
    if attempt < 1 or initial <= 0:
        return 0.0
    try:
        delay = min(maximum, initial * multiplier ** (attempt - 1))
    except OverflowError:  # long past the maximum
        delay = maximum
    spread = (rng or random).uniform(-jitter, jitter) if jitter else 0.0
    return max(0.0, min(maximum, delay * (1 + spread)))

"""Time as the daemon sees it: a monotonic clock for intervals, wall time only for humans.

Room: with worker and pool. Imports nothing of rrd. Tests swap in a fake clock.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """What scheduling code needs of time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; for every interval and deadline."""

    def wall(self) -> float:
        """Unix seconds; only for what a person or a worker reads."""

    async def sleep_until(self, deadline: float) -> None:
        """Return once `monotonic()` has reached `deadline`; always yields to the loop first."""


class SystemClock:
    """The real clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        # Even when the deadline has passed: a loop that never yields hears no signal.
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))

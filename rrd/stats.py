"""Histograms cheap enough to record on the hot path: one bisect and two additions.

Room: stats. Imports nothing of rrd. The loop is single-threaded, so there are no locks; the
exposition (rrd.http.metrics) reads a `snapshot()` at scrape time and turns it into Prometheus'
cumulative `le` buckets.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

_UP_TO_A_SECOND = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)

EXEC_SECONDS = (*_UP_TO_A_SECOND, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Bounds for how long a worker takes over one payload: 100 µs to a minute."""

LATENESS_SECONDS = _UP_TO_A_SECOND
"""Bounds for how far behind its due moment a tick is sent: 100 µs to a second."""


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """One moment of a histogram: `cumulative[i]` counts values <= `bounds[i]`, and the last
    entry (the +Inf bucket) equals `count`."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    sum: float
    count: int


class Histogram:
    """Counts of observed values per bucket, Prometheus' way: a value equal to a bound falls
    in that bound's bucket (`le`); values above the last bound go to +Inf."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise ValueError(f"histogram bounds must be ascending and distinct: {bounds!r}")
        self.bounds = tuple(float(bound) for bound in bounds)
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Record one value (seconds, bytes: the unit of the bounds)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        """Values observed so far."""
        return sum(self.counts)

    def snapshot(self) -> HistogramSnapshot:
        running = 0
        cumulative = []
        for bucket in self.counts:
            running += bucket
            cumulative.append(running)
        return HistogramSnapshot(self.bounds, tuple(cumulative), self.sum, running)

"""Time as the daemon sees it: a monotonic clock for intervals, wall time only for humans.

Room: with worker and pool. Imports nothing of rrd. Tests swap in a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
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
        if deadline <= time.monotonic():
            # Even so, yield: a loop that never yields hears no signal.
            await asyncio.sleep(0)
            return
        await _ALARMS.wake_at(deadline)


class Alarms:
    """Wakes coroutines at their deadlines to within ~0.1 ms, from one sleeping thread.

    The loop's own timers are late by up to a millisecond and more (epoll's timeout counts
    whole milliseconds, rounded up); a thread sleeps on the kernel's nanosecond timer and
    hands each due wake-up to its loop with `call_soon_threadsafe`. The thread starts with
    the first alarm and sleeps while there is none.
    """

    def __init__(self) -> None:
        self._due = threading.Condition()
        self._alarms: list[tuple[float, int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    async def wake_at(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        with self._due:
            heapq.heappush(self._alarms, (deadline, next(self._order), loop, woken))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rrd-alarms", daemon=True)
                self._thread.start()
            elif self._alarms[0][3] is woken:
                self._due.notify()
        await woken

    def _run(self) -> None:
        with self._due:
            while True:
                if not self._alarms:
                    self._due.wait()
                    continue
                left = self._alarms[0][0] - time.monotonic()
                if left > 0:
                    self._due.wait(left)
                    continue
                _, _, loop, woken = heapq.heappop(self._alarms)
                if woken.done():  # its sleeper was cancelled
                    continue
                with contextlib.suppress(RuntimeError):  # that loop is closed
                    loop.call_soon_threadsafe(_wake, woken)


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)


_ALARMS = Alarms()

"""A fake Clock: time moves only when a test says so, and sleepers wake in deadline order.
And a ticker on it, sending to a Recorder instead of a pool."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from rrd.plugins.ticker import Ticker
from rrd.pool import Reply
from rrd.protocol.control import Payload


class FakeClock:
    def __init__(self, start: float = 1000.0, wall_start: float = 1_700_000_000.0) -> None:
        self.now = start
        self._wall_offset = wall_start - start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self._wall_offset

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self.now:
            await asyncio.sleep(0)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((deadline, waiter))
        await waiter

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its own deadline, in order."""
        target = self.now + seconds
        while due := [s for s in self._sleepers if s[0] <= target]:
            deadline, waiter = min(due, key=lambda s: s[0])
            self._sleepers.remove((deadline, waiter))
            self.now = max(self.now, deadline)
            if not waiter.done():  # a cancelled sleeper is simply dropped
                waiter.set_result(None)
            await settle()
        self.now = target
        await settle()

    def suspend(self, seconds: float) -> None:
        """The host slept: the wall clock moved on, the monotonic one did not."""
        self._wall_offset += seconds

    async def jump(self, seconds: float) -> None:
        """Move time forward at once, as a loop blocked for that long would see it."""
        self.now += seconds
        await self.advance(0)


async def settle() -> None:
    """Let every ready task run until the loop is quiet."""
    for _ in range(50):
        await asyncio.sleep(0)


class Recorder:
    """An exec that records when each payload arrived; optionally takes a while, holds or
    fails it."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[tuple[float, Payload]] = []
        self.hold: asyncio.Event | None = None
        self.duration = 0.0
        self.fail: BaseException | None = None

    async def __call__(self, payload: Payload) -> Reply:
        self.calls.append((self.clock.monotonic(), payload))
        if self.duration:
            await self.clock.sleep_until(self.clock.monotonic() + self.duration)
        if self.hold is not None:
            await self.hold.wait()
        if self.fail is not None:
            raise self.fail
        return Reply(Payload(), worker_pid=4242)

    def ticks(self) -> list[int]:
        return [json.loads(p.body)["tick"] for _, p in self.calls]

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(p.body) for _, p in self.calls]

    def contexts(self) -> list[dict[str, Any]]:
        return [json.loads(p.context) for _, p in self.calls]


@asynccontextmanager
async def ticking(**options: Any) -> AsyncIterator[tuple[Ticker, Recorder, FakeClock]]:
    """A Ticker (interval 1 s unless given) running on a FakeClock into a Recorder; at the end
    its ticks in flight are let finish and its ledger must balance."""
    clock = options.pop("clock", None) or FakeClock()
    recorder = Recorder(clock)
    ticker = Ticker(recorder, interval=options.pop("interval", 1.0), clock=clock, **options)
    task = asyncio.create_task(ticker.run())
    await settle()
    try:
        yield ticker, recorder, clock
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if recorder.hold is not None:
            recorder.hold.set()
        await clock.advance(3600)  # wakes execs still sleeping on the fake clock
        await ticker.drain()
        assert ticker.ledger.balanced, ticker.ledger.snapshot()

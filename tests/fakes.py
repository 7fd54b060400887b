"""A fake Clock: time moves only when a test says so, and sleepers wake in deadline order."""

from __future__ import annotations

import asyncio


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

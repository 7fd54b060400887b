"""The system clock's alarms: sleepers wake at their deadlines, in order, whatever is cancelled
and however many loops come and go (the alarm thread outlives each)."""

from __future__ import annotations

import asyncio
import time

from rrd.clock import Alarms, SystemClock
from tests.helpers import eventually


async def test_sleepers_wake_in_deadline_order_never_early() -> None:
    alarms = Alarms()
    woken: list[int] = []
    start = time.monotonic()

    async def sleeper(index: int, delay: float) -> None:
        await alarms.wake_at(start + delay)
        assert time.monotonic() >= start + delay
        woken.append(index)

    await asyncio.gather(*(sleeper(i, d) for i, d in enumerate([0.06, 0.02, 0.04, 0.0])))
    assert woken == [3, 1, 2, 0]


async def test_a_cancelled_sleeper_does_not_hold_up_the_others() -> None:
    alarms = Alarms()
    start = time.monotonic()
    first = asyncio.create_task(alarms.wake_at(start + 0.02))
    second = asyncio.create_task(alarms.wake_at(start + 0.04))
    await eventually(lambda: len(alarms._alarms) == 2)  # both asleep on the alarm thread
    first.cancel()
    await asyncio.wait_for(second, 5)
    assert first.cancelled()


def test_the_alarm_thread_serves_one_loop_after_another() -> None:
    clock = SystemClock()
    for _ in range(3):
        asyncio.run(clock.sleep_until(clock.monotonic() + 0.01))


async def test_a_deadline_past_still_yields_to_the_loop() -> None:
    clock = SystemClock()
    other = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(other.set_result, None)
    await clock.sleep_until(clock.monotonic() - 1)
    assert other.done()

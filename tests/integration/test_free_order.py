"""Which idle worker a caller gets: the one freed last (warm), so a pool larger than its load
keeps the same few workers busy and the rest asleep, and every worker still serves when the
load needs it."""

from __future__ import annotations

import asyncio

from rrd.protocol.control import Payload
from tests.integration.test_pool_paths import running, serving


async def test_one_caller_at_a_time_is_served_by_the_worker_freed_last() -> None:
    async with running(num_workers=3) as pool:
        first = await pool.exec(Payload(b"PID"))
        again = [(await pool.exec(Payload(b"PID"))).worker_pid for _ in range(10)]
        assert set(again) == {first.worker_pid}


async def test_under_load_every_worker_serves() -> None:
    async with running(num_workers=3) as pool:
        replies = await asyncio.gather(*(pool.exec(Payload(b"SLEEP:0.2")) for _ in range(3)))
        assert {r.worker_pid for r in replies} == {w.pid for w in serving(pool)}


async def test_a_worker_freed_during_a_burst_is_the_next_one_used() -> None:
    async with running(num_workers=2) as pool:
        slow = asyncio.create_task(pool.exec(Payload(b"SLEEP:0.3")))
        quick = await pool.exec(Payload(b"PID"))
        await slow
        slow_pid = slow.result().worker_pid
        assert slow_pid != quick.worker_pid
        assert (await pool.exec(Payload(b"PID"))).worker_pid == slow_pid  # freed last

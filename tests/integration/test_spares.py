"""Warm spares (`pool.spares`) against real workers: a dead worker's slot is taken by a spare at
once and a new spare starts behind it; spares are renewed by a reset and a new command, follow
a reload's count, are health-checked, never serve while outside the rotation, and none is left
behind when the pool stops."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import replace

import pytest

from rrd.config import HealthConfig
from rrd.protocol.control import Payload
from tests.helpers import eventually, pid_alive, worker_argv
from tests.integration.test_pool_paths import running, serving, settled_at, spec_of


def spare_pids(pool: object) -> set[int]:
    return {w.pid for w in pool.keeper.spares}  # type: ignore[attr-defined]


async def spares_ready(pool: object, count: int) -> set[int]:
    await eventually(lambda: len(spare_pids(pool)) == count, timeout=15)
    return spare_pids(pool)


async def proven(worker: object) -> None:
    """Lived past min_uptime: its death is a crash, not a failed start with a backoff."""
    ready_at = worker.ready_at  # type: ignore[attr-defined]
    await eventually(lambda: time.monotonic() - ready_at > 0.3, timeout=5)


async def test_a_dead_workers_slot_is_taken_by_a_spare_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "rrd")
    async with running(num_workers=2, spares=1) as pool:
        (spare,) = await spares_ready(pool, 1)
        assert pool.status().spares == 1 and pool.status().ready == 2
        victim = serving(pool)[0]
        await proven(victim)
        os.kill(victim.pid, signal.SIGKILL)
        await eventually(lambda: victim.exited, timeout=10)
        # in the same step as the dead worker left: no start had to run
        assert spare in {w.pid for w in serving(pool)}
        assert "pool.spare_promoted" in [getattr(r, "event", "") for r in caplog.records]
        (new_spare,) = await spares_ready(pool, 1)
        assert new_spare not in (spare, victim.pid)
        await settled_at(pool, 2)


async def test_a_spare_serves_nothing_until_it_takes_a_slot() -> None:
    async with running(num_workers=2, spares=2) as pool:
        spares = await spares_ready(pool, 2)
        replies = await asyncio.gather(*(pool.exec(Payload(b"PID")) for _ in range(20)))
        assert not {r.worker_pid for r in replies} & spares
        assert pool.status().size == 2 and len(pool.workers()) == 2


async def test_a_spare_that_dies_is_replaced_by_another_spare() -> None:
    async with running(num_workers=1, spares=1) as pool:
        (spare,) = await spares_ready(pool, 1)
        before = [w.pid for w in serving(pool)]
        os.kill(spare, signal.SIGKILL)
        await eventually(lambda: spare_pids(pool) and spare not in spare_pids(pool), timeout=15)
        assert [w.pid for w in serving(pool)] == before
        assert pool.status().departures  # its death is counted


async def test_a_reset_renews_the_spares_too() -> None:
    async with running(num_workers=2, spares=1) as pool:
        (old_spare,) = await spares_ready(pool, 1)
        old = {w.pid for w in serving(pool)}
        assert await pool.reset()
        await eventually(lambda: not pid_alive(old_spare), timeout=10)
        (new_spare,) = await spares_ready(pool, 1)
        assert new_spare != old_spare
        assert not {w.pid for w in serving(pool)} & (old | {old_spare})


async def test_a_reload_sets_the_spare_count_and_a_new_command_renews_them() -> None:
    async with running(num_workers=1, spares=2) as pool:
        first = await spares_ready(pool, 2)
        fewer = replace(pool.config, spares=1)
        await pool.reconfigure(fewer, pool.spec, size_changed=False, replace_workers=False)
        (kept,) = await spares_ready(pool, 1)
        assert kept in first
        await eventually(lambda: sum(pid_alive(p) for p in first) == 1, timeout=10)
        more = replace(fewer, spares=3)
        new_spec = replace(spec_of(more), env={**pool.spec.env, "RRD_TEST_GENERATION": "2"})
        await pool.reconfigure(more, new_spec, size_changed=False, replace_workers=True)
        renewed = await spares_ready(pool, 3)
        assert kept not in renewed
        await eventually(lambda: not pid_alive(kept), timeout=10)


async def test_scaling_up_takes_the_spares_first() -> None:
    async with running(num_workers=1, spares=2) as pool:
        spares = await spares_ready(pool, 2)
        pool.scale(3)
        assert spares <= {w.pid for w in serving(pool)}  # at once, not after a start
        await spares_ready(pool, 2)
        await settled_at(pool, 3)


async def test_spares_are_health_checked_and_a_hung_one_replaced() -> None:
    health = HealthConfig(interval=0.1, timeout=0.5)
    async with running(num_workers=1, spares=1, health=health) as pool:
        (spare,) = await spares_ready(pool, 1)
        os.kill(spare, signal.SIGSTOP)  # alive but deaf: only a check finds it out
        try:
            await eventually(lambda: not pid_alive(spare), timeout=10)
        finally:
            if pid_alive(spare):
                os.kill(spare, signal.SIGCONT)
        await eventually(lambda: spare_pids(pool) and spare not in spare_pids(pool), timeout=15)
        await settled_at(pool, 1)


async def test_stopping_a_pool_stops_its_spares() -> None:
    async with running(num_workers=1, spares=2) as pool:
        spares = await spares_ready(pool, 2)
    assert not any(pid_alive(p) for p in spares)


async def test_a_spare_still_starting_when_a_reset_begins_never_serves() -> None:
    """Its process began before the reset, so it may run the old code: it is stopped when it
    is ready, and a spare started after the reset takes its place."""
    async with running(num_workers=1, spares=1) as pool:
        (spare,) = await spares_ready(pool, 1)
        slow = replace(pool.keeper.spec, argv=worker_argv("slow_boot", "0.5"))
        pool.keeper.spec = slow  # the next starts are slow, without renewing anything
        os.kill(spare, signal.SIGKILL)
        registry = pool.keeper.registry
        await eventually(lambda: len(registry) == 2 and not spare_pids(pool))  # it was forked
        began = time.monotonic()
        assert await pool.reset()
        (renewed,) = await spares_ready(pool, 1)
        (worker,) = [w for w in pool.keeper.spares if w.pid == renewed]
        assert worker.started_at >= began
        assert all(w.started_at >= began for w in serving(pool))

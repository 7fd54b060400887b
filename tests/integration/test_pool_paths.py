"""The paths between a pool's features, against real workers: a reset whose successor dies
while it waits, a scale while every worker is busy, during a reset or while starts fail, a
reload's new limits on live workers, health checks beside idle_ttl.

Each of these broke on c77a251: the pool ended short for good, or rrd exited 70."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest

from rrd.config import HealthConfig, LimitsConfig, PoolConfig, RestartConfig
from rrd.errors import WorkerError
from rrd.fsm import ExitReason, WorkerState
from rrd.pool import Pool
from rrd.proc import ProcessRegistry
from rrd.protocol.control import Payload
from rrd.worker import WorkerProcess, WorkerSpec
from tests.fakes import settle
from tests.helpers import eventually, holds_for, pid_alive, worker_argv

QUIET = HealthConfig(interval=0)
FAST = RestartConfig(initial_delay=0.05, max_delay=0.2, jitter=0, max_retries=50, min_uptime=0.2)


def spec_of(config: PoolConfig, name: str = "echo") -> WorkerSpec:
    return WorkerSpec(
        worker_argv(name),
        env=dict(os.environ),
        plugin="test",
        allocate_timeout=config.allocate_timeout,
        kill_timeout=config.kill_timeout,
        max_frame_size=config.max_frame_size,
        max_reply_size=config.max_reply_size,
    )


@asynccontextmanager
async def running(**settings: Any) -> AsyncIterator[Pool]:
    settings.setdefault("health", QUIET)
    settings.setdefault("restart", FAST)
    config = replace(
        PoolConfig(), allocate_timeout=10.0, destroy_timeout=5.0, reset_timeout=10.0, **settings
    )
    registry = ProcessRegistry()
    pool = Pool("test", spec_of(config), config, registry=registry, on_crash=_bug)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.destroy()
        assert not pool.workers() and len(registry) == 0


def _bug(where: str, error: BaseException) -> None:
    raise AssertionError(f"{where}: {error!r}")  # surfaces as an unraisable in the test


def serving(pool: Pool) -> list[WorkerProcess]:
    return [w for w in pool.keeper.serving if w.state.in_service]


def live_ready(pool: Pool) -> list[WorkerProcess]:
    """Alive and serving, not leaving (WORKING too: a health check may hold it a moment)."""
    serving_now = (WorkerState.READY, WorkerState.WORKING)
    return [w for w in serving(pool) if w.state in serving_now and pid_alive(w.pid)]


async def settled_at(pool: Pool, size: int) -> None:
    """The pool has exactly `size` live workers in service, none leaving, and keeps it."""
    await eventually(
        lambda: len(serving(pool)) == size and len(live_ready(pool)) == size, timeout=15
    )
    await settle()
    # a refill or a retirement wrongly under way would show within this
    await holds_for(lambda: len(serving(pool)) == size == len(live_ready(pool)), 0.3)
    assert pool.status().size == size
    replies = await asyncio.gather(*(pool.exec(Payload(b"PID")) for _ in range(2 * size)))
    assert {r.worker_pid for r in replies} <= {w.pid for w in serving(pool)}


# 1. A reset's held successor that dies before it is promoted


async def test_a_successor_that_dies_while_held_is_replaced_not_promoted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The busy predecessor keeps serving; the dead successor never enters service; another
    successor takes the slot, and health checks on the pool meet no dead worker."""
    health = HealthConfig(interval=0.05, timeout=2)
    async with running(num_workers=1, health=health) as pool:
        (old,) = serving(pool)
        busy = asyncio.create_task(pool.exec(Payload(b"SLEEP:1.0")))
        await eventually(lambda: old.state is WorkerState.WORKING)
        resetting = asyncio.create_task(pool.reset())
        held = await eventually(lambda: list(pool.keeper._held.values()), timeout=10)
        os.kill(held[0].pid, signal.SIGKILL)
        await eventually(lambda: held[0].exited)
        assert held[0] not in pool.keeper.serving
        assert (await busy).payload.body == b"slept"
        await asyncio.wait_for(resetting, 10)
        await settled_at(pool, 1)
        (new,) = serving(pool)
        assert new is not old and new is not held[0]
        await holds_for(lambda: serving(pool) == [new], 0.3)  # health checks run on it meanwhile


# 3. Scaling while busy, during a reset, while starts fail


async def test_scaling_down_while_every_worker_is_busy_ends_at_the_new_size() -> None:
    async with running(num_workers=4) as pool:
        jobs = [asyncio.create_task(pool.exec(Payload(b"SLEEP:0.6"))) for _ in range(4)]
        await eventually(lambda: all(w.state is WorkerState.WORKING for w in serving(pool)))
        pool.scale(1)
        await asyncio.gather(*jobs)
        await settled_at(pool, 1)


async def test_a_busy_worker_that_dies_during_a_scale_down_is_not_replaced_past_the_size() -> None:
    """On c77a251 the replacement met the draining workers still counted, was refused, and
    the pool ended empty once they left."""
    async with running(num_workers=4) as pool:
        jobs = [asyncio.create_task(pool.exec(Payload(b"SLEEP:0.8"))) for _ in range(4)]
        await eventually(lambda: all(w.state is WorkerState.WORKING for w in serving(pool)))
        pool.scale(2)
        victim = next(w for w in serving(pool) if w.reason is None)
        os.kill(victim.pid, signal.SIGKILL)
        results = await asyncio.gather(*jobs, return_exceptions=True)
        assert sum(isinstance(r, WorkerError) for r in results) == 1
        await settled_at(pool, 2)


async def test_scaling_down_then_up_while_busy_ends_at_the_last_size() -> None:
    async with running(num_workers=4) as pool:
        jobs = [asyncio.create_task(pool.exec(Payload(b"SLEEP:0.6"))) for _ in range(4)]
        await eventually(lambda: all(w.state is WorkerState.WORKING for w in serving(pool)))
        pool.scale(1)
        pool.scale(3)
        await asyncio.gather(*jobs)
        await settled_at(pool, 3)


async def test_scaling_during_a_reset_ends_at_the_new_size_with_new_workers() -> None:
    async with running(num_workers=4) as pool:
        before = {w.pid for w in serving(pool)}
        busy = asyncio.create_task(pool.exec(Payload(b"SLEEP:0.5")))
        resetting = asyncio.create_task(pool.reset())
        await eventually(lambda: pool.keeper._replacing)
        pool.scale(2)
        await busy
        await asyncio.wait_for(resetting, 10)
        await settled_at(pool, 2)
        pool.scale(5)
        await settled_at(pool, 5)
        assert not {w.pid for w in serving(pool)} & before


async def test_scaling_up_while_starts_fail_and_back_off_converges_once_they_succeed(
    tmp_path: Any,
) -> None:
    """Starts under way count: a scale while they back off starts no extra ones."""
    async with running(num_workers=2) as pool:
        pool.keeper.spec = replace(pool.keeper.spec, argv=worker_argv("boot_crash"))
        for worker in serving(pool):
            os.kill(worker.pid, signal.SIGKILL)
        await eventually(lambda: pool.keeper.failures >= 2)
        pool.scale(3)
        pool.scale(1)
        pool.keeper.spec = replace(pool.keeper.spec, argv=worker_argv("echo"))
        await settled_at(pool, 1)


# 11. A reload's limits reach the workers already running


async def test_new_frame_and_reply_caps_and_kill_timeout_apply_to_live_workers() -> None:
    async with running(num_workers=1) as pool:
        (worker,) = serving(pool)
        small = replace(pool.config, max_frame_size=1024, max_reply_size=2048, kill_timeout=0.5)
        await pool.reconfigure(small, spec_of(small), size_changed=False, replace_workers=False)
        assert worker.spec.kill_timeout == 0.5 and worker.spec.max_reply_size == 2048
        assert worker.spec.argv == pool.spec.argv
        with pytest.raises(WorkerError):
            await pool.exec(Payload(b"x" * 4096))  # the reply frame is over the new cap
        await eventually(lambda: not pid_alive(worker.pid))
        assert worker.reason is ExitReason.GARBAGE
        await settled_at(pool, 1)


# 12. Health checks are not jobs: idle_ttl still fires


async def test_idle_ttl_retires_an_idle_worker_even_with_health_checks_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rrd.pool")
    limits = LimitsConfig(watch_tick=0.1, idle_ttl=0.6)
    async with running(
        num_workers=1, supervisor=limits, health=HealthConfig(interval=0.1, timeout=2)
    ) as pool:
        (first,) = serving(pool)
        await eventually(lambda: first.checked_at > 0)  # health checks do run
        await eventually(lambda: first not in pool.keeper.serving, timeout=10)
        assert first.reason is ExitReason.IDLE_TTL
        retired = [r for r in caplog.records if getattr(r, "event", "") == "worker.retired"]
        assert retired and retired[0].reason == "idle_ttl"


# A reset of a pool larger than its window (a quarter of the pool at a time)


async def test_a_reset_of_many_workers_replaces_them_all_a_window_at_a_time() -> None:
    """Eight workers, two being replaced at a time: the reset ends with eight new ones, and
    the loop answers meanwhile (on 374ccb3 it spun once the last ones were under way)."""
    async with running(num_workers=8) as pool:
        old = {w.pid for w in serving(pool)}
        resetting = asyncio.create_task(pool.reset())
        under_way: list[int] = []

        def done() -> bool:  # sampled on the loop: a spinning reset never lets it run
            under_way.append(len(pool.keeper._replacing))
            return resetting.done()

        await eventually(done, timeout=30, step=0.005)
        assert await resetting
        most = max(under_way)
        assert 1 <= most <= 2
        await settled_at(pool, 8)
        assert not {w.pid for w in serving(pool)} & old

"""A pool on its bad days, against real misbehaving workers: limits, health checks, restarts
with backoff, fatal pools, and no process left behind."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from rrd.config import HealthConfig, LimitsConfig, PoolConfig, RestartConfig
from rrd.errors import ExecTimeout, WorkerError
from rrd.fsm import ExitReason, WorkerState
from rrd.pool import Pool, PoolState
from rrd.proc import ProcessRegistry, tree_memory
from rrd.protocol.control import Payload
from rrd.worker import WorkerSpec
from tests.helpers import eventually, pid_alive, worker_argv

QUIET = HealthConfig(interval=0)
FAST = RestartConfig(initial_delay=0.05, max_delay=0.4, jitter=0, max_retries=5, min_uptime=0.5)


def pool_of(
    name: str,
    *,
    env: dict[str, str] | None = None,
    registry: ProcessRegistry | None = None,
    **settings: Any,
) -> Pool:
    settings.setdefault("health", QUIET)
    settings.setdefault("restart", FAST)
    settings.setdefault("num_workers", 1)
    settings.setdefault("destroy_timeout", 5.0)
    config = replace(PoolConfig(), allocate_timeout=10.0, **settings)
    spec = WorkerSpec(
        worker_argv(name),
        env={**os.environ, **(env or {})},
        plugin="test",
        allocate_timeout=config.allocate_timeout,
        kill_timeout=config.kill_timeout,
    )
    return Pool("test", spec, config, registry=registry or ProcessRegistry())


@asynccontextmanager
async def running(name: str, **options: Any) -> AsyncIterator[Pool]:
    pool = pool_of(name, **options)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.destroy()
        assert not pool.workers() and len(pool.keeper.registry) == 0


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", "") == name]


def in_service(pool: Pool) -> set[int]:
    return {w.pid for w in pool.keeper.serving if w.state.in_service}


# Limits


async def test_ttl_retires_each_worker_successor_first_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rrd.pool")
    limits = LimitsConfig(watch_tick=0.1, ttl=0.6)
    async with running("echo", num_workers=2, supervisor=limits) as pool:
        first = in_service(pool)
        serving: list[int] = []
        while first & in_service(pool) or len(in_service(pool)) < 2:
            serving.append(len(in_service(pool)))
            await asyncio.sleep(0.01)
        assert min(serving) == 2  # never short while its workers were replaced
        retired = events(caplog, "worker.retired")
        assert {r.worker_pid for r in retired} == first
        assert all(r.reason == "ttl" and 0.6 <= r.age_s <= 0.6 * 1.15 + 0.3 for r in retired)
        assert pool.keeper.departures[ExitReason.TTL] == 2


async def test_ttl_and_max_jobs_are_spread_per_worker_so_a_pool_does_not_retire_at_once() -> None:
    limits = LimitsConfig(ttl=100.0)
    pool = pool_of("echo", num_workers=8, max_jobs=1000, supervisor=limits)
    pool.keeper.rng = random.Random(3)
    await pool.start()
    try:
        workers = list(pool.keeper.serving)
        ttls = [w.expires_at - w.ready_at for w in workers if w.expires_at and w.ready_at]
        assert len(ttls) == 8 and all(100 <= t <= 115 for t in ttls) and len(set(ttls)) == 8
        jobs = [w.max_jobs for w in workers]
        assert all(1000 <= j <= 1150 for j in jobs) and len(set(jobs)) > 4
    finally:
        await pool.destroy()


async def test_a_soft_limit_reached_during_a_job_retires_the_worker_after_it() -> None:
    limits = LimitsConfig(watch_tick=0.1, ttl=0.3)
    async with running("echo", supervisor=limits) as pool:
        reply = await pool.exec(Payload(b"SLEEP:1"))
        assert reply.payload.body == b"slept"
        await eventually(lambda: reply.worker_pid not in in_service(pool))
        await eventually(lambda: not pid_alive(reply.worker_pid))
        assert pool.keeper.departures[ExitReason.TTL] >= 1


async def test_idle_ttl_retires_a_worker_that_never_had_a_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rrd.pool")
    async with running("echo", supervisor=LimitsConfig(watch_tick=0.1, idle_ttl=0.4)) as pool:
        (first,) = in_service(pool)
        await eventually(lambda: in_service(pool) and first not in in_service(pool))
        (retired, *_) = events(caplog, "worker.retired")
        assert retired.reason == "idle_ttl" and retired.idle_s >= 0.4


async def test_memory_counts_the_whole_process_tree(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rrd.pool")
    limits = LimitsConfig(watch_tick=0.1, max_worker_memory=60)
    async with running("memory_hog", supervisor=limits) as pool:
        (hog,) = in_service(pool)
        await pool.exec(Payload(b"GROW:80"))  # held by a child of the worker
        assert tree_memory([hog])[hog] > 80 << 20
        await eventually(lambda: in_service(pool) and hog not in in_service(pool), timeout=10)
        (retired,) = events(caplog, "worker.retired")
        assert retired.reason == "memory" and retired.rss_mib > 60 and retired.max_mib == 60
        await eventually(lambda: not pid_alive(hog))


async def test_exec_ttl_times_the_caller_out_and_kills_sigterm_first() -> None:
    limits = LimitsConfig(exec_ttl=0.3)
    async with running(
        "stubborn", supervisor=limits, kill_timeout=0.3, destroy_timeout=0.3
    ) as pool:
        (worker,) = pool.keeper.serving
        began = time.monotonic()
        with pytest.raises(ExecTimeout, match=r"no reply within 0\.3s"):
            await pool.exec(Payload(b"HANG"), timeout=30)
        assert time.monotonic() - began < 1
        assert await worker.wait_exited() == -signal.SIGKILL  # it ignored SIGTERM
        assert worker.reason is ExitReason.EXEC_TTL
        await eventually(lambda: len(in_service(pool)) == 1)


# Health checks


async def test_an_idle_worker_is_checked_again_and_again_and_keeps_serving() -> None:
    async with running("echo", health=HealthConfig(interval=0.2, timeout=1)) as pool:
        (worker,) = pool.keeper.serving
        await eventually(lambda: worker.checked_at > 0)
        first_check = worker.checked_at
        await eventually(lambda: worker.checked_at > first_check + 0.15)
        assert (await pool.exec(Payload(b"x"))).worker_pid == worker.pid
        assert worker.state is WorkerState.READY


async def test_a_worker_that_does_not_answer_its_health_check_is_replaced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health = HealthConfig(interval=0.2, timeout=0.3)
    # it ignores the stop frame and SIGTERM too: short timeouts keep the end of the test short
    async with running("ignores_eof", health=health, destroy_timeout=0.2, kill_timeout=0.2) as pool:
        (stuck,) = in_service(pool)
        await eventually(lambda: in_service(pool) and stuck not in in_service(pool))
        (unhealthy, *_) = events(caplog, "worker.unhealthy")
        assert unhealthy.worker_pid == stuck and unhealthy.levelname == "WARNING"
        assert "did not answer a health check within 0.3s" in unhealthy.getMessage()
        assert pool.keeper.departures[ExitReason.UNHEALTHY] >= 1
        await eventually(lambda: not pid_alive(stuck))


async def test_a_health_check_holds_the_worker_like_a_job_does() -> None:
    """No payload is handed to a worker during its check; it waits and then runs. The worker
    is stopped (SIGSTOP) so that its check lasts: an answered check takes microseconds."""
    async with running("echo", health=HealthConfig(interval=0.05, timeout=5)) as pool:
        (worker,) = pool.keeper.serving
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            await eventually(
                lambda: worker.state is WorkerState.WORKING and worker.job_started is None
            )
            during = asyncio.create_task(pool.exec(Payload(b"during")))
            await eventually(lambda: pool.free.waiting == 1)
            assert worker.job_started is None  # the payload waits for the check
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        reply = await during
        assert reply.payload.body == b"OK:during"


# Restarts


async def test_failed_starts_back_off_grow_and_stop_at_fatal_with_real_processes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "booted"
    restart = RestartConfig(initial_delay=0.05, max_delay=0.2, jitter=0, max_retries=4)
    pool = pool_of("boot_once", restart=restart)
    pool.spec = replace(pool.spec, argv=(*pool.spec.argv, str(marker)))
    pool.keeper.spec = pool.spec
    await pool.start()
    with suppress(WorkerError):
        await pool.exec(Payload(b"CRASH"))
    await eventually(lambda: pool.state is PoolState.FATAL, timeout=15)
    delays = [r.delay_ms for r in events(caplog, "pool.backoff")]
    assert delays[:3] == [50, 100, 200] and set(delays[3:]) <= {200}
    (fatal,) = events(caplog, "pool.fatal")
    assert "exit code 3" in fatal.last_error
    await eventually(lambda: len(events(caplog, "pool.backoff")) >= 6)  # still trying
    assert pool.status().state is PoolState.FATAL and pool.status().failures >= 4
    await pool.destroy()


async def test_one_worker_failing_at_boot_leaves_the_pool_degraded_then_up(
    tmp_path: Path,
) -> None:
    pool = pool_of("flaky_boot", num_workers=3, env={"FLAKY_DIR": str(tmp_path), "FAIL_FIRST": "1"})
    await pool.start()
    try:
        assert pool.state in (PoolState.DEGRADED, PoolState.UP)
        await eventually(lambda: pool.state is PoolState.UP)
        await eventually(lambda: pool.keeper.failures == 0)  # reset by a good start
        assert pool.keeper.departures[ExitReason.FAILED_START] == 1
    finally:
        await pool.destroy()


async def test_a_worker_that_dies_after_a_good_start_is_replaced_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running("crash_after", env={"CRASH_AFTER": "1"}) as pool:
        await pool.exec(Payload(b"one"))
        (worker,) = pool.keeper.serving
        began = time.monotonic()
        with pytest.raises(Exception, match="closed its relay"):
            await pool.exec(Payload(b"two"))
        await eventually(lambda: in_service(pool) and worker.pid not in in_service(pool))
        assert time.monotonic() - began < 2
        assert not events(caplog, "pool.backoff")
        assert pool.keeper.departures[ExitReason.CRASHED] == 1


# No orphans


async def test_a_worker_that_dies_leaves_no_child_behind(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rrd.worker")
    async with running("spawns_child") as pool:
        line = await eventually(
            lambda: next((r for r in caplog.records if r.getMessage().startswith("child ")), None)
        )
        child = int(line.getMessage().split()[1])
        (worker,) = in_service(pool)
        os.kill(worker, signal.SIGKILL)
        await eventually(lambda: not pid_alive(child), timeout=5)


async def test_a_worker_that_is_stopped_leaves_no_child_behind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rrd.worker")
    pool = pool_of("spawns_child")
    await pool.start()
    line = await eventually(
        lambda: next((r for r in caplog.records if r.getMessage().startswith("child ")), None)
    )
    child = int(line.getMessage().split()[1])
    await pool.destroy()
    await eventually(lambda: not pid_alive(child), timeout=5)

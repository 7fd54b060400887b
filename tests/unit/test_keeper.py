"""The keeper's restart policy on a fake clock: no processes, no sleeps."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace

import pytest

from rrd.config import PoolConfig, RestartConfig
from rrd.errors import BootError
from rrd.pool.free import FreeQueue
from rrd.pool.keeper import Keeper, PoolFatal, PoolState
from rrd.proc import ProcessRegistry
from rrd.worker import WorkerProcess, WorkerSpec
from tests.fakes import FakeClock, settle


def keeper_that_never_starts(
    clock: FakeClock, attempts: list[float], restart: RestartConfig, workers: int = 1
) -> Keeper:
    async def failing_spawn(spec: WorkerSpec, registry: ProcessRegistry) -> WorkerProcess:
        attempts.append(clock.monotonic())
        await asyncio.sleep(0)  # a real spawn takes a while: the first tries overlap
        raise BootError(f"exited before its pid handshake (exit code 3), try {len(attempts)}")

    config = replace(PoolConfig(), num_workers=workers, restart=restart)
    free = FreeQueue("t", allocate_timeout=1, max_queue_size=0)
    spec = WorkerSpec(argv=("php", "worker.php"), env={}, plugin="t")
    return Keeper(
        "t",
        spec,
        config,
        free,
        target=workers,
        registry=ProcessRegistry(),
        clock=clock,
        spawn=failing_spawn,
    )


async def run_until_done(clock: FakeClock, task: asyncio.Task[None], limit: float) -> None:
    while not task.done() and clock.now < 1000 + limit:
        await clock.advance(0.05)


async def test_backoff_delays_grow_on_the_clock_and_stop_at_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, attempts = FakeClock(), []
    restart = RestartConfig(
        initial_delay=0.5, max_delay=4.0, multiplier=2.0, jitter=0.0, max_retries=6
    )
    keeper = keeper_that_never_starts(clock, attempts, restart)
    task = asyncio.create_task(keeper.start())
    await settle()
    await run_until_done(clock, task, limit=60)
    with pytest.raises(PoolFatal) as caught:
        await task
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(attempts)]
    assert gaps == [0.5, 1.0, 2.0, 4.0, 4.0]
    backoffs = [
        (r.attempt, r.delay_ms) for r in caplog.records if getattr(r, "event", "") == "pool.backoff"
    ]
    assert backoffs == [(1, 500), (2, 1000), (3, 2000), (4, 4000), (5, 4000)]
    assert str(caught.value) == (
        "pool 't': 'php worker.php' failed to start 6 times in a row; the last: "
        "exited before its pid handshake (exit code 3), try 6"
    )
    (fatal,) = [r for r in caplog.records if getattr(r, "event", "") == "pool.fatal"]
    assert fatal.failures == 6
    assert keeper.state is PoolState.STOPPING and keeper.fatal


async def test_max_retries_five_means_five_starts_then_fatal() -> None:
    clock, attempts = FakeClock(), []
    restart = RestartConfig(initial_delay=0.1, max_delay=0.1, jitter=0.0, max_retries=5)
    keeper = keeper_that_never_starts(clock, attempts, restart)
    task = asyncio.create_task(keeper.start())
    await settle()
    await run_until_done(clock, task, limit=10)
    with pytest.raises(PoolFatal, match="failed to start 5 times"):
        await task
    assert len(attempts) == 5


async def test_while_starts_fail_a_pool_of_many_tries_one_at_a_time() -> None:
    """Four workers, a broken command: one probe per delay, not four at a time."""
    clock, attempts = FakeClock(), []
    restart = RestartConfig(initial_delay=1.0, max_delay=1.0, jitter=0.0, max_retries=8)
    keeper = keeper_that_never_starts(clock, attempts, restart, workers=4)
    task = asyncio.create_task(keeper.start())
    await settle()
    await run_until_done(clock, task, limit=30)
    with pytest.raises(PoolFatal):
        await task
    assert attempts[:4] == [1000.0] * 4  # the first try of each worker, at once
    assert [round(b - a, 3) for a, b in itertools.pairwise(attempts[3:])] == [1.0] * 4

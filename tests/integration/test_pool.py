"""Pool against real workers: free queue, faults, retirement, limits, reset, destroy."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from rrd.config import PoolConfig
from rrd.errors import (
    BootError,
    NoWorkers,
    PoolClosed,
    QueueFull,
    SoftJobError,
    WorkerCrashed,
    WorkerError,
)
from rrd.fsm import RetireReason, WorkerState
from rrd.pool import Pool
from rrd.protocol.control import Payload
from rrd.worker import WorkerSpec
from tests.helpers import eventually, pid_alive, worker_argv


def pool_of(name: str = "echo", *args: str, **settings: Any) -> Pool:
    config = replace(
        PoolConfig(),
        num_workers=2,
        allocate_timeout=10.0,
        destroy_timeout=10.0,
        reset_timeout=10.0,
    )
    config = replace(config, **settings)
    spec = WorkerSpec(
        worker_argv(name, *args),
        env=dict(os.environ),
        plugin="test",
        allocate_timeout=config.allocate_timeout,
    )
    return Pool("test", spec, config)


@asynccontextmanager
async def running(name: str = "echo", **settings: Any) -> AsyncIterator[Pool]:
    pool = pool_of(name, **settings)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.destroy()
        assert not any(pid_alive(w.pid) for w in pool.workers())


def pids(pool: Pool) -> set[int]:
    return {w.pid for w in pool.workers() if w.state.live}


def ready_count(pool: Pool) -> int:
    return sum(w.state is WorkerState.READY for w in pool.workers())


async def test_exec_round_trip_and_both_workers_serve() -> None:
    async with running() as pool:
        assert len(pool.workers()) == 2
        replies = await asyncio.gather(*(pool.exec(Payload(b"PID")) for _ in range(8)))
        assert {int(r.payload.body) for r in replies} == pids(pool)
        assert all(r.worker_pid == int(r.payload.body) for r in replies)


async def test_num_workers_zero_means_one_per_cpu() -> None:
    assert pool_of(num_workers=0).size == (os.cpu_count() or 1)


async def test_soft_error_reaches_the_caller_and_the_worker_is_reused() -> None:
    async with running(num_workers=1) as pool:
        before = pids(pool)
        with pytest.raises(SoftJobError, match="nope"):
            await pool.exec(Payload(b"ERR:nope"))
        assert (await pool.exec(Payload(b"x"))).payload.body == b"OK:x"
        assert pids(pool) == before


async def test_stop_request_retires_the_worker_and_reruns_elsewhere(tmp_path: Path) -> None:
    async with running(num_workers=2) as pool:
        before = pids(pool)
        reply = await pool.exec(Payload(f"STOPONCE:{tmp_path / 'asked'}".encode()))
        assert reply.payload.body == f"served by {reply.worker_pid}".encode()
        assert reply.worker_pid in before
        await eventually(lambda: ready_count(pool) == 2 and len(pids(pool) - before) == 1)
        retired = before - pids(pool)
        assert len(retired) == 1 and reply.worker_pid not in retired


async def test_a_payload_every_worker_refuses_fails_instead_of_looping() -> None:
    async with running(num_workers=1) as pool:
        with pytest.raises(WorkerError, match="every worker of pool 'test' asked to be retired"):
            await pool.exec(Payload(b"STOPME"))


async def test_a_crash_mid_exec_fails_the_payload_and_the_worker_is_replaced() -> None:
    async with running(num_workers=1) as pool:
        (old,) = pids(pool)
        with pytest.raises(WorkerCrashed, match=rf"worker {old}: closed its relay"):
            await pool.exec(Payload(b"CRASH"))
        await eventually(lambda: ready_count(pool) == 1 and old not in pids(pool))
        assert (await pool.exec(Payload(b"y"))).payload.body == b"OK:y"


async def test_garbage_on_stdout_kills_and_replaces() -> None:
    async with running("exec_garbage", num_workers=1, destroy_timeout=0.5) as pool:
        (old,) = pids(pool)
        with pytest.raises(WorkerCrashed, match="bad frame header CRC"):
            await pool.exec(Payload(b"z"))
        await eventually(lambda: ready_count(pool) == 1 and old not in pids(pool))


async def test_a_worker_killed_from_outside_is_replaced_at_once() -> None:
    async with running(num_workers=1) as pool:
        (old,) = pids(pool)
        os.kill(old, 9)
        new = await eventually(lambda: ready_count(pool) == 1 and (pids(pool) - {old}), timeout=5)
        assert len(new) == 1


async def test_max_jobs_retires_a_worker_after_that_many_execs() -> None:
    async with running(num_workers=1, max_jobs=3) as pool:
        served = [(await pool.exec(Payload(b"PID"))).worker_pid for _ in range(7)]
        assert served[0] == served[1] == served[2]
        assert served[3] == served[4] == served[5] != served[0]
        assert served[6] not in (served[0], served[3])


async def test_debug_mode_starts_a_fresh_worker_for_every_job() -> None:
    async with running(num_workers=1, debug=True) as pool:
        served = [(await pool.exec(Payload(b"PID"))).worker_pid for _ in range(3)]
        assert len(set(served)) == 3


async def test_queue_full_fails_at_once() -> None:
    async with running(num_workers=1, max_queue_size=1) as pool:
        busy = asyncio.create_task(pool.exec(Payload(b"SLEEP:1")))
        await eventually(lambda: ready_count(pool) == 0)
        queued = asyncio.create_task(pool.exec(Payload(b"queued")))
        await eventually(lambda: len(pool._waiters) == 1)
        with pytest.raises(QueueFull, match="1 payloads already wait"):
            await pool.exec(Payload(b"refused"))
        assert (await busy).payload.body == b"slept"
        assert (await queued).payload.body == b"OK:queued"


async def test_no_free_worker_within_allocate_timeout() -> None:
    async with running(num_workers=1, allocate_timeout=0.3) as pool:
        busy = asyncio.create_task(pool.exec(Payload(b"SLEEP:1.5")))
        await eventually(lambda: ready_count(pool) == 0)
        with pytest.raises(NoWorkers, match=r"no free worker within 0.3s"):
            await pool.exec(Payload(b"late"))
        await busy


async def test_destroy_waits_for_in_flight_work() -> None:
    pool = pool_of(num_workers=1)
    await pool.start()
    (pid,) = pids(pool)
    busy = asyncio.create_task(pool.exec(Payload(b"SLEEP:0.5")))
    await eventually(lambda: ready_count(pool) == 0)
    await pool.destroy()
    assert (await busy).payload.body == b"slept"
    assert not pid_alive(pid)
    with pytest.raises(PoolClosed):
        await pool.exec(Payload(b"after"))


async def test_destroy_kills_work_that_outlives_destroy_timeout() -> None:
    pool = pool_of(num_workers=1, destroy_timeout=0.3)
    await pool.start()
    busy = asyncio.create_task(pool.exec(Payload(b"SLEEP:30")))
    await eventually(lambda: ready_count(pool) == 0)
    await pool.destroy()
    with pytest.raises(WorkerCrashed):
        await busy


async def test_reset_replaces_every_pid_and_lets_busy_work_finish() -> None:
    async with running(num_workers=2) as pool:
        before = pids(pool)
        busy = asyncio.create_task(pool.exec(Payload(b"SLEEP:0.5")))
        await eventually(lambda: ready_count(pool) == 1)
        await pool.reset()
        assert (await busy).payload.body == b"slept"
        after = pids(pool)
        assert len(after) == 2 and not after & before
        reasons = {w.reason for w in pool.workers()}
        assert reasons == {None}
        assert (await pool.exec(Payload(b"ok"))).payload.body == b"OK:ok"


async def test_start_fails_with_the_boot_error_and_leaves_nothing() -> None:
    pool = pool_of("boot_crash", num_workers=2)
    with pytest.raises(BootError, match="exit code 3"):
        await pool.start()
    assert pool.workers() == []


async def test_retired_workers_exit_with_the_reason() -> None:
    async with running(num_workers=1, max_jobs=1) as pool:
        first = pool._slots[0].worker
        assert first is not None
        await pool.exec(Payload(b"x"))
        await first.wait_exited()
        assert first.reason is RetireReason.MAX_JOBS and first.state is WorkerState.STOPPED


async def test_failed_starts_back_off_and_destroy_does_not_wait_for_the_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pool = pool_of("boot_once", str(tmp_path / "booted"), num_workers=1)
    await pool.start()
    with pytest.raises(WorkerCrashed):
        await pool.exec(Payload(b"CRASH"))

    def backoffs() -> list[float]:
        return [r.delay_s for r in caplog.records if getattr(r, "event", "") == "pool.backoff"]

    await eventually(lambda: backoffs() and backoffs()[-1] >= 0.3, timeout=20)
    assert backoffs() == sorted(backoffs())  # exponential: each wait longer than the last
    began = time.monotonic()
    await pool.destroy()
    assert time.monotonic() - began < 0.5

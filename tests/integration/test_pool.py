"""Pool against real workers: free queue, faults, retirement, limits, reset, destroy."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from rrd.config import PoolConfig, RestartConfig
from rrd.errors import (
    NoWorkers,
    PoolClosed,
    QueueFull,
    SoftJobError,
    WorkerCrashed,
    WorkerError,
)
from rrd.fsm import ExitReason, WorkerState
from rrd.pool import Pool, PoolFatal
from rrd.proc import ProcessRegistry
from rrd.protocol.control import Payload
from rrd.worker import WorkerSpec
from tests.helpers import eventually, pid_alive, worker_argv


def pool_of(
    name: str = "echo", *args: str, env: dict[str, str] | None = None, **settings: Any
) -> Pool:
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
        env={**os.environ, **(env or {})},
        plugin="test",
        allocate_timeout=config.allocate_timeout,
        kill_timeout=config.kill_timeout,
    )
    return Pool("test", spec, config, registry=ProcessRegistry())


@asynccontextmanager
async def running(name: str = "echo", **settings: Any) -> AsyncIterator[Pool]:
    pool = pool_of(name, **settings)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.destroy()
        assert not pool.workers()


def pids(pool: Pool) -> set[int]:
    return {w.pid for w in pool.workers() if w.state.in_service}


def ready_count(pool: Pool) -> int:
    return sum(w.state is WorkerState.READY for w in pool.workers())


async def test_exec_round_trip_and_both_workers_serve() -> None:
    async with running() as pool:
        assert len(pool.workers()) == 2
        replies = await asyncio.gather(*(pool.exec(Payload(b"PID")) for _ in range(8)))
        assert {int(r.payload.body) for r in replies} == pids(pool)
        assert all(r.worker_pid == int(r.payload.body) for r in replies)


async def test_num_workers_zero_means_one_per_usable_cpu() -> None:
    assert pool_of(num_workers=0).size == len(os.sched_getaffinity(0))


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
        with pytest.raises(WorkerCrashed, match="wrote garbage to stdout: Fatal error"):
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
        await eventually(lambda: pool.free.waiting == 1)
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


async def test_a_pool_none_of_whose_workers_start_is_fatal_and_leaves_nothing() -> None:
    fast = RestartConfig(initial_delay=0.01, max_delay=0.05, max_retries=4)
    pool = pool_of("boot_crash", num_workers=2, restart=fast)
    with pytest.raises(PoolFatal) as caught:
        await pool.start()
    message = str(caught.value)
    assert message.startswith(f"pool 'test': {pool.spec.command!r} failed to start 4 times")
    assert message.endswith(
        "(exit code 3); its last stderr line: boot_crash: cannot load the application"
    )
    assert pool.workers() == [] and len(pool.keeper.registry) == 0
    assert pool.keeper.departures[ExitReason.FAILED_START] == 4


async def test_retired_workers_exit_with_the_reason() -> None:
    async with running(num_workers=1, max_jobs=1) as pool:
        (first,) = pool.keeper.serving
        await pool.exec(Payload(b"x"))
        await first.wait_exited()
        assert first.reason is ExitReason.MAX_JOBS and first.state is WorkerState.STOPPED
        assert pool.keeper.departures[ExitReason.MAX_JOBS] == 1


async def test_failed_starts_back_off_and_destroy_does_not_wait_for_the_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pool = pool_of("boot_once", str(tmp_path / "booted"), num_workers=1)
    await pool.start()
    with pytest.raises(WorkerCrashed):
        await pool.exec(Payload(b"CRASH"))

    def backoffs() -> list[float]:
        return [r.delay_ms for r in caplog.records if getattr(r, "event", "") == "pool.backoff"]

    await eventually(lambda: backoffs() and backoffs()[-1] >= 300, timeout=20)
    assert backoffs() == sorted(backoffs())  # exponential: each wait longer than the last
    began = time.monotonic()
    await pool.destroy()
    assert time.monotonic() - began < 0.5


async def test_a_worker_handed_to_a_waiting_caller_is_reserved_and_a_reset_cannot_kill_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A reset that reaches a worker between its hand-over and its job drains it instead."""
    async with running(num_workers=1) as pool:
        busy = asyncio.create_task(pool.exec(Payload(b"SLEEP:0.2")))
        await eventually(lambda: ready_count(pool) == 0)
        waiting = asyncio.create_task(pool.exec(Payload(b"SLEEP:0.3")))
        await eventually(lambda: pool.free.waiting == 1)
        handed: list[Any] = []
        put = pool.free.put

        def put_then_retire(worker: Any) -> None:
            put(worker)
            if worker.state is WorkerState.WORKING and not handed:  # given to `waiting`
                handed.append(worker)
                pool.keeper.retire(worker, ExitReason.RESET)  # before its caller resumes

        pool.free.put = put_then_retire  # type: ignore[method-assign]
        assert (await busy).payload.body == b"slept"
        assert (await waiting).payload.body == b"slept"
        (worker,) = handed
        assert await worker.wait_exited() == 0
        assert worker.reason is ExitReason.RESET
        assert not [r for r in caplog.records if getattr(r, "event", "") == "worker.killed"]


async def test_the_replacement_starts_as_soon_as_the_old_worker_leaves_service() -> None:
    """max_jobs: 1 with a worker that needs 1.5 s to clean up: the next job does not wait."""
    async with running("slow_exit", num_workers=1, max_jobs=1, env={"CLEANUP": "1.5"}) as pool:
        first = await pool.exec(Payload(b"a"))
        began = time.monotonic()
        second = await pool.exec(Payload(b"b"))
        assert time.monotonic() - began < 1.2
        assert second.worker_pid != first.worker_pid
        assert pid_alive(first.worker_pid)  # still cleaning up, out of service
        assert len(pool.keeper.serving) <= 1


async def test_a_reset_never_leaves_the_pool_short_nor_over_its_size() -> None:
    async with running(num_workers=2) as pool:
        before = pids(pool)
        in_service: list[int] = []
        reset = asyncio.create_task(pool.reset())
        while not reset.done():
            in_service.append(sum(w.state.in_service for w in pool.keeper.serving))
            in_service.append(len(pool.keeper.serving))
            await asyncio.sleep(0)
        await reset
        assert set(in_service) == {2}
        assert not pids(pool) & before and len(pids(pool)) == 2


async def test_no_caller_ever_gets_a_reply_that_was_not_for_its_payload() -> None:
    for delay in ("0", "0.05"):
        async with running("double_reply", num_workers=1, env={"DOUBLE_DELAY": delay}) as pool:
            for n in range(6):
                body = f"job-{n}".encode()
                try:
                    reply = await pool.exec(Payload(body))
                except WorkerError:
                    continue  # the double replier was caught mid-job: a failure, not a lie
                assert reply.payload.body == b"OK:" + body
            assert pool.keeper.departures[ExitReason.GARBAGE] >= 1


def test_num_workers_zero_counts_only_the_cpus_rrd_may_run_on() -> None:
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from rrd.proc import available_cpus; print(available_cpus(), os.cpu_count())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    usable, machine = map(int, out.stdout.split())
    assert usable == 1 and machine >= 1


async def test_the_stop_grace_is_destroy_timeout_even_past_five_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker that needs 5.5 s to clean up, with destroy_timeout 8s, is not terminated."""
    pool = pool_of("slow_exit", num_workers=1, destroy_timeout=8.0, env={"CLEANUP": "5.5"})
    await pool.start()
    (worker,) = pool.keeper.serving
    await pool.destroy()
    assert worker.returncode == 0 and worker.state is WorkerState.STOPPED
    assert not [r for r in caplog.records if getattr(r, "event", "") == "worker.terminate"]


async def test_a_bug_in_a_task_of_the_pool_reaches_its_crash_handler() -> None:
    crashes: list[tuple[str, BaseException]] = []
    spec = pool_of().spec
    pool = Pool(
        "test",
        spec,
        replace(PoolConfig(), num_workers=1, destroy_timeout=5.0),
        registry=ProcessRegistry(),
        on_crash=lambda where, error: crashes.append((where, error)),
    )
    await pool.start()

    async def broken_refill() -> None:
        raise RuntimeError("a bug in the keeper")

    pool.keeper._refill = broken_refill  # type: ignore[method-assign]
    (worker,) = pool.keeper.serving
    os.kill(worker.pid, 9)
    await eventually(lambda: crashes)
    await pool.destroy()
    ((where, error),) = crashes
    assert "pool 'test'" in where and str(error) == "a bug in the keeper"

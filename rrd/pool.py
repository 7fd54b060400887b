"""N workers behind one `exec(payload)`: free queue, replacement, retirement, reset, destroy.

Room: pool. Imports worker, fsm, backoff, config, protocol and errors; never server, plugins
or anything above. Each worker sits in a slot whose task watches it and starts the next one
when it exits, so "replace a worker" is always the same code whatever ended the last one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from rrd.backoff import backoff_delay
from rrd.config import PoolConfig
from rrd.errors import BootError, NoWorkers, PoolClosed, QueueFull, SoftJobError, WorkerError
from rrd.fsm import RetireReason, WorkerState
from rrd.protocol.control import Payload, is_retire_reply
from rrd.worker import Worker, WorkerInfo, WorkerSpec

log = logging.getLogger("rrd.pool")

STOP_GRACE = 5.0
"""Longest wait for a retired worker after its stop frame, and again after SIGTERM."""

MIN_UPTIME = 1.0
"""A worker that exits sooner than this after starting, having served nothing, failed to start."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A worker's answer to one payload, and which worker gave it."""

    payload: Payload
    worker_pid: int


@dataclass(eq=False)
class _Slot:
    """One place in the pool: the worker in it now, and the task that keeps it filled."""

    index: int
    worker: Worker | None = None
    task: asyncio.Task[None] | None = None
    failures: int = 0


@dataclass(eq=False)
class Pool:
    """`size` workers started from `spec`, serving `exec` one payload per worker at a time."""

    name: str
    spec: WorkerSpec
    config: PoolConfig
    _idle: deque[Worker] = field(default_factory=deque)
    _waiters: deque[asyncio.Future[Worker]] = field(default_factory=deque)
    _slots: list[_Slot] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _background: set[asyncio.Task[None]] = field(default_factory=set)
    _inflight: int = 0
    _closing: bool = False

    @property
    def size(self) -> int:
        """Workers the pool keeps: `num_workers`, or one per CPU when that is 0."""
        return self.config.num_workers or os.cpu_count() or 1

    @property
    def grace(self) -> float:
        return min(STOP_GRACE, self.config.destroy_timeout)

    async def start(self) -> None:
        """Start every worker; if any fails to boot, stop the rest and raise its BootError."""
        ignored = [
            name
            for name, value in vars(self.config.supervisor).items()
            if value and name != "watch_tick"
        ]
        if ignored:
            log.warning(
                f"pool.supervisor limits are not enforced yet: {', '.join(ignored)}",
                extra={"event": "config.ignored", "plugin": self.name, "keys": ignored},
            )
        began = time.monotonic()
        results = await asyncio.gather(
            *(Worker.start(self.spec) for _ in range(self.size)), return_exceptions=True
        )
        workers = [r for r in results if isinstance(r, Worker)]
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            await asyncio.gather(*(w.stop(self.grace, RetireReason.DESTROY) for w in workers))
            raise failure
        for index, worker in enumerate(workers):
            slot = _Slot(index, worker)
            slot.task = asyncio.create_task(
                self._keep_filled(slot), name=f"{self.name}-slot-{index}"
            )
            slot.task.add_done_callback(self._slot_ended)
            self._slots.append(slot)
            self._idle.append(worker)
        log.info(
            f"pool started with {len(workers)} workers",
            extra={
                "event": "pool.started",
                "plugin": self.name,
                "workers": len(workers),
                "duration_ms": round((time.monotonic() - began) * 1000, 1),
            },
        )

    async def exec(self, payload: Payload, *, timeout: float | None = None) -> Reply:
        """Run one payload on a free worker and return its reply.

        Raises SoftJobError (the worker's ERROR reply), NoWorkers (none free within
        `allocate_timeout`, queue full, pool closed) or a WorkerError (the worker timed out or
        crashed; it is replaced).
        """
        if self._closing:
            raise PoolClosed(f"pool {self.name!r} is stopping")
        self._inflight += 1
        try:
            for _attempt in range(self.size + 1):
                worker = await self._acquire()
                try:
                    reply = await worker.exec(payload, timeout)
                except SoftJobError:
                    self._after_job(worker)
                    raise
                if not is_retire_reply(reply):
                    self._after_job(worker)
                    return Reply(reply, worker.pid)
                log.info(
                    "worker asked to be retired; running the payload on another",
                    extra={
                        "event": "pool.retire_requested",
                        "plugin": self.name,
                        "worker_pid": worker.pid,
                    },
                )
                self._retire(worker, RetireReason.STOP_REQUESTED)
            raise WorkerError(f"every worker of pool {self.name!r} asked to be retired")
        finally:
            self._inflight -= 1
            if self._closing:  # only destroy() waits on the in-flight count
                await self._notify()

    async def reset(self) -> None:
        """Replace every worker: idle ones now, busy ones after their job; `reset_timeout`."""
        old = {slot.worker for slot in self._slots if slot.worker is not None}
        for worker in old:
            if not worker.retire(RetireReason.RESET):
                self._retire(worker, RetireReason.RESET)
        log.info(
            f"resetting {len(old)} workers",
            extra={"event": "pool.reset", "plugin": self.name, "workers": len(old)},
        )

        def replaced() -> bool:
            return (
                all(
                    slot.worker is not None
                    and slot.worker not in old
                    and slot.worker.state is not WorkerState.SPAWNING
                    for slot in self._slots
                )
                or self._closing
            )

        if not await self._wait_for(replaced, self.config.reset_timeout):
            stuck = [w for w in old if w.state.live]
            log.warning(
                f"reset took over {self.config.reset_timeout:g}s; killing {len(stuck)} workers",
                extra={
                    "event": "pool.reset_timeout",
                    "plugin": self.name,
                    "worker_pids": [w.pid for w in stuck],
                },
            )
            await asyncio.gather(*(w.kill() for w in stuck))

    async def destroy(self) -> None:
        """Take no new work, let in-flight work finish (`destroy_timeout`), stop every worker."""
        if self._closing:
            await asyncio.gather(*(s.task for s in self._slots if s.task), return_exceptions=True)
            return
        self._closing = True
        await self._notify()  # wakes slots waiting out a backoff
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolClosed(f"pool {self.name!r} is stopping"))
        drained = await self._wait_for(lambda: self._inflight == 0, self.config.destroy_timeout)
        if not drained:
            log.warning(
                f"{self._inflight} payloads still running after {self.config.destroy_timeout:g}s; "
                "killing their workers",
                extra={"event": "pool.destroy_timeout", "plugin": self.name},
            )
        workers = [s.worker for s in self._slots if s.worker is not None and s.worker.state.live]
        await asyncio.gather(*(w.stop(self.grace, RetireReason.DESTROY) for w in workers))
        await asyncio.gather(*(s.task for s in self._slots if s.task), return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)
        log.info("pool stopped", extra={"event": "pool.stopped", "plugin": self.name})

    def workers(self) -> list[WorkerInfo]:
        """A snapshot of every worker the pool holds now."""
        return [slot.worker.info() for slot in self._slots if slot.worker is not None]

    async def _acquire(self) -> Worker:
        while self._idle:
            worker = self._idle.popleft()
            if worker.state is WorkerState.READY:
                return worker
        if self._closing:
            raise PoolClosed(f"pool {self.name!r} is stopping")
        limit = self.config.max_queue_size
        if limit and len(self._waiters) >= limit:
            raise QueueFull(f"pool {self.name!r}: {limit} payloads already wait for a worker")
        waiter: asyncio.Future[Worker] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.config.allocate_timeout):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._hand_over(waiter.result())  # it came just as we gave up: pass it on
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise NoWorkers(
                    f"pool {self.name!r}: no free worker within {self.config.allocate_timeout:g}s"
                ) from None
            raise

    def _hand_over(self, worker: Worker) -> None:
        """Give a ready worker to the longest waiting caller, or put it at the end of the queue."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(worker)
                return
        self._idle.append(worker)

    def _after_job(self, worker: Worker) -> None:
        max_jobs = 1 if self.config.debug else self.config.max_jobs
        if worker.state is WorkerState.DRAINING:
            self._retire(worker, worker.reason or RetireReason.RESET)
        elif max_jobs and worker.execs >= max_jobs:
            self._retire(worker, RetireReason.MAX_JOBS)
        elif worker.state is WorkerState.READY:
            self._hand_over(worker)

    def _retire(self, worker: Worker, reason: RetireReason) -> None:
        """Stop a worker in the background; its slot starts the replacement."""
        with contextlib.suppress(ValueError):
            self._idle.remove(worker)
        task = asyncio.create_task(worker.stop(self.grace, reason))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _keep_filled(self, slot: _Slot) -> None:
        """Watch the slot's worker; when it exits, put the next one in its place."""
        while slot.worker is not None:
            exited = slot.worker
            await exited.wait_exited()
            with contextlib.suppress(ValueError):
                self._idle.remove(exited)
            failed_start = (
                exited.execs == 0
                and exited.reason is None
                and (time.monotonic() - exited.started_at < MIN_UPTIME)
            )
            slot.failures = slot.failures + 1 if failed_start else 0
            slot.worker = await self._start_replacement(slot)
            if slot.worker is not None:
                self._hand_over(slot.worker)
            await self._notify()

    async def _start_replacement(self, slot: _Slot) -> Worker | None:
        """A new worker for the slot, backing off after failed starts; None once closing."""
        while not self._closing:
            delay = backoff_delay(slot.failures)
            if delay:
                log.warning(
                    f"waiting {delay:.2f}s before starting a worker again",
                    extra={
                        "event": "pool.backoff",
                        "plugin": self.name,
                        "failures": slot.failures,
                        "delay_s": round(delay, 3),
                    },
                )
                if await self._wait_for(lambda: self._closing, delay):
                    break
            try:
                worker = await Worker.start(self.spec)
            except BootError as exc:
                slot.failures += 1
                log.error(
                    str(exc),
                    extra={
                        "event": "pool.start_failed",
                        "plugin": self.name,
                        "failures": slot.failures,
                    },
                )
                continue
            if self._closing:
                await worker.stop(self.grace, RetireReason.DESTROY)
                break
            return worker
        return None

    def _slot_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error(
                f"a slot of pool {self.name!r} stopped on a bug in rrd and will not be refilled",
                exc_info=error,
                extra={"event": "pool.slot_crashed", "plugin": self.name},
            )

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(predicate)
        except TimeoutError:
            return False
        return True

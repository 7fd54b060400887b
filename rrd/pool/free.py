"""Handing out workers: the idle queue, the callers waiting for one, and the atomic reserve.

Room: pool. Imports worker, fsm and errors. A worker handed out is reserved (READY -> WORKING)
in the same step, with no await in between: nothing else can retire it or hand it out again
before its caller starts the job.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from rrd.errors import AllocateTimeout, PoolClosed, QueueFull
from rrd.fsm import WorkerState
from rrd.worker import WorkerProcess


class FreeQueue:
    """Ready workers in the order they became free, and callers waiting for one, FIFO.

    A caller gets the worker freed last: its pages and caches are warm and the kernel has it
    scheduled, where the longest idle one must be woken from cold (that doubled rrd's CPU per
    exec from 1 to 256 workers). Workers left idle meanwhile are still health-checked."""

    def __init__(self, name: str, *, allocate_timeout: float, max_queue_size: int) -> None:
        self.name = name
        self.allocate_timeout = allocate_timeout
        self.max_queue_size = max_queue_size
        self._idle: deque[WorkerProcess] = deque()
        self._waiters: deque[asyncio.Future[WorkerProcess]] = deque()
        self._closed = False

    @property
    def idle(self) -> tuple[WorkerProcess, ...]:
        """The idle workers, longest idle first."""
        return tuple(self._idle)

    @property
    def waiting(self) -> int:
        """Callers waiting for a worker."""
        return sum(not w.done() for w in self._waiters)

    def put(self, worker: WorkerProcess) -> None:
        """A READY worker enters or returns to service: the longest waiting caller gets it,
        reserved, or it joins the end of the idle queue."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                worker.reserve()
                waiter.set_result(worker)
                return
        self._idle.append(worker)

    def take_idle(self, worker: WorkerProcess) -> bool:
        """Take a worker out of the idle queue (to retire or check it); False if it was not in."""
        try:
            self._idle.remove(worker)
        except ValueError:
            return False
        return True

    async def acquire(self, timeout: float | None = None) -> WorkerProcess:
        """A reserved (WORKING) worker: the one freed last, or the next one freed.

        Raises AllocateTimeout when none comes within `timeout` (default `allocate_timeout`),
        QueueFull when
        `max_queue_size` callers already wait, PoolClosed once the pool is stopping.
        """
        idle = self._idle
        while idle:
            worker = idle.pop()
            if worker.state is WorkerState.READY:
                worker.reserve()
                return worker
        if self._closed:
            raise PoolClosed(f"pool {self.name!r} is stopping")
        limit = self.max_queue_size
        if limit and self.waiting >= limit:
            raise QueueFull(f"pool {self.name!r}: {limit} payloads already wait for a worker")
        waiter: asyncio.Future[WorkerProcess] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.allocate_timeout if timeout is None else timeout):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                worker = waiter.result()  # it came just as we gave up: pass it on
                worker.release()
                if worker.state is WorkerState.READY:
                    self.put(worker)
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                waited = self.allocate_timeout if timeout is None else timeout
                raise AllocateTimeout(
                    f"pool {self.name!r}: no free worker within {waited:g}s"
                ) from None
            raise

    def close(self) -> None:
        """Take no more callers; every waiting one gets PoolClosed."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolClosed(f"pool {self.name!r} is stopping"))

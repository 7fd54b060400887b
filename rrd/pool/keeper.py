"""Keeping the pool filled: start workers, back off after failed starts, learn why each worker
left service, replace it, retire workers on request.

Room: pool. Imports worker, fsm, backoff, proc, config and errors.

A worker that leaves service is replaced at once, without waiting for its process to exit.
A worker retired while it still serves (reset, reload, a soft limit) is replaced successor
first: the successor starts, and enters service the moment the old one leaves it, so the pool
never runs short and never has more than its size in service.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from rrd.backoff import backoff_delay
from rrd.config import PoolConfig
from rrd.errors import BootError
from rrd.fsm import ExitReason, WorkerState
from rrd.pool.free import FreeQueue
from rrd.proc import ProcessRegistry
from rrd.worker import WorkerProcess, WorkerSpec

log = logging.getLogger("rrd.pool")

MIN_UPTIME = 1.0
"""A worker that leaves sooner than this after READY, having served nothing, failed to start."""

CrashHandler = Callable[[str, BaseException], None]


class Keeper:
    """Keeps `target` workers in service for one pool, and knows what became of each."""

    def __init__(
        self,
        name: str,
        spec: WorkerSpec,
        config: PoolConfig,
        free: FreeQueue,
        *,
        target: int,
        registry: ProcessRegistry,
        on_crash: CrashHandler | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.config = config
        self.free = free
        self.target = target
        self.registry = registry
        self.on_crash = on_crash
        self.failures = 0
        """Consecutive failed starts, any worker of the pool; reset by a good start."""
        self.departures: Counter[ExitReason] = Counter()
        self.last_error: str | None = None
        self.serving: set[WorkerProcess] = set()
        self._leaving: set[WorkerProcess] = set()
        self._replacing: set[WorkerProcess] = set()
        self._held: dict[WorkerProcess, WorkerProcess] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._starters: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._closed = asyncio.Event()
        self._closing = False
        self._deadline: float | None = None
        self._stopped: asyncio.Future[None] | None = None

    @property
    def closing(self) -> bool:
        return self._closing

    async def start(self) -> None:
        """Start `target` workers at once; if any fails to boot, stop the rest and raise.

        Each worker enters service as soon as it is ready, so a start cancelled half way
        (a stop during boot) leaves nothing that `stop_all` does not find."""
        failures: list[BootError] = []

        async def start_one() -> None:
            try:
                worker = await WorkerProcess.start(self.spec, self.registry)
            except BootError as exc:
                failures.append(exc)
                return
            self._enter(worker)

        await asyncio.gather(*(self._starter(start_one()) for _ in range(self.target)))
        if failures:
            await self.stop_all()
            raise failures[0]

    def job_done(self, worker: WorkerProcess, retire: ExitReason | None = None) -> None:
        """After each job: back to the free queue, or out of service when its time has come."""
        state = worker.state
        if state is WorkerState.ERRORED:
            return  # it broke during the job and has left already
        if worker.execs == 1:
            self._proven(worker)
        max_jobs = 1 if self.config.debug else self.config.max_jobs
        if retire is None and max_jobs and worker.execs >= max_jobs:
            retire = ExitReason.MAX_JOBS
        if retire is not None:
            worker.drain(retire)
        if worker.state is WorkerState.DRAINING:
            self._stop(worker, worker.reason or ExitReason.RESET)
        else:
            worker.release()
            self.free.put(worker)

    def retire(self, worker: WorkerProcess, reason: ExitReason) -> None:
        """Take a worker out of service gracefully: now when idle, after its job when busy."""
        if worker.state is WorkerState.READY:
            self.free.take_idle(worker)
            self._stop(worker, reason)
        else:
            worker.drain(reason)

    def replace(self, worker: WorkerProcess, reason: ExitReason) -> asyncio.Task[None]:
        """Retire `worker` once a successor is ready to take its place."""
        self._replacing.add(worker)
        return self._starter(self._replace(worker, reason))

    async def reset(self) -> None:
        """Replace every worker in service, successors first; busy ones leave after their job.

        Past `reset_timeout`, a predecessor still busy is killed (and said so); one whose
        successor cannot start keeps serving while the start is retried."""
        old = list(self.serving)
        for worker in old:
            self.replace(worker, ExitReason.RESET)
        if not await self._until(
            lambda: not any(w.state.in_service for w in old), self.config.reset_timeout
        ):
            stuck = [w for w in old if w.state.in_service]
            busy = [w for w in stuck if w.state is WorkerState.DRAINING]
            log.warning(
                f"reset of pool {self.name!r} took over {self.config.reset_timeout:g}s; "
                f"killing {len(busy)} busy workers, {len(stuck) - len(busy)} wait for a successor",
                extra={
                    "event": "pool.reset_timeout",
                    "plugin": self.name,
                    "worker_pids": [w.pid for w in stuck],
                },
            )
            for worker in busy:
                worker.condemn(ExitReason.RESET, "was still busy when the reset timed out")

    async def _until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wait until `done()`, re-checked whenever a worker leaves service; False at timeout."""
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
        return True

    async def stop_all(self) -> None:
        """Stop every worker: idle ones now, busy ones after their job, all within
        `destroy_timeout`; then what is left gets SIGTERM and, after `kill_timeout`, SIGKILL.

        A second caller waits for the first."""
        if self._stopped is None:
            self._stopped = asyncio.ensure_future(self._stop_all())
        await asyncio.shield(self._stopped)

    async def _stop_all(self) -> None:
        self._closing = True
        self._closed.set()  # wakes starters waiting out a backoff; a start under way finishes
        self._deadline = time.monotonic() + self.config.destroy_timeout
        for successor in self._held.values():
            self._stop(successor, ExitReason.DESTROY)
        self._held.clear()
        for worker in list(self.serving):
            self.retire(worker, ExitReason.DESTROY)
        await self._until(lambda: not self.serving and not self._starters, self._grace())
        for starter in list(self._starters):
            starter.cancel()  # still starting at the deadline: killed
        for worker in list(self.serving):
            worker.condemn(
                ExitReason.DESTROY,
                f"was still busy {self.config.destroy_timeout:g}s after its pool began to stop",
                sigterm_first=True,
            )
        while self._tasks or self._leaving:  # a start that won the race is stopped too
            exits = [w.wait_exited() for w in self._leaving]
            await asyncio.gather(*self._tasks, *exits, return_exceptions=True)

    def _grace(self) -> float:
        """How long a stopping worker may take after its stop frame before SIGTERM."""
        if self._deadline is None:
            return self.config.destroy_timeout
        return max(0.0, self._deadline - time.monotonic())

    def _stop(self, worker: WorkerProcess, reason: ExitReason) -> None:
        self._watch(worker.stop(reason, grace=self._grace()), "stop")

    def _enter(self, worker: WorkerProcess) -> None:
        """A new READY worker takes its place in service, unless the pool has enough."""
        worker.on_leave = self._left
        if self._closing or len(self.serving) >= self.target:
            self._stop(worker, ExitReason.DESTROY if self._closing else ExitReason.SCALE_DOWN)
            return
        self.serving.add(worker)
        self.free.put(worker)
        if worker.ready_at is not None:
            delay = max(0.0, worker.ready_at + MIN_UPTIME - time.monotonic())
            asyncio.get_running_loop().call_later(delay, self._proven, worker)

    def _left(self, worker: WorkerProcess) -> None:
        """A worker left service (on_leave): count why, and put another in its place."""
        self.serving.discard(worker)
        self.free.take_idle(worker)
        if not worker.exited:
            self._leaving.add(worker)
            self._watch(asyncio.ensure_future(self._forget_when_exited(worker)), "reap")
        reason = worker.reason or ExitReason.CRASHED
        if reason is ExitReason.CRASHED and not self._is_proven(worker):
            reason = ExitReason.FAILED_START
        self.departures[reason] += 1
        if reason is ExitReason.FAILED_START:
            self.failures += 1
            self.last_error = worker.last_error or "exited before it served anything"
        self._changed.set()
        if worker in self._replacing:
            self._replacing.discard(worker)
            successor = self._held.pop(worker, None)
            if successor is not None:
                self._enter(successor)
            return  # else its successor is still starting and enters when ready
        if not self._closing and reason is not ExitReason.SCALE_DOWN:
            self._starter(self._refill())

    async def _forget_when_exited(self, worker: WorkerProcess) -> None:
        await worker.wait_exited()
        self._leaving.discard(worker)

    def _is_proven(self, worker: WorkerProcess) -> bool:
        if worker.execs > 0 or worker.ready_at is None:
            return worker.execs > 0
        return time.monotonic() - worker.ready_at >= MIN_UPTIME

    def _proven(self, worker: WorkerProcess) -> None:
        """A good start: the worker served a job or lived MIN_UPTIME in service."""
        if worker.state.in_service:
            self.failures = 0

    async def _refill(self) -> None:
        worker = await self._new_worker()
        if worker is not None:
            self._enter(worker)

    async def _replace(self, old: WorkerProcess, reason: ExitReason) -> None:
        new = await self._new_worker()
        if new is None:
            self._replacing.discard(old)
            return
        if old in self._replacing and old.state.in_service:
            self._held[old] = new
            self.retire(old, reason)  # leaves now if idle; its on_leave brings `new` in
        else:
            self._replacing.discard(old)
            self._enter(new)

    async def _new_worker(self) -> WorkerProcess | None:
        """A new READY worker, after the backoff that failed starts call for; None once closing."""
        while not self._closing:
            if self.failures:
                delay = backoff_delay(self.failures)
                if delay:
                    log.warning(
                        f"waiting {delay:.2f}s before starting a worker of pool {self.name!r}",
                        extra={
                            "event": "pool.backoff",
                            "plugin": self.name,
                            "attempt": self.failures,
                            "delay_ms": round(delay * 1000),
                        },
                    )
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._closed.wait()
                    if self._closing:
                        break
            try:
                worker = await WorkerProcess.start(self.spec, self.registry)
            except BootError as exc:
                self.failures += 1
                self.departures[ExitReason.FAILED_START] += 1
                self.last_error = str(exc)
                log.error(
                    str(exc),
                    extra={
                        "event": "pool.start_failed",
                        "plugin": self.name,
                        "failures": self.failures,
                    },
                )
                continue
            return worker
        return None

    def _starter(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task that starts workers: cancelled when the pool stops."""
        task = asyncio.create_task(coroutine, name=f"{self.name}-start")
        self._starters.add(task)
        task.add_done_callback(self._starter_done)
        self._watch(task, "start")
        return task

    def _starter_done(self, task: asyncio.Task[None]) -> None:
        self._starters.discard(task)
        self._changed.set()

    def _watch(self, future: asyncio.Future[Any], what: str) -> None:
        """Keep `future` until done; a bug in it is reported, never lost."""
        self._tasks.add(future)
        future.add_done_callback(functools.partial(self._done, what))

    def _done(self, what: str, future: asyncio.Future[Any]) -> None:
        self._tasks.discard(future)
        if future.cancelled() or future.exception() is None:
            return
        error = future.exception()
        assert error is not None
        where = f"pool {self.name!r} ({what})"
        if self.on_crash is not None:
            self.on_crash(where, error)
        else:
            log.error(
                f"{where} failed on a bug in rrd",
                exc_info=error,
                extra={"event": "pool.crashed", "plugin": self.name},
            )

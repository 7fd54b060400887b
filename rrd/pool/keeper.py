"""Keeping the pool filled: start workers, back off after failed starts, learn why each worker
left service, replace it, retire workers past their limits, check idle workers' health.

Room: pool. Imports worker, fsm, backoff, clock, proc, config, errors and the pool's spares.

A worker that leaves service is replaced at once, without waiting for its process to exit.
A worker retired while it still serves (reset, ttl, memory) is replaced successor first: the
successor starts, and enters service the moment the old one leaves it, so the pool never runs
short and never has more than its size in service.

The pool's size is kept by counting slots, never by a running tally: a slot is a worker in
service that is not leaving for good, or a worker being replaced (it and its successor share
one), or a start under way (`_refills`). `_rebalance` starts what is missing and retires the
surplus after every change (a worker left, a new size), so scaling while busy, during a reset
or while starts fail always converges on `target`.

A start fails when the worker cannot boot, or when it leaves service before it served one
payload or lived `restart.min_uptime`. Failed starts are counted per pool, consecutively;
while they fail, starts go one at a time after a growing delay (`pool.backoff`); a good start
resets the count. After `restart.max_retries` the pool is fatal: at boot that ends rrd (69),
later the pool keeps trying every `max_delay`.

With `pool.spares`, every worker the pool needs is taken from its warm spares first (a slot
that empties, a successor, a scale up), and a new spare starts in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from enum import Enum
from typing import Any

from rrd.backoff import backoff_delay
from rrd.clock import Clock, SystemClock
from rrd.config import PoolConfig
from rrd.errors import EX_UNAVAILABLE, BootError, WorkerError
from rrd.fsm import ExitReason, WorkerState
from rrd.pool.free import FreeQueue
from rrd.pool.spares import Spares
from rrd.proc import ProcessRegistry, describe_exit, tree_memory
from rrd.worker import WorkerProcess, WorkerSpec

log = logging.getLogger("rrd.pool")

RESET_PARTS = 4
"""A reset replaces at most this fraction of a pool at once (at least one worker): a few at a
time, so that the successors' start-up does not take every CPU while the pool serves."""

LIMIT_SPREAD = 0.15
"""ttl and max_jobs are drawn per worker up to this much above the setting: a pool's workers,
started together, do not all retire together."""

CrashHandler = Callable[[str, BaseException], None]
Spawn = Callable[[WorkerSpec, ProcessRegistry], Awaitable[WorkerProcess]]


class PoolState(Enum):
    """How a pool is doing, for status and STATUS=."""

    STARTING = "starting"
    UP = "up"
    DEGRADED = "degraded"  # fewer workers in service than its size
    FATAL = "fatal"  # max_retries consecutive failed starts; retrying every max_delay
    STOPPING = "stopping"


class PoolFatal(BootError):
    """A pool none of whose workers ever started, after max_retries tries: rrd exits 69."""

    exit_code = EX_UNAVAILABLE


@dataclass(frozen=True)
class PoolStatus:
    """A snapshot of one pool for `rrd status`, STATUS= and `pool.stopped`."""

    name: str
    state: PoolState
    size: int
    max_workers: int
    ready: int
    busy: int
    spares: int
    failures: int
    departures: dict[str, int]
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the state as its name."""
        return {**dataclasses.asdict(self), "state": self.state.value}


def _scaled_down(worker: WorkerProcess) -> bool:
    """Busy, and leaving for good after its job: its slot is not refilled."""
    return worker.state is WorkerState.DRAINING and worker.reason is ExitReason.SCALE_DOWN


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
        clock: Clock | None = None,
        spawn: Spawn = WorkerProcess.start,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.config = config
        self.free = free
        self.target = target
        self.registry = registry
        self.on_crash = on_crash
        self.clock = clock or SystemClock()
        self.spawn = spawn
        self.rng = rng or random.Random()
        self.failures = 0
        """Consecutive failed starts, any worker of the pool; reset by a good start."""
        self.fatal = False
        self.departures: Counter[ExitReason] = Counter()
        self.last_error: str | None = None
        self.serving: set[WorkerProcess] = set()
        self.spares = Spares(config.spares)
        self._refills: set[asyncio.Task[None]] = set()
        self._rebalancing = False
        self._ever_ready = False
        self._booted = False
        self._attempts = 0
        self._last_start_failed = False
        self._probing = asyncio.Lock()
        self._leaving: set[WorkerProcess] = set()
        self._replacing: set[WorkerProcess] = set()
        self._held: dict[WorkerProcess, WorkerProcess] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._starters: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._closed = asyncio.Event()
        self._fresh = asyncio.Event()
        self._closing = False
        self._deadline: float | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._watcher: asyncio.Future[None] | None = None

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def state(self) -> PoolState:
        if self._closing:
            return PoolState.STOPPING
        if self.fatal:
            return PoolState.FATAL
        if not self._booted:
            return PoolState.STARTING
        in_service = sum(w.state in (WorkerState.READY, WorkerState.WORKING) for w in self.serving)
        return PoolState.UP if in_service >= self.target else PoolState.DEGRADED

    def status(self) -> PoolStatus:
        return PoolStatus(
            name=self.name,
            state=self.state,
            size=self.target,
            max_workers=self.config.max_workers,
            ready=sum(w.state is WorkerState.READY for w in self.serving),
            busy=sum(w.state in (WorkerState.WORKING, WorkerState.DRAINING) for w in self.serving),
            spares=len(self.spares),
            failures=self.failures,
            departures={r.value: n for r, n in sorted(self.departures.items(), key=str)},
            last_error=self.last_error,
        )

    async def start(self) -> None:
        """Start `target` workers at once. The pool is up when all are in service, degraded
        when at least one is and every first try is over (the others keep trying), and fatal
        when none ever started after `max_retries` tries: then it stops and raises PoolFatal.

        Each worker enters service as soon as it is ready, so a start cancelled half way
        (a stop during boot) leaves nothing that `stop_all` does not find."""
        self._rebalance()
        try:
            await self._until(
                lambda: (
                    len(self.serving) >= self.target
                    or (bool(self.serving) and self._attempts >= self.target)
                    or (self.fatal and not self._ever_ready)
                ),
                timeout=None,
            )
        except asyncio.CancelledError:
            for starter in list(self._starters):
                starter.cancel()  # a stop preempted the boot: starts under way end now
            raise
        self._booted = True
        if self.serving:
            self._fill_spares()
            self._watcher = asyncio.ensure_future(self._watch_limits_and_health())
            self._watch(self._watcher, "watch")
            return
        await self.stop_all()
        raise PoolFatal(
            f"pool {self.name!r}: {self.spec.command!r} failed to start {self.failures} "
            f"times in a row; the last: {self.last_error}"
        )

    def job_done(self, worker: WorkerProcess, retire: ExitReason | None = None) -> None:
        """After each job: back to the free queue, or out of service when its time has come."""
        if worker.state is WorkerState.ERRORED:
            return  # it broke during the job and has left already
        if worker.execs == 1:
            self._proven(worker)
        if retire is None and worker.max_jobs and worker.execs >= worker.max_jobs:
            retire = ExitReason.MAX_JOBS
            self._log_retired(worker, retire, execs=worker.execs, max_jobs=worker.max_jobs)
        if retire is not None:
            worker.drain(retire)
        self._back_in_service(worker)

    def retire(self, worker: WorkerProcess, reason: ExitReason) -> None:
        """Take a worker out of service gracefully: now when idle, after its job when busy."""
        if worker.state is WorkerState.READY:
            self.free.take_idle(worker)
            self._stop(worker, reason)
        else:
            worker.drain(reason)

    def replace(self, worker: WorkerProcess, reason: ExitReason) -> asyncio.Task[None] | None:
        """Retire `worker` once a successor is ready to take its place."""
        if worker in self._replacing:
            return None
        self._replacing.add(worker)
        return self._starter(self._replace(worker, reason))

    async def reset(self, reason: ExitReason = ExitReason.RESET) -> bool:
        """Replace every worker in service, each successor ready before its predecessor leaves
        service; busy ones leave after their job. A quarter of the pool is being replaced at
        any moment: the next replacement begins as soon as one is done, not after a whole
        wave. False when the successors cannot start (see below).

        Past `reset_timeout`, a predecessor still busy is killed (and said so); one whose
        successor cannot start keeps serving while the start is retried. When the first
        successor fails to start and none has started yet (a new command that cannot run),
        the reset ends at once, saying so: the old workers go on serving, and the starts go
        on in the background with their backoff, as after any failed start."""
        self._renew_spares(reason)
        old = list(self.serving)
        window = max(1, -(-self.target // RESET_PARTS))
        deadline = self.clock.monotonic() + self.config.reset_timeout
        failures = self.failures
        waiting = list(reversed(old))
        under_way: list[WorkerProcess] = []

        def hopeless() -> bool:
            return self.failures > failures and all(w.state.in_service for w in old)

        def next_step() -> bool:
            """Room for the next replacement, or with none left to begin, all of them done."""
            serving = sum(w.state.in_service for w in under_way)
            return hopeless() or (serving < window if waiting else serving == 0)

        while True:
            under_way = [w for w in under_way if w.state.in_service]
            while waiting and len(under_way) < window:
                worker = waiting.pop()
                if worker.state.in_service:
                    self.replace(worker, reason)
                    under_way.append(worker)
            if not under_way:
                break  # every one is replaced
            if not await self._until(next_step, deadline - self.clock.monotonic()):
                break
            if hopeless():
                log.warning(
                    f"pool {self.name!r}: the new workers fail to start ({self.last_error}); "
                    f"the {len(old)} running ones keep serving while the starts are retried",
                    extra={
                        "event": "pool.reset_failed",
                        "plugin": self.name,
                        "last_error": self.last_error,
                    },
                )
                return False
        stuck = [w for w in old if w.state.in_service]
        if not stuck:
            return True
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
            worker.condemn(reason, f"was still busy when the {reason.value} timed out")
        for worker in stuck:
            if worker.state.in_service and worker not in self._replacing:
                self.replace(worker, reason)
        return True

    def resize(self, target: int) -> None:
        """Keep `target` workers in service from now on: start the missing ones, retire the
        surplus (idle ones first, busy ones after their job)."""
        self.target = target
        self._rebalance()
        self._changed.set()

    def _occupied(self) -> int:
        """Slots taken: workers in service not leaving for good, each counted once with the
        successor it is being replaced by (which may outlive it while it starts)."""
        staying = sum(w not in self._replacing and not _scaled_down(w) for w in self.serving)
        return staying + len(self._replacing)

    def _rebalance(self) -> None:
        """Converge on `target`: retire the surplus (idle first, busy after their job), start
        what is missing. Starts under way count; a start that ends up surplus is stopped the
        moment it is ready (`_enter`)."""
        if self._closing or self._rebalancing:
            return  # retiring calls back here through on_leave: the loop below re-counts
        self._rebalancing = True
        try:
            while self._occupied() > self.target:
                idle = [w for w in self.serving if w not in self._replacing and not _scaled_down(w)]
                if not idle:
                    break  # only workers being replaced: their successors will be surplus
                idle.sort(key=lambda w: w.state is not WorkerState.READY)
                self.retire(idle[0], ExitReason.SCALE_DOWN)
            for _ in range(self.target - self._occupied() - len(self._refills)):
                spare = self.spares.take()  # another spare starts below, with the rest
                if spare is not None:
                    self._enter(spare, promoted=True)
                    continue
                task = self._starter(self._refill())
                self._refills.add(task)
                task.add_done_callback(self._refills.discard)
        finally:
            self._rebalancing = False
        self._fill_spares()

    def reconfigure(self, config: PoolConfig, spec: WorkerSpec | None = None) -> None:
        """New settings, applied in place: new limits are drawn for the workers in service and
        the watcher restarts with the new periods. A new `spec` is used by the next starts;
        when it starts workers differently, the failed starts of the old one are forgotten
        and starts waiting out a backoff try the new one at once."""
        self.config = config
        self.spares.wanted = config.spares
        if spec is not None and spec != self.spec:
            self.spec = spec
            self.failures, self.fatal, self._last_start_failed = 0, False, False
            self._fresh.set()
            self._fresh.clear()  # the waiters it woke stay woken
            self._renew_spares(ExitReason.RELOAD)
        self.free.allocate_timeout = config.allocate_timeout
        self.free.max_queue_size = config.max_queue_size
        for worker in (*self.serving, *self._held.values(), *self.spares):
            worker.retune(self.spec)
            self._draw_limits(worker)
        for _ in range(self.spares.surplus):
            spare = self.spares.take()
            if spare is not None:
                self._stop(spare, ExitReason.SCALE_DOWN)
        if self._booted:
            self._fill_spares()
        if self._watcher is not None and not self._closing:
            self._watcher.cancel()
            self._watcher = asyncio.ensure_future(self._watch_limits_and_health())
            self._watch(self._watcher, "watch")

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
        if self._watcher is not None:
            self._watcher.cancel()
        self._deadline = self.clock.monotonic() + self.config.destroy_timeout
        held = [*self._held.values(), *self.spares.take_all()]
        self._held.clear()
        for successor in held:
            self._stop(successor, ExitReason.DESTROY)
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

    async def _until(self, done: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until `done()`, re-checked whenever the pool changes; False at timeout."""
        deadline = None if timeout is None else self.clock.monotonic() + timeout
        while not done():
            remaining = None if deadline is None else deadline - self.clock.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
        return True

    def _grace(self) -> float:
        """How long a stopping worker may take after its stop frame before SIGTERM."""
        if self._deadline is None:
            return self.config.destroy_timeout
        return max(0.0, self._deadline - self.clock.monotonic())

    def _stop(self, worker: WorkerProcess, reason: ExitReason) -> None:
        self._watch(worker.stop(reason, grace=self._grace()), "stop")

    def _back_in_service(self, worker: WorkerProcess) -> None:
        """After a job or a health check: stopped when drained, else free again."""
        if worker.state is WorkerState.DRAINING:
            self._stop(worker, worker.reason or ExitReason.RESET)
        elif worker.state is WorkerState.WORKING:
            worker.release()
            self.free.put(worker)

    def _enter(self, worker: WorkerProcess, *, promoted: bool = False) -> None:
        """A new READY worker takes its place in service, unless the pool has enough (then a
        spare goes back to the spares, another is stopped)."""
        if worker.state is not WorkerState.READY:
            return  # it left already, and its on_leave said so
        if self._closing or self._occupied() >= self.target:
            if promoted and not self._closing:
                self.spares.add(worker)
                return
            self._stop(worker, ExitReason.DESTROY if self._closing else ExitReason.SCALE_DOWN)
            return
        if promoted:
            log.info(
                f"spare {worker.pid} took a slot of pool {self.name!r}",
                extra={
                    "event": "pool.spare_promoted",
                    "plugin": self.name,
                    "worker_pid": worker.pid,
                },
            )
        self._draw_limits(worker)
        self._ever_ready = True
        self.serving.add(worker)
        self.free.put(worker)
        self._changed.set()
        if worker.ready_at is not None:
            delay = max(0.0, worker.ready_at + self.config.restart.min_uptime - time.monotonic())
            asyncio.get_running_loop().call_later(delay, self._proven, worker)

    def _draw_limits(self, worker: WorkerProcess) -> None:
        """This worker's own ttl and max_jobs: the settings plus 0-15 % drawn for it."""
        ttl = self.config.supervisor.ttl
        worker.expires_at = None
        if ttl and worker.ready_at is not None:
            worker.expires_at = worker.ready_at + ttl * (1 + self._spread())
        max_jobs = 1 if self.config.debug else self.config.max_jobs
        worker.max_jobs = max_jobs + round(max_jobs * self._spread())

    def _spread(self) -> float:
        return self.rng.uniform(0, LIMIT_SPREAD)

    def _left(self, worker: WorkerProcess) -> None:
        """A worker left service (on_leave): count why, and put another in its place.

        Also called for a worker that never entered service: a successor held for a busy
        predecessor that died waiting (another successor is started), or a surplus start."""
        self.serving.discard(worker)
        self.free.take_idle(worker)
        if not worker.exited:
            self._leaving.add(worker)
            self._watch(asyncio.ensure_future(self._forget_when_exited(worker)), "reap")
        reason = worker.reason or ExitReason.CRASHED
        if reason is ExitReason.CRASHED and not self._is_proven(worker):
            reason = ExitReason.FAILED_START
            age = time.monotonic() - (worker.ready_at or worker.started_at)
            self._start_failed(
                worker.last_error
                or f"{describe_exit(worker.returncode)} {age:.1f}s after its start, before it "
                "served a payload"
            )
        else:
            self.departures[reason] += 1
        self._changed.set()
        if self.spares.forget(worker):
            self._fill_spares()
            return
        predecessor = next((old for old, new in self._held.items() if new is worker), None)
        if predecessor is not None:
            del self._held[predecessor]
            if not self._closing:  # the predecessor still serves its job: start another
                self._starter(self._replace(predecessor, predecessor.reason or ExitReason.RESET))
            return
        if worker in self._replacing:
            successor = self._held.pop(worker, None)
            if successor is not None:
                self._replacing.discard(worker)
                self._enter(successor)
            return  # else its successor is still starting: the slot stays taken until then
        self._rebalance()

    async def _forget_when_exited(self, worker: WorkerProcess) -> None:
        await worker.wait_exited()
        self._leaving.discard(worker)

    def _is_proven(self, worker: WorkerProcess) -> bool:
        if worker.execs > 0:
            return True
        if worker.ready_at is None:
            return False
        return time.monotonic() - worker.ready_at >= self.config.restart.min_uptime

    def _proven(self, worker: WorkerProcess) -> None:
        """A good start: the worker served a job or lived min_uptime in service."""
        if not worker.state.in_service or not self.failures:
            return
        if self.fatal:
            log.info(
                f"pool {self.name!r} started a worker again; it is no longer fatal",
                extra={"event": "pool.recovered", "plugin": self.name, "failures": self.failures},
            )
        self.failures = 0
        self.fatal = False

    def _start_failed(self, why: str) -> None:
        self.failures += 1
        self.departures[ExitReason.FAILED_START] += 1
        self.last_error = why
        self._last_start_failed = True
        retries = self.config.restart.max_retries
        log.error(
            f"a worker of pool {self.name!r} failed to start ({self.failures} in a row): {why}",
            extra={
                "event": "pool.start_failed",
                "plugin": self.name,
                "failures": self.failures,
                "command": self.spec.command,
            },
        )
        if self.failures >= retries and not self.fatal:
            self.fatal = True
            log.critical(
                f"pool {self.name!r} is fatal: {self.failures} failed starts in a row of "
                f"{self.spec.command!r}; retrying every {self.config.restart.max_delay:g}s",
                extra={
                    "event": "pool.fatal",
                    "plugin": self.name,
                    "failures": self.failures,
                    "last_error": why,
                },
            )
        self._changed.set()

    async def _refill(self) -> None:
        worker = await self._new_worker()
        task = asyncio.current_task()
        assert task is not None
        self._refills.discard(task)  # now a worker in hand, or nothing: no longer a start
        if worker is not None:  # None: the pool stops, or failed to boot
            self._enter(worker)

    async def _replace(self, old: WorkerProcess, reason: ExitReason) -> None:
        """Start a successor for `old`, then retire `old` (now if idle, else after its job;
        meanwhile the successor is held). `old` keeps its slot until its successor enters."""
        held = False
        try:
            new = self._take_spare() or await self._new_worker()
            if new is None:
                return
            if old.state.in_service:
                self._held[old] = new
                held = True
                self.retire(old, reason)  # leaves now if idle; its on_leave brings `new` in
            else:
                self._replacing.discard(old)
                self._enter(new)
        finally:
            if not held:
                self._replacing.discard(old)

    async def _new_worker(self) -> WorkerProcess | None:
        """A new READY worker; while starts fail, one attempt at a time after the backoff.
        None once the pool is stopping."""
        while not self._closing:
            if self.fatal and not self._ever_ready:
                return None  # the boot has failed: rrd is about to say so and exit
            if not self._last_start_failed:
                worker = await self._attempt()
            else:
                async with self._probing:
                    if self.fatal and not self._ever_ready:
                        return None
                    if self._last_start_failed and not await self._back_off():
                        return None
                    worker = await self._attempt()
            if worker is not None:
                return worker
        return None

    async def _attempt(self) -> WorkerProcess | None:
        try:
            worker = await self.spawn(self.spec, self.registry)
        except BootError as exc:
            self._attempts += 1
            self._start_failed(str(exc))
            return None
        self._attempts += 1
        self._last_start_failed = False
        worker.on_leave = self._left  # from its first moment: held successors die too
        return worker

    async def _back_off(self) -> bool:
        """Wait before the next start, as the failed starts so far ask; False when closed."""
        restart = self.config.restart
        delay = (
            restart.max_delay
            if self.fatal
            else backoff_delay(
                self.failures,
                initial=restart.initial_delay,
                maximum=restart.max_delay,
                multiplier=restart.multiplier,
                jitter=restart.jitter,
                rng=self.rng,
            )
        )
        log.warning(
            f"starting a worker of pool {self.name!r} again in {delay:.2f}s",
            extra={
                "event": "pool.backoff",
                "plugin": self.name,
                "attempt": self.failures,
                "delay_ms": round(delay * 1000),
            },
        )
        sleeping = asyncio.ensure_future(self.clock.sleep_until(self.clock.monotonic() + delay))
        closed = asyncio.ensure_future(self._closed.wait())
        fresh = asyncio.ensure_future(self._fresh.wait())
        try:
            await asyncio.wait({sleeping, closed, fresh}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            closed.cancel()
            fresh.cancel()
        return not self._closing

    def _fill_spares(self) -> None:
        """Start the spares that are missing, in the background, but not while the pool
        boots: its workers come first. While starts fail, the backoff paces them too."""
        if self._closing or not self._booted:
            return
        for _ in range(self.spares.missing):
            self.spares.starting += 1
            self._starter(self._start_spare())

    async def _start_spare(self) -> None:
        generation = self.spares.generation
        try:
            worker = await self._new_worker()
        finally:
            self.spares.starting -= 1
        if worker is None:
            return
        if generation != self.spares.generation:  # started before a reset or a new spec
            self._stop(worker, ExitReason.RESET)
            self._fill_spares()
            return
        self._spare_ready(worker)

    def _take_spare(self) -> WorkerProcess | None:
        """A spare to take a slot, if one is ready; another starts behind it."""
        spare = self.spares.take()
        if spare is not None:
            self._fill_spares()
        return spare

    def _spare_ready(self, worker: WorkerProcess) -> None:
        """A new or checked spare: kept if wanted (or a slot is empty: it takes it)."""
        if worker.state is not WorkerState.READY:
            return  # it left already, and its on_leave said so
        if self._closing or len(self.spares) >= self.spares.wanted:
            self._stop(worker, ExitReason.DESTROY if self._closing else ExitReason.SCALE_DOWN)
            return
        self.spares.add(worker)
        self._rebalance()

    def _renew_spares(self, reason: ExitReason) -> None:
        """Spares started the old way are stopped, and new ones started (a reset, a new spec)."""
        self.spares.generation += 1
        for spare in self.spares.take_all():
            self._stop(spare, reason)
        self._fill_spares()

    async def _watch_limits_and_health(self) -> None:
        """Every watch_tick: ttl, idle_ttl, memory; and a health check of each worker idle
        for health.interval (again every interval while it stays idle)."""
        limits, health = self.config.supervisor, self.config.health
        checking_limits = bool(limits.ttl or limits.idle_ttl or limits.max_worker_memory)
        periods = [limits.watch_tick] if checking_limits else []
        if health.interval:
            periods.append(health.interval / 2)
        if not periods:
            return
        period = min(periods)
        next_limits = time.monotonic() + limits.watch_tick
        while not self._closing:
            await self.clock.sleep_until(self.clock.monotonic() + period)
            now = time.monotonic()  # the workers' clock, for their ages and idle times
            if checking_limits and now >= next_limits:
                next_limits = now + limits.watch_tick
                await self._check_limits(now)
            if health.interval:
                self._check_health(now)

    async def _check_limits(self, now: float) -> None:
        limits = self.config.supervisor
        memory: dict[int, int] = {}
        if limits.max_worker_memory and self.serving:
            # A scan of /proc, in a thread: it takes milliseconds with many processes.
            pids = [w.pid for w in self.serving]
            memory = await asyncio.to_thread(tree_memory, pids)
        for worker in [w for w in self.serving if w not in self._replacing]:
            if worker.expires_at is not None and now >= worker.expires_at:
                assert worker.ready_at is not None
                self._log_retired(worker, ExitReason.TTL, age_s=round(now - worker.ready_at, 1))
                self.replace(worker, ExitReason.TTL)
            elif (
                limits.idle_ttl
                and worker.state is WorkerState.READY
                and now - worker.idle_since >= limits.idle_ttl
            ):
                idle = round(now - worker.idle_since, 1)
                self._log_retired(worker, ExitReason.IDLE_TTL, idle_s=idle)
                self.replace(worker, ExitReason.IDLE_TTL)
            elif limits.max_worker_memory and memory.get(worker.pid, 0) > (
                limits.max_worker_memory << 20
            ):
                rss = round(memory[worker.pid] / 2**20, 1)
                self._log_retired(
                    worker, ExitReason.MEMORY, rss_mib=rss, max_mib=limits.max_worker_memory
                )
                self.replace(worker, ExitReason.MEMORY)

    def _check_health(self, now: float) -> None:
        interval = self.config.health.interval
        for worker in self.free.idle:
            last = max(worker.idle_since, worker.checked_at)
            if now - last >= interval and self.free.take_idle(worker):
                worker.reserve()
                self._watch(asyncio.ensure_future(self._health_check(worker)), "health")
        for spare in self.spares:
            if now - max(spare.idle_since, spare.checked_at) >= interval:
                self.spares.forget(spare)
                spare.reserve()
                self._watch(asyncio.ensure_future(self._health_check(spare, spare=True)), "health")

    async def _health_check(self, worker: WorkerProcess, *, spare: bool = False) -> None:
        idle_since = worker.idle_since  # a check is not a job: idle_ttl still counts
        try:
            await worker.ping(self.config.health.timeout)
        except WorkerError:
            return  # condemned as unhealthy; its on_leave brings a replacement
        worker.checked_at = time.monotonic()
        if spare:
            worker.release()
            self._spare_ready(worker)
        else:
            self._back_in_service(worker)
        worker.idle_since = idle_since

    def _log_retired(self, worker: WorkerProcess, reason: ExitReason, **figures: Any) -> None:
        log.info(
            f"retiring worker {worker.pid} ({reason.value})",
            extra={
                "event": "worker.retired",
                "plugin": self.name,
                "worker_pid": worker.pid,
                "reason": reason.value,
                **figures,
            },
        )

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

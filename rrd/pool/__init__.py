"""A pool: N workers behind one `exec(payload)`, as a plugin sees it.

Room: pool. Imports worker, fsm, backoff, proc, config, protocol and errors; never server,
plugins or anything above. Its two jobs live in two rooms: `free` hands workers out (the idle
queue, the waiting callers, the atomic reserve) and `keeper` keeps the pool filled (spawn,
backoff, why each worker left, replacement, retirement).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from rrd.clock import Clock
from rrd.config import PoolConfig
from rrd.errors import PoolClosed, SoftJobError, WorkerError
from rrd.fsm import ExitReason
from rrd.pool.free import FreeQueue
from rrd.pool.keeper import CrashHandler, Keeper, PoolFatal, PoolState, PoolStatus
from rrd.proc import ProcessRegistry, available_cpus
from rrd.protocol.control import Payload, is_retire_reply
from rrd.stats import EXEC_SECONDS, Histogram
from rrd.worker import WorkerInfo, WorkerSpec

__all__ = [
    "CrashHandler",
    "Pool",
    "PoolFatal",
    "PoolState",
    "PoolStatus",
    "Reply",
    "configured_size",
]

log = logging.getLogger("rrd.pool")


@dataclass(frozen=True, slots=True)
class Reply:
    """A worker's answer to one payload, and which worker gave it."""

    payload: Payload
    worker_pid: int


def configured_size(config: PoolConfig) -> int:
    """The size `num_workers` asks for: 0 means one per CPU rrd may use, up to max_workers."""
    return config.num_workers or min(available_cpus(), config.max_workers)


class Pool:
    """`num_workers` workers started from `spec`, serving one payload per worker at a time."""

    def __init__(
        self,
        name: str,
        spec: WorkerSpec,
        config: PoolConfig,
        *,
        registry: ProcessRegistry,
        on_crash: CrashHandler | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.config = config
        self.free = FreeQueue(
            name,
            allocate_timeout=config.allocate_timeout,
            max_queue_size=config.max_queue_size,
        )
        self.keeper = Keeper(
            name,
            spec,
            config,
            self.free,
            target=configured_size(config),
            registry=registry,
            on_crash=on_crash,
            clock=clock,
        )
        self.exec_seconds = Histogram(EXEC_SECONDS)
        """How long workers took over each payload they answered (soft errors too), from the
        moment one was handed a payload; the wait for a free worker is not in it."""

    @property
    def size(self) -> int:
        """Workers the pool keeps in service: `num_workers`, or one per usable CPU when 0."""
        return self.keeper.target

    @property
    def state(self) -> PoolState:
        return self.keeper.state

    def status(self) -> PoolStatus:
        """A snapshot: state, size, ready and busy workers, departures by reason, last error."""
        return self.keeper.status()

    async def start(self) -> None:
        """Start every worker. The pool is up (or degraded, with at least one worker, retrying
        the rest); PoolFatal when none started after `restart.max_retries` tries."""
        began = time.monotonic()
        await self.keeper.start()
        status = self.keeper.status()
        log.log(
            logging.INFO if status.state is PoolState.UP else logging.WARNING,
            f"pool {self.name!r} {status.state.value} with {status.ready} of {self.size} workers",
            extra={
                "event": "pool.started",
                "plugin": self.name,
                "state": status.state.value,
                "workers": status.ready,
                "size": self.size,
                "duration_ms": round((time.monotonic() - began) * 1000, 1),
            },
        )

    async def exec(
        self,
        payload: Payload,
        *,
        timeout: float | None = None,
        allocate_timeout: float | None = None,
    ) -> Reply:
        """Run one payload on a free worker and return its reply.

        Raises SoftJobError (the worker's ERROR reply), NoWorkers (AllocateTimeout: none free
        within `allocate_timeout`, default the pool's; queue full, pool stopping) or a
        WorkerError (the worker timed out, crashed or spoke garbage; it is replaced).
        """
        if self.keeper.closing:
            raise PoolClosed(f"pool {self.name!r} is stopping")
        exec_ttl = self.config.supervisor.exec_ttl
        if exec_ttl and (not timeout or exec_ttl < timeout):
            timeout = exec_ttl
        for _attempt in range(self.size + 1):
            worker = await self.free.acquire(allocate_timeout)
            retire: ExitReason | None = None
            began = time.monotonic()
            try:
                reply = await worker.exec(payload, timeout)
                if is_retire_reply(reply):
                    retire = ExitReason.STOP_REQUESTED
                else:
                    self.exec_seconds.observe(time.monotonic() - began)
            except SoftJobError:
                self.exec_seconds.observe(time.monotonic() - began)
                raise
            finally:
                self.keeper.job_done(worker, retire)
            if retire is None:
                return Reply(reply, worker.pid)
            log.info(
                f"worker {worker.pid} asked to be retired; running the payload on another",
                extra={
                    "event": "pool.retire_requested",
                    "plugin": self.name,
                    "worker_pid": worker.pid,
                },
            )
        raise WorkerError(f"every worker of pool {self.name!r} asked to be retired")

    async def reset(self, reason: ExitReason = ExitReason.RESET) -> bool:
        """Replace every worker, each successor ready before its predecessor leaves service.
        False when the new workers fail to start (the old ones keep serving)."""
        began = time.monotonic()
        workers = len(self.keeper.serving)
        log.info(
            f"replacing {workers} workers of pool {self.name!r} ({reason.value})",
            extra={"event": "pool.reset", "plugin": self.name, "workers": workers},
        )
        if not await self.keeper.reset(reason):
            return False
        log.info(
            f"pool {self.name!r}: {workers} workers replaced",
            extra={
                "event": "pool.reset_done",
                "plugin": self.name,
                "workers": workers,
                "duration_ms": round((time.monotonic() - began) * 1000, 1),
            },
        )
        return True

    def scale(self, workers: int) -> None:
        """Keep `workers` in service from now on, rolling: surplus ones retire gracefully.

        ValueError when `workers` is not within 1 and `max_workers`."""
        limit = self.config.max_workers
        if not 1 <= workers <= limit:
            raise ValueError(
                f"pool {self.name!r} keeps 1 to {limit} workers (pool.max_workers), not {workers}"
            )
        log.info(
            f"pool {self.name!r}: {self.size} -> {workers} workers",
            extra={"event": "pool.scaled", "plugin": self.name, "old": self.size, "new": workers},
        )
        self.keeper.resize(workers)

    async def reconfigure(
        self, config: PoolConfig, spec: WorkerSpec, *, size_changed: bool, replace_workers: bool
    ) -> None:
        """A reload's new settings: applied in place; the size set anew when `num_workers`
        changed (else a runtime `scale` stands); every worker replaced (rolling, no gap) when
        the way workers are started changed."""
        self.config = config
        self.spec = spec
        self.keeper.reconfigure(config, spec)
        if size_changed:
            self.scale(configured_size(config))
        elif self.size > config.max_workers:  # a runtime scale past the new bound
            self.scale(config.max_workers)
        if replace_workers:
            await self.reset(ExitReason.RELOAD)

    async def destroy(self) -> None:
        """Take no new work, let work in flight finish within `destroy_timeout`, stop every
        worker; whatever way it ends, no worker of the pool is left running."""
        first = not self.keeper.closing
        self.free.close()
        await self.keeper.stop_all()
        if not first:
            return
        status = self.keeper.status()
        log.info(
            f"pool {self.name!r} stopped",
            extra={
                "event": "pool.stopped",
                "plugin": self.name,
                "departures": status.departures,
                "failures": status.failures,
            },
        )

    def workers(self) -> list[WorkerInfo]:
        """A snapshot of every worker in service."""
        return [worker.info() for worker in self.keeper.serving]

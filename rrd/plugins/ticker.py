"""The ticker: every `ticker.interval`, one payload to a worker of its own pool.

Room: plugins. The schedule (`Ticker`) knows only an exec callable and a Clock, so it runs on
a fake clock in tests; `TickerPlugin` wires it to a pool.

Every due tick is accounted for in the ledger (`rrd.plugins.ledger`): it is sent, or skipped
as late (the loop was behind) or busy (the previous one still ran); every sent tick is in flight
until it is delivered or fails with a reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rrd.clock import Clock
from rrd.config import Duration, PoolConfig, ReloadPlan, setting
from rrd.errors import (
    ExecTimeout,
    NoWorkers,
    RrdError,
    SoftJobError,
    WorkerError,
)
from rrd.plugins.base import Disabled, Plugin, PluginContext
from rrd.plugins.ledger import TickLedger
from rrd.pool import Pool, Reply
from rrd.protocol.control import Payload
from rrd.stats import LATENESS_SECONDS, Histogram
from rrd.worker import WorkerInfo

log = logging.getLogger("rrd.ticker")

DEFAULT_INTERVAL = 1.0
MIN_INTERVAL = 0.001
"""The shortest interval: below it a tick would fall due before the last was sent."""


def _tick_interval(seconds: float) -> None:
    if 0 < seconds < MIN_INTERVAL:
        raise ValueError(
            "must be at least 1ms (or 0, which means 1s): shorter ticks could only be skipped"
        )


def _positive(seconds: float) -> None:
    if seconds <= 0:
        raise ValueError("must be positive: a tick without a timeout could stop the clock")


@dataclass(frozen=True)
class TickerConfig:
    """The `ticker` section."""

    interval: Duration = setting(
        DEFAULT_INTERVAL,
        "Time between two ticks, as a Go duration; at least 1ms, and 0 means 1s.",
        minimum=0,
        check=_tick_interval,
    )
    exec_timeout: Duration = setting(
        60.0,
        "Longest a worker may spend on one tick; past it the worker is killed and "
        "replaced, so a hung worker never stops the clock.",
        check=_positive,
    )
    overlap: Literal["skip", "parallel"] = setting(
        "skip",
        "What happens when a tick falls due while the previous one still runs: skip "
        "it (counted), or run it in parallel, up to the pool's size.",
    )
    pool: PoolConfig = setting(
        PoolConfig(), "The ticker's worker pool, as RoadRunner's pool block."
    )


def failure_reason(exc: BaseException) -> str:
    """A short stable word for why a tick failed, for logs and counters."""
    if isinstance(exc, SoftJobError):
        return "soft_error"
    if isinstance(exc, ExecTimeout):
        return "timeout"
    if isinstance(exc, NoWorkers):
        return "no_worker"
    if isinstance(exc, WorkerError):
        return "crashed"
    return "error"


class Ticker:
    """Tick k falls due at `t0 + k * interval` on the monotonic clock, however long execs take."""

    def __init__(
        self,
        exec_payload: Callable[[Payload], Awaitable[Reply]],
        *,
        interval: float,
        clock: Clock,
        overlap: str = "skip",
        max_parallel: int = 1,
    ) -> None:
        self.exec_payload = exec_payload
        self.interval = interval
        self.clock = clock
        self.overlap = overlap
        self.max_parallel = max(1, max_parallel)
        self.ledger = TickLedger()
        self.lateness_seconds = Histogram(LATENESS_SECONDS)
        """How long after its due moment each tick sent was handed to the pool."""
        self.last_tick = 0
        self._in_flight: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Send ticks until cancelled."""
        start = self.clock.monotonic()
        due_index = 1
        while True:
            due = start + due_index * self.interval
            await self.clock.sleep_until(due)
            behind = int((self.clock.monotonic() - due) // self.interval)
            if behind > 0:
                self.ledger.skip("late", behind)
                due_index += behind
                log.warning(
                    f"the loop fell behind; skipped {behind} ticks",
                    extra={
                        "event": "ticker.skipped",
                        "reason": "late",
                        "count": behind,
                        "plugin": "ticker",
                    },
                )
            self.fire(due_index, start + due_index * self.interval)
            due_index += 1

    def fire(self, due_index: int = 0, due: float | None = None) -> None:
        """Send the tick due at `start + due_index * interval` (the moment `due`) now, unless
        the overlap policy says to skip it. The body counts ticks sent, as RoadRunner's does;
        the context's `k` is the due index, so a worker sees a skip as a gap in k."""
        limit = 1 if self.overlap == "skip" else self.max_parallel
        if len(self._in_flight) >= limit:
            self.ledger.skip("busy")
            log.info(
                "the previous tick still runs; skipped one",
                extra={
                    "event": "ticker.skipped",
                    "reason": "busy",
                    "count": 1,
                    "plugin": "ticker",
                },
            )
            return
        tick = self.ledger.sent
        self.ledger.send()
        payload = Payload(
            body=b'{"tick": %d}' % tick,
            context=b'{"lastTick": %d, "k": %d}' % (self.last_tick, due_index),
        )
        self.last_tick = int(self.clock.wall())
        task = asyncio.create_task(self._exec(tick, payload, due), name=f"tick-{tick}")
        self._in_flight.add(task)
        task.add_done_callback(self._tick_done)

    def _tick_done(self, task: asyncio.Task[None]) -> None:
        """A tick cancelled (rrd stopping at once), even before it began, is accounted too."""
        self._in_flight.discard(task)
        if task.cancelled():
            self.ledger.fail("cancelled")

    async def _exec(self, tick: int, payload: Payload, due: float | None = None) -> None:
        began = self.clock.monotonic()
        if due is not None:
            self.lateness_seconds.observe(began - due if began > due else 0.0)
        try:
            reply = await self.exec_payload(payload)
        except Exception as exc:  # every tick is accounted for, even one that met a bug
            reason = failure_reason(exc)
            self.ledger.fail(reason)
            log.warning(
                f"tick {tick} failed: {exc}",
                exc_info=None if isinstance(exc, RrdError) else exc,
                extra={
                    "event": "ticker.failed",
                    "plugin": "ticker",
                    "tick": tick,
                    "reason": reason,
                    "worker_pid": getattr(exc, "pid", None),
                    "duration_ms": round((self.clock.monotonic() - began) * 1000, 1),
                },
            )
            return
        self.ledger.deliver()
        log.debug(
            f"tick {tick} done",
            extra={
                "event": "ticker.tick",
                "plugin": "ticker",
                "tick": tick,
                "worker_pid": reply.worker_pid,
                "duration_ms": round((self.clock.monotonic() - began) * 1000, 1),
            },
        )

    async def drain(self) -> None:
        """Wait for the ticks in flight (they end by themselves: exec has a timeout)."""
        if self._in_flight:
            await asyncio.wait(self._in_flight)


class TickerPlugin(Plugin):
    """Feeds its pool one payload every interval; its workers see RR_MODE=ticker."""

    name = "ticker"
    weight = 10
    config_class = TickerConfig

    def init(self, ctx: PluginContext) -> None:
        config: TickerConfig | None = ctx.section(self.name)
        if config is None:
            raise Disabled
        self.ctx = ctx
        self.config = config
        self.interval = config.interval or DEFAULT_INTERVAL
        self.pool: Pool | None = None
        self.ticker: Ticker | None = None
        self._task: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        self.pool = pool = self.ctx.server.new_pool(
            self.name,
            self.config.pool,
            {"RR_MODE": "ticker"},
            on_crash=self.ctx.crashed,
            clock=self.ctx.clock,
        )
        await pool.start()
        self.ticker = Ticker(
            lambda payload: pool.exec(payload, timeout=self.config.exec_timeout),
            interval=self.interval,
            clock=self.ctx.clock,
            overlap=self.config.overlap,
            max_parallel=pool.size,
        )
        self._schedule()
        log.info(
            f"ticking every {self.ticker.interval:g}s",
            extra={
                "event": "ticker.started",
                "plugin": self.name,
                "interval_s": self.ticker.interval,
                "overlap": self.config.overlap,
            },
        )

    async def stop(self) -> None:
        """Stop scheduling, let the tick in flight finish (within destroy_timeout), stop."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.pool is not None:
            await self.pool.destroy()
        if self.ticker is not None:
            await self.ticker.drain()
            ledger = self.ticker.ledger
            log.info(
                f"ticker stopped: {ledger.summary()}",
                extra={"event": "ticker.stopped", "plugin": self.name, **ledger.snapshot()},
            )

    def _schedule(self) -> None:
        assert self.ticker is not None
        self._task = asyncio.create_task(self.ticker.run(), name="ticker")
        self._task.add_done_callback(self._schedule_ended)

    async def reconfigure(self, ctx: PluginContext, plan: ReloadPlan) -> None:
        """A reload: a new interval re-times the schedule from now (tick numbers go on, no
        worker restarts); overlap and exec_timeout apply to the next tick; the pool takes its
        new settings, scales, or replaces its workers one by one, as the plan says."""
        config: TickerConfig | None = ctx.section(self.name)
        if config is None:
            return  # the section is gone: the daemon stops this plugin
        self.ctx, self.config = ctx, config
        ticker, pool = self.ticker, self.pool
        if ticker is None or pool is None:
            return
        ticker.overlap = config.overlap
        interval = config.interval or DEFAULT_INTERVAL
        if interval != ticker.interval:
            self.interval = ticker.interval = interval
            if self._task is not None:
                self._task.cancel()
            self._schedule()
        spec = ctx.server.worker_spec(self.name, config.pool, {"RR_MODE": "ticker"})
        await pool.reconfigure(
            config.pool,
            spec,
            size_changed=self.name in plan.pools_to_scale(),
            replace_workers=self.name in plan.pools_to_replace(),
        )
        ticker.max_parallel = pool.size

    def scale(self, workers: int) -> None:
        """`rrd scale`: a new pool size until the config's num_workers changes or rrd restarts."""
        if self.pool is not None and self.ticker is not None:
            self.pool.scale(workers)
            self.ticker.max_parallel = workers

    def status(self) -> dict[str, Any]:
        """The pool's status and what happened to the ticks, for `rrd status` and STATUS=."""
        if self.pool is None or self.ticker is None:
            return {}
        return {
            "pool": self.pool.status().as_dict(),
            "interval_s": self.ticker.interval,
            "ticks": self.ticker.ledger.snapshot(),
            "ticks_summary": self.ticker.ledger.summary(),
        }

    def _schedule_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            self.ctx.crashed("the ticker's schedule", error)

    async def reset(self) -> None:
        """Replace every worker; RrdError when the new ones fail to start (the old serve on)."""
        if self.pool is not None and not await self.pool.reset():
            raise RrdError(
                f"the new workers of {self.name} fail to start ({self.pool.status().last_error});"
                " the old ones keep serving while rrd retries"
            )

    def workers(self) -> list[WorkerInfo]:
        return self.pool.workers() if self.pool is not None else []

    def histograms(self) -> Mapping[str, Histogram]:
        """The pool's exec durations and the ticks' lateness, for /metrics."""
        if self.pool is None or self.ticker is None:
            return {}
        return {
            "exec_duration_seconds": self.pool.exec_seconds,
            "tick_lateness_seconds": self.ticker.lateness_seconds,
        }

"""The ticker: payloads to a worker of its own pool, on schedules.

Room: plugins (ticker). `ticker.interval` is RoadRunner's one schedule (`default`), its payload
unchanged; `ticker.schedules` adds named ones on the same pool, each with an interval or a cron
time and its own policies (`schedule.Ticker`). `when` says when ticks fall due, `ledger` what
became of each, `state` keeps each schedule's last tick across restarts.

Every due tick is accounted for in its schedule's ledger: it is sent, or skipped (busy, late,
expired, paused, coalesced); every sent tick is in flight until it is delivered or fails with
a reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from rrd.config import ReloadPlan
from rrd.errors import RrdError
from rrd.plugins.base import Disabled, Plugin, PluginContext
from rrd.plugins.ticker.config import (
    DEFAULT_INTERVAL,
    DEFAULT_SCHEDULE,
    ScheduleConfig,
    TickerConfig,
    default_state_dir,
)
from rrd.plugins.ticker.ledger import TickLedger
from rrd.plugins.ticker.schedule import Policy, Ticker, failure_reason
from rrd.pool import Pool
from rrd.stats import LATENESS_SECONDS, Histogram
from rrd.worker import WorkerInfo

if TYPE_CHECKING:
    from rrd.plugins.ticker.state import TickState

__all__ = [
    "DEFAULT_INTERVAL",
    "ScheduleConfig",
    "Ticker",
    "TickerConfig",
    "TickerPlugin",
    "failure_reason",
]

log = logging.getLogger("rrd.ticker")


class TickerPlugin(Plugin):
    """Feeds its pool a payload per tick of each schedule; its workers see RR_MODE=ticker."""

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
        self.tickers: dict[str, Ticker] = {}
        """The schedules running, by name; `default` first when it runs."""
        self.retired: list[Ticker] = []
        """Schedules a reload removed: their ticks still count, and may still be in flight."""
        self.lateness_seconds = Histogram(LATENESS_SECONDS)
        self.state: TickState | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def ticker(self) -> Ticker | None:
        """The default schedule (`ticker.interval`), when it runs."""
        return self.tickers.get(DEFAULT_SCHEDULE)

    async def serve(self) -> None:
        self.pool = pool = self.ctx.server.new_pool(
            self.name,
            self.config.pool,
            {"RR_MODE": "ticker"},
            on_crash=self.ctx.crashed,
            clock=self.ctx.clock,
        )
        await pool.start()
        directory = self.config.state_dir or default_state_dir(os.environ)
        if directory:
            from rrd.plugins.ticker.state import TickState

            self.state = await TickState.load(directory, self.name)
        for name, schedule in self._wanted(self.ctx, self.config).items():
            self.tickers[name] = self._ticker(name, schedule)
        if self.state is not None:
            self.state.forget(self.tickers)
        for name in self.tickers:
            self._catch_up(name)
            self._start(name)
        for ticker in self.tickers.values():
            log.info(
                f"ticking {_cadence(ticker)}" + (f" ({ticker.name})" if ticker.named else ""),
                extra={
                    "event": "ticker.started",
                    "plugin": self.name,
                    **({"schedule": ticker.name} if ticker.named else {}),
                    **({"cron": ticker.cron.text} if ticker.cron else {}),
                    "interval_s": ticker.interval,
                    "overlap": self.config.overlap,
                },
            )

    def _wanted(self, ctx: PluginContext, config: TickerConfig) -> dict[str, ScheduleConfig | None]:
        """The schedules a config asks for: `default` (None: from `ticker.interval`) unless
        named ones are written and `ticker.interval` is not, then the named ones."""
        wanted: dict[str, ScheduleConfig | None] = {}
        key = f"{self.name}.interval"
        if not config.schedules or key in ctx.config.lines or key in ctx.config.overridden:
            wanted[DEFAULT_SCHEDULE] = None
        wanted.update(config.schedules)
        return wanted

    def _ticker(self, name: str, schedule: ScheduleConfig | None) -> Ticker:
        """A schedule's Ticker, on this plugin's pool, its lastTick from the state kept."""
        pool, config = self.pool, self.config
        assert pool is not None
        recorder = self.state.record if self.state is not None else None
        last = self.state.last(name) if self.state is not None else None
        if schedule is None:
            return Ticker(
                lambda payload: pool.exec(payload, timeout=config.exec_timeout),
                interval=self.interval,
                clock=self.ctx.clock,
                overlap=config.overlap,
                max_parallel=pool.size,
                last_tick=int(last or 0),
                recorder=recorder,
                lateness=self.lateness_seconds,
            )
        from rrd.plugins.ticker.when import CronTimes, IntervalTimes, parse_timezone

        zone = parse_timezone(schedule.timezone)
        expires = schedule.expires or None
        return Ticker(
            lambda payload: pool.exec(
                payload, timeout=config.exec_timeout, allocate_timeout=expires
            ),
            interval=schedule.interval,
            clock=self.ctx.clock,
            name=name,
            named=True,
            cron=CronTimes(schedule.cron, zone) if schedule.cron else None,
            align=IntervalTimes(schedule.interval, True, zone) if schedule.align else None,
            policy=Policy(
                max_in_flight=schedule.max_in_flight,
                misfire_grace=schedule.misfire_grace,
                coalesce=schedule.coalesce,
                jitter=schedule.jitter,
                expires=schedule.expires,
            ),
            fields=schedule.fields,
            rng=random.Random(f"{socket.gethostname()}/{self.name}/{name}"),
            last_tick=int(last or 0),
            recorder=recorder,
            lateness=self.lateness_seconds,
        )

    def _catch_up(self, name: str) -> None:
        """`catch_up: once`: a tick fell due while rrd was down (after the last one kept):
        send one now."""
        schedule = self.config.schedules.get(name)
        ticker = self.tickers[name]
        last = self.state.last(name) if self.state is not None else None
        if schedule is None or schedule.catch_up != "once" or last is None:
            return
        now = self.ctx.clock.wall()
        due = ticker.cron.next_after(last) if ticker.cron is not None else last + ticker.interval
        if due > now:
            return
        log.info(
            f"a tick of {name} fell due while rrd was down; sending one now",
            extra={"event": "ticker.catch_up", "plugin": self.name, "schedule": name},
        )
        ticker.fire()

    def _start(self, name: str) -> None:
        task = asyncio.create_task(self.tickers[name].run(), name=f"ticker-{name}")
        task.add_done_callback(self._schedule_ended)
        self._tasks[name] = task

    async def _halt(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def stop(self) -> None:
        """Stop scheduling, let the ticks in flight finish (within destroy_timeout), stop."""
        for name in list(self._tasks):
            await self._halt(name)
        if self.pool is not None:
            await self.pool.destroy()
        for ticker in self._every_ticker():
            await ticker.drain()
        if self.state is not None:
            await self.state.flush()
        ledger = self.ledger()
        extra: dict[str, Any] = {
            "event": "ticker.stopped",
            "plugin": self.name,
            **ledger.snapshot(),
        }
        if self.config.schedules:
            extra["schedules"] = {t.name: t.ledger.snapshot() for t in self.tickers.values()}
        log.info(f"ticker stopped: {ledger.summary()}", extra=extra)

    async def reconfigure(self, ctx: PluginContext, plan: ReloadPlan) -> None:
        """A reload: a schedule whose timing or policies changed is re-timed from now (its
        tick numbers, ledger and lastTick go on; no worker restarts); a new one starts, a
        removed one stops (its ticks in flight finish). overlap and exec_timeout apply to the
        next tick; the pool takes its new settings, scales, or replaces its workers one by
        one, as the plan says."""
        config: TickerConfig | None = ctx.section(self.name)
        if config is None:
            return  # the section is gone: the daemon stops this plugin
        old = self.config
        self.ctx, self.config = ctx, config
        pool = self.pool
        if pool is None:
            return
        self.interval = config.interval or DEFAULT_INTERVAL
        wanted = self._wanted(ctx, config)
        for name in [n for n in self.tickers if n not in wanted]:
            await self._halt(name)
            self.retired.append(self.tickers.pop(name))
        for name, schedule in wanted.items():
            current = self.tickers.get(name)
            if current is not None and not _retimed(current, schedule, old, self.interval):
                current.overlap = config.overlap
                continue
            await self._halt(name)
            ticker = self._ticker(name, schedule)
            if current is not None:
                ticker.adopt(current)
            self.tickers[name] = ticker
            self._start(name)
        if self.state is not None:
            self.state.forget(self.tickers)
        spec = ctx.server.worker_spec(self.name, config.pool, {"RR_MODE": "ticker"})
        await pool.reconfigure(
            config.pool,
            spec,
            size_changed=self.name in plan.pools_to_scale(),
            replace_workers=self.name in plan.pools_to_replace(),
        )
        for ticker in self.tickers.values():
            ticker.max_parallel = pool.size

    def scale(self, workers: int) -> None:
        """`rrd scale`: a new pool size until the config's num_workers changes or rrd restarts."""
        if self.pool is not None:
            self.pool.scale(workers)
            for ticker in self.tickers.values():
                ticker.max_parallel = workers

    # Operators' control of the schedules (`rrd ticker ...`)

    def schedules(self) -> list[dict[str, Any]]:
        """Each schedule: when, next due, paused, last tick and outcome, its ledger."""
        return [ticker.describe() for ticker in self.tickers.values()]

    def pause(self, name: str) -> bool:
        """Skip (as paused) the ticks of `name` until it is resumed; False if it was already."""
        ticker = self._named(name)
        was, ticker.paused = ticker.paused, True
        log.info(f"schedule {name} paused", extra={"event": "ticker.paused", "schedule": name})
        return not was

    def resume(self, name: str) -> bool:
        ticker = self._named(name)
        was, ticker.paused = ticker.paused, False
        log.info(f"schedule {name} resumed", extra={"event": "ticker.resumed", "schedule": name})
        return was

    def run_now(self, name: str) -> None:
        """One tick of `name` now, counted as manual (paused or not, busy or not)."""
        ticker = self._named(name)
        log.info(
            f"schedule {name}: a tick now, as asked",
            extra={"event": "ticker.run", "schedule": name},
        )
        ticker.fire(self.ctx.clock.monotonic(), manual=True)

    def _named(self, name: str) -> Ticker:
        ticker = self.tickers.get(name)
        if ticker is None:
            known = ", ".join(self.tickers) or "none"
            raise ValueError(f"no schedule {name!r}; the schedules are: {known}")
        return ticker

    # What rrd status, STATUS= and /metrics read

    def ledger(self) -> TickLedger:
        """Every schedule's ledger (the removed ones' too), added up."""
        return TickLedger.added(t.ledger for t in self._every_ticker())

    def status(self) -> dict[str, Any]:
        """The pool's status and what happened to the ticks, for `rrd status` and STATUS=."""
        if self.pool is None:
            return {}
        ledger = self.ledger()
        report: dict[str, Any] = {
            "pool": self.pool.status().as_dict(),
            "interval_s": self.ticker.interval if self.ticker is not None else None,
            "ticks": ledger.snapshot(),
            "ticks_summary": ledger.summary(),
        }
        if self.config.schedules:
            report["schedules"] = {t.name: t.describe() for t in self.tickers.values()}
        return report

    def _every_ticker(self) -> Iterator[Ticker]:
        yield from self.tickers.values()
        yield from self.retired

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
        if self.pool is None:
            return {}
        return {
            "exec_duration_seconds": self.pool.exec_seconds,
            "tick_lateness_seconds": self.lateness_seconds,
        }


def _retimed(
    ticker: Ticker, schedule: ScheduleConfig | None, old: TickerConfig, interval: float
) -> bool:
    """Whether a reload changes when a running schedule ticks, or its policies."""
    if schedule is None:
        return interval != ticker.interval
    return schedule != old.schedules.get(ticker.name)


def _cadence(ticker: Ticker) -> str:
    if ticker.cron is not None:
        return f"at {ticker.cron.text}"
    return f"every {ticker.interval:g}s"

"""One schedule's clock and policies: when its ticks fall due, and what becomes of each.

Room: plugins (ticker). Knows only an exec callable and a Clock, so it runs on a fake clock in
tests. Interval ticks fall due at `t0 + k * interval` on the monotonic clock, so they never
drift; cron ticks at the wall-clock times of `when.CronTimes`, watched in steps of at most
WALL_STEP so that a suspended host or a stepped clock is noticed.

Every tick due enters the ledger once and leaves it once: sent (then delivered or failed), or
skipped as busy (max_in_flight ticks already run), late (past its misfire grace), coalesced
(rolled into a later one), paused, or expired (no worker within `expires`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rrd.clock import Clock
from rrd.errors import AllocateTimeout, ExecTimeout, NoWorkers, RrdError, SoftJobError, WorkerError
from rrd.plugins.ticker.config import DEFAULT_SCHEDULE
from rrd.plugins.ticker.ledger import TickLedger
from rrd.pool import Reply
from rrd.protocol.control import Payload
from rrd.stats import LATENESS_SECONDS, Histogram

if TYPE_CHECKING:
    from rrd.plugins.ticker.when import CronTimes, IntervalTimes

log = logging.getLogger("rrd.ticker")

WALL_STEP = 30.0
"""A cron schedule sleeps at most this long before it reads the wall clock again."""

CRON_STEP = 1.0
"""The least time between two cron times: a six-field expression's step is a second."""

CATCH_UP_CHUNK = 1000
"""Cron times counted per step after a long stall, before yielding to the loop."""

_SKIPPED = "skipped {n} ticks ({reason})"

ExecPayload = Callable[[Payload], Awaitable[Reply]]
TickRecorder = Callable[[str, float], None]


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


@dataclass(frozen=True)
class Policy:
    """What a schedule does with a tick that falls due (see ScheduleConfig for the words)."""

    max_in_flight: int = 1
    misfire_grace: float = 0.0
    coalesce: bool = False
    jitter: float = 0.0
    expires: float = 0.0


class Ticker:
    """One schedule. The default one (`ticker.interval`) keeps RoadRunner's payload byte for
    byte; a named one adds its name to the context and its static fields to the body."""

    def __init__(
        self,
        exec_payload: ExecPayload,
        *,
        interval: float = 0.0,
        clock: Clock,
        overlap: str = "skip",
        max_parallel: int = 1,
        name: str = DEFAULT_SCHEDULE,
        named: bool = False,
        cron: CronTimes | None = None,
        align: IntervalTimes | None = None,
        policy: Policy | None = None,
        fields: Mapping[str, Any] | None = None,
        rng: random.Random | None = None,
        last_tick: int = 0,
        recorder: TickRecorder | None = None,
        lateness: Histogram | None = None,
    ) -> None:
        self.exec_payload = exec_payload
        self.interval = interval
        self.clock = clock
        self.overlap = overlap
        self.max_parallel = max(1, max_parallel)
        self.name = name
        self.named = named
        self.cron = cron
        self.align = align
        self.policy = policy or Policy()
        self.fields = dict(fields or {})
        self.rng = rng or random.Random()
        self.ledger = TickLedger()
        self.lateness_seconds = lateness or Histogram(LATENESS_SECONDS)
        """How long after its due moment each tick sent was handed to the pool (one histogram
        may serve every schedule of a plugin)."""
        self.last_tick = last_tick
        """When the last tick was sent (unix seconds; 0 before the first): the next one's
        `lastTick`, as RoadRunner's."""
        self.last_outcome = ""
        self.next_due: float | None = None
        """The wall-clock time the next tick falls due, for `rrd ticker list`."""
        self.paused = False
        self.recorder = recorder
        self._in_flight: set[asyncio.Task[None]] = set()
        self._due_index = 0

    def adopt(self, previous: Ticker) -> None:
        """Go on from the Ticker this one replaces (a reload re-timed the schedule): the same
        ledger, ticks in flight, lastTick and pause."""
        self.ledger = previous.ledger
        self._in_flight = previous._in_flight
        self.last_tick = previous.last_tick
        self.last_outcome = previous.last_outcome
        self.paused = previous.paused
        self._due_index = previous._due_index

    @property
    def limit(self) -> int:
        """Ticks of this schedule that may run at once."""
        if self.named:
            return self.policy.max_in_flight
        return 1 if self.overlap == "skip" else self.max_parallel

    # When ticks fall due

    async def run(self) -> None:
        """Send ticks until cancelled."""
        if self.cron is not None:
            await self._run_cron(self.cron)
        else:
            await self._run_interval()

    async def _run_interval(self) -> None:
        interval = self.interval
        start = self.clock.monotonic()
        if self.align is not None:
            wall = self.clock.wall()
            start += self.align.first_due(wall) - wall - interval  # tick 1 on the multiple
        k = 1
        while True:
            due = start + k * interval
            self.next_due = self.clock.wall() + (due - self.clock.monotonic())
            fire_at = due + self._jitter()
            await self.clock.sleep_until(fire_at)
            now = self.clock.monotonic()
            behind = max(0, int((now - due) // interval))
            newest = due + behind * interval
            late = self._late(now - newest, behind, interval)
            within = behind + 1 - late
            self._due_index = k + behind
            self._settle(late, max(0, within - 1), within > 0, newest + (fire_at - due))
            k += behind + 1

    def _late(self, newest_age: float, behind: int, interval: float) -> int:
        """Of `behind + 1` ticks due `interval` apart, the newest `newest_age` ago, how many
        are past their grace: by default every one whose next tick is due too (all but the
        newest); with `misfire_grace`, every one older than it."""
        grace = self.policy.misfire_grace
        if not grace:
            return behind
        slack = grace - newest_age
        if slack < 0:
            return behind + 1
        return behind - min(behind, int(slack // interval))

    async def _run_cron(self, cron: CronTimes) -> None:
        due = cron.next_after(self.clock.wall())
        while True:
            self.next_due = due
            fire_at = due + self._jitter()
            await self._sleep_until_wall(fire_at)
            now = self.clock.wall()
            if now - due < CRON_STEP and not (self.policy.misfire_grace or self.paused):
                # On time, the common case: cron times are a second apart at least, so this is
                # the only tick due and it is within grace. Send it first, then look ahead.
                self._due_index += 1
                self.fire(self._monotonic_of(fire_at))
                due = cron.next_after(due)
                continue
            dues = [due]
            following = cron.next_after(due)
            while following <= now:  # more fell due while rrd (or the host) slept
                dues.append(following)
                following = cron.next_after(following)
                if len(dues) % CATCH_UP_CHUNK == 0:
                    await asyncio.sleep(0)
                    now = self.clock.wall()
            nexts = [*dues[1:], following]
            grace = self.policy.misfire_grace
            late = sum(
                (now - d > grace) if grace else (now >= n) for d, n in zip(dues, nexts, strict=True)
            )
            within = len(dues) - late
            self._due_index += len(dues)
            self._settle(late, max(0, within - 1), within > 0, self._monotonic_of(fire_at))
            due = following

    async def _sleep_until_wall(self, moment: float) -> None:
        """Sleep until the wall clock reads `moment`, in steps of at most WALL_STEP: the
        monotonic clock stops while the host is suspended, and the wall clock may be stepped."""
        left = moment - self.clock.wall()
        if left <= 0:  # due already: still yield, as sleep_until does
            await asyncio.sleep(0)
        while left > 0:
            await self.clock.sleep_until(self.clock.monotonic() + min(left, WALL_STEP))
            left = moment - self.clock.wall()

    def _monotonic_of(self, wall: float) -> float:
        """A wall-clock moment on the monotonic clock, as of now."""
        return self.clock.monotonic() - (self.clock.wall() - wall)

    def _jitter(self) -> float:
        return self.rng.uniform(0, self.policy.jitter) if self.policy.jitter else 0.0

    # What becomes of the ticks due

    def _settle(self, late: int, older: int, newest_in_grace: bool, due: float) -> None:
        """Ticks fell due at once: `late` past their grace, `older` still within it, and the
        newest (in grace or not). The late are skipped; the older are coalesced into the
        newest or sent each; then the newest is sent (`due`: its moment on the monotonic
        clock, for its lateness)."""
        if late:
            message = "the loop or the host fell behind; skipped {n} ticks"
            self._skip("late", late, message, logging.WARNING)
        if self.paused:
            self._skip("paused", older + newest_in_grace, _SKIPPED)
            return
        if older and self.policy.coalesce:
            self._skip("coalesced", older, _SKIPPED)
            older = 0
        for _ in range(older):
            self.fire(due)
        if newest_in_grace:
            self.fire(due)

    def _skip(self, reason: str, count: int, message: str, level: int = logging.INFO) -> None:
        """`count` ticks due and not run, for `reason`: counted, and said once."""
        if count <= 0:
            return
        self.ledger.skip(reason, count)
        if reason in ("late", "busy"):
            self.last_outcome = f"skipped: {reason}"
        extra = {"event": "ticker.skipped", "reason": reason, "count": count, **self._fields()}
        log.log(level, message.format(n=count, reason=reason), extra=extra)

    def _fields(self) -> dict[str, Any]:
        """What every log record of this schedule carries."""
        return {"plugin": "ticker", "schedule": self.name} if self.named else {"plugin": "ticker"}

    def fire(self, due: float | None = None, *, manual: bool = False) -> bool:
        """Send one tick now, unless max_in_flight ticks already run (then it is skipped as
        busy; an operator's tick is sent all the same). The body counts the ticks sent, as
        RoadRunner's does; the context's `k` is the due index, so a worker sees a skip as a
        gap in k."""
        if not manual and len(self._in_flight) >= self.limit:
            self._skip("busy", 1, "the previous tick still runs; skipped one")
            return False
        tick = self.ledger.sent
        self.ledger.send(manual=manual)
        payload = Payload(body=self._body(tick), context=self._context())
        wall = self.clock.wall()
        self.last_tick = int(wall)
        if self.recorder is not None:
            self.recorder(self.name, wall)
        task = asyncio.create_task(self._exec(tick, payload, due), name=f"tick-{self.name}-{tick}")
        self._in_flight.add(task)
        task.add_done_callback(self._tick_done)
        return True

    def _body(self, tick: int) -> bytes:
        if not self.fields:
            return b'{"tick": %d}' % tick
        return json.dumps({"tick": tick, **self.fields}).encode()

    def _context(self) -> bytes:
        if not self.named:
            return b'{"lastTick": %d, "k": %d}' % (self.last_tick, self._due_index)
        return json.dumps(
            {"lastTick": self.last_tick, "k": self._due_index, "schedule": self.name}
        ).encode()

    def _tick_done(self, task: asyncio.Task[None]) -> None:
        """A tick cancelled (rrd stopping at once), even before it began, is accounted too."""
        self._in_flight.discard(task)
        if task.cancelled():
            self.ledger.fail("cancelled")
            self.last_outcome = "failed: cancelled"

    async def _exec(self, tick: int, payload: Payload, due: float | None = None) -> None:
        began = self.clock.monotonic()
        if due is not None:
            self.lateness_seconds.observe(began - due if began > due else 0.0)
        fields = {**self._fields(), "tick": tick}
        try:
            reply = await self.exec_payload(payload)
        except AllocateTimeout as exc:
            if not self.policy.expires:
                self._failed(tick, exc, began, fields)
                return
            self.ledger.expire()
            self.last_outcome = "skipped: expired"
            log.warning(
                f"tick {tick} expired: {exc}",
                extra={"event": "ticker.skipped", "reason": "expired", "count": 1, **fields},
            )
            return
        except Exception as exc:  # every tick is accounted for, even one that met a bug
            self._failed(tick, exc, began, fields)
            return
        self.ledger.deliver()
        self.last_outcome = "delivered"
        log.debug(
            f"tick {tick} done",
            extra={
                "event": "ticker.tick",
                **fields,
                "worker_pid": reply.worker_pid,
                "duration_ms": round((self.clock.monotonic() - began) * 1000, 1),
            },
        )

    def _failed(self, tick: int, exc: Exception, began: float, fields: dict[str, Any]) -> None:
        reason = failure_reason(exc)
        self.ledger.fail(reason)
        self.last_outcome = f"failed: {reason}"
        log.warning(
            f"tick {tick} failed: {exc}",
            exc_info=None if isinstance(exc, RrdError) else exc,
            extra={
                "event": "ticker.failed",
                **fields,
                "reason": reason,
                "worker_pid": getattr(exc, "pid", None),
                "duration_ms": round((self.clock.monotonic() - began) * 1000, 1),
            },
        )

    async def drain(self) -> None:
        """Wait for the ticks in flight (they end by themselves: exec has a timeout)."""
        if self._in_flight:
            await asyncio.wait(self._in_flight)

    def describe(self) -> dict[str, Any]:
        """What `rrd ticker list` shows of this schedule."""
        when: dict[str, Any] = (
            {"cron": self.cron.text} if self.cron is not None else {"interval_s": self.interval}
        )
        return {
            "name": self.name,
            **when,
            "paused": self.paused,
            "next_due": self.next_due,
            "last_tick": self.last_tick or None,
            "last_outcome": self.last_outcome or None,
            "in_flight": len(self._in_flight),
            "ticks": self.ledger.snapshot(),
        }

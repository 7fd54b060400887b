"""Named schedules on a fake clock: every policy (max_in_flight, misfire_grace, coalesce, jitter,
expires, align), cron ticks on the wall clock (a suspended host, a stepped clock), pause, resume
and run-now, the payload a worker sees, and the ledger balancing at every moment."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from rrd.config import load_config
from rrd.errors import AllocateTimeout, ConfigError, PoolClosed
from rrd.plugins.ticker import TickerConfig
from rrd.plugins.ticker.schedule import Policy, Ticker
from rrd.plugins.ticker.when import CronTimes, IntervalTimes
from tests.fakes import FakeClock, Recorder, settle, ticking

UTC = ZoneInfo("UTC")


@asynccontextmanager
async def running(**options: Any) -> AsyncIterator[tuple[Ticker, Recorder, FakeClock]]:
    """A named schedule, `job`, on a fake clock."""
    async with ticking(name="job", named=True, **options) as running_ticker:
        yield running_ticker


def skipped(ticker: Ticker) -> dict[str, int]:
    return dict(ticker.ledger.skipped)


async def test_a_named_schedule_says_its_name_and_merges_its_payload() -> None:
    async with running(interval=1.0, fields={"report": "daily"}) as (_ticker, recorder, clock):
        await clock.advance(2.0)
        assert recorder.bodies() == [{"tick": 0, "report": "daily"}, {"tick": 1, "report": "daily"}]
        first, second = recorder.contexts()
        assert first == {"lastTick": 0, "k": 1, "schedule": "job"}
        assert second == {"lastTick": int(clock.wall() - 1.0), "k": 2, "schedule": "job"}


async def test_max_in_flight_runs_that_many_then_skips_as_busy() -> None:
    async with running(interval=1.0, policy=Policy(max_in_flight=2)) as (ticker, recorder, clock):
        recorder.hold = asyncio.Event()
        await clock.advance(4.0)
        assert len(recorder.calls) == 2
        assert skipped(ticker) == {"busy": 2}
        assert ticker.ledger.in_flight == 2
        recorder.hold.set()
        await settle()
        assert ticker.ledger.delivered == 2 and ticker.ledger.balanced


async def test_after_a_stall_the_default_grace_sends_the_newest_and_counts_the_rest_late() -> None:
    async with running(interval=1.0) as (ticker, recorder, clock):
        await clock.jump(5.5)  # the loop was blocked: ticks 1..5 all fell due
        assert len(recorder.calls) == 1
        assert skipped(ticker) == {"late": 4}
        assert recorder.contexts()[-1]["k"] == 5


async def test_misfire_grace_sends_each_tick_still_within_it() -> None:
    policy = Policy(misfire_grace=2.5, max_in_flight=10)
    async with running(interval=1.0, policy=policy) as (ticker, recorder, clock):
        await clock.jump(5.5)  # due at 1..5; now 5.5: ages 4.5 3.5 2.5 1.5 0.5
        assert skipped(ticker) == {"late": 2}
        assert len(recorder.calls) == 3


async def test_coalesce_sends_one_tick_for_all_within_grace() -> None:
    policy = Policy(misfire_grace=10.0, coalesce=True, max_in_flight=5)
    async with running(interval=1.0, policy=policy) as (ticker, recorder, clock):
        await clock.jump(5.5)
        assert len(recorder.calls) == 1
        assert skipped(ticker) == {"coalesced": 4}
        assert ticker.ledger.due == 5


async def test_a_tick_later_than_a_short_grace_is_late_even_when_alone() -> None:
    async with running(interval=10.0, policy=Policy(misfire_grace=1.0)) as (
        ticker,
        recorder,
        clock,
    ):
        await clock.jump(12.5)  # tick 1 (due 10) is 2.5 s late
        assert recorder.calls == [] and skipped(ticker) == {"late": 1}
        await clock.advance(8.0)  # tick 2 at 20, on time
        assert len(recorder.calls) == 1


async def test_jitter_delays_each_tick_within_its_bound_and_differs_by_seed() -> None:
    delays = []
    for seed in ("host-a/ticker/job", "host-b/ticker/job"):
        clock = FakeClock()
        start = clock.now
        async with running(
            interval=10.0, policy=Policy(jitter=3.0), rng=random.Random(seed), clock=clock
        ) as (ticker, recorder, clock):
            await clock.advance(53.0)
            offsets = [t - start - 10 * (i + 1) for i, (t, _) in enumerate(recorder.calls)]
            assert len(offsets) == 5 and all(0 <= d < 3.0 for d in offsets)
            assert ticker.ledger.skipped == {}
            delays.append(offsets)
    assert delays[0] != delays[1]


async def test_expires_turns_no_free_worker_into_a_skip_not_a_failure() -> None:
    async with running(interval=1.0, policy=Policy(expires=0.5)) as (ticker, recorder, clock):
        recorder.fail = AllocateTimeout("pool 'ticker': no free worker within 0.5s")
        await clock.advance(1.0)
        assert skipped(ticker) == {"expired": 1}
        assert ticker.ledger.failed == {} and ticker.ledger.balanced
        recorder.fail = PoolClosed("pool 'ticker' is stopping")  # not an expiry: a failure
        await clock.advance(1.0)
        assert dict(ticker.ledger.failed) == {"no_worker": 1}


async def test_without_expires_no_free_worker_fails_as_before() -> None:
    async with running(interval=1.0) as (ticker, recorder, clock):
        recorder.fail = AllocateTimeout("no free worker")
        await clock.advance(1.0)
        assert dict(ticker.ledger.failed) == {"no_worker": 1}


async def test_align_puts_interval_ticks_on_wall_clock_multiples() -> None:
    clock = FakeClock(wall_start=1_800_000_007.25)  # 7.25 s past a minute (UTC)
    async with running(interval=60.0, align=IntervalTimes(60.0, True, UTC), clock=clock) as (
        _ticker,
        recorder,
        clock,
    ):
        await clock.advance(130.0)
        walls = [t - clock.now + clock.wall() for t, _ in recorder.calls]
        assert [round(w % 60, 6) for w in walls] == [0.0, 0.0]


async def test_pause_skips_as_paused_and_resume_and_run_now_send() -> None:
    async with running(interval=1.0) as (ticker, recorder, clock):
        await clock.advance(1.0)
        ticker.paused = True
        await clock.advance(3.0)
        assert len(recorder.calls) == 1 and skipped(ticker) == {"paused": 3}
        assert ticker.fire(clock.monotonic(), manual=True)  # run now, paused or not
        await settle()
        assert len(recorder.calls) == 2 and ticker.ledger.manual == 1
        ticker.paused = False
        await clock.advance(1.0)
        assert len(recorder.calls) == 3 and ticker.ledger.balanced


async def test_cron_ticks_fall_on_wall_clock_times() -> None:
    clock = FakeClock(wall_start=1_800_000_000.0)  # 2027-01-15T08:00:00Z
    async with running(cron=CronTimes("* * * * * */15", UTC), clock=clock) as (
        ticker,
        recorder,
        clock,
    ):
        await clock.advance(60.0)
        walls = [t - clock.now + clock.wall() for t, _ in recorder.calls]
        assert [w % 60 for w in walls] == [0.0, 15.0, 30.0, 45.0] or [w % 60 for w in walls] == [
            15.0,
            30.0,
            45.0,
            0.0,
        ]
        assert ticker.ledger.due == 4 and ticker.next_due is not None


async def test_a_host_suspended_across_cron_times_counts_them_and_sends_the_newest() -> None:
    clock = FakeClock(wall_start=1_800_000_000.0)
    async with running(cron=CronTimes("* * * * *", UTC), clock=clock) as (
        ticker,
        recorder,
        clock,
    ):
        clock.suspend(600.0)  # the wall clock jumps 10 minutes; the monotonic one does not
        await clock.advance(31.0)  # the schedule looks at the wall clock within WALL_STEP
        assert len(recorder.calls) == 1
        assert skipped(ticker) == {"late": 9}
        assert ticker.ledger.due == 10


async def test_every_due_tick_is_accounted_for_under_every_policy() -> None:
    """Random stalls, holds and failures: the ledger balances at each step."""
    chance = random.Random(7)
    policy = Policy(max_in_flight=2, misfire_grace=1.5, coalesce=True, jitter=0.2, expires=0.1)
    async with running(interval=0.5, policy=policy, rng=random.Random(1)) as (
        ticker,
        recorder,
        clock,
    ):
        for _ in range(200):
            roll = chance.random()
            recorder.fail = AllocateTimeout("none free") if roll < 0.1 else None
            if roll < 0.2:
                await clock.jump(chance.uniform(0, 3))
            else:
                await clock.advance(chance.uniform(0, 1))
            ticker.paused = chance.random() < 0.1
            assert ticker.ledger.balanced, ticker.ledger.snapshot()
        assert ticker.ledger.due > 100


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / ".rr.yaml"
    path.write_text('version: "3"\nserver:\n  command: "php worker.php"\n' + text)
    return path


def load(path: Path) -> TickerConfig:
    config = load_config(path, sections={"ticker": TickerConfig})
    ticker: TickerConfig = config.sections["ticker"]
    return ticker


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("ticker:\n  schedules:\n    a: {cron: '61 * * * *'}\n", 6, "ticker.schedules.a.cron"),
        (
            "ticker:\n  schedules:\n    a:\n      cron: '0 3 * * *'\n      timezone: Mars/Base\n",
            8,
            "ticker.schedules.a.timezone: unknown timezone",
        ),
        ("ticker:\n  schedules:\n    a: {interval: 1s, cron: '* * * * *'}\n", 6, "not both"),
        ("ticker:\n  schedules:\n    a: {coalesce: true}\n", 6, "either `interval` or `cron`"),
        (
            "ticker:\n  schedules:\n    a:\n      interval: 10s\n      jitter: 10s\n",
            8,
            "ticker.schedules.a.jitter: must be shorter than the interval",
        ),
        (
            "ticker:\n  schedules:\n    a:\n      cron: '@daily'\n      align: true\n",
            8,
            "ticker.schedules.a.align",
        ),
        ("ticker:\n  schedules:\n    default: {interval: 1s}\n", 5, "is the schedule"),
    ],
)
def test_a_broken_schedule_is_a_config_error_at_its_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    said = str(caught.value)
    assert said.startswith(f"{path}:{line}:") or f":{line}:" in said, said
    assert message in said, said


def test_catch_up_needs_a_state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    text = "ticker:\n  schedules:\n    a: {cron: '@daily', catch_up: once}\n"
    with pytest.raises(ConfigError, match="needs to know when the last tick was"):
        load(write(tmp_path, text))
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    assert load(write(tmp_path, text)).schedules["a"].catch_up == "once"


def test_three_schedules_read_with_their_defaults(tmp_path: Path) -> None:
    config = load(
        write(
            tmp_path,
            "ticker:\n  schedules:\n"
            "    fast: {interval: 15s, jitter: 2s}\n"
            "    seconds: {cron: '* * * * * */10'}\n"
            "    nightly: {cron: '0 3 * * *', timezone: Europe/Berlin, payload: '{\"job\": 1}'}\n",
        )
    )
    assert list(config.schedules) == ["fast", "seconds", "nightly"]
    nightly = config.schedules["nightly"]
    assert nightly.fields == {"job": 1} and nightly.max_in_flight == 1
    assert not nightly.coalesce and nightly.misfire_grace == 0

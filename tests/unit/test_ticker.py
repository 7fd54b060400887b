"""The ticker on a fake clock: due times, no drift, skip accounting, payloads, failures."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rrd.clock import SystemClock
from rrd.config import load_config
from rrd.errors import ConfigError, ExecTimeout, NoWorkers, SoftJobError, WorkerCrashed
from rrd.plugins.base import PluginContext
from rrd.plugins.ticker import (
    TickerConfig,
    TickerPlugin,
    failure_reason,
)
from rrd.proc import ProcessRegistry
from rrd.server import Server
from tests.fakes import FakeClock, settle, ticking


async def test_ticks_fall_due_at_t0_plus_k_intervals() -> None:
    async with ticking(interval=0.5) as (ticker, recorder, clock):
        start = clock.now
        await clock.advance(2.6)
        assert [t - start for t, _ in recorder.calls] == [0.5, 1.0, 1.5, 2.0, 2.5]
        assert recorder.ticks() == [0, 1, 2, 3, 4]
        assert ticker.ledger.due == ticker.ledger.delivered == 5


async def test_payload_format_and_last_tick() -> None:
    async with ticking() as (_, recorder, clock):
        await clock.advance(3)
        payloads = [p for _, p in recorder.calls]
        assert payloads[0].body == b'{"tick": 0}'
        assert payloads[0].context == b'{"lastTick": 0, "k": 1}'
        first_wall = int(clock.wall()) - 2
        assert json.loads(payloads[1].context) == {"lastTick": first_wall, "k": 2}
        assert json.loads(payloads[2].context) == {"lastTick": first_wall + 1, "k": 3}


async def test_slow_execs_do_not_drift_the_schedule() -> None:
    async with ticking(overlap="parallel", max_parallel=4) as (_, recorder, clock):
        recorder.duration = 0.7
        start = clock.now
        await clock.advance(10.2)
        assert [t - start for t, _ in recorder.calls] == [float(k) for k in range(1, 11)]


async def test_a_late_loop_skips_and_counts_instead_of_bursting() -> None:
    async with ticking() as (ticker, recorder, clock):
        await clock.advance(1)
        await clock.jump(3.5)  # the loop was blocked: due slots 2 and 3 passed unseen
        assert len(recorder.calls) == 2
        assert ticker.ledger.skipped == {"late": 2} and ticker.ledger.balanced
        await clock.advance(1)
        assert recorder.ticks() == [0, 1, 2]  # a skipped tick takes no number...
        due = [json.loads(p.context)["k"] for _, p in recorder.calls]
        assert due == [1, 4, 5]  # ...but its due index shows the gap
        assert recorder.calls[-1][0] == pytest.approx(1000 + 5)


async def test_overlap_skip_counts_the_ticks_that_fell_due_while_busy() -> None:
    async with ticking() as (ticker, recorder, clock):
        recorder.hold = asyncio.Event()
        await clock.advance(3)
        assert recorder.ticks() == [0]
        assert ticker.ledger.skipped == {"busy": 2} and ticker.ledger.in_flight == 1
        assert ticker.ledger.balanced
        recorder.hold.set()
        recorder.hold = None
        await settle()
        await clock.advance(1)
        assert recorder.ticks() == [0, 1]
        assert ticker.ledger.delivered == 2 and ticker.ledger.balanced


async def test_overlap_parallel_runs_up_to_the_pool_size() -> None:
    async with ticking(overlap="parallel", max_parallel=2) as (ticker, recorder, clock):
        recorder.hold = asyncio.Event()
        await clock.advance(4)
        assert recorder.ticks() == [0, 1]
        assert ticker.ledger.skipped == {"busy": 2} and ticker.ledger.in_flight == 2


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (SoftJobError("bad input", pid=7), "soft_error"),
        (ExecTimeout("no reply within 60s; killed", pid=7), "timeout"),
        (WorkerCrashed("closed its relay", pid=7), "crashed"),
        (NoWorkers("no free worker within 60s"), "no_worker"),
    ],
)
async def test_every_failure_is_counted_and_the_clock_keeps_going(
    error: Exception, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert failure_reason(error) == reason
    async with ticking() as (ticker, recorder, clock):
        recorder.fail = error
        await clock.advance(3)
        assert ticker.ledger.failed == {reason: 3}
        assert ticker.ledger.due == 3 and ticker.ledger.delivered == 0
    failed = [r for r in caplog.records if getattr(r, "event", "") == "ticker.failed"]
    assert [r.tick for r in failed] == [0, 1, 2]
    assert {r.reason for r in failed} == {reason}


async def test_a_bug_in_exec_is_counted_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with ticking() as (ticker, recorder, clock):
        recorder.fail = KeyError("oops")
        await clock.advance(2)
        assert ticker.ledger.failed == {"error": 2}
    failed = [r for r in caplog.records if getattr(r, "event", "") == "ticker.failed"]
    assert failed and all(r.exc_info for r in failed)


async def test_every_due_tick_is_accounted_for() -> None:
    async with ticking() as (ticker, recorder, clock):
        recorder.duration = 1.5
        await clock.advance(4)
        await clock.jump(2.5)
        await clock.advance(3)
        due = int(clock.now - 1000)
        ledger = ticker.ledger
        assert ledger.due == due and ledger.balanced
        assert ledger.skipped["late"] and ledger.skipped["busy"] and ledger.delivered


_FAILURES = [
    None,
    SoftJobError("bad input", pid=7),
    ExecTimeout("no reply", pid=7),
    WorkerCrashed("closed its relay", pid=7),
    NoWorkers("none free"),
    KeyError("a bug"),
]

_STEPS = st.one_of(
    st.tuples(st.just("advance"), st.floats(0, 3)),
    st.tuples(st.just("jump"), st.floats(0, 5)),
    st.tuples(st.just("duration"), st.sampled_from([0.0, 0.4, 1.5, 2.5])),
    st.tuples(st.just("fail"), st.sampled_from(range(len(_FAILURES)))),
    st.tuples(st.just("hold"), st.booleans()),
    st.tuples(st.just("cancel_one"), st.just(0)),
)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(_STEPS, max_size=25),
    overlap=st.sampled_from(["skip", "parallel"]),
    interval=st.sampled_from([0.25, 1.0]),
)
def test_the_ledger_balances_at_every_moment(
    steps: list[tuple[str, Any]], overlap: str, interval: float
) -> None:
    """Whatever the workers do (slow, failing, hung, a tick cancelled) and however late the
    loop is, every tick due is in flight, delivered, failed or skipped, at every moment."""
    asyncio.run(_ledger_scenario(steps, overlap, interval))


async def _ledger_scenario(steps: list[tuple[str, Any]], overlap: str, interval: float) -> None:
    async with ticking(interval=interval, overlap=overlap, max_parallel=3) as (ticker, rec, clock):
        start = clock.now
        for action, value in steps:
            if action == "advance":
                await clock.advance(value)
            elif action == "jump":
                await clock.jump(value)
            elif action == "duration":
                rec.duration = value
            elif action == "fail":
                rec.fail = _FAILURES[value]
            elif action == "hold":
                if value and rec.hold is None:
                    rec.hold = asyncio.Event()
                elif not value and rec.hold is not None:
                    rec.hold.set()
                    rec.hold = None
            elif ticker._in_flight:
                next(iter(ticker._in_flight)).cancel()
            await settle()
            ledger = ticker.ledger
            assert ledger.balanced, ledger.snapshot()
            assert ledger.due == int((clock.now - start) / interval + 1e-9)
            assert ledger.in_flight == len(ticker._in_flight)
    assert ticker.ledger.balanced and ticker.ledger.in_flight == 0


@pytest.mark.parametrize(
    ("text", "interval"), [("0", 1.0), ("0s", 1.0), ("250ms", 0.25), ("", 1.0)]
)
def test_interval_zero_or_absent_means_one_second(
    tmp_path: Path, text: str, interval: float
) -> None:
    path = tmp_path / "rr.yaml"
    line = f"  interval: {text}\n" if text else "  overlap: skip\n"
    path.write_text(f'version: "3"\nserver:\n  command: worker\nticker:\n{line}')
    config = load_config(path, sections={"ticker": TickerConfig})
    plugin = TickerPlugin()
    plugin.init(PluginContext(config, Server(config, ProcessRegistry()), FakeClock()))
    assert plugin.interval == interval


@pytest.mark.parametrize("text", ["1us", "999us", "500ns", "0.5ms"])
def test_an_interval_under_a_millisecond_is_refused_at_its_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "rr.yaml"
    path.write_text(f'version: "3"\nserver:\n  command: worker\nticker:\n  interval: {text}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, sections={"ticker": TickerConfig})
    assert str(caught.value).startswith(f"{path}:5: ticker.interval: must be at least 1ms")


def test_one_millisecond_is_the_floor_and_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "rr.yaml"
    path.write_text('version: "3"\nserver:\n  command: worker\nticker:\n  interval: 1ms\n')
    assert load_config(path, sections={"ticker": TickerConfig}).sections["ticker"].interval == 0.001


async def test_sleeping_until_a_deadline_that_has_passed_still_yields_to_the_loop() -> None:
    clock = SystemClock()
    other_ran = asyncio.Event()
    asyncio.get_running_loop().call_soon(other_ran.set)
    await clock.sleep_until(clock.monotonic() - 10)
    assert other_ran.is_set()

"""The histograms against real workers: one exec observation per payload answered, and the
ticker plugin's two histograms filling as it ticks."""

from __future__ import annotations

import asyncio
import os
import shlex
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from rrd.config import PoolConfig, load_config
from rrd.errors import PoolClosed, SoftJobError, WorkerCrashed
from rrd.plugins.base import PluginContext
from rrd.plugins.ticker import TickerConfig, TickerPlugin
from rrd.pool import Pool
from rrd.proc import ProcessRegistry
from rrd.protocol.control import Payload
from rrd.server import Server
from rrd.stats import EXEC_SECONDS
from rrd.worker import WorkerSpec
from tests.helpers import eventually, worker_argv


def pool_of() -> Pool:
    """Two echo workers (tests/workers/echo.py: `OK:`, `ERR:`, `CRASH`, `SLEEP:`...)."""
    config = replace(PoolConfig(), num_workers=2, allocate_timeout=10.0, destroy_timeout=10.0)
    spec = WorkerSpec(
        worker_argv("echo"),
        env=dict(os.environ),
        plugin="test",
        allocate_timeout=config.allocate_timeout,
        kill_timeout=config.kill_timeout,
    )
    return Pool("test", spec, config, registry=ProcessRegistry())


@asynccontextmanager
async def running() -> AsyncIterator[Pool]:
    pool = pool_of()
    await pool.start()
    try:
        yield pool
    finally:
        await pool.destroy()


async def test_every_answered_exec_is_observed_once() -> None:
    async with running() as pool:
        histogram = pool.exec_seconds
        for _ in range(5):
            await pool.exec(Payload(b"OK:x"))
        assert histogram.count == 5
        for _ in range(2):
            with pytest.raises(SoftJobError):
                await pool.exec(Payload(b"ERR:boom"))
        assert histogram.count == 7  # a soft error is an answer
        with pytest.raises(WorkerCrashed):
            await pool.exec(Payload(b"CRASH"))
        assert histogram.count == 7  # no answer, no observation


async def test_a_retired_worker_s_rerun_is_observed_once(tmp_path: Path) -> None:
    async with running() as pool:
        await pool.exec(Payload(f"STOPONCE:{tmp_path / 'marker'}".encode()))
        assert pool.exec_seconds.count == 1


async def test_the_duration_is_the_worker_s_time() -> None:
    async with running() as pool:
        await pool.exec(Payload(b"SLEEP:0.3"))
        snapshot = pool.exec_seconds.snapshot()
        assert snapshot.count == 1
        assert snapshot.sum >= 0.3
        assert snapshot.cumulative[EXEC_SECONDS.index(0.25)] == 0  # not in the buckets below


async def test_an_exec_refused_for_no_worker_is_not_observed() -> None:
    pool = pool_of()
    await pool.start()
    await pool.exec(Payload(b"OK:x"))
    await pool.destroy()
    with pytest.raises(PoolClosed):
        await pool.exec(Payload(b"OK:x"))
    assert pool.exec_seconds.count == 1


async def test_the_ticker_plugin_fills_both_histograms(tmp_path: Path) -> None:
    path = tmp_path / "rr.yaml"
    command = shlex.join(worker_argv("echo"))
    path.write_text(
        f'version: "3"\nserver:\n  command: {command!r}\n'
        "ticker:\n  interval: 20ms\n  pool:\n    num_workers: 1\n"
    )
    config = load_config(path, sections={"ticker": TickerConfig})
    plugin = TickerPlugin()
    plugin.init(PluginContext(config, Server(config, ProcessRegistry())))
    try:
        await asyncio.wait_for(plugin.serve(), 30)
        histograms = plugin.histograms()
        assert set(histograms) == {"exec_duration_seconds", "tick_lateness_seconds"}
        await eventually(lambda: histograms["exec_duration_seconds"].count >= 5, timeout=30)
    finally:
        await plugin.stop()
    assert plugin.ticker is not None
    ledger = plugin.ticker.ledger
    assert histograms["tick_lateness_seconds"].count == ledger.sent
    assert histograms["exec_duration_seconds"].count == ledger.delivered + ledger.failed.get(
        "soft_error", 0
    )

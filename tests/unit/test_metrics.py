"""/metrics from a fake source: every family, its values, histograms, names, formats; and the
ticker's lateness histogram on a fake clock."""

from __future__ import annotations

import asyncio
import platform
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from rrd.clock import SystemClock
from rrd.config import load_config
from rrd.fsm import WorkerState
from rrd.http.metrics import TICK_OUTCOMES, MetricsExposition, metric_name_part
from rrd.plugins.base import Measured, PluginContext
from rrd.plugins.ticker import Ticker, TickerConfig, TickerPlugin
from rrd.plugins.ticker.ledger import TickLedger
from rrd.pool import Reply
from rrd.proc import ProcessRegistry, ProcessSample
from rrd.protocol.control import Payload
from rrd.server import Server
from rrd.stats import EXEC_SECONDS, LATENESS_SECONDS, Histogram
from rrd.worker import WorkerInfo
from tests.fakes import FakeClock, settle

MiB = 1024 * 1024


SAMPLES: dict[int, ProcessSample] = {}
"""What the fake source read of its workers' memory (a worker left out: gone meanwhile)."""


def worker(pid: int, state: WorkerState, rss: int) -> WorkerInfo:
    if rss:
        SAMPLES[pid] = ProcessSample(rss=rss, cpu_percent=1.0)
    return WorkerInfo(pid=pid, state=state, execs=3, created=0.0, command="app")


def pool_status(**fields: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "state": "up",
        "size": 4,
        "max_workers": 8,
        "ready": 2,
        "busy": 1,
        "spares": 0,
        "failures": 0,
        "departures": {},
        "last_error": None,
    }
    return {**status, **fields}


class FakeSource:
    """Three pools: a ticker (up, workers in four states), `my-app` (degraded, with departures
    and failed starts, no ticks), `empty` (no workers yet); and a plugin without a pool."""

    def __init__(self) -> None:
        self.ledger = TickLedger()
        for _ in range(5):
            self.ledger.send()
            self.ledger.deliver()
        for reason in ("timeout", "soft_error", "soft_error"):
            self.ledger.send()
            self.ledger.fail(reason)
        self.ledger.skip("late", 4)
        self.ledger.send()  # one in flight
        self.exec_seconds = Histogram(EXEC_SECONDS)
        for value in (0.0001, 0.003, 0.003, 0.2, 75.0):
            self.exec_seconds.observe(value)
        self.lateness = Histogram(LATENESS_SECONDS)
        for value in (0.0, 0.0004, 2.0):
            self.lateness.observe(value)
        self.app_exec_seconds = Histogram(EXEC_SECONDS)
        self.app_exec_seconds.observe(0.04)
        self.pools = {
            "ticker": [
                worker(101, WorkerState.READY, 30 * MiB),
                worker(102, WorkerState.READY, 31 * MiB),
                worker(103, WorkerState.WORKING, 32 * MiB),
                worker(104, WorkerState.DRAINING, 33 * MiB),
                worker(105, WorkerState.SPAWNING, 0),
            ],
            "my-app": [
                worker(201, WorkerState.READY, 50 * MiB),
                worker(202, WorkerState.STOPPING, 51 * MiB),
            ],
            "empty": [],
        }

    def status(self) -> dict[str, Any]:
        return {
            "pid": 1,
            "version": "9.8.7",
            "state": "running",
            "reloads": 4,
            "reload_results": {"applied": 3, "rejected": 1},
            "plugins": {
                "ticker": {
                    "pool": pool_status(departures={"crashed": 1}),
                    "interval_s": 1.0,
                    "ticks": self.ledger.snapshot(),
                    "ticks_summary": self.ledger.summary(),
                },
                "my-app": {
                    "pool": pool_status(
                        state="degraded",
                        size=3,
                        spares=1,
                        failures=3,
                        departures={"failed_start": 5, "crashed": 2, "memory": 1},
                        last_error="exited 1",
                    )
                },
                "empty": {"pool": pool_status(state="starting", size=2, ready=0, busy=0)},
                "nopool": {},
            },
        }

    def workers(self, plugin: str) -> list[WorkerInfo]:
        return self.pools[plugin]

    @property
    def samples(self) -> Mapping[int, ProcessSample]:
        return SAMPLES

    def histograms(self, plugin: str) -> Mapping[str, Histogram]:
        if plugin == "ticker":
            return {
                "exec_duration_seconds": self.exec_seconds,
                "tick_lateness_seconds": self.lateness,
            }
        if plugin == "my-app":
            return {"exec_duration_seconds": self.app_exec_seconds}
        return {}


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(source: FakeSource | None = None) -> tuple[str, dict[str, str], Samples]:
    """The text, each family's type by name, and every sample's value by (name, labels)."""
    body, content_type = MetricsExposition(source or FakeSource()).render(None)
    assert content_type.startswith("text/plain; version=0.0.4")
    text = body.decode()
    types, samples = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, key
            samples[key] = sample.value
    return text, types, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_roadrunner_families_per_pool() -> None:
    _, types, samples = scrape()
    assert value(samples, "rr_ticker_total_workers") == 5
    assert value(samples, "rr_ticker_workers_memory_bytes") == (30 + 31 + 32 + 33) * MiB
    assert value(samples, "rr_ticker_workers_ready") == 2
    assert value(samples, "rr_ticker_workers_working") == 1
    assert value(samples, "rr_ticker_workers_invalid") == 2  # draining and spawning
    states = {
        dict(labels)["pid"]: dict(labels)["state"]
        for (name, labels) in samples
        if name == "rr_ticker_worker_state"
    }
    assert states == {
        "101": "ready",
        "102": "ready",
        "103": "working",
        "104": "invalid",
        "105": "inactive",
    }
    assert value(samples, "rr_ticker_worker_state", state="working", pid="103") == 0  # as RR's
    assert value(samples, "rr_ticker_worker_memory_bytes", pid="104") == 33 * MiB
    assert value(samples, "rr_my_app_workers_invalid") == 1
    assert value(samples, "rr_my_app_worker_state", state="stopping", pid="202") == 0
    for suffix in (
        "total_workers",
        "workers_memory_bytes",
        "worker_state",
        "worker_memory_bytes",
        "workers_ready",
        "workers_working",
        "workers_invalid",
    ):
        assert types[f"rr_ticker_{suffix}"] == "gauge"


def test_rrd_pool_families() -> None:
    _, types, samples = scrape()
    assert types["rrd_pool_restarts"] == "counter"
    assert value(samples, "rrd_pool_restarts_total", plugin="my-app", reason="failed_start") == 5
    assert value(samples, "rrd_pool_restarts_total", plugin="my-app", reason="crashed") == 2
    assert value(samples, "rrd_pool_restarts_total", plugin="my-app", reason="memory") == 1
    assert value(samples, "rrd_pool_restarts_total", plugin="my-app", reason="ttl") == 0
    assert value(samples, "rrd_pool_restarts_total", plugin="ticker", reason="crashed") == 1
    states = {
        dict(labels)["state"]: v
        for (name, labels), v in samples.items()
        if name == "rrd_pool_state" and dict(labels)["plugin"] == "my-app"
    }
    assert states == {"starting": 0, "up": 0, "degraded": 1, "fatal": 0, "stopping": 0}
    assert value(samples, "rrd_pool_state", plugin="ticker", state="up") == 1
    assert value(samples, "rrd_pool_backoff_attempt", plugin="my-app") == 3
    assert value(samples, "rrd_pool_backoff_attempt", plugin="ticker") == 0
    assert value(samples, "rrd_pool_spares", plugin="my-app") == 1
    assert value(samples, "rrd_pool_size", plugin="my-app") == 3
    assert value(samples, "rrd_config_reloads_total", result="applied") == 3
    assert value(samples, "rrd_config_reloads_total", result="rejected") == 1
    assert value(samples, "rrd_build_info", version="9.8.7", python=platform.python_version()) == 1


def test_every_tick_outcome_is_there_from_the_first_scrape() -> None:
    _, types, samples = scrape()
    assert types["rrd_ticker_ticks"] == "counter"
    ticks = {
        dict(labels)["outcome"]: v
        for (name, labels), v in samples.items()
        if name == "rrd_ticker_ticks_total"
    }
    assert set(ticks) == set(TICK_OUTCOMES)
    assert ticks["delivered"] == 5
    assert ticks["failed_soft_error"] == 2
    assert ticks["failed_timeout"] == 1
    assert ticks["skipped_late"] == 4
    assert ticks["skipped_busy"] == ticks["failed_crashed"] == ticks["failed_cancelled"] == 0
    assert value(samples, "rrd_ticker_ticks_in_flight", plugin="ticker", schedule="default") == 1
    assert all(
        dict(labels)["schedule"] == "default"
        for (name, labels) in samples
        if name == "rrd_ticker_ticks_total"
    )
    assert not any(
        dict(labels).get("plugin") == "my-app"
        for (name, labels) in samples
        if name.startswith("rrd_ticker_")
    )


class ScheduledSource(FakeSource):
    """The ticker with two named schedules, one paused."""

    def status(self) -> dict[str, Any]:
        report = super().status()
        nightly, fast = TickLedger(), TickLedger()
        nightly.send(manual=True)
        nightly.deliver()
        fast.skip("paused", 3)
        fast.skip("coalesced", 2)
        report["plugins"]["ticker"]["schedules"] = {
            "nightly": {"ticks": nightly.snapshot(), "paused": False},
            "fast": {"ticks": fast.snapshot(), "paused": True},
        }
        return report


def test_named_schedules_have_their_own_tick_series_and_pause_gauge() -> None:
    _, _, samples = scrape(ScheduledSource())

    def ticks(schedule: str, outcome: str) -> float:
        return value(
            samples, "rrd_ticker_ticks_total", plugin="ticker", schedule=schedule, outcome=outcome
        )

    assert ticks("nightly", "delivered") == 1 and ticks("nightly", "skipped_paused") == 0
    assert ticks("fast", "skipped_paused") == 3 and ticks("fast", "skipped_coalesced") == 2
    assert value(samples, "rrd_ticker_schedule_paused", plugin="ticker", schedule="fast") == 1
    assert value(samples, "rrd_ticker_schedule_paused", plugin="ticker", schedule="nightly") == 0
    assert not any(dict(labels).get("schedule") == "default" for (_, labels) in samples)


def buckets(samples: Samples, name: str, plugin: str) -> dict[str, float]:
    return {
        dict(labels)["le"]: v
        for (sample, labels), v in samples.items()
        if sample == f"{name}_bucket" and dict(labels)["plugin"] == plugin
    }


def test_histograms_are_cumulative_and_inf_is_the_count() -> None:
    _, types, samples = scrape()
    assert types["rrd_pool_exec_duration_seconds"] == "histogram"
    assert types["rrd_ticker_lateness_seconds"] == "histogram"
    exec_buckets = buckets(samples, "rrd_pool_exec_duration_seconds", "ticker")
    assert len(exec_buckets) == len(EXEC_SECONDS) + 1
    assert exec_buckets["0.0001"] == 1  # a value equal to the bound is in its bucket
    assert exec_buckets["0.0025"] == 1
    assert exec_buckets["0.005"] == 3
    assert exec_buckets["0.25"] == 4
    assert exec_buckets["60.0"] == 4
    assert exec_buckets["+Inf"] == 5
    ordered = [exec_buckets[repr(bound)] for bound in EXEC_SECONDS] + [exec_buckets["+Inf"]]
    assert ordered == sorted(ordered)
    count = value(samples, "rrd_pool_exec_duration_seconds_count", plugin="ticker")
    assert count == exec_buckets["+Inf"] == 5
    total = value(samples, "rrd_pool_exec_duration_seconds_sum", plugin="ticker")
    assert total == pytest.approx(0.0001 + 0.003 + 0.003 + 0.2 + 75.0)
    assert buckets(samples, "rrd_pool_exec_duration_seconds", "my-app")["0.05"] == 1
    lateness = buckets(samples, "rrd_ticker_lateness_seconds", "ticker")
    assert (lateness["0.0001"], lateness["0.0005"], lateness["1.0"], lateness["+Inf"]) == (
        1,
        2,
        2,
        3,
    )
    assert value(samples, "rrd_ticker_lateness_seconds_count", plugin="ticker") == 3


def test_a_pool_without_workers_renders() -> None:
    _, _, samples = scrape()
    assert value(samples, "rr_empty_total_workers") == 0
    assert value(samples, "rr_empty_workers_memory_bytes") == 0
    assert value(samples, "rr_empty_workers_ready") == 0
    assert value(samples, "rr_empty_workers_invalid") == 0
    assert not any(name == "rr_empty_worker_state" for name, _ in samples)
    assert value(samples, "rrd_pool_state", plugin="empty", state="starting") == 1
    assert not any(name.startswith("rr_nopool_") for name, _ in samples)


def test_a_daemon_with_no_plugin_still_renders_its_own_families() -> None:
    class Idle(FakeSource):
        def status(self) -> dict[str, Any]:
            return {"pid": 1, "version": "1.0", "state": "running", "reloads": 0, "plugins": {}}

    _, types, samples = scrape(Idle())
    assert value(samples, "rrd_config_reloads_total", result="applied") == 0
    assert value(samples, "rrd_build_info", version="1.0", python=platform.python_version()) == 1
    assert types["rrd_pool_state"] == "gauge"
    assert types["process_resident_memory_bytes"] == "gauge"


def test_plugin_names_are_sanitized_in_metric_names_and_kept_in_labels() -> None:
    _, types, samples = scrape()
    assert metric_name_part("my-app") == "my_app"
    assert metric_name_part("a.b c/d9") == "a_b_c_d9"
    assert "rr_my_app_total_workers" in types
    assert not any("-" in name for name in types)
    assert value(samples, "rrd_pool_spares", plugin="my-app") == 1


FAMILIES = (
    "rr_ticker_total_workers",
    "rr_ticker_workers_memory_bytes",
    "rr_ticker_worker_state",
    "rr_ticker_worker_memory_bytes",
    "rr_ticker_workers_ready",
    "rr_ticker_workers_working",
    "rr_ticker_workers_invalid",
    "rrd_pool_restarts",
    "rrd_pool_state",
    "rrd_pool_backoff_attempt",
    "rrd_pool_spares",
    "rrd_pool_exec_duration_seconds",
    "rrd_ticker_ticks",
    "rrd_ticker_ticks_in_flight",
    "rrd_ticker_lateness_seconds",
    "rrd_config_reloads",
    "rrd_build_info",
    "process_cpu_seconds",
    "process_resident_memory_bytes",
    "process_open_fds",
)


def test_every_family_of_the_issue_is_present() -> None:
    text, types, _ = scrape()
    assert set(FAMILIES) <= set(types), set(FAMILIES) - set(types)
    for counter in ("rrd_pool_restarts", "rrd_ticker_ticks", "rrd_config_reloads"):
        assert f"# TYPE {counter}_total counter" in text


def test_openmetrics_when_the_accept_header_asks_for_it() -> None:
    exposition = MetricsExposition(FakeSource())
    body, content_type = exposition.render(
        "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
    )
    # prometheus_client 0.16 (the oldest pyproject allows) says version=0.0.1, later ones 1.0.0
    assert content_type.startswith("application/openmetrics-text; version=")
    text = body.decode()
    assert text.endswith("# EOF\n")
    families = {family.name: family for family in openmetrics_families(text)}
    assert families["rrd_pool_restarts"].type == "counter"
    assert families["rrd_pool_exec_duration_seconds"].type == "histogram"
    plain, plain_type = exposition.render("text/plain")
    assert plain_type.startswith("text/plain; version=0.0.4")
    assert not plain.decode().endswith("# EOF\n")


def test_the_exposition_keeps_out_of_the_global_registry() -> None:
    first, second = MetricsExposition(FakeSource()), MetricsExposition(FakeSource())
    assert first.registry is not REGISTRY
    assert first.render(None)[0].count(b"# TYPE rrd_build_info") == 1
    assert second.render(None)[0].count(b"# TYPE rrd_build_info") == 1
    assert b"rrd_" not in generate_latest(REGISTRY)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_text() -> None:
    body, _ = MetricsExposition(FakeSource()).render(None)
    promtool = shutil.which("promtool")
    assert promtool is not None
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# The ticker records how late each tick was handed to the pool.


async def test_each_sent_tick_records_its_lateness() -> None:
    clock = FakeClock()
    sent: list[float] = []

    async def exec_payload(payload: Payload) -> Reply:
        sent.append(clock.monotonic())
        return Reply(Payload(), worker_pid=1)

    ticker = Ticker(exec_payload, interval=1.0, clock=clock)
    task = asyncio.create_task(ticker.run())
    await settle()
    try:
        await clock.advance(3.0)  # ticks 1-3, each on time
        assert len(sent) == 3
        snapshot = ticker.lateness_seconds.snapshot()
        assert (snapshot.count, snapshot.sum, snapshot.cumulative[0]) == (3, 0.0, 3)
        await clock.jump(1.3)  # tick 4 is sent 0.3 s late
        await clock.jump(2.2)  # ticks 5 and 6 are due at 1005 and 1006; it is 1006.5:
        snapshot = ticker.lateness_seconds.snapshot()  # one skipped late, one sent 0.5 s late
        assert ticker.ledger.skipped["late"] == 1
        assert snapshot.count == 5 == ticker.ledger.sent
        assert snapshot.sum == pytest.approx(0.3 + 0.5)
        le_025, le_05 = (LATENESS_SECONDS.index(b) for b in (0.25, 0.5))
        assert snapshot.cumulative[le_025] == 3
        assert snapshot.cumulative[le_05] == 5
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_tick_skipped_busy_records_no_lateness() -> None:
    clock = FakeClock()
    release = asyncio.Event()

    async def exec_payload(payload: Payload) -> Reply:
        await release.wait()
        return Reply(Payload(), worker_pid=1)

    ticker = Ticker(exec_payload, interval=1.0, clock=clock, overlap="skip")
    task = asyncio.create_task(ticker.run())
    await settle()
    try:
        await clock.advance(3.0)
        assert ticker.ledger.skipped["busy"] == 2
        assert ticker.lateness_seconds.count == 1
    finally:
        release.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ticker.drain()


def test_the_ticker_plugin_is_measured_and_empty_until_it_serves(tmp_path: Path) -> None:
    path = tmp_path / "rr.yaml"
    path.write_text('version: "3"\nserver:\n  command: worker\nticker:\n  interval: 1s\n')
    config = load_config(path, sections={"ticker": TickerConfig})
    plugin = TickerPlugin()
    plugin.init(PluginContext(config, Server(config, ProcessRegistry()), SystemClock()))
    assert isinstance(plugin, Measured)
    assert plugin.histograms() == {}

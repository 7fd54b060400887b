"""The /metrics exposition: rrd's state in Prometheus' text format (or OpenMetrics), per scrape.

Room: http. Imports stats, fsm, worker, pool, plugins (the ledger's reasons, entrypoints) and
prometheus_client; never the daemon or control: what it reads comes through `MetricsSource`,
which the operator API implements. Nothing is kept between scrapes but the registry; every
value is read from the source when Prometheus asks, on the loop, so a scrape must stay cheap.

Each pool gets RoadRunner's per-plugin families (`rr_<plugin>_total_workers`,
`rr_<plugin>_worker_state`...), named and labelled as RoadRunner's informer exporter does, so
its dashboards work; rrd's own families (`rrd_*`) carry the plugin as a label.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from rrd.fsm import ROADRUNNER_STATES, ExitReason, WorkerState
from rrd.plugins.entrypoints import allow_openssl
from rrd.plugins.ticker.ledger import FAILURES, SKIPS
from rrd.pool import PoolState
from rrd.proc import ProcessSample
from rrd.stats import Histogram
from rrd.worker import WorkerInfo

allow_openssl()  # prometheus_client.exposition imports ssl at its top

from prometheus_client import CollectorRegistry  # noqa: E402
from prometheus_client.core import (  # noqa: E402
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder  # noqa: E402
from prometheus_client.process_collector import ProcessCollector  # noqa: E402
from prometheus_client.registry import Collector  # noqa: E402

__all__ = ["MetricsExposition", "MetricsSource", "metric_name_part"]

TICK_OUTCOMES = (
    "delivered",
    *(f"failed_{reason}" for reason in FAILURES),
    *(f"skipped_{reason}" for reason in SKIPS),
)
"""Every `outcome` of rrd_ticker_ticks_total, each always present so rates work at once."""

_NOT_IN_NAMES = re.compile(r"[^a-zA-Z0-9_]")


def metric_name_part(plugin: str) -> str:
    """A plugin's name as it may appear inside a metric name: `my-app` -> `my_app`."""
    return _NOT_IN_NAMES.sub("_", plugin)


class MetricsSource(Protocol):
    """What the exposition reads at each scrape (the operator API, or a fake in tests)."""

    def status(self) -> dict[str, Any]:
        """As `rrd status --json`: pid, version, reloads, reload_results, plugins."""

    def workers(self, plugin: str) -> list[WorkerInfo]:
        """The workers of one plugin's pool."""

    @property
    def samples(self) -> Mapping[int, ProcessSample]:
        """The workers' memory, by pid, as read (off the loop) just before this scrape."""

    def histograms(self, plugin: str) -> Mapping[str, Histogram]:
        """One plugin's histograms by name (`exec_duration_seconds`,
        `tick_lateness_seconds`); empty when it has none."""


class _RrdCollector(Collector):
    """Builds every family anew from the source at each scrape."""

    def __init__(self, source: MetricsSource) -> None:
        self.source = source
        self.python = platform.python_version()

    def describe(self) -> Iterable[Metric]:
        return ()  # nothing to check at registration: the plugins are only known per scrape

    def collect(self) -> Iterator[Metric]:
        status = self.source.status()
        plugins: dict[str, dict[str, Any]] = status.get("plugins", {})
        pools = _PoolFamilies()
        ticks = _TickFamilies()
        for plugin, report in plugins.items():
            pool = report.get("pool")
            if pool is None:
                continue
            yield from _roadrunner_families(
                plugin, self.source.workers(plugin), self.source.samples
            )
            histograms = self.source.histograms(plugin)
            pools.add(plugin, pool, histograms.get("exec_duration_seconds"))
            if "ticks" in report:
                ticks.add(plugin, report, histograms.get("tick_lateness_seconds"))
        yield from pools.families()
        yield from ticks.families()
        reloads = CounterMetricFamily(
            "rrd_config_reloads",
            "Config reloads, by result: applied, or rejected (the running config stayed).",
            labels=["result"],
        )
        results = status.get("reload_results", {})
        for result in ("applied", "rejected"):
            reloads.add_metric([result], results.get(result, 0))
        yield reloads
        info = GaugeMetricFamily(
            "rrd_build_info", "Always 1: rrd's version and Python's.", labels=["version", "python"]
        )
        info.add_metric([str(status.get("version", "")), self.python], 1)
        yield info


def _roadrunner_families(
    plugin: str, workers: list[WorkerInfo], samples: Mapping[int, ProcessSample]
) -> Iterator[Metric]:
    """RoadRunner's informer families for one plugin's pool."""
    prefix = f"rr_{metric_name_part(plugin)}"
    states = GaugeMetricFamily(
        f"{prefix}_worker_state",
        "One series per worker, labelled with its state; the value is always 0, as RoadRunner's.",
        labels=["state", "pid"],
    )
    memory = GaugeMetricFamily(
        f"{prefix}_worker_memory_bytes", "Resident memory of each worker.", labels=["pid"]
    )
    total_memory = ready = working = 0
    for worker in workers:
        pid = str(worker.pid)
        states.add_metric([ROADRUNNER_STATES[worker.state][1], pid], 0)
        sample = samples.get(worker.pid)
        rss = sample.rss if sample is not None else 0
        memory.add_metric([pid], rss)
        total_memory += rss
        if worker.state is WorkerState.READY:
            ready += 1
        elif worker.state is WorkerState.WORKING:
            working += 1
    yield GaugeMetricFamily(f"{prefix}_total_workers", "Workers of the pool.", value=len(workers))
    yield GaugeMetricFamily(
        f"{prefix}_workers_memory_bytes", "Resident memory of all the workers.", value=total_memory
    )
    yield states
    yield memory
    yield GaugeMetricFamily(f"{prefix}_workers_ready", "Workers free for a job.", value=ready)
    yield GaugeMetricFamily(f"{prefix}_workers_working", "Workers on a job.", value=working)
    yield GaugeMetricFamily(
        f"{prefix}_workers_invalid",
        "Workers neither ready nor working (starting, finishing a last job, stopping).",
        value=len(workers) - ready - working,
    )


def _histogram_buckets(histogram: Histogram) -> tuple[list[tuple[str, float]], float]:
    """Cumulative `le` buckets, the bounds written as prometheus_client writes its own."""
    snapshot = histogram.snapshot()
    buckets: list[tuple[str, float]] = [
        (repr(bound), count)
        for bound, count in zip(snapshot.bounds, snapshot.cumulative[:-1], strict=True)
    ]
    buckets.append(("+Inf", snapshot.count))
    return buckets, snapshot.sum


class _PoolFamilies:
    """rrd's own pool families, one sample (or one per state or reason) per plugin."""

    def __init__(self) -> None:
        self.restarts = CounterMetricFamily(
            "rrd_pool_restarts",
            "Workers that left the pool's service, by why (each is replaced unless the pool "
            "shrank or stopped).",
            labels=["plugin", "reason"],
        )
        self.state = GaugeMetricFamily(
            "rrd_pool_state",
            "1 for the pool's current state, 0 for the others.",
            labels=["plugin", "state"],
        )
        self.backoff = GaugeMetricFamily(
            "rrd_pool_backoff_attempt",
            "Consecutive failed starts: the pool backs off and is fatal at restart.max_retries.",
            labels=["plugin"],
        )
        self.spares = GaugeMetricFamily(
            "rrd_pool_spares", "Warm spare workers, started and waiting.", labels=["plugin"]
        )
        self.size = GaugeMetricFamily(
            "rrd_pool_size", "Workers the pool keeps in service (num_workers).", labels=["plugin"]
        )
        self.exec_seconds = HistogramMetricFamily(
            "rrd_pool_exec_duration_seconds",
            "How long a worker took over one payload it answered (soft errors included).",
            labels=["plugin"],
        )

    def add(self, plugin: str, pool: dict[str, Any], exec_seconds: Histogram | None) -> None:
        departures: dict[str, int] = pool.get("departures", {})
        for reason in sorted({*_EXIT_REASONS, *departures}):
            self.restarts.add_metric([plugin, reason], departures.get(reason, 0))
        current = pool.get("state")
        for state in _POOL_STATES:
            self.state.add_metric([plugin, state], 1 if state == current else 0)
        self.backoff.add_metric([plugin], pool.get("failures", 0))
        self.spares.add_metric([plugin], pool.get("spares", 0))
        self.size.add_metric([plugin], pool.get("size", 0))
        if exec_seconds is not None:
            buckets, total = _histogram_buckets(exec_seconds)
            self.exec_seconds.add_metric([plugin], buckets, total)

    def families(self) -> Iterator[Metric]:
        yield from (self.restarts, self.state, self.backoff, self.spares, self.size)
        yield self.exec_seconds


class _TickFamilies:
    """rrd's ticker families, for each plugin that reports ticks."""

    def __init__(self) -> None:
        self.ticks = CounterMetricFamily(
            "rrd_ticker_ticks",
            "Ticks that fell due and are over, by outcome: delivered, failed_<why>, skipped_<why>.",
            labels=["plugin", "schedule", "outcome"],
        )
        self.in_flight = GaugeMetricFamily(
            "rrd_ticker_ticks_in_flight",
            "Ticks sent and not answered yet.",
            labels=["plugin", "schedule"],
        )
        self.paused = GaugeMetricFamily(
            "rrd_ticker_schedule_paused",
            "1 while an operator has paused the schedule (`rrd ticker pause`).",
            labels=["plugin", "schedule"],
        )
        self.lateness = HistogramMetricFamily(
            "rrd_ticker_lateness_seconds",
            "How long after its due moment each tick sent was handed to the pool.",
            labels=["plugin"],
        )

    def add(self, plugin: str, report: dict[str, Any], lateness: Histogram | None) -> None:
        """A plugin's ticks, by schedule when it has named ones (else all as `default`)."""
        schedules: dict[str, Any] = report.get("schedules") or {}
        if schedules:
            for name, schedule in schedules.items():
                self._add_ledger(plugin, name, schedule["ticks"])
                self.paused.add_metric([plugin, name], 1 if schedule.get("paused") else 0)
        else:
            self._add_ledger(plugin, "default", report["ticks"])
        if lateness is not None:
            buckets, total = _histogram_buckets(lateness)
            self.lateness.add_metric([plugin], buckets, total)

    def _add_ledger(self, plugin: str, schedule: str, ticks: dict[str, Any]) -> None:
        failed: dict[str, int] = ticks.get("failed_by", {})
        skipped: dict[str, int] = ticks.get("skipped_by", {})
        counts = {
            "delivered": ticks.get("delivered", 0),
            **{f"failed_{reason}": n for reason, n in failed.items()},
            **{f"skipped_{reason}": n for reason, n in skipped.items()},
        }
        for outcome in (*TICK_OUTCOMES, *sorted(counts.keys() - set(TICK_OUTCOMES))):
            self.ticks.add_metric([plugin, schedule, outcome], counts.get(outcome, 0))
        self.in_flight.add_metric([plugin, schedule], ticks.get("in_flight", 0))

    def families(self) -> Iterator[Metric]:
        yield from (self.ticks, self.in_flight, self.paused, self.lateness)


_EXIT_REASONS = tuple(reason.value for reason in ExitReason)
_POOL_STATES = tuple(state.value for state in PoolState)


class MetricsExposition:
    """/metrics for one daemon: a registry of its own (never prometheus_client's global one)
    with rrd's collector and `process_*` for rrd itself."""

    def __init__(self, source: MetricsSource) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_RrdCollector(source))
        ProcessCollector(registry=self.registry)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The body and its Content-Type: OpenMetrics when `accept` (the request's Accept
        header) asks for it, Prometheus' text format otherwise."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

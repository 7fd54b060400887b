"""rrd's /metrics as Prometheus' own tools see it: promtool accepts it, and a real Prometheus
scrapes it and reads the workers, the ticks and a restart. Without Debian's prometheus package
these skip, saying so."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers import wait_until
from tests.prometheus import (
    Prometheus,
    free_port,
    needs_prometheus,
    needs_promtool,
    one_series,
    promtool_check,
    running_prometheus,
    value,
    wait_for_query,
)
from tests.system.conftest import config, operator
from tests.unit.test_grafana import load as load_dashboard
from tests.unit.test_grafana import queries

STAND_IN_BODY = """\
# HELP stand_in_workers_ready Workers waiting for a job.
# TYPE stand_in_workers_ready gauge
stand_in_workers_ready{plugin="ticker"} 3
stand_in_workers_ready{plugin="jobs"} 0
# HELP stand_in_memory_bytes Resident memory of the workers.
# TYPE stand_in_memory_bytes gauge
stand_in_memory_bytes 2.5e+07
# HELP stand_in_ticks_total Ticks by outcome.
# TYPE stand_in_ticks_total counter
stand_in_ticks_total{outcome="delivered"} 42
stand_in_ticks_total{outcome="failed_timeout"} 1
"""


@needs_promtool
def test_promtool_tells_good_metrics_from_broken_ones() -> None:
    """The checker the next test relies on: it passes a good body and fails a broken one."""
    assert promtool_check(STAND_IN_BODY) == (0, "")
    code, said = promtool_check("stand_in_broken{ 1\n")
    assert code != 0 and said


def get_metrics(address: str) -> str:
    """GET /metrics, once rrd answers it."""

    def fetch() -> str | None:
        try:
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
                assert response.status == 200
                return str(response.read().decode())
        except OSError:
            return None

    text = wait_until(fetch, timeout=15, step=0.05)
    assert text is not None
    return text


def served_with_metrics(rrd: Any, tmp_path: Path, workers: int) -> tuple[Any, str]:
    """rrd ticking every 100 ms to WORKERS tick recorders, /metrics on a free port."""
    address = f"127.0.0.1:{free_port()}"
    daemon = rrd(
        config(interval="100ms", workers=workers, extra=f"metrics:\n  address: {address}\n"),
        "--pidfile",
        str(tmp_path / "rrd.pid"),
        env={"TICK_LOG": str(tmp_path / "ticks.jsonl")},
    )
    daemon.wait_event("daemon.ready")
    return daemon, address


@needs_promtool
def test_promtool_accepts_rrd_metrics(rrd: Any, tmp_path: Path) -> None:
    _, address = served_with_metrics(rrd, tmp_path, workers=2)
    text = get_metrics(address)
    assert re.search(r"^rr_ticker_total_workers(\{[^}]*\})? 2(\.0)?$", text, re.MULTILINE), text
    code, said = promtool_check(text)
    assert code == 0, f"promtool check metrics said:\n{said}\nabout:\n{text}"


SHOWN = {"plugin", "outcome", "reason", "version", "python"}


def show(prometheus: Prometheus, expr: str) -> list[tuple[dict[str, str], float]]:
    """The query's result, also printed: `pytest -s` shows what Prometheus saw."""
    result = prometheus.query(expr)
    shown = [
        "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k in SHOWN) + "}"
        f" {number:g}"
        for labels, number in result
    ]
    print(f"{expr} -> {'; '.join(shown) or 'nothing'}")
    return result


def dashboard_queries_answer(prometheus: Prometheus, instance: str) -> None:
    """Every query of contrib/grafana/rrd.json, as Grafana would send it for this rrd's ticker,
    is valid PromQL and finds series."""
    variables = {"${plugin}": "ticker", "$plugin": "ticker", "$instance": instance}
    variables["$__rate_interval"] = "1m"
    asked = list(queries(load_dashboard()))
    for where, expr in asked:
        for name, replacement in variables.items():
            expr = expr.replace(name, replacement)
        found = prometheus.query(expr)
        assert found, f"{where}: nothing for {expr}"
    print(f"the dashboard's {len(asked)} queries all find series")


@needs_prometheus
def test_a_real_prometheus_scrapes_rrd(rrd: Any, tmp_path: Path) -> None:
    daemon, address = served_with_metrics(rrd, tmp_path, workers=3)
    ctl = operator(tmp_path)
    delivered = 'rrd_ticker_ticks_total{plugin="ticker",outcome="delivered"}'
    with running_prometheus(tmp_path, [address]) as prometheus:
        wait_for_query(prometheus, "rr_ticker_total_workers", one_series(lambda v: v == 3.0), 20)
        assert value(show(prometheus, "rr_ticker_total_workers")) == 3.0
        assert 2.0 <= value(show(prometheus, "rr_ticker_workers_ready")) <= 3.0
        (build,) = show(prometheus, "rrd_build_info")
        assert build[0]["version"] and build[0]["python"] and build[1] == 1.0

        first = value(wait_for_query(prometheus, delivered, one_series(lambda v: v > 0)))
        second = value(wait_for_query(prometheus, delivered, one_series(lambda v: v > first)))
        print(f"{delivered}: {first} then {second} a scrape later")
        show(prometheus, "rrd_ticker_ticks_total > 0")

        # What Prometheus last scraped lags `rrd status` by the ticks since that scrape.
        scraped_at, scraped = prometheus.last_sample(delivered)
        status = ctl("status", "--json")
        asked_at = time.time()
        assert status.returncode == 0, status.stderr
        told = json.loads(status.stdout)["plugins"]["ticker"]["ticks"]["delivered"]
        since = asked_at - scraped_at
        print(f"rrd status: {told} delivered; Prometheus: {scraped}, {since:.2f}s before")
        assert scraped <= told <= scraped + since / 0.1 + 2

        # A worker that served is killed: Prometheus sees one crash and the pool whole again.
        def a_worker_that_served() -> int | None:
            table = json.loads(ctl("workers", "--json").stdout)["ticker"]
            return next((w["pid"] for w in table if w["execs"] > 0), None)

        crashed = 'rrd_pool_restarts_total{plugin="ticker",reason="crashed"}'
        assert value(show(prometheus, crashed)) == 0.0  # every reason is there from the start
        victim = wait_until(a_worker_that_served, timeout=15)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        wait_for_query(prometheus, crashed, one_series(lambda v: v == 1.0), 20)
        assert value(show(prometheus, crashed)) == 1.0
        show(prometheus, "rrd_pool_restarts_total > 0")
        wait_for_query(prometheus, "rr_ticker_total_workers", one_series(lambda v: v == 3.0), 20)
        dashboard_queries_answer(prometheus, address)
        (target,) = prometheus.targets()
        print(f"target: {target['scrapeUrl']} {target['health']} {target['lastError']!r}")
        assert target["health"] == "up" and target["lastError"] == ""
    exited = daemon.wait_event("worker.exited")
    assert [e["reason"] for e in exited if e["worker_pid"] == victim] == ["crashed"]
    assert daemon.stop() == 0

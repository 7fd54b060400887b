"""`rrd serve` with the `status` and `metrics` sections: probes as Kubernetes sends them, a
scrape as Prometheus does, clients that are slow or speak garbage, reloads that move the
listeners, and an address rrd cannot bind."""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ROOT, wait_until
from tests.prometheus import free_port
from tests.system.conftest import config, operator
from tests.system.test_reload import save


def sections(status: int | None = None, metrics: int | None = None) -> str:
    text = ""
    if status is not None:
        text += f"status:\n  address: 127.0.0.1:{status}\n"
    if metrics is not None:
        text += f"metrics:\n  address: 127.0.0.1:{metrics}\n"
    return text


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes, dict[str, str]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


def probe(port: int, path: str) -> tuple[int, list[dict[str, Any]]]:
    status, body, headers = get(port, path)
    assert headers["content-type"] == "application/json"
    return status, json.loads(body)


def families(port: int) -> dict[str, Any]:
    status, body, _ = get(port, "/metrics")
    assert status == 200
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def sample(found: dict[str, Any], family: str, name: str, **labels: str) -> float:
    for s in found[family].samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise AssertionError(f"no {name}{labels} in {found[family].samples}")


def serving(port: int) -> bool:
    try:
        return get(port, "/health", timeout=1)[0] in (200, 503)
    except OSError:
        return False


def test_probes_answer_as_roadrunners_status_plugin(rrd: Any, tmp_path: Path) -> None:
    port = free_port()
    daemon = rrd(
        config("echo", workers=2, extra=sections(status=port)),
        "--pidfile",
        str(tmp_path / "rrd.pid"),
    )
    daemon.wait_event("daemon.ready")
    assert probe(port, "/health?plugin=ticker") == (
        200,
        [{"plugin_name": "ticker", "error_message": "", "status_code": 200}],
    )
    assert probe(port, "/ready")[0] == 200
    status, verdicts = probe(port, "/health?plugin=ticker&plugin=nope")
    assert status == 404 and verdicts[1]["plugin_name"] == "nope"
    assert get(port, "/nowhere")[0] == 404
    report = operator(tmp_path)("status")
    assert "probes: health 200, ready 200" in report.stdout, report.stdout
    assert f"status on 127.0.0.1:{port}" in report.stdout
    assert daemon.stop() == 0


def test_ready_fails_under_saturation_and_at_once_on_a_graceful_stop(
    rrd: Any, tmp_path: Path
) -> None:
    """Both workers busy for 3 s: healthy, not ready. SIGTERM: ready fails at once, health
    holds while the ticks finish, then the listener goes with rrd."""
    port = free_port()
    text = config("slow_tick", interval="50ms", workers=2, extra=sections(status=port))
    text = text.replace("  interval: 50ms\n", "  interval: 50ms\n  overlap: parallel\n")
    daemon = rrd(text, env={"TICK_SECONDS": "3"})
    wait_until(
        lambda: len([r for r in daemon.events("worker.stderr") if "begins" in r["msg"]]) >= 2
    )
    assert probe(port, "/health?plugin=ticker")[0] == 200
    status, (verdict,) = probe(port, "/ready?plugin=ticker")
    assert (status, verdict["error_message"]) == (503, "all 2 workers are busy")
    daemon.signal(signal.SIGTERM)
    daemon.wait_event("daemon.stopping")
    status, (verdict,) = probe(port, "/ready?plugin=ticker")
    assert (status, verdict["error_message"]) == (503, "rrd is stopping")
    assert probe(port, "/health?plugin=ticker")[0] == 200  # the ticks in flight still run
    assert daemon.wait(30) == 0
    assert not serving(port)


def test_slow_and_malformed_clients_do_not_hold_up_probes(rrd: Any, tmp_path: Path) -> None:
    port = free_port()
    # No tick falls due: the one worker is idle at every probe, so /ready is 200 by the
    # pool's state, and only the hostile clients could make it slow or fail.
    text = config("echo", interval="10m", workers=1, extra=sections(status=port, metrics=port))
    daemon = rrd(text)
    daemon.wait_event("daemon.ready")
    hostile = []
    try:
        for _ in range(8):  # slowloris: a head that never ends
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            hostile.append(s)
        garbage = socket.create_connection(("127.0.0.1", port), timeout=5)
        garbage.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n")
        assert garbage.recv(1024).startswith(b"HTTP/1.1 400")
        garbage.close()
        unread = socket.create_connection(("127.0.0.1", port))  # asks and never reads
        unread.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 50)
        hostile.append(unread)
        for _ in range(20):
            began = time.monotonic()
            assert get(port, "/ready")[0] == 200
            assert time.monotonic() - began < 1.0
        assert "rr_ticker_workers_ready" in families(port)
    finally:
        for s in hostile:
            s.close()
    assert daemon.stop() == 0
    assert not daemon.events("daemon.crashed")


def test_metrics_match_rrd_status(rrd: Any, tmp_path: Path) -> None:
    port = free_port()
    daemon = rrd(
        config("echo", interval="20ms", workers=3, extra=sections(metrics=port)),
        "--pidfile",
        str(tmp_path / "rrd.pid"),
    )
    daemon.wait_event("daemon.ready")
    ctl = operator(tmp_path)
    wait_until(
        lambda: (
            json.loads(ctl("status", "--json").stdout)["plugins"]["ticker"]["ticks"]["delivered"]
            > 10
        )
    )

    def delivered_per_status() -> int:
        report = json.loads(ctl("status", "--json").stdout)
        return int(report["plugins"]["ticker"]["ticks"]["delivered"])

    before = delivered_per_status()
    found = families(port)
    after = delivered_per_status()
    assert sample(found, "rr_ticker_total_workers", "rr_ticker_total_workers") == 3
    delivered = sample(
        found, "rrd_ticker_ticks", "rrd_ticker_ticks_total", plugin="ticker", outcome="delivered"
    )
    assert 10 < before <= delivered <= after
    assert sample(found, "rrd_build_info", "rrd_build_info") == 1
    assert (
        sample(
            found,
            "rrd_pool_exec_duration_seconds",
            "rrd_pool_exec_duration_seconds_count",
            plugin="ticker",
        )
        >= delivered
    )
    assert "process_resident_memory_bytes" in found
    assert daemon.stop() == 0


def test_a_reload_adds_moves_and_removes_the_listeners(rrd: Any, tmp_path: Path) -> None:
    first, second = free_port(), free_port()
    daemon = rrd(config("echo", workers=1))
    daemon.wait_event("daemon.ready")
    path = tmp_path / ".rr.yaml"
    assert not serving(first)
    save(path, config("echo", workers=1, extra=sections(status=first)))
    wait_until(lambda: serving(first))
    save(path, config("echo", workers=1, extra=sections(status=second, metrics=second)))
    wait_until(lambda: serving(second) and not serving(first))
    assert "rrd_build_info" in families(second)
    save(path, config("echo", workers=1))
    wait_until(lambda: not serving(second))
    assert daemon.stop() == 0
    changes = [c for r in daemon.events("config.reloaded") for c in r["changes"]]
    assert any(c.startswith("status") for c in changes)


def test_an_address_taken_at_start_is_a_config_error_naming_its_line(tmp_path: Path) -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    path = tmp_path / ".rr.yaml"
    path.write_text(config("echo", workers=1, extra=sections(status=port)))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "rrd", "serve", "-c", str(path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        taken.close()
    assert done.returncode == 78
    line = done.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"rrd: {re.escape(str(path))}:\d+: status\.address: cannot listen on "
        rf"127\.0\.0\.1:{port}: Address already in use",
        line,
    ), line
    assert "Traceback" not in done.stderr


def test_an_address_taken_at_a_reload_keeps_the_listener_as_it_was(
    rrd: Any, tmp_path: Path
) -> None:
    port = free_port()
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        daemon = rrd(config("echo", workers=1, extra=sections(status=port)))
        daemon.wait_event("daemon.ready")
        save(
            tmp_path / ".rr.yaml",
            config("echo", workers=1, extra=sections(status=taken.getsockname()[1])),
        )
        daemon.wait_event("http.listen_failed")
        assert probe(port, "/health")[0] == 200
        assert daemon.stop() == 0
    finally:
        taken.close()


def test_scrapes_and_probes_during_resets_and_a_scale_stay_whole(rrd: Any, tmp_path: Path) -> None:
    """Between features: SIGHUPs replacing every worker and a scale while ticks run; every
    scrape parses and is consistent, health never fails while the old workers serve on."""
    port = free_port()
    daemon = rrd(
        config("echo", interval="10ms", workers=2, extra=sections(status=port, metrics=port)),
        "--pidfile",
        str(tmp_path / "rrd.pid"),
    )
    daemon.wait_event("daemon.ready")
    ctl = operator(tmp_path)
    scrapes = 0
    for round_ in range(3):
        daemon.signal(signal.SIGHUP)
        if round_ == 1:
            assert ctl("scale", "ticker", "4").returncode == 0
        deadline = time.monotonic() + 10
        while len(daemon.events("pool.reset_done")) <= round_ and time.monotonic() < deadline:
            found = families(port)
            total = sample(found, "rr_ticker_total_workers", "rr_ticker_total_workers")
            ready = sample(found, "rr_ticker_workers_ready", "rr_ticker_workers_ready")
            working = sample(found, "rr_ticker_workers_working", "rr_ticker_workers_working")
            assert ready + working <= total
            assert probe(port, "/health?plugin=ticker")[0] == 200
            scrapes += 1
        assert len(daemon.events("pool.reset_done")) > round_
    assert scrapes >= 3  # some scrapes met a reset in flight
    wait_until(
        lambda: sample(families(port), "rr_ticker_total_workers", "rr_ticker_total_workers") == 4
    )
    found = families(port)
    assert (
        sample(
            found, "rrd_pool_restarts", "rrd_pool_restarts_total", plugin="ticker", reason="reset"
        )
        >= 6
    )
    assert sample(found, "rrd_config_reloads", "rrd_config_reloads_total", result="applied") == 3
    assert daemon.stop() == 0

"""`rrd serve` end to end: ticks arrive on time, stop is graceful, faults are contained."""

from __future__ import annotations

import json
import os
import signal
import statistics
import time
from pathlib import Path
from typing import Any

from tests.helpers import pid_alive, wait_until
from tests.system.conftest import config


def read_ticks(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def test_ticks_arrive_in_order_with_the_ticker_payload(rrd: Any, tmp_path: Path) -> None:
    log = tmp_path / "ticks.jsonl"
    daemon = rrd(config(interval="100ms"), env={"TICK_LOG": str(log)})
    daemon.wait_event("daemon.ready")
    wait_until(lambda: len(read_ticks(log)) >= 20, timeout=15)
    assert daemon.stop() == 0
    ticks = read_ticks(log)
    bodies = [json.loads(t["body"]) for t in ticks]
    assert bodies == [{"tick": n} for n in range(len(ticks))]
    assert {t["mode"] for t in ticks} == {"ticker"}
    contexts = [json.loads(t["context"]) for t in ticks]
    assert contexts[0] == {"lastTick": 0, "k": 1}
    assert [c["k"] for c in contexts] == list(range(1, len(ticks) + 1))  # no tick skipped
    assert all(isinstance(c["lastTick"], int) for c in contexts)
    assert all(abs(c["lastTick"] - time.time()) < 120 for c in contexts[1:])
    assert [c["lastTick"] for c in contexts[1:]] == sorted(c["lastTick"] for c in contexts[1:])
    assert ticks[0]["body"] == '{"tick": 0}' and ticks[0]["context"] == '{"lastTick": 0, "k": 1}'
    stopped = daemon.events("ticker.stopped")[0]
    assert stopped["due"] == stopped["delivered"] >= len(ticks)
    assert not daemon.events("ticker.failed")


def test_fifty_ms_for_five_seconds_delivers_a_hundred_ticks_without_drift(
    rrd: Any, tmp_path: Path
) -> None:
    log = tmp_path / "ticks.jsonl"
    daemon = rrd(config(interval="50ms", workers=2), env={"TICK_LOG": str(log)})
    wait_until(lambda: read_ticks(log), timeout=15)
    first = read_ticks(log)[0]["arrival"]
    wait_until(lambda: time.monotonic() > first + 5.2, timeout=15)
    assert daemon.stop() == 0
    window = [t for t in read_ticks(log) if t["arrival"] < first + 5.0]
    assert 98 <= len(window) <= 102, len(window)
    ticks = [json.loads(t["body"])["tick"] for t in window]
    assert ticks == list(range(len(window)))
    offsets = [t["arrival"] - (first + 0.05 * k) for k, t in enumerate(window)]
    assert max(abs(o) for o in offsets) < 0.045, max(offsets)
    # no drift: the last second is as punctual as the first
    assert abs(statistics.mean(offsets[-20:]) - statistics.mean(offsets[:20])) < 0.015


def test_a_worker_killed_with_sigkill_costs_at_most_the_ticks_due_while_replaced(
    rrd: Any, tmp_path: Path
) -> None:
    log = tmp_path / "ticks.jsonl"
    daemon = rrd(config(interval="100ms"), env={"TICK_LOG": str(log)})
    (started,) = daemon.wait_event("worker.started")
    wait_until(lambda: len(read_ticks(log)) >= 3, timeout=15)
    os.kill(started["worker_pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    replacement = daemon.wait_event("worker.started", count=2)[1]
    wait_until(lambda: any(t["pid"] == replacement["worker_pid"] for t in read_ticks(log)), 15)
    assert daemon.stop() == 0
    recovery = next(t for t in read_ticks(log) if t["pid"] == replacement["worker_pid"])
    gap = recovery["arrival"] - killed_at
    stats = daemon.events("ticker.stopped")[0]
    lost = stats["failed"] + stats["skipped"]
    assert lost <= int(gap / 0.1) + 1, (lost, gap)
    assert stats["due"] == stats["delivered"] + stats["failed"] + stats["skipped"]
    assert stats["in_flight"] == 0
    assert not pid_alive(started["worker_pid"])


def test_sighup_replaces_every_worker(rrd: Any, tmp_path: Path) -> None:
    daemon = rrd(config(interval="100ms", workers=2), env={"TICK_LOG": str(tmp_path / "t")})
    first = {e["worker_pid"] for e in daemon.wait_event("worker.started", count=2)}
    daemon.wait_event("daemon.ready")
    daemon.signal(signal.SIGHUP)
    later = daemon.wait_event("worker.started", count=4)
    assert {e["worker_pid"] for e in later[2:]}.isdisjoint(first)
    assert daemon.stop() == 0


def test_every_log_line_is_one_json_object_with_the_standard_fields(
    rrd: Any, tmp_path: Path
) -> None:
    daemon = rrd(config(interval="50ms"), env={"TICK_LOG": str(tmp_path / "t")})
    daemon.wait_event("ticker.tick", count=3)
    assert daemon.stop() == 0
    records = daemon.records  # json.loads on every line
    assert records
    for record in records:
        assert {"ts", "level", "logger", "event", "msg"} <= record.keys()
        assert record["ts"].endswith("Z") and len(record["ts"]) == 24
    tick = daemon.events("ticker.tick")[0]
    assert {"tick", "worker_pid", "duration_ms", "plugin"} <= tick.keys()
    assert [r["event"] for r in records][-1] == "daemon.stopped"


def test_a_worker_that_cannot_boot_exits_69_with_one_log_line(rrd: Any) -> None:
    fast = "    restart: {initial_delay: 10ms, max_retries: 2}\n"
    daemon = rrd(
        config("boot_crash").replace(
            "    destroy_timeout: 5s\n", f"    destroy_timeout: 5s\n{fast}"
        )
    )
    assert daemon.wait(timeout=30) == 69
    failed = daemon.events("daemon.failed")
    assert len(failed) == 1 and "exit code 3" in failed[0]["msg"]
    assert not any("Traceback" in line for line in daemon.lines)

"""Warm spares under a real `rrd serve`: the operator sees them, a SIGKILLed worker's slot is
taken by the spare in the same step (no failed start, no lost tick), a new spare follows, and
a stop leaves none behind (the `rrd` fixture checks every worker's process group)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from tests.helpers import wait_until
from tests.system.conftest import config, operator


def spare_config() -> str:
    return config(interval="50ms", workers=2).replace(
        "    allocate_timeout: 10s", "    spares: 1\n    allocate_timeout: 10s"
    )


def pool_status(ctl: Any) -> dict[str, Any]:
    result = ctl("status", "--json")
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)["plugins"]["ticker"]["pool"]
    return report


def test_a_spare_takes_a_killed_workers_slot_and_another_follows(rrd: Any, tmp_path: Path) -> None:
    daemon = rrd(
        spare_config(),
        "--pidfile",
        str(tmp_path / "rrd.pid"),
        env={"TICK_LOG": str(tmp_path / "ticks.jsonl")},
    )
    daemon.wait_event("daemon.ready")
    ready_at = time.monotonic()
    ctl = operator(tmp_path)
    wait_until(lambda: pool_status(ctl)["spares"] == 1)
    assert "of 2 workers, 1 spare" in ctl("status").stdout
    started = [e["worker_pid"] for e in daemon.events("worker.started")]
    serving = {w["pid"] for w in json.loads(ctl("workers", "--json").stdout)["ticker"]}
    (spare,) = set(started) - serving
    victim = sorted(serving)[0]
    wait_until(lambda: time.monotonic() - ready_at > 1.2)  # past min_uptime: not a failed start
    os.kill(victim, signal.SIGKILL)
    (promoted,) = daemon.wait_event("pool.spare_promoted")
    assert promoted["worker_pid"] == spare
    wait_until(lambda: pool_status(ctl)["spares"] == 1 and pool_status(ctl)["ready"] >= 1)
    workers = {w["pid"] for w in json.loads(ctl("workers", "--json").stdout)["ticker"]}
    assert spare in workers and victim not in workers
    assert not daemon.events("pool.start_failed")
    assert daemon.stop() == 0
    (stopped,) = daemon.events("ticker.stopped")
    assert stopped["failed"] <= 1  # at most the tick the victim held

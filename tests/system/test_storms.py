"""Storms of operator requests: a flood of SIGHUPs or of config saves, a SIGTERM during a reset,
`rrd stop` twice. rrd coalesces what piles up and ends correct: the worker count and the config
of the last valid file, every tick accounted for, exit 0, nothing left."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.soak import balanced, ledger_of
from tests.helpers import ROOT, pid_alive, stays, wait_until
from tests.system.conftest import config, operator
from tests.system.test_reload import save
from tests.system.test_signals import workers_of


def ctl(tmp_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`rrd ARGS` at the rrd serving tmp_path/.rr.yaml with --pidfile tmp_path/rrd.pid."""
    return operator(tmp_path)(*args, timeout=timeout)


def status(tmp_path: Path) -> dict[str, Any]:
    done = ctl(tmp_path, "status", "--json")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def settled(tmp_path: Path, daemon: Any, *, workers: int, interval: float, script: str) -> bool:
    """rrd running (no reload or reset left to do), its ticker at `interval` with `workers` in
    service and as many worker processes, and the ledger balanced."""
    report = status(tmp_path)
    ticker = report["plugins"].get("ticker") or {}
    pool = ticker.get("pool") or {}
    ticks = ledger_of(ticker.get("ticks") or {})
    return bool(
        report["state"] == "running"
        and ticker.get("interval_s") == interval
        and pool.get("size") == workers
        and pool.get("ready", 0) + pool.get("busy", 0) == workers
        and len(workers_of(daemon.process.pid, script)) == workers
        and ticks is not None
        and balanced(ticks)
    )


def quiet_for(daemon: Any, seconds: float, *events: str) -> bool:
    """No new `events` logged for `seconds`: whatever piled up has been done."""
    before = sum(len(daemon.events(e)) for e in events)
    return stays(lambda: sum(len(daemon.events(e)) for e in events) == before, seconds)


def ticking(daemon: Any, tmp_path: Path) -> None:
    """Ticks are still delivered: the ledger's count grows."""
    first = status(tmp_path)["plugins"]["ticker"]["ticks"]["delivered"]
    wait_until(
        lambda: status(tmp_path)["plugins"]["ticker"]["ticks"]["delivered"] >= first + 3,
        timeout=15,
    )


def test_two_hundred_sighups_in_two_seconds_coalesce_and_leave_the_pool_whole(
    rrd: Any, tmp_path: Path
) -> None:
    daemon = rrd(
        config(interval="50ms", workers=2).replace("level: debug", "level: info"),
        "--pidfile",
        str(tmp_path / "rrd.pid"),
        env={"TICK_LOG": str(tmp_path / "ticks.jsonl")},
    )
    daemon.wait_event("daemon.ready")
    began = time.monotonic()
    for n in range(200):
        daemon.signal(signal.SIGHUP)
        time.sleep(max(0.0, began + (n + 1) * 0.01 - time.monotonic()))
    assert time.monotonic() - began < 4  # the storm itself was a storm, even on a loaded box
    wait_until(lambda: quiet_for(daemon, 1.0, "config.reloaded", "pool.reset_done"), timeout=60)
    wait_until(
        lambda: settled(tmp_path, daemon, workers=2, interval=0.05, script="tick_recorder.py"),
        timeout=30,
    )
    ticking(daemon, tmp_path)
    reloads = daemon.events("config.reloaded")
    # Coalesced: a reload with a reset starts two fresh Python workers, never under 20 ms, so
    # with a signal every 10 ms at most one in two signals can have a reload of its own; a
    # daemon that ran one per signal would log 200. (A fast box runs more, a slow one fewer.)
    assert 1 <= len(reloads) < 100, len(reloads)
    assert all(r["source"] == "SIGHUP" and r["changes"] == [] for r in reloads)
    assert daemon.stop() == 0
    assert not daemon.events("daemon.crashed")
    assert not [r for r in daemon.records if "traceback" in r]


def test_a_hundred_config_saves_in_a_second_end_on_the_last_one(rrd: Any, tmp_path: Path) -> None:
    quick, slow = (
        config(interval="50ms", workers=2).replace("level: debug", "level: info"),
        config(interval="100ms", workers=3).replace("level: debug", "level: info"),
    )
    daemon = rrd(
        quick,
        "--pidfile",
        str(tmp_path / "rrd.pid"),
        env={"TICK_LOG": str(tmp_path / "ticks.jsonl")},
    )
    daemon.wait_event("daemon.ready")
    path = tmp_path / ".rr.yaml"
    began = time.monotonic()
    for n in range(100):
        save(path, slow if n % 2 else quick)  # the last save, n = 99, is `slow`
        time.sleep(max(0.0, began + (n + 1) * 0.01 - time.monotonic()))
    assert path.read_text() == slow
    wait_until(lambda: quiet_for(daemon, 1.0, "config.reloaded", "pool.scaled"), timeout=60)
    wait_until(
        lambda: settled(tmp_path, daemon, workers=3, interval=0.1, script="tick_recorder.py"),
        timeout=30,
    )
    ticking(daemon, tmp_path)
    reloads = daemon.events("config.reloaded")
    assert 1 <= len(reloads) <= 50, len(reloads)  # coalesced: far fewer than the saves
    assert not daemon.events("config.rejected")
    assert daemon.stop() == 0
    assert not daemon.events("daemon.crashed")


def test_sigterm_during_a_reset_exits_0_and_leaves_nothing(rrd: Any, tmp_path: Path) -> None:
    """The reset waits on a worker busy for 2 s; SIGTERM then stops rrd gracefully: the busy
    tick finishes, the caller of the reset gets its answer, no process is left."""
    text = config("slow_tick", interval="100ms", workers=2)
    daemon = rrd(text, "--pidfile", str(tmp_path / "rrd.pid"), env={"TICK_SECONDS": "2"})
    wait_until(
        lambda: any(r["msg"].startswith("tick begins") for r in daemon.events("worker.stderr"))
    )
    workers = workers_of(daemon.process.pid, "slow_tick.py")
    where = ["-c", str(tmp_path / ".rr.yaml"), "--pidfile", str(tmp_path / "rrd.pid")]
    reset = subprocess.Popen(
        [sys.executable, "-m", "rrd", "reset", *where],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        daemon.wait_event("pool.reset")
        began = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        assert time.monotonic() - began < 10
        _, errors = reset.communicate(timeout=30)
    finally:
        if reset.poll() is None:
            reset.kill()
    assert "Traceback" not in errors
    assert not daemon.events("daemon.stop_now") and not daemon.events("daemon.crashed")
    started = [e["worker_pid"] for e in daemon.events("worker.started")]
    assert set(workers) <= set(started)
    wait_until(lambda: not any(pid_alive(pid) for pid in started), timeout=5)


@pytest.mark.timeout(120)
def test_rrd_stop_twice_joins_the_stop_and_exits_0(rrd: Any, tmp_path: Path) -> None:
    """Defect 5: the second graceful `rrd stop` escalated to stop-now (workers killed, exit 1)
    while both CLIs said stopped. The stop waits on a 3 s tick: both calls come within it."""
    text = config("slow_tick", interval="100ms", workers=2)
    text = text.replace("destroy_timeout: 5s", "destroy_timeout: 30s")
    text = text.replace("exec_timeout: 5s", "exec_timeout: 30s")
    daemon = rrd(text, "--pidfile", str(tmp_path / "rrd.pid"), env={"TICK_SECONDS": "3"})
    wait_until(
        lambda: any(r["msg"].startswith("tick begins") for r in daemon.events("worker.stderr"))
    )
    where = ["-c", str(tmp_path / ".rr.yaml"), "--pidfile", str(tmp_path / "rrd.pid")]
    argv = [sys.executable, "-m", "rrd", "stop", *where]
    # both at once: each asks rrd's status, then to stop, while the other's stop goes on
    first = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    second = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    outcomes = [p.communicate(timeout=60) for p in (first, second)]
    assert daemon.wait(timeout=30) == 0
    pid = daemon.process.pid
    for process, (out, err) in zip((first, second), outcomes, strict=True):
        assert process.returncode == 0, err
        assert out.decode().strip() == f"stopped rrd {pid}"
    assert not daemon.events("daemon.stop_now")
    assert not daemon.events("worker.killed")  # the busy tick was let finish
    assert all(e["exit_code"] == 0 for e in daemon.events("worker.exited"))

"""rrd serve on its workers' bad days: a pool that cannot start, rrd's own death, orphans,
and workers that flood stderr."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.helpers import pid_alive, wait_until
from tests.system.conftest import config

FAST_RESTART = """    restart:
      initial_delay: 10ms
      max_delay: 50ms
      max_retries: 3
"""
NO_HEALTH = """    health:
      interval: 0s
"""


def with_pool(text: str, block: str) -> str:
    return text.replace("    destroy_timeout: 5s\n", "    destroy_timeout: 5s\n" + block)


@pytest.mark.parametrize(
    ("worker", "last_error"),
    [
        ("boot_crash", "(exit code 3); its last stderr line: boot_crash: cannot load the app"),
        ("boot_garbage", "wrote garbage to stdout: Warning: something went wrong in bootstrap"),
        ("missing_script", "Could not open input file: php/does-not-exist.php"),
    ],
)
def test_a_pool_that_never_starts_ends_rrd_with_69_and_one_line_saying_why(
    rrd: Any, worker: str, last_error: str
) -> None:
    daemon = rrd(with_pool(config(worker, workers=2), FAST_RESTART))
    assert daemon.wait(timeout=30) == 69
    (failed,) = daemon.events("daemon.failed")
    assert failed["msg"].startswith("pool 'ticker': ") and f"{worker}.py" in failed["msg"]
    assert "failed to start 3 times in a row; the last: " in failed["msg"]
    assert last_error in failed["msg"]
    assert "\n" not in failed["msg"] and "traceback" not in failed
    attempts = [e["attempt"] for e in daemon.events("pool.backoff")]
    assert attempts and attempts == sorted(set(attempts)) and attempts[-1] < 3
    assert daemon.events("pool.fatal") and not daemon.events("daemon.ready")


def test_workers_die_within_two_seconds_of_rrd_killed_even_those_that_ignore_eof(
    rrd: Any,
) -> None:
    daemon = rrd(with_pool(config("ignores_eof", interval="1h", workers=2), NO_HEALTH))
    workers = [e["worker_pid"] for e in daemon.wait_event("worker.started", count=2)]
    daemon.wait_event("daemon.ready")
    os.kill(daemon.process.pid, signal.SIGKILL)
    daemon.wait()
    began = time.monotonic()
    wait_until(lambda: not any(pid_alive(pid) for pid in workers), timeout=5)
    assert time.monotonic() - began < 2


def daemon_pid(daemon: Any) -> int:
    lines = [r["msg"] for r in daemon.events("worker.stderr") if r["msg"].startswith("daemon ")]
    return int(lines[-1].split()[1]) if lines else 0


def test_a_double_forked_grandchild_is_reaped_when_it_dies_and_killed_at_stop(rrd: Any) -> None:
    daemon = rrd(config("double_fork", interval="1h"))
    daemon.wait_event("daemon.ready")
    first = wait_until(lambda: daemon_pid(daemon))
    assert psutil.Process(first).ppid() == daemon.process.pid  # adopted: rrd is a subreaper
    os.kill(first, signal.SIGTERM)
    (reaped,) = daemon.wait_event("daemon.orphan_reaped")
    assert reaped["pid"] == first
    assert not Path(f"/proc/{first}").exists()  # reaped, not a zombie
    daemon.signal(signal.SIGHUP)  # a new worker, and with it a new grandchild
    second = wait_until(lambda: (pid := daemon_pid(daemon)) != first and pid)
    assert daemon.stop() == 0
    (killed,) = daemon.events("daemon.orphans_killed")
    assert second in killed["pids"]
    wait_until(lambda: not pid_alive(second), timeout=5)


@pytest.mark.parametrize("flood", ["lines", "nonewline"])
def test_a_worker_flooding_stderr_neither_stalls_rrd_nor_grows_it(
    rrd: Any, tmp_path: Path, flood: str
) -> None:
    ticks = tmp_path / "ticks.jsonl"
    text = config(interval="50ms").replace("level: debug", "level: info")
    text = text.replace('tick_recorder.py"]', 'stderr_flood.py"]')
    flooder = rrd(text, env={"FLOOD": flood, "TICK_LOG": str(ticks)})
    flooder.wait_event("daemon.ready")
    rrd_process = psutil.Process(flooder.process.pid)
    cpu_before, began = rrd_process.cpu_times(), time.monotonic()
    rss = [rrd_process.memory_info().rss]
    wait_until(lambda: rss.append(rrd_process.memory_info().rss) or time.monotonic() - began > 3)
    cpu_after = rrd_process.cpu_times()
    busy = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    assert busy / (time.monotonic() - began) < 0.5  # rrd spends little on a flooding worker
    assert max(rss) < min(rss) + 16 * 2**20  # and does not grow with the flood
    stopped_at = time.monotonic()
    assert flooder.stop(timeout=10) == 0
    assert time.monotonic() - stopped_at < 5
    stats = flooder.events("ticker.stopped")[0]
    assert stats["delivered"] >= 40 and stats["failed"] == 0  # ~60 due in 3 s at 50 ms
    assert stats["skipped_by"].get("late", 0) <= 5
    if flood == "lines":
        assert flooder.events("worker.stderr_dropped")
    else:
        pieces = flooder.events("worker.stderr")
        assert pieces and all(p.get("continued") for p in pieces[:-1])
        assert max(len(p["msg"]) for p in pieces) <= 16 * 1024


def test_pool_stopped_says_why_each_worker_left(rrd: Any, tmp_path: Path) -> None:
    text = config("crash_after", interval="50ms").replace(
        "allocate_timeout: 10s", "allocate_timeout: 10s\n    max_jobs: 3"
    )
    daemon = rrd(text, env={"CRASH_AFTER": "5"})
    wait_until(lambda: daemon.events("worker.started") and len(daemon.events("worker.exited")) >= 3)
    assert daemon.stop() == 0
    (stopped,) = daemon.events("pool.stopped")
    assert stopped["departures"]["max_jobs"] >= 3
    assert json.dumps(stopped["departures"])

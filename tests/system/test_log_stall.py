"""A reader of rrd's stderr that stops reading must not stop rrd: ticks go on, SIGTERM works, and
the records that found no room are counted in one `log.dropped` line once the reader is back."""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, group_alive, pid_alive, wait_until
from tests.system.test_serve import read_ticks

FLOOD = 3_000  # lines on_init prints; rrd logs each as a JSON line of over 200 bytes
TICK = 0.02
FLOOD_CODE = f"for n in range({FLOOD}): print('flood', n, 'x' * 100)"


def flood_config() -> str:
    """Ticks every 20ms, each logged at debug, after an on_init that logs ~600 KiB at once."""
    worker = ROOT / "tests" / "workers" / "tick_recorder.py"
    return f"""
version: "3"
server:
  command: ["{sys.executable}", "{worker}"]
  on_init:
    command: {json.dumps([sys.executable, "-c", FLOOD_CODE])}
    exec_timeout: 10s
logs:
  level: debug
ticker:
  interval: {TICK * 1000:g}ms
  exec_timeout: 5s
  pool:
    num_workers: 1
    allocate_timeout: 10s
    destroy_timeout: 5s
"""


class StalledDaemon:
    """`rrd serve` whose stderr is a pipe this test does not read until it says so."""

    def __init__(self, tmp_path: Path) -> None:
        self.ticks = tmp_path / "ticks.jsonl"
        config = tmp_path / ".rr.yaml"
        config.write_text(flood_config())
        self.stderr, write_end = os.pipe()
        self.capacity = fcntl.fcntl(self.stderr, fcntl.F_GETPIPE_SZ)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "rrd", "serve", "-c", str(config)],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=write_end,
                env={**os.environ, "TICK_LOG": str(self.ticks)},
                start_new_session=True,
            )
        finally:
            os.close(write_end)
        self.output = b""

    def unread(self) -> int:
        """Bytes rrd wrote to stderr that nobody has read."""
        return struct.unpack("i", fcntl.ioctl(self.stderr, termios.FIONREAD, b"\0" * 4))[0]

    def read_bytes(self) -> None:
        """Read what stderr holds now, without waiting."""
        while select.select([self.stderr], [], [], 0)[0]:
            chunk = os.read(self.stderr, 1 << 16)
            if not chunk:
                break
            self.output += chunk

    def read(self) -> list[dict[str, Any]]:
        """Every complete line read so far, as records."""
        self.read_bytes()
        return [json.loads(line) for line in self.output.split(b"\n")[:-1]]

    def read_text(self) -> str:
        """What stderr held, for a failure message."""
        self.read_bytes()
        return self.output.decode("utf-8", "replace")

    def events(self, name: str) -> list[dict[str, Any]]:
        return [record for record in self.read() if record["event"] == name]

    def worker_pids(self) -> set[int]:
        return {tick["pid"] for tick in read_ticks(self.ticks)}


@pytest.fixture
def stalled(tmp_path: Path) -> Iterator[StalledDaemon]:
    """The daemon, killed at test end if still running; neither it nor a worker may be left."""
    daemon = StalledDaemon(tmp_path)
    yield daemon
    leftover = daemon.process.poll() is None
    if leftover:
        os.killpg(daemon.process.pid, signal.SIGKILL)
        daemon.process.wait()
    os.close(daemon.stderr)
    workers = [pid for pid in daemon.worker_pids() if pid_alive(pid)]
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    assert not leftover, "rrd was still running"
    assert not workers, f"workers {workers} outlived rrd"
    assert not group_alive(daemon.process.pid)


def wait_for_a_full_pipe(daemon: StalledDaemon) -> float:
    """Once a tick arrived, on_init's flood (far more than the pipe holds) was logged before it:
    nobody read, so the pipe is full and the writer blocked. The first tick's arrival time."""
    ticks = wait_until(lambda: daemon.process.poll() is not None or read_ticks(daemon.ticks), 10)
    assert ticks is not True, f"rrd exited with {daemon.process.returncode}: {daemon.read_text()}"
    first = read_ticks(daemon.ticks)[0]["arrival"]
    assert daemon.capacity * 4 < FLOOD * 200
    assert daemon.unread() > daemon.capacity * 3 // 4
    return float(first)


def test_ticks_go_on_while_nobody_reads_stderr_and_drops_are_counted_after(
    stalled: StalledDaemon,
) -> None:
    first = wait_for_a_full_pipe(stalled)
    wait_until(lambda: read_ticks(stalled.ticks)[-1]["arrival"] > first + 2.0, timeout=6)
    window = [t for t in read_ticks(stalled.ticks) if t["arrival"] <= first + 2.0]
    assert len(window) >= 0.5 * 2.0 / TICK, f"{len(window)} ticks in 2s at {TICK * 1000:g}ms"
    assert stalled.unread() > stalled.capacity * 3 // 4

    (dropped,) = wait_until(lambda: stalled.events("log.dropped"), timeout=5)
    records = stalled.read()
    assert dropped["level"] == "warn" and dropped["count"] > 0
    flood = [int(r["msg"].split()[1]) for r in records if r["event"] == "server.on_init.output"]
    assert flood == sorted(flood) and 0 < len(flood) < FLOOD

    stalled.process.send_signal(signal.SIGTERM)
    stalled.process.wait(timeout=10)
    records = stalled.read()
    assert stalled.process.returncode == 0
    assert stalled.events("log.dropped") == [dropped]
    assert "ticker.stopped" in [r["event"] for r in records]  # the writer flushed on exit


def test_sigterm_stops_rrd_while_nobody_reads_stderr(stalled: StalledDaemon) -> None:
    wait_for_a_full_pipe(stalled)
    ticks = len(read_ticks(stalled.ticks))
    wait_until(lambda: len(read_ticks(stalled.ticks)) > ticks + 5, timeout=5)

    stalled.process.send_signal(signal.SIGTERM)
    began = time.monotonic()
    assert stalled.process.wait(timeout=10) == 0
    # stopping the pool, then at most shutdown's 2s for a log output that never drains
    assert time.monotonic() - began < 8
    assert stalled.unread() > stalled.capacity * 3 // 4

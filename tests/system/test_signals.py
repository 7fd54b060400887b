"""rrd serve and its signals: a stop preempts a boot or a reset, a second stop stops now, and a
signal that arrives before the loop runs is held and replayed, never fatal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, group_alive, wait_until
from tests.system.conftest import config


def caught_signals(pid: int) -> int:
    """The mask of signals `pid` has a handler for (SigCgt in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


def catches(pid: int, signum: int) -> bool:
    return bool(caught_signals(pid) >> (signum - 1) & 1)


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def workers_of(pid: int, script: str) -> list[int]:
    """The children of `pid` running tests/workers/`script` (not, say, rrd's setpriv probe)."""
    found = []
    for child in children(pid):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg.endswith(script.encode()) for arg in argv):
            found.append(child)
    return found


def hanging_boot() -> str:
    """A worker that takes 60 s to answer the pid handshake, and an allocate_timeout of 20 s."""
    text = config("slow_boot").replace("allocate_timeout: 10s", "allocate_timeout: 20s")
    return text.replace('slow_boot.py"]', 'slow_boot.py", "60"]')


def test_sigterm_during_a_boot_that_hangs_stops_at_once(rrd: Any) -> None:
    daemon = rrd(hanging_boot())
    wait_until(lambda: workers_of(daemon.process.pid, "slow_boot.py"))
    began = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=10) == 0
    assert time.monotonic() - began < 3
    events = [r["event"] for r in daemon.records]
    assert "daemon.ready" not in events and events[-1] == "daemon.stopped"


def test_sigterm_during_a_reset_preempts_it_and_a_second_one_stops_now(
    rrd: Any, tmp_path: Path
) -> None:
    text = config("slow_tick", interval="100ms").replace("exec_timeout: 5s", "exec_timeout: 60s")
    text = text.replace("destroy_timeout: 5s", "destroy_timeout: 60s")
    daemon = rrd(text, env={"TICK_SECONDS": "8"})
    wait_until(
        lambda: any(r["msg"].startswith("tick begins") for r in daemon.events("worker.stderr"))
    )
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("pool.reset")
    began = time.monotonic()
    daemon.signal(signal.SIGTERM)
    daemon.wait_event("daemon.stopping", timeout=3)
    assert time.monotonic() - began < 2
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=5) == 1
    assert time.monotonic() - began < 4
    (stop_now,) = daemon.events("daemon.stop_now")
    assert stop_now["workers"] >= 1


def test_sigterm_during_a_long_tick_waits_for_it_and_exits_0(rrd: Any) -> None:
    daemon = rrd(config("slow_tick", interval="100ms"), env={"TICK_SECONDS": "2"})
    wait_until(
        lambda: any(r["msg"].startswith("tick begins") for r in daemon.events("worker.stderr"))
    )
    began = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0
    assert 0.5 < time.monotonic() - began < 6
    assert any(r["msg"] == "tick ends" for r in daemon.events("worker.stderr"))
    assert daemon.events("ticker.stopped")[0]["delivered"] == 1
    assert all(e["exit_code"] == 0 for e in daemon.events("worker.exited"))


def test_a_second_sigint_stops_now_with_exit_1(rrd: Any) -> None:
    daemon = rrd(
        config("stubborn", interval="1h").replace("destroy_timeout: 5s", "destroy_timeout: 30s")
    )
    daemon.wait_event("daemon.ready")
    daemon.signal(signal.SIGINT)
    daemon.wait_event("daemon.stopping")
    began = time.monotonic()
    daemon.signal(signal.SIGINT)
    assert daemon.wait(timeout=10) == 1
    assert time.monotonic() - began < 3
    (stop_now,) = daemon.events("daemon.stop_now")
    assert stop_now["workers"] == 1


def held_at_start(
    rrd: Any, tmp_path: Path, signum: int, text: str | None = None
) -> tuple[Any, Path]:
    """rrd blocked reading its --dotenv from a FIFO, i.e. before its loop runs; `signum` is
    sent once rrd shows it catches it, then the FIFO is written."""
    fifo = tmp_path / "env.fifo"
    os.mkfifo(fifo)
    daemon = rrd(text or config(), "--dotenv", str(fifo), env={"TICK_LOG": str(tmp_path / "ticks")})
    pid = daemon.process.pid
    wait_until(lambda: catches(pid, signal.SIGHUP) and catches(pid, signal.SIGTERM), timeout=10)
    daemon.signal(signum)
    writer = threading.Thread(target=lambda: fifo.write_text("APP=demo\n"), daemon=True)
    writer.start()
    writer.join(10)
    return daemon, fifo


def test_a_sighup_before_the_loop_runs_is_held_then_replayed(rrd: Any, tmp_path: Path) -> None:
    daemon, _ = held_at_start(rrd, tmp_path, signal.SIGHUP)
    daemon.wait_event("daemon.ready")
    assert daemon.process.poll() is None
    (replayed,) = daemon.wait_event("daemon.signal")
    assert replayed["signal"] == "SIGHUP"
    assert daemon.stop() == 0


def test_a_sigterm_before_the_loop_runs_stops_rrd_cleanly(rrd: Any, tmp_path: Path) -> None:
    daemon, _ = held_at_start(rrd, tmp_path, signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0
    events = [r["event"] for r in daemon.records]
    assert "daemon.ready" not in events and events[-1] == "daemon.stopped"


def test_a_sigterm_before_the_loop_runs_starts_no_worker(rrd: Any, tmp_path: Path) -> None:
    """The boot is not begun once a stop is held: no wait for a handshake that never comes."""
    began = time.monotonic()
    daemon, _ = held_at_start(rrd, tmp_path, signal.SIGTERM, hanging_boot())
    assert daemon.wait(timeout=10) == 0
    assert time.monotonic() - began < 5
    events = [r["event"] for r in daemon.records]
    assert "worker.started" not in events and events[-1] == "daemon.stopped"


def test_a_retiring_worker_that_cleans_up_is_not_killed_by_the_stop(rrd: Any) -> None:
    """max_jobs: 1 and a worker that needs 1 s to clean up; SIGTERM during its retirement."""
    text = config("slow_exit", interval="200ms").replace(
        "allocate_timeout: 10s", "allocate_timeout: 10s\n    max_jobs: 1"
    )
    daemon = rrd(text, env={"CLEANUP": "1"})
    wait_until(lambda: any(r["msg"] == "cleaning up" for r in daemon.events("worker.stderr")))
    assert daemon.stop() == 0
    exits = daemon.events("worker.exited")
    assert exits and all(e["exit_code"] == 0 for e in exits), exits
    assert not daemon.events("worker.killed") and not daemon.events("worker.terminate")


def test_a_one_millisecond_ticker_still_hears_sigterm(rrd: Any, tmp_path: Path) -> None:
    ticks = tmp_path / "ticks"
    text = config(interval="1ms", workers=2).replace("level: debug", "level: info")
    daemon = rrd(text, env={"TICK_LOG": str(ticks)})
    wait_until(lambda: ticks.exists() and ticks.read_text().count("\n") > 200, timeout=15)
    began = time.monotonic()
    assert daemon.stop(timeout=10) == 0
    assert time.monotonic() - began < 5
    stopped = daemon.events("ticker.stopped")[0]
    assert stopped["due"] > 100


CRASHING_PLUGIN = """
import asyncio

from rrd.plugins.base import Plugin


class CrashingPlugin(Plugin):
    name = "crashing"
    weight = 5

    def init(self, ctx):
        self.ctx = ctx

    async def serve(self):
        self.task = asyncio.create_task(self.work())
        self.task.add_done_callback(
            lambda t: t.cancelled() or t.exception() is None
            or self.ctx.crashed("the crashing plugin", t.exception())
        )

    async def work(self):
        await asyncio.sleep(0.5)
        raise RuntimeError("a bug in a plugin")

    async def stop(self):
        self.task.cancel()
"""


def test_a_plugin_that_dies_of_a_bug_stops_rrd_gracefully_with_exit_70(
    rrd: Any, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    info = site / "rrd_crashing-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "rrd_crashing.py").write_text(textwrap.dedent(CRASHING_PLUGIN))
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rrd-crashing\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[rrd.plugins]\ncrashing = rrd_crashing:CrashingPlugin\n"
    )
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    daemon = rrd(config(), env={**env, "TICK_LOG": str(tmp_path / "ticks")})
    assert daemon.wait(timeout=20) == 70
    (crashed,) = daemon.events("daemon.crashed")
    assert "a bug in a plugin" in crashed["traceback"] and crashed["level"] == "fatal"
    exits = daemon.events("worker.exited")
    assert exits and all(e["exit_code"] == 0 for e in exits)
    assert daemon.records[-1]["event"] == "daemon.stopped"
    for started in daemon.events("worker.started"):
        assert not group_alive(started["worker_pid"])


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('version: "3"\nticker:\n  interval: 1s\n', "server.command"),
        ('version: "3"\nserver:\n  command: no-such-program\nticker: {}\n', "server.command"),
        (
            'version: "3"\nserver:\n  command: python3\n  user: no-such-user\nticker: {}\n',
            "server.user",
        ),
        ('version: "3"\nlogs:\n  output: /no/such/dir/rrd.log\n', "logs.output"),
    ],
)
def test_config_check_refuses_what_serve_refuses(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "rr.yaml"
    path.write_text(text)
    results = [
        subprocess.run(
            [sys.executable, "-m", "rrd", *command, "-c", str(path)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=20,
        )
        for command in (("config", "check"), ("serve",))
    ]
    for result in results:
        assert result.returncode == 78
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"rrd: {path}") and f" {key}: " in line
    assert results[0].stderr == results[1].stderr

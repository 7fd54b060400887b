"""Crash recovery, rrd side by side with supervisord: SIGKILL a worker, time its replacement.

    .venv/bin/python bench/recovery.py [--kills 20] [--supervisord PATH]

supervisord is not a dependency of rrd: install it anywhere (`python3 -m venv /tmp/sv &&
/tmp/sv/bin/pip install supervisor`) and pass its path. Both run the same kind of process, a
Python program that imports rrd.sdk (tests/workers/echo.py under rrd, bench/idle_worker.py
under supervisord, which has no relay), each with its default settings.

For rrd "ready" is the replacement's `worker.started` (its pid handshake done: it can serve).
For supervisord it is the replacement entering RUNNING, which by default takes `startsecs=1`;
its spawn time is shown too. Times are from the kill to the line in the log, in ms.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RRD_CONFIG = """
version: "3"
server:
  command: ["{python}", "{worker}"]
ticker:
  interval: 1h
  pool:
    num_workers: 2
"""

SUPERVISOR_CONFIG = """
[supervisord]
nodaemon=true
logfile={log}
loglevel=info
pidfile={folder}/supervisord.pid

[program:worker]
command={python} {worker}
"""


def follow(
    path: Path, pattern: re.Pattern[str], after: int, timeout: float = 30
) -> tuple[str, int]:
    """The first line matching `pattern` past byte `after`, and where the file ends then.
    Reads only what is new, every millisecond, to leave the CPUs to what is measured."""
    deadline = time.monotonic() + timeout
    seen = ""
    with path.open("rb") as file:
        file.seek(after)
        while time.monotonic() < deadline:
            chunk = file.read()
            if chunk:
                seen += chunk.decode("utf-8", "replace")
                match = pattern.search(seen)
                if match:
                    return match.group(0), after + len(seen.encode())
            else:
                time.sleep(0.001)
    raise SystemExit(f"{pattern.pattern!r} did not appear in {path} within {timeout}s")


KillResult = tuple[Path, int, float]


def measure(kills: int, kill: Callable[[], KillResult], ready: re.Pattern[str]) -> list[float]:
    """Kill a worker that has lived past both supervisors' start-up window (rrd's min_uptime,
    supervisord's startsecs: 1 s each), time its replacement, and again."""
    times = []
    for _ in range(kills):
        time.sleep(1.5)
        log, offset, killed = kill()
        follow(log, ready, offset)
        times.append((time.monotonic() - killed) * 1000)
    return times


def rrd_run(kills: int) -> list[float]:
    with tempfile.TemporaryDirectory() as folder:
        config, log = Path(folder, "rr.yaml"), Path(folder, "log")
        config.write_text(
            RRD_CONFIG.format(python=sys.executable, worker=ROOT / "tests/workers/echo.py")
        )
        with log.open("w") as output:
            rrd = subprocess.Popen(
                [sys.executable, "-m", "rrd", "serve", "-c", str(config)],
                cwd=ROOT,
                stderr=output,
                stdin=subprocess.DEVNULL,
            )
        started = re.compile(r'\{[^\n]*"event": "worker\.started"[^\n]*\}')
        gone = re.compile(r'\{[^\n]*"event": "worker\.exited"[^\n]*\}')
        try:
            follow(log, re.compile('"daemon.ready"'), 0)

            def kill() -> KillResult:
                data = log.read_bytes()
                text = data.decode("utf-8", "replace")
                pids = [json.loads(m)["worker_pid"] for m in started.findall(text)]
                exited = {json.loads(m)["worker_pid"] for m in gone.findall(text)}
                victim = next(pid for pid in reversed(pids) if pid not in exited)
                os.kill(victim, signal.SIGKILL)
                return log, len(data), time.monotonic()

            return measure(kills, kill, started)
        finally:
            rrd.send_signal(signal.SIGTERM)
            rrd.wait(30)


def supervisord_run(kills: int, supervisord: str) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as folder:
        config, log = Path(folder, "supervisord.conf"), Path(folder, "supervisord.log")
        config.write_text(
            SUPERVISOR_CONFIG.format(
                log=log, folder=folder, python=sys.executable, worker=ROOT / "bench/idle_worker.py"
            )
        )
        log.touch()
        daemon = subprocess.Popen(
            [supervisord, "-c", str(config)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        spawned = re.compile(r"spawned: 'worker' with pid (\d+)")
        running = re.compile(r"success: worker entered RUNNING state")
        try:
            follow(log, running, 0)
            spawn_times: list[float] = []

            def kill() -> KillResult:
                data = log.read_bytes()
                victim = int(spawned.findall(data.decode())[-1])
                os.kill(victim, signal.SIGKILL)
                killed = time.monotonic()
                follow(log, spawned, len(data))
                spawn_times.append((time.monotonic() - killed) * 1000)
                return log, len(data), killed

            return measure(kills, kill, running), spawn_times
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)


def summary(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p90 = ordered[int(len(ordered) * 0.9) - 1]
    return (
        f"{name:34}{statistics.median(times):>10.1f}{min(times):>10.1f}{p90:>10.1f}"
        f"{max(times):>10.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--supervisord", default=shutil.which("supervisord") or "")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}; {args.kills} SIGKILLs each; ms from the kill")
    print(f"{'':34}{'median':>10}{'min':>10}{'p90':>10}{'max':>10}")
    rrd_times = rrd_run(args.kills)
    print(summary("rrd: replacement ready", rrd_times), flush=True)
    if not args.supervisord:
        print("supervisord: not found (pass --supervisord PATH)")
        return
    ready, spawned = supervisord_run(args.kills, args.supervisord)
    print(summary("supervisord: replacement spawned", spawned))
    print(summary("supervisord: replacement RUNNING", ready))
    print(
        f"ratio of medians, supervisord RUNNING / rrd ready: "
        f"{statistics.median(ready) / statistics.median(rrd_times):.0f}x"
    )


if __name__ == "__main__":
    main()

"""rrd's own weight: time to READY, RSS and idle CPU with N workers ticking; run by hand.

    .venv/bin/python bench/footprint.py [--workers 64] [--interval 1s] [--seconds 60] [--runs 3]
                                        [-o KEY=VALUE ...]

Each run starts `rrd serve` with N tests/workers/echo.py workers (quiet: they answer each tick
and write nothing), waits for `daemon.ready`, lets it settle, then samples rrd's own
process (not its workers): resident memory at the end, and CPU time over the window divided
by the window. `-o` passes config overrides through, e.g. `-o ticker.pool.health.interval=1s`.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from recovery import follow

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "workers" / "echo.py"

CONFIG = """
version: "3"
server:
  command: ["{python}", "{worker}"]
logs:
  level: info
ticker:
  interval: {interval}
  exec_timeout: 10s
  pool:
    num_workers: {workers}
    allocate_timeout: 30s
"""


def cpu_seconds(pid: int) -> float:
    """CPU time of all of `pid`'s threads, to the nanosecond (/proc/PID/task/*/schedstat).

    psutil's cpu_times counts clock ticks of 10 ms: over 30 s of a process using ~1 ms a
    second, that alone made the figure swing between 0.13 and 0.33 %."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError):
            total += int(stat.read_text().split()[0])
    return total / 1e9


def one_run(workers: int, interval: str, seconds: float, overrides: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        config, log = Path(folder, "rr.yaml"), Path(folder, "log")
        config.write_text(
            CONFIG.format(python=sys.executable, worker=WORKER, interval=interval, workers=workers)
        )
        argv = [sys.executable, "-m", "rrd", "serve", "-c", str(config)]
        for override in overrides:
            argv += ["-o", override]
        with log.open("w") as errors:
            began = time.monotonic()
            rrd = subprocess.Popen(argv, cwd=ROOT, stderr=errors, stdin=subprocess.DEVNULL)
        try:
            follow(log, re.compile('"daemon.ready"'), 0, timeout=60)
            ready = time.monotonic() - began
            process = psutil.Process(rrd.pid)
            time.sleep(3)  # let start-up garbage settle
            cpu0, wall0 = cpu_seconds(rrd.pid), time.monotonic()
            time.sleep(seconds)
            cpu1, wall1 = cpu_seconds(rrd.pid), time.monotonic()
            rss = process.memory_info().rss
            threads = process.num_threads()
            busy = cpu1 - cpu0
        finally:
            rrd.send_signal(signal.SIGTERM)
            code = rrd.wait(60)
        if code != 0:
            raise SystemExit(f"rrd exited {code}; see its log")
    return {
        "ready_s": ready,
        "rss_mib": rss / 2**20,
        "cpu_pct": 100 * busy / (wall1 - wall0),
        "threads": threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("-o", "--override", action="append", default=[])
    args = parser.parse_args()
    print(
        f"python {sys.version.split()[0]}; {args.workers} workers ticking every {args.interval}; "
        f"CPU over {args.seconds:g} s; overrides: {' '.join(args.override) or 'none'}"
    )
    columns = ("ready_s", "rss_mib", "cpu_pct", "threads")
    print(" run" + "".join(f"{c:>10}" for c in columns))
    rows = []
    for run in range(1, args.runs + 1):
        row = one_run(args.workers, args.interval, args.seconds, args.override)
        rows.append(row)
        print(f"{run:>4}" + "".join(f"{row[c]:>10.2f}" for c in columns))
    if len(rows) > 1:
        print("  md" + "".join(f"{statistics.median(r[c] for r in rows):>10.2f}" for c in columns))


if __name__ == "__main__":
    main()

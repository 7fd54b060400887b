"""Hot reload, measured on a real `rrd serve`; run by hand, never in tests.

    .venv/bin/python bench/reload.py [--runs 5] [--workers 2 16 64]

1. An editor's atomic save of a new `ticker.interval` (500ms -> 50ms): the time until rrd has
   reloaded it (`config.reloaded`), and until the first tick at the new spacing reached a
   worker. No worker may restart.
2. SIGHUP: the time until every worker of the pool was replaced (`pool.reset_done`), for
   pools of several sizes, successors first.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from footprint import CONFIG
from recovery import follow

ROOT = Path(__file__).resolve().parent.parent


def serve(folder: str, workers: int, interval: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    config, log, ticks = Path(folder, "rr.yaml"), Path(folder, "log"), Path(folder, "ticks")
    config.write_text(write(workers, interval))
    with log.open("w") as output:
        rrd = subprocess.Popen(
            [sys.executable, "-m", "rrd", "serve", "-c", str(config)],
            cwd=ROOT,
            stderr=output,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "TICK_LOG": str(ticks)},
        )
    follow(log, re.compile('"daemon.ready"'), 0, timeout=120)
    return rrd, config, ticks


def write(workers: int, interval: str) -> str:
    worker = ROOT / "tests/workers/tick_recorder.py"
    return CONFIG.format(python=sys.executable, worker=worker, interval=interval, workers=workers)


def arrivals(ticks: Path) -> list[float]:
    lines = ticks.read_text().splitlines() if ticks.exists() else []
    return [json.loads(line)["arrival"] for line in lines if line.endswith("}")]


def save_run() -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        rrd, config, ticks = serve(folder, 2, "500ms")
        log = Path(folder, "log")
        try:
            while len(arrivals(ticks)) < 2:
                time.sleep(0.01)
            offset = log.stat().st_size
            temporary = config.with_name(".rr.yaml.swp")
            temporary.write_text(write(2, "50ms"))
            saved = time.monotonic()
            os.replace(temporary, config)
            follow(log, re.compile('"config.reloaded"'), offset)
            reloaded = time.monotonic() - saved
            while True:
                seen = [a for a in arrivals(ticks) if a > saved]
                fast = [b for a, b in itertools.pairwise(seen) if b - a < 0.1]
                if fast:
                    break
                time.sleep(0.005)
            first = fast[0]
            if '"worker.started"' in log.read_text()[offset:]:
                raise SystemExit("a worker restarted on an interval change")
            return reloaded * 1000, (first - saved) * 1000
        finally:
            rrd.send_signal(signal.SIGTERM)
            rrd.wait(60)


def sighup_run(workers: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        rrd, _config, _ticks = serve(folder, workers, "1s")
        log = Path(folder, "log")
        try:
            time.sleep(1)
            offset = log.stat().st_size
            signalled = time.monotonic()
            rrd.send_signal(signal.SIGHUP)
            follow(log, re.compile('"pool.reset_done"'), offset, timeout=120)
            return (time.monotonic() - signalled) * 1000
        finally:
            rrd.send_signal(signal.SIGTERM)
            rrd.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 16, 64])
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}; {args.runs} runs each; ms, median (min-max)")
    saves = [save_run() for _ in range(args.runs)]
    for index, name in ((0, "save -> config reloaded"), (1, "save -> first tick at new interval")):
        values = [s[index] for s in saves]
        print(f"{name:40}{statistics.median(values):>9.1f} ({min(values):.1f}-{max(values):.1f})")
    for workers in args.workers:
        values = [sighup_run(workers) for _ in range(args.runs)]
        name = f"SIGHUP -> {workers} workers replaced"
        print(f"{name:40}{statistics.median(values):>9.1f} ({min(values):.1f}-{max(values):.1f})")


if __name__ == "__main__":
    main()

"""Ticker punctuality and crash cost, measured on a real `rrd serve`; run by hand, never in tests.

    .venv/bin/python bench/ticker.py [--interval 0.05] [--seconds 5] [--runs 3]

Each run starts rrd with two tests/workers/tick_recorder.py workers, records when every tick
reached a worker (CLOCK_MONOTONIC is shared by all processes), then SIGKILLs a worker and
measures how long until its replacement is ready and how many ticks that cost.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "workers" / "tick_recorder.py"

CONFIG = """
version: "3"
server:
  command: ["{python}", "{worker}"]
logs:
  level: debug
ticker:
  interval: {interval}s
  exec_timeout: 5s
  pool:
    num_workers: 2
"""


def ticks(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def wait(predicate, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for rrd")
        time.sleep(0.005)
    return result


def one_run(interval: float, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        config, log, events = Path(folder, "rr.yaml"), Path(folder, "t.jsonl"), Path(folder, "e")
        config.write_text(CONFIG.format(python=sys.executable, worker=WORKER, interval=interval))
        with events.open("w") as errors:
            rrd = subprocess.Popen(
                [sys.executable, "-m", "rrd", "serve", "-c", str(config)],
                cwd=ROOT,
                stderr=errors,
                env={**os.environ, "TICK_LOG": str(log)},
            )
        try:
            first = wait(lambda: ticks(log))[0]["arrival"]
            time.sleep(max(0.0, first + seconds + 0.1 - time.monotonic()))
            window = [t for t in ticks(log) if t["arrival"] < first + seconds]
            offsets = [(t["arrival"] - first - k * interval) * 1000 for k, t in enumerate(window)]
            victim = window[-1]["pid"]
            before = {t["pid"] for t in ticks(log)}
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()

            def replaced() -> bool:
                return any(
                    json.loads(line).get("event") == "worker.started"
                    and json.loads(line)["worker_pid"] not in before
                    for line in events.read_text().splitlines()
                )

            wait(replaced)
            recovery = (time.monotonic() - killed) * 1000
            time.sleep(0.5)
        finally:
            rrd.send_signal(signal.SIGTERM)
            rrd.wait(30)
        stopped = next(
            json.loads(line)
            for line in events.read_text().splitlines()
            if '"ticker.stopped"' in line
        )
    fifth = max(1, len(offsets) // 5)
    return {
        "ticks": len(window),
        "expected": round(seconds / interval),
        "min": min(offsets),
        "p50": statistics.median(offsets),
        "p99": sorted(offsets)[int(len(offsets) * 0.99) - 1],
        "max": max(offsets),
        "drift": statistics.mean(offsets[-fifth:]) - statistics.mean(offsets[:fifth]),
        "recovery": recovery,
        "lost": stopped["failed"] + stopped["skipped"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(
        f"python {sys.version.split()[0]}; interval {args.interval * 1000:g} ms for "
        f"{args.seconds:g} s; arrival offsets from tick 0's arrival + k * interval, in ms"
    )
    columns = ("ticks", "expected", "min", "p50", "p99", "max", "drift", "recovery", "lost")
    print(" run " + "".join(f"{c:>10}" for c in columns))
    for run in range(1, args.runs + 1):
        row = one_run(args.interval, args.seconds)
        print(
            f"{run:>4} "
            + "".join(
                f"{row[c]:>10.0f}" if c in ("ticks", "expected", "lost") else f"{row[c]:>10.2f}"
                for c in columns
            )
        )
    print(
        "recovery: SIGKILL of a worker to its replacement's worker.started, ms; "
        "lost: ticks failed or skipped in the whole run"
    )


if __name__ == "__main__":
    main()

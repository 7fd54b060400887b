"""Ticker punctuality: how late each tick reaches a worker, rrd next to a naive sleep loop.

    .venv/bin/python bench/ticker.py [--intervals 1 10 100] [--seconds 30] [--runs 3]
                                     [--json] [--smoke]

Each run starts `rrd serve` with two tests/workers/tick_recorder.py workers ticking every
interval, and, interleaved with it (never at the same time), bench/naive_ticker.py: one
tick_recorder worker under `while True: await asyncio.sleep(interval); await exec(...)` on
rrd's own worker code (its k is the loop count, so its lateness is mostly drift). The worker
writes when each tick arrived (CLOCK_MONOTONIC, shared by every process) and the tick's `k`
from its context: tick k is due at t0 + k * interval.

Lateness of tick k = arrival - (t0 + k * interval), with t0 estimated as the smallest
(arrival - k * interval) of the run: the most punctual tick counts 0, none is early. Over the
first `--seconds` of ticks: p50, p99 (nearest rank) and max lateness; drift, the mean lateness
of the last fifth of the ticks minus that of the first fifth; ticks skipped, the k missing in
that window; and the ledger's skipped and failed ticks over the whole run (`ticker.stopped`).
The gap row is |a tick's spacing from the one before (per step of k) - the interval|, the
jitter by which a naive loop is usually judged. Targets (10 ms): p99 < 0.5 ms, no skipped
tick, drift ~0 (|drift| < 0.1 ms).
If rrd's context has no `k`, ticks are numbered in arrival order (said on stderr), and skips
then show only in the ledger.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from table import SMOKE_HELP, Figure, Row, ratio, report

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "workers" / "tick_recorder.py"
NAIVE = ROOT / "bench" / "naive_ticker.py"
NAIVE_NAME = "naive asyncio.sleep loop"
BENCH = "ticker"

CONFIG = """
version: "3"
server:
  command: ["{python}", "{worker}"]
logs:
  level: info
ticker:
  interval: {interval_ms}ms
  exec_timeout: 5s
  pool:
    num_workers: 2
"""

_warned_no_k = False


@dataclass(frozen=True)
class Measure:
    """One run of one ticker at one interval; times in ms."""

    p50: float
    p99: float
    max: float
    drift: float
    gap_p99: float
    skipped: int
    ticks: int
    ledger_lost: int | None = None
    """The ledger's skipped + failed over the whole run; None for the naive loop (no ledger)."""


def recorded(path: Path) -> list[tuple[int, float]]:
    """(k, arrival) of every tick the workers recorded, in k order."""
    global _warned_no_k
    if not path.exists():
        return []
    ticks = []
    for index, line in enumerate(path.read_text().splitlines()):
        if not line.endswith("}"):
            continue  # a line still being written
        tick = json.loads(line)
        k = json.loads(tick["context"]).get("k")
        if k is None:
            if not _warned_no_k:
                print(
                    "rrd's tick context has no k: numbering ticks in arrival order", file=sys.stderr
                )
                _warned_no_k = True
            k = index + 1
        ticks.append((k, tick["arrival"]))
    return sorted(ticks)


def nearest_rank(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def measure(ticks: list[tuple[int, float]], interval: float, seconds: float) -> Measure:
    """The figures over the ticks that arrived within `seconds` of the first."""
    if len(ticks) < 2:
        raise SystemExit(f"only {len(ticks)} ticks recorded: nothing to measure")
    first = min(arrival for _, arrival in ticks)
    window = [(k, arrival) for k, arrival in ticks if arrival <= first + seconds]
    t0 = min(arrival - k * interval for k, arrival in window)
    late = [(arrival - t0 - k * interval) * 1000 for k, arrival in window]
    fifth = max(1, len(late) // 5)
    gaps = [
        abs((b - a) / (kb - ka) - interval) * 1000
        for (ka, a), (kb, b) in itertools.pairwise(window)
        if kb > ka
    ]
    ks = {k for k, _ in window}
    return Measure(
        p50=statistics.median(late),
        p99=nearest_rank(late, 0.99),
        max=max(late),
        drift=statistics.mean(late[-fifth:]) - statistics.mean(late[:fifth]),
        gap_p99=nearest_rank(gaps, 0.99) if gaps else 0.0,
        skipped=max(ks) - min(ks) + 1 - len(ks),
        ticks=len(window),
    )


def wait_for_ticks(path: Path, process: subprocess.Popen[bytes], timeout: float = 30) -> float:
    """The arrival of the first tick; fails if the process died or nothing came in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{shlex.join(process.args)} exited {process.returncode}, no tick")
        with contextlib.suppress(OSError, ValueError):
            with path.open() as file:
                line = file.readline()
            if line.endswith("\n"):
                return float(json.loads(line)["arrival"])
        time.sleep(0.01)
    raise SystemExit(f"no tick within {timeout:g}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it is not gone within 30 s (its worker dies with it: both
    start workers with a parent-death signal)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            print(f"{shlex.join(process.args)} ignored SIGTERM; killing it", file=sys.stderr)
            process.kill()
    process.wait()


def timed_run(argv: list[str], folder: Path, seconds: float, interval: float) -> Path:
    """Run `argv` with TICK_LOG set until `seconds` of ticks were recorded, and one interval
    more; return its stderr's path. It stays in the bench's process group: a kill of the
    bench's group takes it too."""
    ticks, errors = folder / "ticks", folder / "stderr"
    with errors.open("w") as stderr:
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "TICK_LOG": str(ticks)},
        )
    try:
        first = wait_for_ticks(ticks, process)
        time.sleep(max(0.0, first + seconds + interval + 0.05 - time.monotonic()))
        if process.poll() is not None:
            raise SystemExit(f"{shlex.join(argv)} exited {process.returncode} while ticking")
    finally:
        stop(process)
    return errors


def rrd_run(interval: float, seconds: float) -> Measure:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        config = folder / "rr.yaml"
        config.write_text(
            CONFIG.format(python=sys.executable, worker=WORKER, interval_ms=f"{interval * 1000:g}")
        )
        argv = [sys.executable, "-m", "rrd", "serve", "-c", str(config), "--no-watch"]
        errors = timed_run(argv, folder, seconds, interval)
        stopped = [
            json.loads(line)
            for line in errors.read_text().splitlines()
            if '"ticker.stopped"' in line
        ]
        if not stopped:
            raise SystemExit("rrd logged no ticker.stopped")
        result = measure(recorded(folder / "ticks"), interval, seconds)
        lost = stopped[-1]["skipped"] + stopped[-1]["failed"]
        return Measure(**{**vars(result), "ledger_lost": lost})


def naive_run(interval: float, seconds: float) -> Measure:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        argv = [sys.executable, str(NAIVE), "--interval", str(interval), "--"]
        argv += [sys.executable, str(WORKER)]
        timed_run(argv, folder, seconds, interval)
        return measure(recorded(folder / "ticks"), interval, seconds)


def rows_for(interval: float, ours: list[Measure], naive: list[Measure]) -> list[Row]:
    at = f"@ {interval * 1000:g} ms"
    on_target = round(interval * 1000, 6) == 10

    def timing(
        name: str, field: str, target: str = "", limit: float | None = None, compare: bool = True
    ) -> Row:
        mine = Figure.of((getattr(m, field) for m in ours), "ms")
        theirs = Figure.of((getattr(m, field) for m in naive), "ms")
        met = None
        if on_target and limit is not None:
            met = abs(mine.median) < limit
        return Row(
            BENCH,
            f"{name} {at}",
            mine,
            {NAIVE_NAME: theirs},
            ratio(theirs.median, mine.median, "times rrd's, the naive loop") if compare else "",
            target if on_target else "",
            met,
        )

    skipped = Figure.of((m.skipped for m in ours), "ticks")
    lost = Figure.of((m.ledger_lost or 0 for m in ours), "ticks")
    return [
        timing("lateness p50", "p50"),
        timing("lateness p99", "p99", "< 0.5 ms", 0.5),
        timing("lateness max", "max"),
        timing("drift (last fifth - first)", "drift", "~0 (< 0.1 ms)", 0.1, compare=False),
        timing("gap - interval p99", "gap_p99"),
        Row(
            BENCH,
            f"ticks skipped (missing k) {at}",
            skipped,
            {NAIVE_NAME: Figure.of((m.skipped for m in naive), "ticks")},
            target="0" if on_target else "",
            met=max(skipped.samples) == 0 if on_target else None,
        ),
        Row(
            BENCH,
            f"ledger skipped + failed, whole run {at}",
            lost,
            target="0" if on_target else "",
            met=max(lost.samples) == 0 if on_target else None,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--intervals", type=float, nargs="+", default=[1, 10, 100], help="ms")
    parser.add_argument("--seconds", type=float, default=30.0, help="of ticks, per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="rows as JSON lines")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        args.intervals, args.seconds, args.runs = [10.0], 1.0, 1
    rows = []
    for interval_ms in args.intervals:
        interval = interval_ms / 1000
        ours: list[Measure] = []
        naive: list[Measure] = []
        for run in range(args.runs):
            pair = [(ours, rrd_run), (naive, naive_run)]
            for results, one_run in pair if run % 2 == 0 else pair[::-1]:
                results.append(one_run(interval, args.seconds))
                done = results[-1]
                print(
                    f"{interval_ms:g} ms run {run + 1} {one_run.__name__}: {done.ticks} ticks, "
                    f"lateness p50 {done.p50:.3f} p99 {done.p99:.3f} max {done.max:.3f} ms, "
                    f"drift {done.drift:.3f} ms, {done.skipped} k missing, "
                    f"ledger lost {done.ledger_lost}",
                    file=sys.stderr,
                )
        rows += rows_for(interval, ours, naive)
    report(rows, as_json=args.json)


if __name__ == "__main__":
    main()

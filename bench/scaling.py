"""rrd's own CPU time per 1,000 ticks and per 1,000 execs at 1, 16, 64 and 256 workers: it
must stay flat as the pool grows (nothing in rrd polls per worker).

    .venv/bin/python bench/scaling.py [--sizes 1,16,64,256] [--ticks 1000] [--interval 10ms]
                                      [--runs 3] [--json] [--smoke]

Ticks: `rrd serve` with N tests/workers/echo.py workers and the ticker at --interval (health
checks on, at rrd's default), past `daemon.ready` and a settle; then the ledger's `delivered`
count is read through the control socket (`rrd.Status`, as `rrd status` does) and the rrd
process's CPU time (user + system of all its threads, from /proc/PID/task/*/schedstat: psutil's
cpu_times counts 10 ms clock ticks), and again once --ticks more were delivered. The figure is
the CPU time between the two readings per 1,000 ticks delivered. It includes whatever rrd does
on its own meanwhile (health checks, timers, its log thread): that is what would grow with N.

Execs: rrd has no exec call on its control socket, so an in-process driver builds a Pool of N
echo.py workers as rrd's server does (rrd.pool.Pool, same defaults, health checks on) and
times `time.process_time()` around --ticks `Pool.exec` calls, awaited one after another. The
driver's process is rrd's code on one asyncio loop, as in the daemon, plus a loop that awaits.

Every run goes through every size, ticks then execs; each row is the median and min-max over
--runs. The `256 / 1 workers` rows compare the largest pool with the smallest.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace

from footprint import ECHO, cpu_seconds, rrd_serving, workers_text
from table import SMOKE_HELP, Figure, Row, ratio, report

from rrd.config import PoolConfig
from rrd.config.units import parse_duration
from rrd.control.client import ControlClient
from rrd.pool import Pool
from rrd.proc import ProcessRegistry
from rrd.protocol.control import Payload
from rrd.worker import WorkerSpec, install_child_watcher

FLAT = 1.2
"""The largest pool may cost at most this many times the smallest's CPU per 1,000."""


def delivered(client: ControlClient) -> int:
    return client.call("rrd.Status")["plugins"]["ticker"]["ticks"]["delivered"]


def ticks_cpu_ms(workers: int, ticks: int, interval: str, settle: float) -> float:
    """rrd's CPU ms per 1,000 ticks delivered, with `workers` workers."""
    period = parse_duration(interval)
    with (
        tempfile.TemporaryDirectory() as folder,
        rrd_serving(folder, workers, interval=interval) as run,
    ):
        time.sleep(settle)
        with ControlClient(run.address) as client:
            first = delivered(client)
            cpu0 = cpu_seconds(run.pid)
            deadline = time.monotonic() + 10 * ticks * period + 30
            last = first
            while last - first < ticks:
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"rrd delivered {last - first} of {ticks} ticks; see {run.log}"
                    )
                time.sleep(max((ticks - (last - first)) * period, 0.01))
                last = delivered(client)
                cpu1 = cpu_seconds(run.pid)
            status = client.call("rrd.Status")["plugins"]["ticker"]["ticks"]
        if status["failed"]:
            raise SystemExit(f"{status['failed']} ticks failed: {status}; see {run.log}")
        return (cpu1 - cpu0) / (last - first) * 1e6


async def exec_cpu_ms_async(workers: int, execs: int, settle: float) -> float:
    config = replace(PoolConfig(), num_workers=workers, allocate_timeout=60.0)
    spec = WorkerSpec(
        (sys.executable, str(ECHO)),
        env=dict(os.environ),
        plugin="bench",
        allocate_timeout=config.allocate_timeout,
        kill_timeout=config.kill_timeout,
    )
    pool = Pool("bench", spec, config, registry=ProcessRegistry())
    await pool.start()
    try:
        await asyncio.sleep(settle)
        payload = Payload(b"tick")
        began = time.process_time()
        for _ in range(execs):
            await pool.exec(payload)
        return (time.process_time() - began) / execs * 1e6
    finally:
        await pool.destroy()


def exec_cpu_ms(workers: int, execs: int, settle: float) -> float:
    """The driver's CPU ms per 1,000 execs through a Pool of `workers` workers."""
    return asyncio.run(exec_cpu_ms_async(workers, execs, settle))


def rows_of(kind: str, results: dict[int, list[float]], sizes: Sequence[int]) -> list[Row]:
    rows = [
        Row("scaling", f"rrd CPU per 1,000 {kind}, {workers_text(n)}", Figure.of(results[n], "ms"))
        for n in sizes
    ]
    small, large = min(sizes), max(sizes)
    figure, base = Figure.of(results[large], "ms"), Figure.of(results[small], "ms")
    rows.append(
        Row(
            "scaling",
            f"rrd CPU per 1,000 {kind}, {large} / {small} workers",
            figure,
            {workers_text(small): base},
            ratio(figure.median, base.median, f"x {workers_text(small)}"),
            f"flat (within {FLAT:g}x)",
            figure.median <= FLAT * base.median,
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="1,16,64,256", help="pool sizes, comma-separated")
    parser.add_argument("--ticks", type=int, default=1000, help="ticks, and execs, per measure")
    parser.add_argument("--interval", default="10ms", help="ticker.interval")
    parser.add_argument("--settle", type=float, default=2.0, help="wait after READY, s")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="rows as JSON lines")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    count, settle, runs = args.ticks, args.settle, args.runs
    if args.smoke:
        sizes, count, settle, runs = [1, 4], 100, 0.3, 1
    install_child_watcher()

    ticks: dict[int, list[float]] = {size: [] for size in sizes}
    execs: dict[int, list[float]] = {size: [] for size in sizes}
    for run in range(runs):
        order = sizes if run % 2 == 0 else sizes[::-1]
        for size in order:
            ticks[size].append(ticks_cpu_ms(size, count, args.interval, settle))
            execs[size].append(exec_cpu_ms(size, count, settle))
            print(
                f"run {run + 1}: {size} workers: {ticks[size][-1]:.1f} ms per 1,000 ticks, "
                f"{execs[size][-1]:.1f} ms per 1,000 execs",
                file=sys.stderr,
            )
    report(rows_of("ticks", ticks, sizes) + rows_of("execs", execs, sizes), as_json=args.json)


if __name__ == "__main__":
    main()

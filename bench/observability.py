"""What the `status` and `metrics` sections cost rrd: the event loop's CPU per scrape of
GET /metrics and per probe of GET /ready, rrd's RSS with each section on, and its idle CPU.

    .venv/bin/python bench/observability.py [--workers 64] [--requests 300] [--rounds 5]
                                            [--round-idle 3] [--rss-runs 2] [--settle 5]
                                            [--idle-seconds 20] [--json] [--smoke]

Every rrd here runs --workers tests/workers/echo.py workers with the ticker at 1 s (as
bench/footprint.py starts it), its sections at free ports of 127.0.0.1.

1. Requests, one rrd with both sections on, past `daemon.ready` and a settle: each round is an
   idle window (no requests) and four blocks of --requests GETs, from one keep-alive connection
   or a new connection per request, of /metrics and of /ready?plugin=ticker, in an order
   rotated from round to round. A block's cost is the CPU time the loop's thread (rrd's main
   thread: /proc/PID/task/PID/schedstat, in ns) spent over the block, less what it spends idle
   over as long (its rate over all the idle windows), divided by the requests; the same for
   all of rrd's threads. The client times each request from its send to the body's last byte.
2. Memory: a fresh rrd with the sections off, status only, metrics only, both on, --rss-runs
   times each in a rotated order; its own process's VmRSS and USS (psutil) after READY and
   a --settle, and again after 10 requests to each route it serves.
3. Idle CPU: in the runs with both sections off and both on, rrd's CPU (all threads) over
   --idle-seconds after the settle, no request made.

Each row is the median and min-max over the rounds (1) or runs (2, 3).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
from footprint import RrdRun, cpu_seconds, rrd_serving
from table import SMOKE_HELP, Figure, Row, ratio, report

BENCH = "observability"
METRICS, READY = "/metrics", "/ready?plugin=ticker"
SCRAPE_TARGET_MS = 5.0
IDLE_DELTA_TARGET_PP = 0.02
"""Idle CPU with both sections on may exceed off by this (percentage points): ~0 at rest."""
SETTINGS = {
    "off": (),
    "status": ("status",),
    "metrics": ("metrics",),
    "both": ("status", "metrics"),
}
ROUTES = {"status": (READY, "/health?plugin=ticker"), "metrics": (METRICS,)}
USE_REQUESTS = 10


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def loop_cpu_seconds(pid: int) -> float:
    """CPU time of rrd's main thread, where its event loop (and so all HTTP work) runs."""
    return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[0]) / 1e9


def vm_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS in /proc/{pid}/status")


@dataclass
class Served:
    """An rrd with some sections on, and the port of each."""

    run: RrdRun
    ports: dict[str, int]

    def alive(self) -> None:
        code = self.run.process.poll()
        if code is not None:
            raise SystemExit(f"rrd exited {code} while measured; see {self.run.log}")


@contextlib.contextmanager
def serving(workers: int, sections: Sequence[str]) -> Iterator[Served]:
    """`rrd serve` with `sections` on; a port someone took between our probe and rrd's bind
    is retried with others."""
    attempts = 3
    for attempt in range(attempts):
        ports = {name: free_port() for name in sections}
        overrides = [f"{name}.address=127.0.0.1:{port}" for name, port in ports.items()]
        with contextlib.ExitStack() as stack:
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            try:
                run = stack.enter_context(
                    rrd_serving(folder, workers, overrides=overrides, ready_timeout=90)
                )
            except SystemExit:
                log = Path(folder, "rrd.log")
                if attempt + 1 < attempts and "cannot listen" in log.read_text():
                    continue
                raise
            yield Served(run, ports)
            return


@dataclass
class Block:
    """One block of requests: the CPU rrd spent over it, and each request's wall time."""

    loop_s: float
    all_s: float
    wall_s: float
    request_s: list[float]
    body_bytes: int


def block(pid: int, port: int, target: str, count: int, keep_alive: bool) -> Block:
    times = []
    size = 0
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    loop0, all0, wall0 = loop_cpu_seconds(pid), cpu_seconds(pid), time.perf_counter()
    try:
        for _ in range(count):
            began = time.perf_counter()
            connection.request("GET", target)
            response = connection.getresponse()
            body = response.read()
            times.append(time.perf_counter() - began)
            if response.status not in (200, 503) or not body:
                raise SystemExit(f"GET {target}: {response.status} {body[:200]!r}")
            size = len(body)
            if not keep_alive:
                connection.close()
    finally:
        connection.close()
    wall1, loop1, all1 = time.perf_counter(), loop_cpu_seconds(pid), cpu_seconds(pid)
    return Block(loop1 - loop0, all1 - all0, wall1 - wall0, times, size)


def idle(pid: int, seconds: float) -> tuple[float, float, float]:
    """rrd's loop and all-thread CPU seconds over `seconds` of no requests, and the wall."""
    loop0, all0, wall0 = loop_cpu_seconds(pid), cpu_seconds(pid), time.perf_counter()
    time.sleep(seconds)
    wall1, loop1, all1 = time.perf_counter(), loop_cpu_seconds(pid), cpu_seconds(pid)
    return loop1 - loop0, all1 - all0, wall1 - wall0


KINDS = ((METRICS, True), (METRICS, False), (READY, True), (READY, False))


def measure_requests(
    workers: int, count: int, rounds: int, settle: float, idle_s: float
) -> tuple[dict[tuple[str, bool], list[Block]], tuple[float, float]]:
    """The blocks of each kind, and rrd's idle CPU rate (loop, all threads) in s/s."""
    blocks: dict[tuple[str, bool], list[Block]] = {kind: [] for kind in KINDS}
    idles = []
    with serving(workers, ("status", "metrics")) as served:
        pid = served.run.pid
        time.sleep(settle)
        for target, keep_alive in KINDS:  # warm up: first scrape, first probe
            port = served.ports["metrics" if target == METRICS else "status"]
            block(pid, port, target, 10, keep_alive)
        for number in range(rounds):
            idles.append(idle(pid, idle_s))
            shift = number % len(KINDS)
            for target, keep_alive in KINDS[shift:] + KINDS[:shift]:
                port = served.ports["metrics" if target == METRICS else "status"]
                done = block(pid, port, target, count, keep_alive)
                blocks[target, keep_alive].append(done)
            served.alive()
            print(f"round {number + 1}: done", file=sys.stderr)
    wall = sum(i[2] for i in idles)
    return blocks, (sum(i[0] for i in idles) / wall, sum(i[1] for i in idles) / wall)


def memory(served: Served) -> tuple[float, float]:
    process = psutil.Process(served.run.pid)
    return vm_rss_mib(served.run.pid), process.memory_full_info().uss / 2**20


def measure_rest(
    workers: int, runs: int, settle: float, idle_s: float
) -> dict[str, list[dict[str, float]]]:
    """Each setting's memory (settled, and after use) and, for off and both, idle CPU %."""
    results: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
    names = list(SETTINGS)
    for number in range(runs):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            with serving(workers, SETTINGS[name]) as served:
                time.sleep(settle)
                rss, uss = memory(served)
                figures = {"rss_mib": rss, "uss_mib": uss}
                if name in ("off", "both"):
                    pid = served.run.pid
                    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
                    time.sleep(idle_s)
                    cpu1, wall1 = cpu_seconds(pid), time.monotonic()
                    figures["cpu_pct"] = 100 * (cpu1 - cpu0) / (wall1 - wall0)
                for section, port in served.ports.items():
                    for target in ROUTES[section]:
                        block(served.run.pid, port, target, USE_REQUESTS, keep_alive=False)
                figures["used_rss_mib"], figures["used_uss_mib"] = memory(served)
                served.alive()
            results[name].append(figures)
            print(f"run {number + 1}: {name}: {figures}", file=sys.stderr)
    return results


def p99(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def request_rows(
    blocks: dict[tuple[str, bool], list[Block]], idle_rate: tuple[float, float], size: str
) -> list[Row]:
    loop_rate, all_rate = idle_rate
    rows = []
    for (target, keep_alive), done in blocks.items():
        what = "scrape of /metrics" if target == METRICS else "probe of /ready"
        how = "keep-alive" if keep_alive else "new connection each"
        scale, unit = (1e3, "ms") if target == METRICS else (1e6, "µs")
        count = len(done[0].request_s)
        loop = Figure.of(((b.loop_s - loop_rate * b.wall_s) / count * scale for b in done), unit)
        idle_share = Figure.of((loop_rate * b.wall_s / count * scale for b in done), unit)
        every = Figure.of(((b.all_s - all_rate * b.wall_s) / count * scale for b in done), unit)
        idle_pct = 100 * idle_share.median / max(loop.median + idle_share.median, 1e-9)
        if target == METRICS:
            target_text = f"< {SCRAPE_TARGET_MS:g} ms"
            met = loop.median * 1e3 / scale < SCRAPE_TARGET_MS
        else:
            target_text, met = "", None
        rows += [
            Row(
                BENCH,
                f"loop CPU per {what}, {how}, {size}",
                loop,
                {"all of rrd's threads": every, "idle loop over as long (subtracted)": idle_share},
                f"{ratio(loop.median, every.median, 'of all threads')}; {idle_pct:.2f} % was idle",
                target_text,
                met,
            ),
            Row(
                BENCH,
                f"client wall time per {what}, {how}: median",
                Figure.of((statistics.median(b.request_s) * scale for b in done), unit),
            ),
            Row(
                BENCH,
                f"client wall time per {what}, {how}: p99",
                Figure.of((p99(b.request_s) * scale for b in done), unit),
            ),
        ]
    for target in (METRICS, READY):
        sizes = Figure.of((b.body_bytes / 1024 for b in blocks[target, True]), "KiB")
        rows.append(Row(BENCH, f"body of GET {target}, {size}", sizes))
    return rows


def rest_rows(results: dict[str, list[dict[str, float]]], size: str, settle: float) -> list[Row]:
    rows = []
    labels = {"off": "sections off", "status": "status only", "metrics": "metrics only"}
    labels["both"] = "status and metrics"
    measures = (
        ("rss_mib", f"RSS {settle:g}s after READY"),
        ("uss_mib", f"USS {settle:g}s after READY"),
        ("used_rss_mib", f"RSS after {USE_REQUESTS} GETs of each route"),
        ("used_uss_mib", f"USS after {USE_REQUESTS} GETs of each route"),
    )
    for key, what in measures:
        off = Figure.of((r[key] for r in results["off"]), "MiB")
        for name, label in labels.items():
            figure = Figure.of((r[key] for r in results[name]), "MiB")
            if name == "off":
                rows.append(Row(BENCH, f"{what}, {label}, {size}", figure))
                continue
            delta = figure.median - off.median
            rows.append(
                Row(
                    BENCH,
                    f"{what}, {label}, {size}",
                    figure,
                    {"sections off": off},
                    f"{delta:+.2f} MiB vs off",
                    "reported",
                )
            )
    off = Figure.of((r["cpu_pct"] for r in results["off"]), "%")
    both = Figure.of((r["cpu_pct"] for r in results["both"]), "%")
    delta = both.median - off.median
    rows.append(
        Row(
            BENCH,
            f"idle CPU, status and metrics on, no requests, {size}, ticks 1s",
            both,
            {"sections off": off},
            f"{delta:+.3f} pp vs off",
            f"delta ~0 (< {IDLE_DELTA_TARGET_PP:g} pp)",
            delta < IDLE_DELTA_TARGET_PP,
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--requests", type=int, default=300, help="GETs in each block")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of request blocks")
    parser.add_argument("--round-idle", type=float, default=3.0, help="idle window per round")
    parser.add_argument("--rss-runs", type=int, default=2, help="fresh rrds per setting")
    parser.add_argument("--settle", type=float, default=5.0, help="wait after READY")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="idle CPU window")
    parser.add_argument("--json", action="store_true", help="rows as JSON lines")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    workers, count, rounds, round_idle = args.workers, args.requests, args.rounds, args.round_idle
    runs, settle, idle_s = args.rss_runs, args.settle, args.idle_seconds
    if args.smoke:
        workers, count, rounds, round_idle, runs, settle, idle_s = 4, 20, 1, 0.3, 1, 0.5, 1.0
    size = f"{workers} worker{'' if workers == 1 else 's'}"
    blocks, idle_rate = measure_requests(workers, count, rounds, settle, round_idle)
    rows = request_rows(blocks, idle_rate, size)
    rows += rest_rows(measure_rest(workers, runs, settle, idle_s), size, settle)
    report(rows, as_json=args.json)


if __name__ == "__main__":
    main()

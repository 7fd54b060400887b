"""rrd's own weight at rest: RSS, USS and idle CPU with 1, 64 and 256 workers, next to the
supervisor daemons of supervisord and circus with 50 processes, all in the same run.

    .venv/bin/python bench/footprint.py [--sizes 1,64,256] [--seconds 30] [--runs 3]
                                        [--health 10s] [-o KEY=VALUE ...] [--json] [--smoke]

Each rrd run starts `rrd serve` with N tests/workers/echo.py workers, the ticker at 1 s and
health checks on (at rrd's default interval unless --health), waits for `daemon.ready`, lets
it settle, then samples rrd's own process (not its workers) over --seconds: its CPU time over
the window divided by the window, and its RSS and USS (psutil memory_full_info) at the end.
Each peer runs 50 processes of bench/idle_worker.py (a Python program that imports rrd.sdk and
waits) and its daemon (supervisord, circusd) is sampled the same way. Every run goes through
rrd at each size and each peer, in an order rotated from run to run; each row is the median
and min-max over --runs. Every daemon runs without PYTHONDONTWRITEBYTECODE, as a user gets it
(bytecode cached), and rrd's own modules are compiled once before the first run.

Also the helpers the other rrd benches share (bench/stop.py, bench/scaling.py): `rrd_serving`,
`cpu_seconds`, `wait_exit`, `check_gone`, `clean_env`.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import peers
import psutil
from recovery import follow
from table import SMOKE_HELP, Figure, Row, ratio, report

ROOT = Path(__file__).resolve().parent.parent
ECHO = ROOT / "tests" / "workers" / "echo.py"
IDLE_WORKER = ROOT / "bench" / "idle_worker.py"

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
    allocate_timeout: 60s
"""

READY = re.compile('"daemon.ready"')
LISTENING = re.compile(r'"event": "control.listening".*"address": "([^"]+)"')

RSS_TARGET_MIB = 22.0
CPU_TARGET_PCT = 0.1
TARGET_SIZE = 64


def workers_text(count: int) -> str:
    return f"{count} worker{'' if count == 1 else 's'}"


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without PYTHONDONTWRITEBYTECODE: a daemon run as a user runs it, with
    its bytecode cached (compiling every module at each start costs RSS and start time)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, **(extra or {})}


def cpu_seconds(pid: int) -> float:
    """CPU time of all of `pid`'s threads, to the nanosecond (/proc/PID/task/*/schedstat).

    psutil's cpu_times counts clock ticks of 10 ms: over 30 s of a process using ~1 ms a
    second, that alone made the figure swing between 0.13 and 0.33 %."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError):
            total += int(stat.read_text().split()[0])
    return total / 1e9


def wait_exit(pid: int, timeout: float) -> bool:
    """Whether `pid` exited within `timeout`, seen the moment it does (a pidfd turns readable):
    Popen.wait polls every 50 ms, too coarse for a stop that takes 0.1 s."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    finally:
        os.close(fd)


Pids = dict[int, float]
"""Processes by pid, with their start time: a pid reused later is not the same process."""


def pids_with_start(pids: Sequence[int]) -> Pids:
    found = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found[pid] = psutil.Process(pid).create_time()
    return found


def survivors(pids: Pids) -> list[int]:
    """Those of `pids` still running (a zombie has exited: it is not running)."""
    alive = []
    for pid, started in pids.items():
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            if process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
    return alive


def kill_all(pids: Pids) -> None:
    for pid in survivors(pids):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def check_gone(pids: Pids, who: str) -> None:
    """Fail loudly when a worker outlived its supervisor's stop (and kill it, to leave none)."""
    deadline = time.monotonic() + 2.0
    left = survivors(pids)
    while left and time.monotonic() < deadline:  # a reparented child is reaped by init
        time.sleep(0.01)
        left = survivors(pids)
    if left:
        kill_all(pids)
        raise SystemExit(f"{who}: {len(left)} worker(s) still running after its stop: {left}")


@dataclass
class RrdRun:
    """One `rrd serve` started by `rrd_serving`, past its `daemon.ready`."""

    process: subprocess.Popen[bytes]
    config: Path
    log: Path
    ready_s: float
    address: str
    """Its control socket, for rrd.control.client.ControlClient."""

    @property
    def pid(self) -> int:
        return self.process.pid

    def worker_pids(self) -> Pids:
        children = psutil.Process(self.pid).children(recursive=True)
        return pids_with_start([child.pid for child in children])


@contextlib.contextmanager
def rrd_serving(
    folder: str,
    workers: int,
    *,
    worker: Path = ECHO,
    interval: str = "1s",
    overrides: Sequence[str] = (),
    ready_timeout: float = 120.0,
) -> Iterator[RrdRun]:
    """`rrd serve` with `workers` of `worker`, ready; on the way out it is stopped if still up
    (SIGTERM, then SIGKILL at a deadline), and none of its workers is left."""
    config, log = Path(folder, "rr.yaml"), Path(folder, "rrd.log")
    config.write_text(
        CONFIG.format(python=sys.executable, worker=worker, interval=interval, workers=workers)
    )
    argv = [sys.executable, "-m", "rrd", "serve", "-c", str(config)]
    for override in overrides:
        argv += ["-o", override]
    with log.open("w") as errors:
        began = time.monotonic()
        process = subprocess.Popen(
            argv, cwd=ROOT, stderr=errors, stdin=subprocess.DEVNULL, env=clean_env()
        )
    known: Pids = {}
    try:
        follow(log, READY, 0, ready_timeout)
        ready_s = time.monotonic() - began
        listening = LISTENING.search(log.read_text())
        run = RrdRun(process, config, log, ready_s, listening.group(1) if listening else "")
        known = run.worker_pids()
        yield run
    finally:
        with contextlib.suppress(psutil.Error):
            known |= pids_with_start([c.pid for c in psutil.Process(process.pid).children(True)])
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            if not wait_exit(process.pid, 90):
                process.kill()
        process.wait()
        kill_all(known)


def sample(pid: int, settle: float, seconds: float) -> dict[str, float]:
    """One daemon at rest: CPU % over `seconds` after `settle`, RSS and USS (MiB) at the end."""
    time.sleep(settle)
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    cpu1, wall1 = cpu_seconds(pid), time.monotonic()
    memory = psutil.Process(pid).memory_full_info()
    return {
        "cpu_pct": 100 * (cpu1 - cpu0) / (wall1 - wall0),
        "rss_mib": memory.rss / 2**20,
        "uss_mib": memory.uss / 2**20,
    }


def rrd_sample(workers: int, settle: float, seconds: float, overrides: Sequence[str]) -> dict:
    with (
        tempfile.TemporaryDirectory() as folder,
        rrd_serving(folder, workers, overrides=overrides) as run,
    ):
        figures = sample(run.pid, settle, seconds)
        figures["ready_s"] = run.ready_s
        code = run.process.poll()
        if code is not None:
            raise SystemExit(f"rrd exited {code} while sampled; see {run.log}")
        return figures


def peer_sample(peer: str, processes: int, settle: float, seconds: float) -> dict:
    with peers.serving(peer, IDLE_WORKER, processes) as run:
        return sample(run.pid, settle, seconds)


def rows_of(
    results: dict[tuple[str, int], list[dict]],
    sizes: Sequence[int],
    reference: int,
    peer_names: Sequence[str],
    peer_processes: int,
    settings: str,
) -> list[Row]:
    measures = (
        ("rss_mib", "RSS", "MiB", f"<= {RSS_TARGET_MIB:g} MiB", lambda m: m <= RSS_TARGET_MIB),
        ("uss_mib", "USS", "MiB", "", None),
        ("cpu_pct", "idle CPU", "%", f"< {CPU_TARGET_PCT:g} %", lambda m: m < CPU_TARGET_PCT),
    )
    rows = []
    for key, name, unit, target, meets in measures:
        for size in sizes:
            figure = Figure.of((r[key] for r in results["rrd", size]), unit)
            row = Row("footprint", f"{name}, {workers_text(size)} ({settings})", figure)
            if size == reference:
                versus = {
                    f"{peer} ({peer_processes})": Figure.of(
                        (r[key] for r in results[peer, peer_processes]), unit
                    )
                    for peer in peer_names
                }
                words = "; ".join(
                    ratio(figure.median, value.median, f"of {label}")
                    for label, value in versus.items()
                )
                met = meets(figure.median) if meets else None
                row = Row(row.bench, row.figure, figure, versus, words, target, met)
            rows.append(row)
    for size in sizes:
        figure = Figure.of((r["ready_s"] for r in results["rrd", size]), "s")
        rows.append(Row("footprint", f"start to daemon.ready, {workers_text(size)}", figure))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="1,64,256", help="rrd pool sizes, comma-separated")
    parser.add_argument("--peer-processes", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0, help="CPU sampling window")
    parser.add_argument("--settle", type=float, default=3.0, help="wait after READY")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--health", default="", help="ticker.pool.health.interval (default: rrd's)")
    parser.add_argument("-o", "--override", action="append", default=[])
    parser.add_argument("--json", action="store_true", help="rows as JSON lines")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    processes, seconds, settle, runs = args.peer_processes, args.seconds, args.settle, args.runs
    if args.smoke:
        sizes, processes, seconds, settle, runs = [1, 4], 4, 2.0, 0.5, 1
    reference = TARGET_SIZE if TARGET_SIZE in sizes else max(sizes)
    overrides = list(args.override)
    if args.health:
        overrides.append(f"ticker.pool.health.interval={args.health}")
    health = args.health or "10s"
    settings = f"ticks 1s, health {health}"

    peers.install()
    peer_names = peers.available()
    compileall.compile_dir(ROOT / "rrd", quiet=1)
    subjects = [("rrd", size) for size in sizes] + [(peer, processes) for peer in peer_names]
    results: dict[tuple[str, int], list[dict]] = {subject: [] for subject in subjects}
    for run in range(runs):
        shift = run % len(subjects)
        for who, size in subjects[shift:] + subjects[:shift]:
            if who == "rrd":
                figures = rrd_sample(size, settle, seconds, overrides)
            else:
                figures = peer_sample(who, size, settle, seconds)
            results[who, size].append(figures)
            print(f"run {run + 1}: {who} {size}: {json.dumps(figures)}", file=sys.stderr)
    report(rows_of(results, sizes, reference, peer_names, processes, settings), as_json=args.json)


if __name__ == "__main__":
    main()

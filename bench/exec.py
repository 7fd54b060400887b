"""Exec round trip: `Pool.exec` to rrd.sdk echo workers, next to the raw-pipe floor,
ProcessPoolExecutor and multiprocessing.Pool; run by hand.

    .venv/bin/python bench/exec.py [--reps 3] [--loop asyncio|uvloop]
                                   [--placement split|same|none] [--json] [--smoke]

For payloads of 64 B, 4 KiB and 256 KiB and for 1 and 2 workers it measures execs per second
and the p50 and p99 latency (µs) of
- rrd: `Pool.exec` driven in-process on one event loop, its workers running
  tests/workers/sdk_echo.py (rrd.sdk, replying `OK:` + body), as many execs in flight as
  workers (one caller task per worker, each awaiting its exec);
- the floor: a parent Python process and one child per worker passing the same frame bytes
  with bare os.read/os.write, one in flight per child (bench/exec_floor_child.py);
- ProcessPoolExecutor(max_workers=N) and multiprocessing.Pool(N), with the platform's default
  start method: round trips of the same body through an echo function, N in flight.
Each repetition runs the four one after another for every case; 3 repetitions give each
figure's median and spread (min-max). Every peer's processes are started and warmed up
before its clock starts, and stopped after. The targets (1 worker, 64 B and 4 KiB): rrd at
>= 0.85 of the floor's throughput and >= 3x ProcessPoolExecutor's.

Where the processes run decides what a round trip costs: on different CPUs each message
wakes a sleeping CPU (~10 µs each way on a VM), on the same CPU it is a context switch, and
the raw-pipe floor is ~5x faster. Left to the kernel, a pair flips between the two from run
to run, so by default (`--placement split`) this process and every peer's supervisor side
run on the first CPU and all workers on the others; `same` puts everything on the first CPU
(the figures are then CPU cost alone), `none` leaves it to the kernel.

`--loop uvloop` runs rrd's loop on uvloop when it is importable (it is not a dependency); as
long as rrd's spawn passes asyncio-only arguments uvloop refuses, the run stops saying so.
A run takes a minute or two; `--smoke` (64 B, 200 execs, 1 repetition) a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exec_floor_child import body_of  # noqa: E402
from table import SMOKE_HELP, Figure, Row, ratio, report  # noqa: E402

from rrd.config import PoolConfig  # noqa: E402
from rrd.pool import Pool, PoolFatal  # noqa: E402
from rrd.proc import ProcessRegistry  # noqa: E402
from rrd.protocol.control import Payload  # noqa: E402
from rrd.worker import WorkerSpec, install_child_watcher  # noqa: E402

FLOOR = Path(__file__).resolve().parent / "exec_floor_child.py"
WORKER = ROOT / "tests" / "workers" / "sdk_echo.py"
SIZES = {64: "64 B", 4096: "4 KiB", 256 * 1024: "256 KiB"}
EXECS = {64: 6000, 4096: 6000, 256 * 1024: 1000}
"""Timed round trips per measurement: a second or so of rrd's at each size."""
WARMUP = 100
WORKER_COUNTS = (1, 2)
TARGET_SIZES = (64, 4096)
TARGET_OF_FLOOR = 0.85
TARGET_OVER_PPE = 3.0
DEADLINE = 120.0
"""The longest any one measurement may take before the bench gives up on it."""

PEERS = ("rrd", "floor", "ProcessPoolExecutor", "multiprocessing.Pool")


@dataclass(frozen=True)
class Run:
    """One measurement: round trips per second over the whole run, and each one's latency."""

    rate: float
    p50_us: float
    p99_us: float

    @classmethod
    def of(cls, latencies_ns: list[int], elapsed_ns: int) -> Run:
        cuts = statistics.quantiles(latencies_ns, n=100, method="inclusive")
        return cls(len(latencies_ns) * 1e9 / elapsed_ns, cuts[49] / 1e3, cuts[98] / 1e3)


CPUs = frozenset[int] | None
"""Where processes run; None leaves it to the kernel."""


@dataclass(frozen=True)
class Placement:
    """Which CPUs the supervisor side (this process, the floor's parent) and the workers run
    on. `split` (the default): the first CPU for the supervisor, the others for the workers,
    so every message wakes a process on another CPU, as in a deployment; `same`: all on the
    first CPU, every hand-off a context switch, the figures pure CPU cost; `none`: wherever the
    kernel puts them, which on a busy or small machine flips a round trip between the two."""

    supervisor: CPUs
    workers: CPUs

    @classmethod
    def named(cls, mode: str) -> Placement:
        cpus = sorted(os.sched_getaffinity(0))
        first = frozenset(cpus[:1])
        if mode == "same":
            return cls(first, first)
        if mode == "split":
            return cls(first, frozenset(cpus[1:]) or first)
        return cls(None, None)


def pin(cpus: CPUs, pid: int = 0) -> None:
    """Move a process (this one by default) to `cpus`."""
    if cpus:
        os.sched_setaffinity(pid, cpus)


def cpu_list(cpus: CPUs) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus)) if cpus else "-"


def echo(body: bytes) -> bytes:
    """What the Python peers' workers run: the SDK echo worker's answer."""
    return b"OK:" + body


# rrd


def pool_of(workers: int) -> Pool:
    """A pool of sdk_echo workers, built as the ticker plugin builds its own."""
    config = PoolConfig()
    config = replace(
        config,
        num_workers=workers,
        allocate_timeout=10.0,
        destroy_timeout=10.0,
        reset_timeout=10.0,
        restart=replace(config.restart, max_retries=1),  # a failed start fails the bench
    )
    path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    spec = WorkerSpec(
        (sys.executable, str(WORKER)),
        env={**os.environ, "PYTHONPATH": path},
        plugin="bench",
        allocate_timeout=config.allocate_timeout,
        kill_timeout=config.kill_timeout,
    )
    return Pool("bench", spec, config, registry=ProcessRegistry())


async def drive_pool(pool: Pool, payload: Payload, callers: int, count: int) -> Run:
    """`count` execs from `callers` tasks, each awaiting one exec at a time."""
    latencies: list[int] = []
    clock = time.perf_counter_ns

    async def caller(execs: int) -> None:
        for _ in range(execs):
            began = clock()
            await pool.exec(payload)
            latencies.append(clock() - began)

    start = time.monotonic_ns()
    async with asyncio.timeout(DEADLINE):
        await asyncio.gather(*(caller(n) for n in shares(count, callers)))
    return Run.of(latencies, time.monotonic_ns() - start)


async def rrd_run(size: int, workers: int, count: int, warmup: int, cpus: CPUs) -> Run:
    payload = Payload(body_of(size))
    pool = pool_of(workers)
    try:
        try:
            async with asyncio.timeout(DEADLINE):
                await pool.start()
        except PoolFatal as exc:
            raise SystemExit(f"rrd's pool did not start on this loop: {exc}") from None
        if len(pool.workers()) != workers:
            raise SystemExit(f"rrd started {len(pool.workers())} of {workers} workers")
        for worker in pool.workers():
            pin(cpus, worker.pid)
        reply = await pool.exec(payload)
        if reply.payload.body != echo(payload.body):
            raise SystemExit(f"the sdk echo worker answered {reply.payload.body[:40]!r}")
        await drive_pool(pool, payload, workers, warmup)
        return await drive_pool(pool, payload, workers, count)
    finally:
        await pool.destroy()


# the floor


def floor_run(size: int, children: int, count: int, warmup: int, cpus: CPUs) -> Run:
    """One parent process and `children` children, `count` round trips in all."""
    command = [sys.executable, str(FLOOR), "parent", str(size), str(count), str(warmup)]
    process = subprocess.Popen(
        [*command, str(children), cpu_list(cpus)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + DEADLINE
        if read_line(process, deadline) != b"ready\n":
            raise SystemExit("the floor's parent did not start")
        assert process.stdin is not None
        process.stdin.write(b"go\n")
        process.stdin.flush()
        result = json.loads(read_line(process, deadline))
    finally:
        stop_group(process)
    return Run.of(result["latencies_ns"], result["end_ns"] - result["start_ns"])


def read_line(process: subprocess.Popen[bytes], deadline: float) -> bytes:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
    if not ready:
        raise SystemExit("the floor's parent said nothing in time")
    return process.stdout.readline()


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the parent and its children (one process group), and reap the parent."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()


# ProcessPoolExecutor and multiprocessing.Pool

Submit = Callable[[Callable[[], None]], None]
"""Send one echo; call the given function (on another thread) once its answer is in."""


def windowed(submit: Submit, inflight: int, count: int) -> Run:
    """`count` round trips, `inflight` at a time, each timed from its submit to its answer."""
    slots = threading.Semaphore(inflight)
    latencies: list[int] = []
    clock = time.perf_counter_ns

    def answered(began: int) -> None:
        latencies.append(clock() - began)
        slots.release()

    start = time.monotonic_ns()
    for _ in range(count):
        if not slots.acquire(timeout=DEADLINE):
            raise SystemExit("a round trip did not come back in time")
        began = clock()
        submit(lambda began=began: answered(began))
    for _ in range(inflight):
        if not slots.acquire(timeout=DEADLINE):
            raise SystemExit("a round trip did not come back in time")
    return Run.of(latencies, time.monotonic_ns() - start)


def serial(call: Callable[[], bytes], count: int) -> Run:
    """`count` round trips one after another, as a caller of `.result()` or `.apply()` does."""
    latencies: list[int] = []
    clock = time.perf_counter_ns
    start = time.monotonic_ns()
    for _ in range(count):
        began = clock()
        call()
        latencies.append(clock() - began)
    return Run.of(latencies, time.monotonic_ns() - start)


def ppe_run(size: int, workers: int, count: int, warmup: int, cpus: CPUs) -> Run:
    body = body_of(size)
    with ProcessPoolExecutor(workers, initializer=pin, initargs=(cpus,)) as executor:

        def call() -> bytes:
            return executor.submit(echo, body).result(timeout=DEADLINE)

        def submit(done: Callable[[], None]) -> None:
            future = executor.submit(echo, body)
            future.add_done_callback(lambda future: checked(future, done))

        if call() != echo(body):
            raise SystemExit("ProcessPoolExecutor answered something else")
        if workers == 1:
            serial(call, warmup)
            return serial(call, count)
        windowed(submit, workers, warmup)
        return windowed(submit, workers, count)


def checked(future: Future[bytes], done: Callable[[], None]) -> None:
    if future.exception() is None:
        done()


def mp_run(size: int, workers: int, count: int, warmup: int, cpus: CPUs) -> Run:
    body = body_of(size)
    pool = multiprocessing.Pool(workers, initializer=pin, initargs=(cpus,))
    try:

        def call() -> bytes:
            return pool.apply_async(echo, (body,)).get(timeout=DEADLINE)

        def submit(done: Callable[[], None]) -> None:
            pool.apply_async(echo, (body,), callback=lambda _reply: done())

        if call() != echo(body):
            raise SystemExit("multiprocessing.Pool answered something else")
        if workers == 1:
            serial(call, warmup)
            return serial(call, count)
        windowed(submit, workers, warmup)
        return windowed(submit, workers, count)
    finally:
        pool.terminate()
        pool.join()


# the table


def shares(count: int, parts: int) -> list[int]:
    """`count` split into `parts` near-equal shares."""
    return [count // parts + (index < count % parts) for index in range(parts)]


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """None for asyncio's own: asyncio.Runner then attaches the child watcher to its loop."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        raise SystemExit("--loop uvloop: uvloop is not importable (pip install uvloop)") from None
    return uvloop.new_event_loop


def measure(
    sizes: list[int],
    reps: int,
    execs: Callable[[int], int],
    warmup: int,
    loop: str,
    placement: Placement,
) -> dict[tuple[int, int, str], list[Run]]:
    """Every peer for every case, interleaved: each repetition runs them all once in turn."""
    new_loop = loop_factory(loop)
    pin(placement.supervisor)
    cpus = placement.workers
    runs: dict[tuple[int, int, str], list[Run]] = {}
    for rep in range(reps):
        for workers in WORKER_COUNTS:
            for size in sizes:
                count = execs(size)
                with asyncio.Runner(loop_factory=new_loop) as runner:
                    rrd = runner.run(rrd_run(size, workers, count, warmup, cpus))
                measured = {
                    "rrd": rrd,
                    "floor": floor_run(size, workers, count, warmup, cpus),
                    "ProcessPoolExecutor": ppe_run(size, workers, count, warmup, cpus),
                    "multiprocessing.Pool": mp_run(size, workers, count, warmup, cpus),
                }
                for peer, run in measured.items():
                    runs.setdefault((workers, size, peer), []).append(run)
                print(
                    f"rep {rep + 1}/{reps}, {workers} worker(s), {SIZES[size]}: "
                    + ", ".join(f"{peer} {run.rate:.0f}/s" for peer, run in measured.items()),
                    file=sys.stderr,
                    flush=True,
                )
    return runs


def figure(runs: list[Run], field: str, unit: str) -> Figure:
    """One field of a peer's runs, over the repetitions."""
    return Figure.of((getattr(run, field) for run in runs), unit)


def rows_of(runs: dict[tuple[int, int, str], list[Run]], sizes: list[int]) -> list[Row]:
    rows = []
    for workers in WORKER_COUNTS:
        for size in sizes:
            case = f"{SIZES[size]}, {workers} worker{'s' if workers > 1 else ''}"

            measured = {peer: runs[workers, size, peer] for peer in PEERS}
            rates = {peer: figure(measured[peer], "rate", "/s") for peer in PEERS}
            rrd, floor, ppe = rates["rrd"], rates["floor"], rates["ProcessPoolExecutor"]
            targeted = workers == 1 and size in TARGET_SIZES
            rows.append(
                Row(
                    bench="exec",
                    figure=f"execs/s, {case}",
                    rrd=rrd,
                    versus={peer: rates[peer] for peer in PEERS[1:]},
                    ratio=ratio(rrd.median, floor.median, "of the floor")
                    + "; "
                    + ratio(rrd.median, ppe.median, "x ProcessPoolExecutor"),
                    target=(
                        f">= {TARGET_OF_FLOOR} of the floor; >= {TARGET_OVER_PPE:g}x "
                        "ProcessPoolExecutor"
                        if targeted
                        else ""
                    ),
                    met=(
                        rrd.median >= TARGET_OF_FLOOR * floor.median
                        and rrd.median >= TARGET_OVER_PPE * ppe.median
                        if targeted
                        else None
                    ),
                )
            )
            for field, name in (("p50_us", "p50 latency"), ("p99_us", "p99 latency")):
                values = {peer: figure(measured[peer], field, "µs") for peer in PEERS}
                rows.append(
                    Row(
                        bench="exec",
                        figure=f"{name}, {case}",
                        rrd=values["rrd"],
                        versus={peer: values[peer] for peer in PEERS[1:]},
                        ratio=ratio(values["rrd"].median, values["floor"].median, "x the floor's"),
                    )
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument(
        "--placement",
        choices=("split", "same", "none"),
        default="split",
        help="split: supervisor on the first CPU, workers on the others (default); same: all "
        "on the first CPU; none: wherever the kernel puts them",
    )
    parser.add_argument("--json", action="store_true", help="print rows as JSON lines")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    install_child_watcher()
    if args.smoke:
        sizes, reps, warmup = [64], 1, 20

        def execs(size: int) -> int:
            return 200
    else:
        sizes, reps, warmup = list(SIZES), args.reps, WARMUP

        def execs(size: int) -> int:
            return EXECS[size]

    placement = Placement.named(args.placement)
    print(
        f"python {sys.version.split()[0]}, loop {args.loop}, {os.cpu_count()} CPUs, placement "
        f"{args.placement} (supervisor on {cpu_list(placement.supervisor)}, workers on "
        f"{cpu_list(placement.workers)}), multiprocessing start method "
        f"{multiprocessing.get_start_method()}",
        file=sys.stderr,
    )
    runs = measure(sizes, reps, execs, warmup, args.loop, placement)
    report(rows_of(runs, sizes), as_json=args.json)


if __name__ == "__main__":
    main()

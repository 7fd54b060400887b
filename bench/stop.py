"""How long a stop takes: SIGTERM to the daemon's exit, with every worker gone, for rrd next to
supervisord and circus, in the same run.

    .venv/bin/python bench/stop.py [--runs 5] [--grace 1s] [--json] [--smoke]

Three cases for rrd: 50 and 64 tests/workers/echo.py workers (they leave on the stop frame),
and 50 tests/workers/ignores_term.py workers, which ignore the stop frame and SIGTERM: rrd
waits `destroy_timeout`, sends SIGTERM, waits `kill_timeout`, then SIGKILLs them, so its stop
is bounded by the two (both set to --grace). The time is from the SIGTERM to the moment the
rrd process exits (seen through a pidfd, not polled).

Each peer runs 50 processes of the same kind (bench/idle_worker.py, which SIGTERM ends, and
tests/workers/ignores_term.py) with its own default settings and is timed by
bench/peers.py's `run.stop()` (SIGTERM until the daemon and all its children exited).

After every stop, rrd's or a peer's, no worker process may be left: the script fails loudly
if one is. Each row is the median and min-max over --runs; runs interleave rrd and the peers.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import peers
from footprint import (
    ECHO,
    IDLE_WORKER,
    ROOT,
    check_gone,
    pids_with_start,
    rrd_serving,
    wait_exit,
)
from table import SMOKE_HELP, Figure, Row, ratio, report

IGNORES_TERM = ROOT / "tests" / "workers" / "ignores_term.py"
TARGET_SIZE = 64
TARGET_SECONDS = 0.3
SETTLE = 0.3
"""After READY: every worker is up; let the first start-up work end before the stop."""


def rrd_stop(workers: int, worker: Path, overrides: Sequence[str], bound: float) -> float:
    """Seconds from SIGTERM to rrd's exit; fails when it exits non-zero or leaves a worker."""
    with (
        tempfile.TemporaryDirectory() as folder,
        rrd_serving(folder, workers, worker=worker, overrides=overrides) as run,
    ):
        pids = run.worker_pids()
        if len(pids) != workers:
            raise SystemExit(f"rrd runs {len(pids)} processes under it, not {workers}")
        time.sleep(SETTLE)
        began = time.monotonic()
        os.kill(run.pid, signal.SIGTERM)
        if not wait_exit(run.pid, bound + 30):
            raise SystemExit(f"rrd did not exit within {bound + 30:g}s of SIGTERM; see {run.log}")
        seconds = time.monotonic() - began
        code = run.process.wait()
        check_gone(pids, f"rrd ({workers} of {worker.name})")
        if code != 0:
            raise SystemExit(f"rrd exited {code} on SIGTERM; see {run.log}")
        return seconds


def peer_stop(peer: str, processes: int, worker: Path) -> float:
    """Seconds from SIGTERM to the peer's exit and its children's; fails when one is left."""
    with peers.serving(peer, worker, processes) as run:
        pids = pids_with_start(run.child_pids())
        if len(pids) != processes:
            raise SystemExit(f"{peer} runs {len(pids)} processes, not {processes}")
        time.sleep(SETTLE)
        seconds = run.stop()
        check_gone(pids, f"{peer} ({processes} of {worker.name})")
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--peer-processes", type=int, default=50)
    parser.add_argument(
        "--grace", type=float, default=1.0, help="rrd's destroy_timeout and kill_timeout, s"
    )
    parser.add_argument("--json", action="store_true", help="rows as JSON lines")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    runs, processes, sizes = args.runs, args.peer_processes, [args.peer_processes, TARGET_SIZE]
    if args.smoke:
        runs, processes, sizes = 1, 4, [4]
    grace = f"{args.grace:g}s"
    strict = [f"ticker.pool.destroy_timeout={grace}", f"ticker.pool.kill_timeout={grace}"]
    bound = 2 * args.grace

    peers.install()
    peer_names = peers.available()
    cases: list[tuple[str, int, Path]] = [("rrd", size, ECHO) for size in sizes]
    cases += [("rrd", processes, IGNORES_TERM)]
    for peer in peer_names:
        cases.append((peer, processes, IDLE_WORKER))
        if not args.smoke:  # their default grace periods: 10 s (supervisord), 30 s (circus)
            cases.append((peer, processes, IGNORES_TERM))
    times: dict[tuple[str, int, Path], list[float]] = {case: [] for case in cases}
    for run in range(runs):
        shift = run % len(cases)
        for case in cases[shift:] + cases[:shift]:
            who, size, worker = case
            if who == "rrd":
                overrides = strict if worker == IGNORES_TERM else []
                seconds = rrd_stop(size, worker, overrides, bound)
            else:
                seconds = peer_stop(who, size, worker)
            times[case].append(seconds)
            print(f"run {run + 1}: {who} {size} {worker.name}: {seconds:.3f} s", file=sys.stderr)

    def versus(worker: Path) -> dict[str, Figure]:
        return {
            f"{peer} ({processes})": Figure.of(times[peer, processes, worker], "s")
            for peer in peer_names
            if (peer, processes, worker) in times
        }

    def compared(figure: Figure, others: dict[str, Figure]) -> str:
        return "; ".join(
            ratio(figure.median, value.median, f"of {name}") for name, value in others.items()
        )

    rows = []
    for size in sizes:
        figure = Figure.of(times["rrd", size, ECHO], "s")
        others = versus(IDLE_WORKER) if size == processes else {}
        target, met = "", None
        if size == (TARGET_SIZE if TARGET_SIZE in sizes else max(sizes)):
            target, met = f"< {TARGET_SECONDS:g} s", figure.median < TARGET_SECONDS
        rows.append(
            Row(
                "stop",
                f"SIGTERM to exit, {size} workers",
                figure,
                others,
                compared(figure, others),
                target,
                met,
            )
        )
    figure = Figure.of(times["rrd", processes, IGNORES_TERM], "s")
    others = versus(IGNORES_TERM)
    rows.append(
        Row(
            "stop",
            f"SIGTERM to exit, {processes} workers ignoring SIGTERM "
            f"(rrd: destroy_timeout {grace} + kill_timeout {grace}; peers: their defaults)",
            figure,
            others,
            compared(figure, others),
            f"<= {bound + TARGET_SECONDS:g} s (its grace + {TARGET_SECONDS:g} s)",
            figure.median <= bound + TARGET_SECONDS,
        )
    )
    report(rows, as_json=args.json)


if __name__ == "__main__":
    main()

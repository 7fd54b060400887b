"""Named schedules: three on one pool for a minute, each one's ledger, and cron tick lateness.

    .venv/bin/python bench/schedules.py [--seconds 60] [--runs 1] [--json] [--smoke]

Each run starts `rrd serve` with two tests/workers/tick_recorder.py workers and three
schedules: `every1s` (interval 1 s), `seconds` (cron `* * * * * */1` in UTC: every wall-clock
second) and `nightly` (cron `0 3 * * *` in Europe/Berlin: none due in a minute, unless the run
spans 03:00 in Berlin). After `--seconds` from `daemon.ready` the bench reads the ledger of
each schedule from `rrd status --json`, prints `rrd ticker list` on stderr, and stops rrd.

Ledger rows, per schedule: ticks due, next to the ticks the wall clock made due from the
schedule's `ticker.started` (a millisecond timestamp) to the `next_due` rrd reported with that
ledger; delivered, next to the ticks the worker recorded; skipped and failed. The due row is
met when the ledger balances (due = delivered + failed + skipped + in flight).

Lateness of a `seconds` tick: its arrival (CLOCK_MONOTONIC, written by the worker) turned into
wall time with the offset time.time() - time.monotonic() sampled by the bench (the tightest of
many reads, at start and end; how far it moved is shown on stderr), minus the wall-clock second
it was due. Tick k is due at S0 + k, S0 the median over ticks of round(arrival_wall - k): for
ticks under 0.5 s late this is the arrival floored to its second, and a tick sent early shows
as negative rather than as 999 ms late. p50, p99 (nearest rank: of 60 ticks, the largest) and
max; target p99 < 1 ms. Beside it, from the same run: the `every1s` ticks past their own due
wall time (the multiples of 1 s before the `next_due` in the status), the `every1s` ticks as
bench/ticker.py measures them (past t0 + k * interval, t0 the smallest arrival - k * interval:
relative to the most punctual tick, so without any constant delay), and the `seconds` ticks
measured that relative way too. Only ticks that arrived within `--seconds` of `daemon.ready` count.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psutil
from table import SMOKE_HELP, Figure, Row, ratio, report

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "workers" / "tick_recorder.py"
BENCH = "schedules"
INTERVAL = 1.0
CRON_PERIOD = 1.0
NIGHTLY_HOUR, NIGHTLY_ZONE = 3, ZoneInfo("Europe/Berlin")
SCHEDULES = ("every1s", "seconds", "nightly")
TIMEOUT = 30.0

CONFIG = """
version: "3"
server:
  command: ["{python}", "{worker}"]
logs:
  level: info
ticker:
  exec_timeout: 5s
  schedules:
    every1s: {{interval: 1s}}
    seconds: {{cron: "* * * * * */1", timezone: UTC}}
    nightly: {{cron: "0 3 * * *", timezone: Europe/Berlin}}
  pool:
    num_workers: 2
"""


@dataclass(frozen=True)
class Lateness:
    """p50, p99 (nearest rank) and max of a set of tick latenesses, in ms."""

    p50: float
    p99: float
    max: float
    min: float
    ticks: int

    @classmethod
    def of(cls, late_ms: list[float]) -> Lateness:
        if not late_ms:
            raise SystemExit("no ticks recorded: nothing to measure")
        ordered = sorted(late_ms)
        p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
        return cls(statistics.median(ordered), p99, ordered[-1], ordered[0], len(ordered))


@dataclass(frozen=True)
class Run:
    """One minute of three schedules: each one's ledger, what the clock made due, what the
    worker recorded, and the lateness of the `seconds` and `every1s` ticks."""

    ledgers: dict[str, dict[str, int]]
    clock_due: dict[str, int]
    recorded: dict[str, int]
    cron: Lateness
    cron_relative: Lateness
    interval: Lateness
    interval_absolute: Lateness


def wall_offset(reads: int = 2000) -> float:
    """time.time() - time.monotonic(), from the read pair that took the least time."""
    best = (math.inf, 0.0)
    for _ in range(reads):
        before = time.monotonic()
        wall = time.time()
        after = time.monotonic()
        best = min(best, (after - before, wall - (before + after) / 2))
    return best[1]


def events(log: Path, name: str) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text().splitlines():
        if f'"{name}"' in line and line.endswith("}"):
            record = json.loads(line)
            if record.get("event") == name:
                found.append(record)
    return found


def wait_event(log: Path, name: str, process: subprocess.Popen[bytes]) -> dict[str, Any]:
    """The first `name` event rrd logged; fails if rrd exits or it does not come in time."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        found = events(log, name)
        if found:
            return found[0]
        if process.poll() is not None:
            raise SystemExit(f"rrd exited {process.returncode} before {name}; see {log}")
        time.sleep(0.01)
    raise SystemExit(f"no {name} within {TIMEOUT:g}s; see {log}")


def ticks_of(path: Path) -> dict[str, list[tuple[int, float]]]:
    """(k, arrival) of every recorded tick, by schedule, in k order."""
    found: dict[str, list[tuple[int, float]]] = {name: [] for name in SCHEDULES}
    if not path.exists():
        return found
    for line in path.read_text().splitlines():
        if not line.endswith("}"):
            continue
        tick = json.loads(line)
        context = json.loads(tick["context"])
        found.setdefault(context["schedule"], []).append((context["k"], tick["arrival"]))
    return {name: sorted(ticks) for name, ticks in found.items()}


def cron_lateness(ticks: list[tuple[int, float]], offset: float) -> list[float]:
    """ms past the wall-clock second each tick was due (see the module docstring)."""
    walls = [(k, arrival + offset) for k, arrival in ticks]
    start = statistics.median(round(wall - k) for k, wall in walls)
    return [(wall - (start + k)) * 1000 for k, wall in walls]


def interval_lateness(
    ticks: list[tuple[int, float]], offset: float, next_due: float
) -> list[float]:
    """ms past each tick's due wall time, the multiple of the interval before `next_due` (the
    wall time rrd reported for the schedule's next tick) nearest the tick's arrival."""
    walls = [arrival + offset for _, arrival in ticks]
    return [
        (wall - (next_due - round((next_due - wall) / INTERVAL) * INTERVAL)) * 1000
        for wall in walls
    ]


def relative_lateness(ticks: list[tuple[int, float]], interval: float) -> list[float]:
    """ms past t0 + k * interval, t0 the smallest arrival - k * interval (bench/ticker.py)."""
    t0 = min(arrival - k * interval for k, arrival in ticks)
    return [(arrival - t0 - k * interval) * 1000 for k, arrival in ticks]


def nightly_due(began: float, ended: float) -> int:
    """How many 03:00 in Berlin fall in (began, ended], wall-clock seconds."""
    count = 0
    day = dt.datetime.fromtimestamp(began, NIGHTLY_ZONE).date()
    while True:
        due = dt.datetime.combine(day, dt.time(NIGHTLY_HOUR), NIGHTLY_ZONE).timestamp()
        if due > ended:
            return count
        count += began < due
        day += dt.timedelta(days=1)


def clock_due(name: str, started: float, next_due: float) -> int:
    """How many ticks of schedule `name` the wall clock made due after its `ticker.started`
    (a millisecond timestamp) and before the next tick rrd reported in the same status."""
    if name == "every1s":
        return round((next_due - started) / INTERVAL) - 1
    if name == "seconds":
        return math.ceil(next_due) - 1 - math.floor(started)
    return nightly_due(started, next_due - 1e-3)


def operator(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    where = ["-c", str(folder / "rr.yaml"), "--pidfile", str(folder / "rrd.pid")]
    done = subprocess.run(
        [sys.executable, "-m", "rrd", *args, *where],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    if done.returncode != 0:
        raise SystemExit(f"rrd {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done


def stop(process: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM, SIGKILL to its group if it lingers; then wait until its workers are gone."""
    try:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                print("rrd ignored SIGTERM; killing its group", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        workers = [e["worker_pid"] for e in events(log, "worker.started") if "worker_pid" in e]
        deadline = time.monotonic() + 10
        while (alive := [pid for pid in workers if running(pid)]) and time.monotonic() < deadline:
            time.sleep(0.01)
        for pid in alive:  # rrd's parent-death signal did not take them in 10 s
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def one_run(seconds: float) -> Run:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        (folder / "rr.yaml").write_text(CONFIG.format(python=sys.executable, worker=WORKER))
        log, tick_log = folder / "rrd.log", folder / "ticks.jsonl"
        argv = [sys.executable, "-m", "rrd", "serve", "-c", str(folder / "rr.yaml")]
        argv += ["--no-watch", "--pidfile", str(folder / "rrd.pid")]
        offset_before = wall_offset()
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                argv,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env={**os.environ, "TICK_LOG": str(tick_log)},
                start_new_session=True,
            )
        try:
            wait_event(log, "daemon.ready", process)
            began = time.monotonic()
            time.sleep(max(0.0, began + seconds - time.monotonic()))
            if process.poll() is not None:
                raise SystemExit(f"rrd exited {process.returncode} while ticking; see {log}")
            ended = time.monotonic()
            status = json.loads(operator(folder, "status", "--json").stdout)
            ticks = ticks_of(tick_log)
            listed = operator(folder, "ticker", "list").stdout
        finally:
            stop(process, log)
        offset_after = wall_offset()
        print(listed, end="", file=sys.stderr)
        slew = (offset_after - offset_before) * 1e6
        print(f"wall - monotonic offset moved {slew:+.1f} us over the run", file=sys.stderr)
        events_seen = {name: events(log, name) for name in ("ticker.started", "ticker.stopped")}
        stopped = events_seen["ticker.stopped"]
        if stopped:
            final = {n: stopped[-1]["schedules"][n]["due"] for n in SCHEDULES}
            print(f"ticker.stopped, ticks due per schedule: {final}", file=sys.stderr)
    offset = (offset_before + offset_after) / 2
    started = {
        e["schedule"]: dt.datetime.fromisoformat(e["ts"]).timestamp()
        for e in events_seen["ticker.started"]
    }
    window = {n: [(k, a) for k, a in ticks.get(n, []) if a <= ended] for n in SCHEDULES}
    schedules = status["plugins"]["ticker"]["schedules"]
    return Run(
        ledgers={n: schedules[n]["ticks"] for n in SCHEDULES},
        clock_due={n: clock_due(n, started[n], schedules[n]["next_due"]) for n in SCHEDULES},
        recorded={n: len(ticks.get(n, [])) for n in SCHEDULES},
        cron=Lateness.of(cron_lateness(window["seconds"], offset)),
        cron_relative=Lateness.of(relative_lateness(window["seconds"], CRON_PERIOD)),
        interval=Lateness.of(relative_lateness(window["every1s"], INTERVAL)),
        interval_absolute=Lateness.of(
            interval_lateness(window["every1s"], offset, schedules["every1s"]["next_due"])
        ),
    )


def balanced(ledger: dict[str, int]) -> bool:
    parts = ("delivered", "failed", "skipped", "in_flight")
    return ledger["due"] == sum(ledger[p] for p in parts)


def ledger_rows(runs: list[Run], seconds: float) -> list[Row]:
    rows = []
    span = f"{seconds:g} s"
    whens = {"every1s": "every 1s", "seconds": "cron every second", "nightly": "cron 03:00 Berlin"}
    for name in SCHEDULES:
        ledgers = [run.ledgers[name] for run in runs]

        def count(field: str, ledgers: list[dict[str, int]] = ledgers) -> Figure:
            return Figure.of((ledger[field] for ledger in ledgers), "ticks")

        def none(field: str, ledgers: list[dict[str, int]] = ledgers) -> bool:
            return all(ledger[field] == 0 for ledger in ledgers)

        due, clock = count("due"), Figure.of((r.clock_due[name] for r in runs), "ticks")
        recorded = Figure.of((r.recorded[name] for r in runs), "ticks")
        label = f"{name} ({whens[name]}), {span}"
        rows += [
            Row(
                BENCH,
                f"{label}: due",
                due,
                {"due by the wall clock": clock},
                ratio(due.median, clock.median, "of the clock's") if clock.median else "",
                "balanced: = delivered + failed + skipped + in flight",
                all(balanced(ledger) for ledger in ledgers),
            ),
            Row(
                BENCH,
                f"{label}: delivered",
                count("delivered"),
                {"recorded by the worker": recorded},
                target="= due - in flight",
                met=all(lg["delivered"] == lg["due"] - lg["in_flight"] for lg in ledgers),
            ),
            Row(BENCH, f"{label}: skipped", count("skipped"), target="0", met=none("skipped")),
            Row(BENCH, f"{label}: failed", count("failed"), target="0", met=none("failed")),
        ]
    return rows


def lateness_rows(runs: list[Run]) -> list[Row]:
    rows = []
    for field, target, limit in (("p50", "", None), ("p99", "< 1 ms", 1.0), ("max", "", None)):

        def figure(part: str, field: str = field) -> Figure:
            return Figure.of((getattr(getattr(r, part), field) for r in runs), "ms")

        cron, interval = figure("cron"), figure("interval_absolute")
        rows.append(
            Row(
                BENCH,
                f"cron `seconds` lateness past its wall-clock second {field}",
                cron,
                {
                    "every1s past its due (next_due)": interval,
                    "every1s relative (as bench/ticker.py)": figure("interval"),
                    "seconds relative": figure("cron_relative"),
                },
                ratio(cron.median, interval.median, "x every1s's past its due"),
                target,
                None if limit is None else max(cron.samples) < limit,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="of ticking, per run")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="rows as JSON lines")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.runs = 5.0, 1
    runs = []
    for number in range(args.runs):
        run = one_run(args.seconds)
        runs.append(run)
        print(
            f"run {number + 1}: due {[run.ledgers[n]['due'] for n in SCHEDULES]}, "
            f"cron lateness p50 {run.cron.p50:.3f} p99 {run.cron.p99:.3f} "
            f"max {run.cron.max:.3f} min {run.cron.min:.3f} ms over {run.cron.ticks} ticks; "
            f"every1s past its due p50 {run.interval_absolute.p50:.3f} "
            f"p99 {run.interval_absolute.p99:.3f} min {run.interval_absolute.min:.3f} ms, "
            f"relative p50 {run.interval.p50:.3f} p99 {run.interval.p99:.3f} ms",
            file=sys.stderr,
        )
    report(ledger_rows(runs, args.seconds) + lateness_rows(runs), as_json=args.json)


if __name__ == "__main__":
    main()

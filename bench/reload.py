"""Hot reload on a real `rrd serve`, next to supervisord and circus; run by hand.

    .venv/bin/python bench/reload.py [--runs 3] [--workers 16 64] [--peer-processes 50]
                                     [--no-peers] [--json] [--smoke]

1. An editor's atomic save (a temporary file, then os.replace) of a new `ticker.interval`
   (500ms -> 50ms) to a running rrd with two tests/workers/tick_recorder.py workers: the time
   until rrd logged `config.reloaded`, and until the first tick of the new schedule reached a
   worker (the schedule starts over at the reload: the tick with context k = 1; without `k`,
   the first tick followed by one 50 ms later). No worker may restart.
2. A save that changes `server.env`, which replaces every worker: the time until
   `pool.reset_done`. Next to it, and to 1, each peer with 2 processes of bench/idle_worker.py
   told of a changed environment (`supervisorctl update`, `circusctl reloadconfig`) until all
   run again with it, as bench/peers.py measures it.
3. SIGHUP to rrd: the time until every worker of pools of several sizes was replaced
   (`pool.reset_done`). Next to the largest, each peer restarting all of `--peer-processes`
   processes (`supervisorctl restart all`, `circusctl restart`) until all run again. A reset
   with no `pool.reset_done` within 30 s counts as hung: said on stderr and in its row.

Every run of each is its own daemon; the runs of rrd and the peers alternate. Targets: save ->
first tick at the new interval < 150 ms; SIGHUP -> 64 workers replaced < 1 s.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import peers
import psutil
from recovery import follow
from table import SMOKE_HELP, Figure, Row, ratio, report

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "workers" / "tick_recorder.py"
BENCH = "reload"
OLD_INTERVAL, NEW_INTERVAL = 0.5, 0.05
RESET_TIMEOUT = 30.0
"""Past this, a SIGHUP's reset counts as hung: the run is left out of the figures, and said."""

CONFIG = """
version: "3"
server:
  command: ["{python}", "{worker}"]
  env:
    BENCH_GENERATION: "{generation}"
logs:
  level: info
ticker:
  interval: {interval_ms}ms
  exec_timeout: 10s
  pool:
    num_workers: {workers}
    allocate_timeout: 60s
"""


def write(workers: int, interval: float, generation: int = 0) -> str:
    return CONFIG.format(
        python=sys.executable,
        worker=WORKER,
        interval_ms=f"{interval * 1000:g}",
        workers=workers,
        generation=generation,
    )


def save(config: Path, text: str) -> float:
    """An editor's save: a temporary file renamed over the config; when it was renamed."""
    temporary = config.with_name(".rr.yaml.swp")
    temporary.write_text(text)
    saved = time.monotonic()
    os.replace(temporary, config)
    return saved


@contextlib.contextmanager
def serving(workers: int, interval: float) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`rrd serve` in a folder of its own (config rr.yaml, log, ticks), until daemon.ready;
    stopped with SIGTERM on the way out, SIGKILL if it lingers (it stays in the bench's
    process group: a kill of the bench's group takes it too)."""
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        config, log = folder / "rr.yaml", folder / "log"
        config.write_text(write(workers, interval))
        with log.open("w") as output:
            rrd = subprocess.Popen(
                [sys.executable, "-m", "rrd", "serve", "-c", str(config)],
                cwd=ROOT,
                stderr=output,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "TICK_LOG": str(folder / "ticks")},
            )
        try:
            follow(log, re.compile('"daemon.ready"'), 0, timeout=120)
            yield rrd, folder
        finally:
            if rrd.poll() is None:
                rrd.send_signal(signal.SIGTERM)
                try:
                    rrd.wait(20)
                except subprocess.TimeoutExpired:
                    rrd.kill()  # its workers die with it: rrd gives them a parent-death signal
            rrd.wait()


def ticks(folder: Path) -> list[tuple[float, int | None]]:
    """(arrival, k) of every tick recorded so far, in arrival order."""
    path = folder / "ticks"
    lines = path.read_text().splitlines() if path.exists() else []
    found = []
    for line in lines:
        if line.endswith("}"):
            tick = json.loads(line)
            found.append((tick["arrival"], json.loads(tick["context"]).get("k")))
    return sorted(found)


def until(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise SystemExit(f"no {what} within {timeout:g}s")
        time.sleep(0.002)
    return result


def first_new_tick(folder: Path, saved: float, reloaded: float) -> float | None:
    """The arrival of the new schedule's first tick: the first with k = 1 since the save
    (the old schedule is at k >= 3 by then); without k, the first since the reload that the
    next tick follows at the new interval."""
    recorded = ticks(folder)
    if recorded and recorded[-1][1] is not None:
        return next((a for a, k in recorded if a > saved and k == 1), None)
    after = [arrival for arrival, _ in recorded if arrival > reloaded - 0.001]
    return next(
        (a for a, b in itertools.pairwise(after) if abs(b - a - NEW_INTERVAL) < NEW_INTERVAL / 2),
        None,
    )


def interval_save_run() -> tuple[float, float]:
    """Save a new interval: ms to config.reloaded, ms to the first tick at it."""
    with serving(2, OLD_INTERVAL) as (_rrd, folder):
        log, config = folder / "log", folder / "rr.yaml"
        until(lambda: len(ticks(folder)) >= 2, 10, "two ticks")
        offset = log.stat().st_size
        saved = save(config, write(2, NEW_INTERVAL))
        follow(log, re.compile('"config.reloaded"'), offset, timeout=10)
        reloaded = time.monotonic()
        first = until(
            lambda: first_new_tick(folder, saved, reloaded), 10, "tick at the new interval"
        )
        if ticks(folder)[-1][1] is None:
            print("the tick context has no k: the new schedule found by spacing", file=sys.stderr)
        if '"worker.started"' in log.read_text()[offset:]:
            raise SystemExit("a worker restarted on an interval change")
        assert isinstance(first, float)
        return (reloaded - saved) * 1000, (first - saved) * 1000


def env_save_run() -> float:
    """Save a new server.env: ms until every worker was replaced."""
    with serving(2, 1.0) as (_rrd, folder):
        log, config = folder / "log", folder / "rr.yaml"
        offset = log.stat().st_size
        saved = save(config, write(2, 1.0, generation=1))
        follow(log, re.compile('"pool.reset_done"'), offset, timeout=60)
        return (time.monotonic() - saved) * 1000


def sighup_run(workers: int) -> float | None:
    """SIGHUP: ms until every worker was replaced; None (and why, on stderr) if rrd did not
    finish the reset within RESET_TIMEOUT."""
    with serving(workers, 1.0) as (rrd, folder):
        log = folder / "log"
        offset = log.stat().st_size
        signalled = time.monotonic()
        rrd.send_signal(signal.SIGHUP)
        try:
            follow(log, re.compile('"pool.reset_done"'), offset, timeout=RESET_TIMEOUT)
        except SystemExit:
            started = log.read_text()[offset:].count('"worker.started"')
            busy = psutil.Process(rrd.pid).cpu_percent(interval=0.5)
            print(
                f"SIGHUP with {workers} workers: no pool.reset_done within {RESET_TIMEOUT:g}s; "
                f"{started} successors started; rrd at {busy:.0f}% CPU",
                file=sys.stderr,
            )
            return None
        return (time.monotonic() - signalled) * 1000


def peer_reload_run(peer: str) -> float:
    """ms for `supervisorctl update` / `circusctl reloadconfig` of a changed env, 2 processes."""
    command = [sys.executable, str(peers.IDLE_WORKER)]
    with (
        tempfile.TemporaryDirectory() as folder,
        peers.running(peer, command, 2, Path(folder), {"BENCH_GENERATION": "0"}) as run,
    ):
        run.wait_running(60)
        return run.reload_config(env={"BENCH_GENERATION": "1"}) * 1000


def peer_restart_run(peer: str, processes: int) -> float:
    """ms for `supervisorctl restart all` / `circusctl restart` of `processes` processes."""
    command = [sys.executable, str(peers.IDLE_WORKER)]
    with (
        tempfile.TemporaryDirectory() as folder,
        peers.running(peer, command, processes, Path(folder)) as run,
    ):
        run.wait_running(120)
        return run.restart_all(120) * 1000


def peer_list(wanted: bool) -> list[str]:
    if not wanted:
        return []
    try:
        peers.install()
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"peers not installed ({exc}): rows without them", file=sys.stderr)
        return []
    found = peers.available()
    if len(found) < len(peers.PEERS):
        print(f"peers that run: {found}; the others are left out", file=sys.stderr)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--peer-processes", type=int, default=50)
    parser.add_argument("--no-peers", action="store_true", help="rrd alone")
    parser.add_argument("--json", action="store_true", help="rows as JSON lines")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.workers, args.peer_processes = 1, [4], 4
    found = peer_list(not args.no_peers)
    reloaded, first_tick, env_replaced = [], [], []
    peer_reload: dict[str, list[float]] = {peer: [] for peer in found}
    peer_restart: dict[str, list[float]] = {peer: [] for peer in found}
    sighup: dict[int, list[float | None]] = {workers: [] for workers in args.workers}
    for run in range(args.runs):
        to_config, to_tick = interval_save_run()
        reloaded.append(to_config)
        first_tick.append(to_tick)
        env_replaced.append(env_save_run())
        for peer in found:
            peer_reload[peer].append(peer_reload_run(peer))
        for workers in args.workers:
            sighup[workers].append(sighup_run(workers))
        for peer in found:
            peer_restart[peer].append(peer_restart_run(peer, args.peer_processes))
        print(
            f"run {run + 1}: save -> reloaded {to_config:.1f} ms, -> new tick {to_tick:.1f} ms, "
            f"env save -> replaced {env_replaced[-1]:.1f} ms; SIGHUP "
            + ", ".join(f"{w}: {_ms(v[-1])}" for w, v in sighup.items())
            + "".join(
                f"; {p} reload {peer_reload[p][-1]:.0f} ms, restart {peer_restart[p][-1]:.0f} ms"
                for p in found
            ),
            file=sys.stderr,
        )
    report(
        rows(args, reloaded, first_tick, env_replaced, sighup, peer_reload, peer_restart),
        as_json=args.json,
    )


def _ms(value: float | None) -> str:
    return "hung" if value is None else f"{value:.1f} ms"


RELOAD_NAMES = {"supervisord": "supervisorctl update", "circus": "circusctl reloadconfig"}
RESTART_NAMES = {"supervisord": "supervisorctl restart all", "circus": "circusctl restart"}


def rows(
    args: argparse.Namespace,
    reloaded: list[float],
    first_tick: list[float],
    env_replaced: list[float],
    sighup: dict[int, list[float | None]],
    peer_reload: dict[str, list[float]],
    peer_restart: dict[str, list[float]],
) -> list[Row]:
    def versus(
        samples: dict[str, list[float]], names: dict[str, str], suffix: str = ""
    ) -> dict[str, Figure]:
        return {f"{names[p]}{suffix}": Figure.of(v, "ms") for p, v in samples.items()}

    def against(mine: Figure, theirs: dict[str, Figure]) -> str:
        return "; ".join(
            ratio(figure.median, mine.median, f"x rrd: {name}") for name, figure in theirs.items()
        )

    reload_peers = versus(peer_reload, RELOAD_NAMES, " (env, 2 processes)")
    to_tick = Figure.of(first_tick, "ms")
    to_replaced = Figure.of(env_replaced, "ms")
    table = [
        Row(BENCH, "interval save -> config.reloaded", Figure.of(reloaded, "ms")),
        Row(
            BENCH,
            "interval save -> first tick at the new interval",
            to_tick,
            reload_peers,
            against(to_tick, reload_peers),
            "< 150 ms",
            to_tick.median < 150,
        ),
        Row(
            BENCH,
            "env save -> all 2 workers replaced",
            to_replaced,
            reload_peers,
            against(to_replaced, reload_peers),
        ),
    ]
    largest = max(sighup)
    restart_peers = versus(peer_restart, RESTART_NAMES, f" ({args.peer_processes} processes)")
    for workers, samples in sighup.items():
        done = [sample for sample in samples if sample is not None]
        hung = len(samples) - len(done)
        name = f"SIGHUP -> all {workers} workers replaced"
        if hung:
            shown = "left out" if done else f"shown as {RESET_TIMEOUT:g} s"
            name += f" ({hung} of {len(samples)} runs hung > {RESET_TIMEOUT:g} s: {shown})"
        mine = Figure.of(done or [RESET_TIMEOUT * 1000] * hung, "ms")
        theirs = restart_peers if workers == largest else {}
        on_target = workers == 64
        table.append(
            Row(
                BENCH,
                name,
                mine,
                theirs,
                against(mine, theirs) if done else "",
                "< 1 s" if on_target else "",
                (mine.median < 1000 and not hung) if on_target else None,
            )
        )
    return table


if __name__ == "__main__":
    main()

"""Crash recovery: SIGKILL one worker, time until its replacement is ready; rrd cold, rrd with
a warm spare, supervisord and circus, all in the same run, their kills interleaved.

    .venv/bin/python bench/recovery.py [--kills 20] [--json] [--smoke]

Each system runs 2 processes of a Python program that imports rrd.sdk: tests/workers/echo.py
under rrd; bench/idle_worker.py under the peers (they cannot speak the relay, so the same
start-up, then a wait). The peers come from PyPI into bench/.peers (bench/peers.py installs
them on the first run) and run with their default settings.

What "ready" is, from the kill, in ms, each read from the system's own log or report:
- rrd cold (2 workers): the replacement's `worker.started`, its pid handshake done.
- rrd warm spare (`-o ticker.pool.spares=1`): `pool.spare_promoted`, a READY spare taking the
  dead worker's slot. rrd versions without `pool.spares` refuse the key (exit 78): that row is
  then left out, with a note on stderr.
- supervisord: `spawned:` (the fork) and `entered RUNNING state` (after startsecs, 1 s).
- circus: the replacement running the program (circus calls it active once it exists; it
  reaps and respawns every check_delay, 5 s by default).

Every round kills one worker of each system in turn (the order rotates each round); a victim
has lived at least 1.5 s (past rrd's min_uptime and supervisord's startsecs), and the next
kill waits until the replacement's own start-up is over (SETTLE).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import peers
import psutil
from table import SMOKE_HELP, Figure, Row, report

ROOT = Path(__file__).resolve().parent.parent
ECHO = ROOT / "tests" / "workers" / "echo.py"
WORKERS = 2
MIN_AGE = 1.5
"""A victim has lived this long: past rrd's min_uptime and supervisord's startsecs (1 s)."""
SETTLE = 0.3
"""After a replacement is ready: let its start-up end before another system's kill."""
TIMEOUT = 30.0
EX_CONFIG = 78

RRD_CONFIG = """
version: "3"
server:
  command: ["{python}", "{worker}"]
ticker:
  interval: 1h
  pool:
    num_workers: {workers}
"""


def follow(
    path: Path, pattern: re.Pattern[str], after: int, timeout: float = 30
) -> tuple[str, int]:
    """The first line matching `pattern` past byte `after`, and where the file ends then.
    Reads only what is new, every millisecond, to leave the CPUs to what is measured."""
    deadline = time.monotonic() + timeout
    seen = ""
    with path.open("rb") as file:
        file.seek(after)
        while time.monotonic() < deadline:
            chunk = file.read()
            if chunk:
                seen += chunk.decode("utf-8", "replace")
                match = pattern.search(seen)
                if match:
                    return match.group(0), after + len(seen.encode())
            else:
                time.sleep(0.001)
    raise SystemExit(f"{pattern.pattern!r} did not appear in {path} within {timeout}s")


class RrdRun:
    """One `rrd serve`, its JSON log read from a pipe as it comes (a select() wakes the bench
    the moment a line is written: no polling interval in a 2 ms figure) into which workers
    serve (the pool) and which wait as spares. The log is copied to a file for a reader."""

    def __init__(self, folder: Path, spares: int) -> None:
        self.folder = folder
        self.spares = spares
        self.log = folder / "rrd.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.pool: dict[int, float] = {}
        """Serving worker pid -> monotonic time it was seen started."""
        self.spare_pids: set[int] = set()
        self.seen: set[int] = set()
        self.ready = False
        self._partial = b""
        self._selector = selectors.DefaultSelector()
        self._copy: BinaryIO | None = None

    def start(self) -> bool:
        """Start rrd; False when it refuses the config (exit 78: no `pool.spares` yet)."""
        config = self.folder / "rr.yaml"
        config.write_text(RRD_CONFIG.format(python=sys.executable, worker=ECHO, workers=WORKERS))
        argv = [sys.executable, "-m", "rrd", "serve", "-c", str(config), "--no-watch"]
        if self.spares:
            argv += ["-o", f"ticker.pool.spares={self.spares}"]
        self._copy = self.log.open("wb")
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.process.stderr is not None
        os.set_blocking(self.process.stderr.fileno(), False)
        self._selector.register(self.process.stderr, selectors.EVENT_READ)
        try:
            self.wait(lambda _events: self.ready, "daemon.ready")
        except EOFError:
            if self.process.wait(TIMEOUT) == EX_CONFIG:
                return False
            code = self.process.returncode
            raise SystemExit(f"rrd exited {code} at start; see {self.log}") from None
        return True

    def read(self) -> list[dict]:
        """The events logged since the last read, applied to the pool and spares; EOFError
        when rrd closed its stderr."""
        assert self.process is not None and self.process.stderr is not None
        chunks = []
        while True:
            try:
                chunk = os.read(self.process.stderr.fileno(), 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                raise EOFError
            chunks.append(chunk)
        if not chunks:
            return []
        data = b"".join(chunks)
        assert self._copy is not None
        self._copy.write(data)
        self._copy.flush()
        *lines, self._partial = (self._partial + data).split(b"\n")
        events = []
        now = time.monotonic()
        for line in lines:
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        for event in events:
            kind, pid = event.get("event"), event.get("worker_pid")
            if kind == "daemon.ready":
                self.ready = True
            elif kind == "worker.started":
                self.seen.add(pid)
                if len(self.pool) < WORKERS:
                    self.pool[pid] = now
                else:
                    self.spare_pids.add(pid)
            elif kind == "pool.spare_promoted":
                self.spare_pids.discard(pid)
                self.pool[pid] = now
            elif kind == "worker.exited":
                self.pool.pop(pid, None)
                self.spare_pids.discard(pid)
        return events

    def wait(
        self, condition: Callable[[list[dict]], bool], what: str, timeout: float = TIMEOUT
    ) -> float:
        """Monotonic time at which the events read made `condition` true (it is given each
        batch of new events as it comes)."""
        deadline = time.monotonic() + timeout
        if condition(self.read()):
            return time.monotonic()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SystemExit(f"no {what} from rrd within {timeout:g}s; see {self.log}")
            if self._selector.select(remaining):
                woke = time.monotonic()
                if condition(self.read()):
                    return woke

    def settled(self, _events: list[dict]) -> bool:
        return len(self.pool) == WORKERS and len(self.spare_pids) == self.spares

    def kill_one(self) -> dict[str, float]:
        """SIGKILL the oldest serving worker once it has lived MIN_AGE: ms until the
        replacement's `worker.started` (cold) or `pool.spare_promoted` (warm)."""
        self.wait(self.settled, "settled pool")
        victim, since = min(self.pool.items(), key=lambda item: item[1])
        time.sleep(max(0.0, since + MIN_AGE - time.monotonic()))
        self.read()
        wanted = "pool.spare_promoted" if self.spares else "worker.started"

        def replaced(events: list[dict]) -> bool:
            return any(
                event.get("event") == wanted and event.get("replaces", victim) == victim
                for event in events
            )

        killed = time.monotonic()  # before: a preemption after the kill must not hide time
        os.kill(victim, signal.SIGKILL)
        ready = self.wait(replaced, wanted)
        return {"ready": (ready - killed) * 1000}

    def close(self) -> None:
        if self.process is None:
            return
        leftovers = []
        for pid in self.seen:
            with contextlib.suppress(psutil.Error):
                leftovers.append(psutil.Process(pid))
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(EOFError, SystemExit):
                self.wait(lambda _events: False, "exit", timeout=30)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for process in leftovers:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(leftovers, timeout=10)
        self._selector.close()
        if self.process.stderr is not None:
            self.process.stderr.close()
        if self._copy is not None:
            self._copy.close()


class PeerSystem:
    """A peer from bench/peers.py, killed through its `kill_one`."""

    def __init__(self, run: peers.PeerRun) -> None:
        self.run = run

    def kill_one(self) -> dict[str, float]:
        spawned, running = self.run.kill_one(TIMEOUT)
        if self.run.name == "circus":
            return {"active": running}
        return {"spawned": spawned, "RUNNING": running}


@contextlib.contextmanager
def rrd_running(folder: Path, spares: int) -> Iterator[RrdRun | None]:
    run = RrdRun(folder, spares)
    try:
        yield run if run.start() else None
    finally:
        run.close()


def measure(kills: int) -> dict[str, dict[str, list[float]]]:
    """Every system's kill times by figure, over `kills` interleaved rounds."""
    with tempfile.TemporaryDirectory() as scratch, contextlib.ExitStack() as stack:
        systems: dict[str, RrdRun | PeerSystem] = {}
        for name, spares in (("rrd", 0), ("rrd spare", 1)):
            folder = Path(scratch, name.replace(" ", "-"))
            folder.mkdir()
            run = stack.enter_context(rrd_running(folder, spares))
            if run is not None:
                systems[name] = run
            else:
                print(
                    "rrd refused ticker.pool.spares (exit 78): no warm spare row",
                    file=sys.stderr,
                )
        command = [sys.executable, str(peers.IDLE_WORKER)]
        for peer in peers.available():
            folder = Path(scratch, peer)
            folder.mkdir()
            env = {"PYTHONPATH": str(ROOT)}
            peer_run = stack.enter_context(peers.running(peer, command, WORKERS, folder, env))
            systems[peer] = PeerSystem(peer_run)
        for system in systems.values():
            if isinstance(system, PeerSystem):
                system.run.wait_running(TIMEOUT)
        times: dict[str, dict[str, list[float]]] = {name: {} for name in systems}
        names = list(systems)
        for round_number in range(kills):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                for figure, value in systems[name].kill_one().items():
                    times[name].setdefault(figure, []).append(value)
                time.sleep(SETTLE)
        return times


def rows(times: dict[str, dict[str, list[float]]]) -> list[Row]:
    versus: dict[str, Figure] = {}
    for peer in ("supervisord", "circus"):
        for figure, samples in times.get(peer, {}).items():
            versus[f"{peer} {figure}"] = Figure.of(samples, "ms")
    found = []
    for name, figure, target, bound in (
        ("rrd", "SIGKILL -> replacement ready, cold", "< 20 ms", 20.0),
        ("rrd spare", "SIGKILL -> replacement ready, warm spare", "< 2 ms", 2.0),
    ):
        if name not in times:
            continue
        rrd = Figure.of(times[name]["ready"], "ms")
        found.append(
            Row(
                bench="recovery",
                figure=f"{figure} (median of {len(rrd.samples)})",
                rrd=rrd,
                versus=versus,
                ratio="; ".join(
                    f"{peer} / rrd = {_times(value.median, rrd.median)}"
                    for peer, value in versus.items()
                    if not peer.endswith("spawned")
                ),
                target=target,
                met=rrd.median < bound,
            )
        )
    return found


def _times(numerator: float, denominator: float) -> str:
    value = numerator / denominator if denominator else float("inf")
    return f"{value:.1f}x" if value < 10 else f"{value:.0f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs per system")
    parser.add_argument("--json", action="store_true", help="print rows as JSON lines")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    kills = 2 if args.smoke else args.kills
    peers.install()
    if not args.json:
        print(peers.banner(f"{kills} kills each"))
    report(rows(measure(kills)), as_json=args.json)


if __name__ == "__main__":
    main()

"""The chaos soak: a real `rrd serve` at a 5 ms tick with chaos workers, while a driver signals,
rewrites, scales, resets and pokes it; then rrd must be whole. Run by hand (`make soak`):

    .venv/bin/python bench/soak.py [--seconds 600] [--seed N] [--workers 4] [--keep]

The workers (tests/workers/chaos.py) crash, hang past exec_timeout, write garbage, fail softly,
ask to be retired, leak memory and start children, at random. The driver sends SIGHUPs, saves
the config (valid with another interval or size, broken, without the ticker section and back),
runs `rrd scale`, `rrd reset` and `rrd ticker pause|resume|run` on two named schedules (a cron
every second, a 50 ms one with jitter, coalesce, expires), opens hostile control connections
(garbage, half a frame, a 4 GiB header, nothing, one byte a second), probes /health and /ready
and scrapes /metrics as a kubelet and Prometheus would, beside hostile HTTP clients (garbage, a
head that never ends). At the end it checks that rrd never died (exit 0 on SIGTERM, no
`daemon.crashed`, no traceback, every line JSON), that every probe and scrape was answered and
well formed, that every ledger read balanced, that rrd's RSS grew < 5 MiB and its fds are back
to the count after warm-up, that the pool has its configured size, and that nothing is left
after the stop; prints the figures; exits 1 when a check failed. tests/system/test_soak.py runs
the same for 30 seconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
CHAOS = ROOT / "tests" / "workers" / "chaos.py"
T = TypeVar("T")

BASE_WORKERS = 4
BASE_INTERVAL = "5ms"
INTERVALS = ("5ms", "7ms", "10ms")
RSS_GROWTH_LIMIT = 5 << 20
LEDGER_KEYS = ("due", "delivered", "failed", "skipped", "in_flight")

SERVER = """version: "3"
server:
  command: ["{python}", "{worker}"]
  env:
    SOAK_TAG: "{tag}"
    CHAOS_SEED: "{seed}"
    CHAOS_CALM: "{calm}"
logs:
  level: info
status:
  address: 127.0.0.1:{http_port}
metrics:
  address: 127.0.0.1:{http_port}
"""
TICKER = """ticker:
  interval: {interval}
  exec_timeout: 200ms
  overlap: parallel
  schedules:
    cron-second:
      cron: "* * * * * */1"
      timezone: UTC
    bursty:
      interval: 50ms
      jitter: 20ms
      misfire_grace: 100ms
      coalesce: true
      max_in_flight: 2
      expires: 100ms
  pool:
    num_workers: {workers}
    allocate_timeout: 10s
    destroy_timeout: 2s
    kill_timeout: 500ms
    health: {{interval: 500ms, timeout: 300ms}}
    restart: {{min_uptime: 50ms, initial_delay: 10ms, max_delay: 200ms, max_retries: 100000}}
    supervisor: {{watch_tick: 100ms, max_worker_memory: 48}}
"""
BROKEN = (
    "ticker:\n  interval: [5ms\n",  # YAML that does not parse
    "ticker:\n  interval: banana\n  pool:\n    num_workers: 2\n",  # a value that is no duration
    "ticker:\n  interval: 5ms\n  pool:\n    num_wrkers: 2\n",  # an unknown key
    "ticker:\n\tinterval: 5ms\n",  # a tab
)


def wait_for(predicate: Callable[[], T], timeout: float, step: float = 0.05) -> T | None:
    """Poll until `predicate` gives something true; None at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result or None
        time.sleep(step)


def rss(pid: int) -> int:
    """Resident memory of `pid` in bytes (/proc/PID/status VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of `pid`, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def all_pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def tagged(tag: str) -> list[str]:
    """Processes alive whose environment carries SOAK_TAG=`tag`, as `pid state cmdline`."""
    marker = f"SOAK_TAG={tag}".encode()
    found = []
    for pid in all_pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            stat = proc_stat(pid)
            command = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
            found.append(f"{pid} {stat[0] if stat else '?'} {command}")
    return found


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of every child of `pid`."""
    found = []
    for child in all_pids():
        stat = proc_stat(child)
        if stat is not None and stat[1] == pid:
            found.append((child, stat[0]))
    return found


def ledger_of(ticks: dict[str, Any]) -> dict[str, Any] | None:
    """The ledger's counters, None when `ticks` has not got them."""
    if not all(isinstance(ticks.get(key), int) for key in LEDGER_KEYS):
        return None
    return ticks


def balanced(ticks: dict[str, Any]) -> bool:
    """due == delivered + failed + skipped + in_flight, and the reasons add up."""
    parts = ticks["delivered"] + ticks["failed"] + ticks["skipped"] + ticks["in_flight"]
    by_reason = (
        sum(ticks.get("failed_by", {}).values()) == ticks["failed"]
        and sum(ticks.get("skipped_by", {}).values()) == ticks["skipped"]
    )
    return bool(ticks["due"] == parts and by_reason and ticks["in_flight"] >= 0)


# Hostile control connections: goridge frames, made by hand so that they can be wrong.


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(port: int, path: str) -> tuple[int, bytes]:
    """One GET on a connection of its own; OSError when it is not answered within 5 s."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    except http.client.HTTPException as exc:
        raise OSError(f"{type(exc).__name__}: {exc}") from None
    finally:
        connection.close()


def scraped(body: bytes) -> dict[str, float]:
    """The unlabelled samples of a Prometheus text body; ValueError when it does not parse."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        s.name: float(s.value)
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if not s.labels
    }


def frame(payload: bytes, options: tuple[int, ...] = (), *, length: int | None = None) -> bytes:
    """A goridge v1 frame with JSON codec flags; `length` may lie about the payload."""
    size = len(payload) if length is None else length
    prefix = struct.pack("<BBI", (1 << 4) | (3 + len(options)), 0x08, size)
    header = prefix + struct.pack("<IBB", zlib.crc32(prefix), 0, 0)
    return header + b"".join(struct.pack("<I", o) for o in options) + payload


STATUS_CALL = frame(b"rrd.Status" + b"null", (1, len(b"rrd.Status")))
HOSTILE_KINDS = ("garbage", "half_frame", "huge_header", "nothing", "slow", "bad_crc")


def hostile(path: str, kind: str, chance: random.Random, hold: float) -> str:
    """One hostile connection to the control socket at `path`; returns how it ended."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(hold + 2)
        try:
            sock.connect(path)
            if kind == "garbage":
                sock.sendall(chance.randbytes(chance.randint(1, 8192)))
            elif kind == "half_frame":
                sock.sendall(STATUS_CALL[: chance.randint(1, len(STATUS_CALL) - 1)])
            elif kind == "huge_header":
                sock.sendall(frame(b"rrd.Status", (1, 10), length=0xFFFFFFF0))
            elif kind == "bad_crc":
                broken = bytearray(STATUS_CALL)
                broken[7] ^= 0xFF
                sock.sendall(bytes(broken))
            elif kind == "slow":
                deadline = time.monotonic() + hold
                for byte in STATUS_CALL:
                    if time.monotonic() > deadline:
                        break
                    sock.sendall(bytes([byte]))
                    time.sleep(1)
            deadline = time.monotonic() + hold
            while time.monotonic() < deadline:  # read what rrd says until it closes on us
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                if not sock.recv(65536):
                    return "closed by rrd"
        except TimeoutError:
            return "held"
        except OSError as exc:
            return f"{type(exc).__name__}"
    return "held"


@dataclass
class Figures:
    """What the soak saw, and its verdicts."""

    seed: int
    seconds: float
    ledger: Counter[str] = field(default_factory=Counter)
    failed_by: Counter[str] = field(default_factory=Counter)
    skipped_by: Counter[str] = field(default_factory=Counter)
    ledger_reads: int = 0
    unbalanced: list[str] = field(default_factory=list)
    rss_start: int = 0
    rss_end: int = 0
    rss_max: int = 0
    fds_start: int = 0
    fds_end: int = 0
    left: list[str] = field(default_factory=list)
    zombies: list[int] = field(default_factory=list)
    actions: Counter[str] = field(default_factory=Counter)
    hostile: Counter[str] = field(default_factory=Counter)
    cli_failures: list[str] = field(default_factory=list)
    http: Counter[str] = field(default_factory=Counter)
    http_failures: list[str] = field(default_factory=list)
    events: Counter[str] = field(default_factory=Counter)
    tracebacks: list[str] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)
    exit_code: int | None = None
    died_early: bool = False
    pool: dict[str, Any] = field(default_factory=dict)
    pool_processes: int = 0
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(ok for _, ok, _ in self.checks)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, ok, detail))


class LogReader:
    """rrd's JSON log file, read as it grows: counts events, keeps what the checks need."""

    KEPT = ("control.listening", "ticker.stopped", "daemon.crashed", "config.rejected")

    def __init__(self, path: Path, figures: Figures) -> None:
        self.path = path
        self.figures = figures
        self.offset = 0
        self.kept: dict[str, list[dict[str, Any]]] = {name: [] for name in self.KEPT}
        self._lock = threading.Lock()

    def poll(self) -> None:
        with self._lock, suppress(FileNotFoundError), self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
            end = data.rfind(b"\n") + 1
            self.offset += end
            for raw in data[:end].splitlines():
                self._line(raw.decode("utf-8", "replace"))

    def _line(self, line: str) -> None:
        try:
            record = json.loads(line)
            assert isinstance(record, dict)
        except (ValueError, AssertionError):
            self.figures.bad_lines.append(line[:300])
            return
        event = str(record.get("event"))
        self.figures.events[event] += 1
        if "traceback" in record:
            self.figures.tracebacks.append(f"{event}: {record['traceback'][-300:]}")
        if event in self.kept:
            self.kept[event].append(record)

    def count(self, *events: str) -> int:
        self.poll()
        return sum(self.figures.events[e] for e in events)


class Soak:
    """One rrd under chaos in `folder`; `run()` gives the figures."""

    def __init__(
        self,
        folder: Path,
        seconds: float,
        *,
        seed: int,
        workers: int = BASE_WORKERS,
        say: Callable[[str], None] = lambda text: None,
    ) -> None:
        self.folder = folder
        self.seconds = seconds
        self.workers = workers
        self.say = say
        self.chance = random.Random(seed)
        self.tag = uuid.uuid4().hex
        self.config = folder / ".rr.yaml"
        self.pidfile = folder / "rrd.pid"
        self.calm = folder / "calm"
        self.figures = Figures(seed=seed, seconds=seconds)
        self.log = LogReader(folder / "rrd.log", self.figures)
        self.process: subprocess.Popen[bytes] | None = None
        self.hostiles: list[threading.Thread] = []
        self.socket_path = ""
        self.saves = 0
        self.untried: list[Callable[[], None]] | None = None
        self.http_port = free_port()

    # the config

    def server_text(self) -> str:
        return SERVER.format(
            python=sys.executable,
            worker=CHAOS,
            tag=self.tag,
            seed=self.figures.seed,
            calm=self.calm,
            http_port=self.http_port,
        )

    def text(self, interval: str = BASE_INTERVAL, workers: int | None = None) -> str:
        size = self.workers if workers is None else workers
        return self.server_text() + TICKER.format(interval=interval, workers=size)

    def save(self, text: str, *, wait: bool = True) -> None:
        """An editor's atomic save; then wait (bounded) for rrd to have read it."""
        before = self.log.count("config.reloaded", "config.rejected")
        self.saves += 1
        temporary = self.config.with_name(f".rr.yaml.{self.saves}.tmp")
        temporary.write_text(f"# save {self.saves}\n{text}")
        os.replace(temporary, self.config)
        if wait:
            wait_for(lambda: self.log.count("config.reloaded", "config.rejected") > before, 10)

    # the daemon

    rrd_argv = (sys.executable, "-m", "rrd")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str] | None:
        where = ["-c", str(self.config), "--pidfile", str(self.pidfile)]
        try:
            done = subprocess.run(
                [*self.rrd_argv, *args, *where],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            self.figures.cli_failures.append(f"rrd {' '.join(args)}: no answer in {timeout}s")
            return None
        if done.returncode != 0 or "Traceback" in done.stderr:
            error = done.stderr.strip().splitlines()[-1:] or [""]
            self.figures.cli_failures.append(
                f"rrd {' '.join(args)}: exit {done.returncode}: {error[0][:200]}"
            )
        return done

    def status(self) -> dict[str, Any] | None:
        done = self.cli("status", "--json")
        if done is None or done.returncode != 0:
            return None
        report: dict[str, Any] = json.loads(done.stdout)
        return report

    def read_ledger(self) -> dict[str, Any] | None:
        """`rrd status --json` once: the ticker's ledger, checked to balance."""
        report = self.status()
        ticker = (report or {}).get("plugins", {}).get("ticker") or {}
        ticks = ledger_of(ticker.get("ticks") or {})
        if ticks is not None:
            self.figures.ledger_reads += 1
            if not balanced(ticks):
                self.figures.unbalanced.append(f"status: {json.dumps(ticks)}")
        return ticks

    def start(self) -> None:
        self.calm.touch()
        self.config.write_text(self.text())
        with (self.folder / "rrd.log").open("wb") as log:
            self.process = subprocess.Popen(
                [*self.rrd_argv, "serve", "-c", str(self.config), "--pidfile", str(self.pidfile)],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        ready = wait_for(lambda: self.log.count("daemon.ready") or not self.alive(), 60)
        if not ready or not self.alive():
            raise RuntimeError(f"rrd did not become ready; see {self.log.path}")
        self.socket_path = self.find_socket()

    def find_socket(self) -> str:
        """The control socket rrd said it listens on (or the unix socket it holds open)."""
        for record in self.log.kept["control.listening"]:
            address = str(record.get("address", ""))
            if address.startswith("unix://"):
                return address.removeprefix("unix://")
        inodes = set()
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            with suppress(OSError):
                target = os.readlink(f"/proc/{self.pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 8 and parts[6] in inodes and parts[7].startswith("/"):
                return parts[7]
        return ""

    def steady(self) -> bool:
        """The pool at its configured size with every worker in service, no zombie child."""
        report = self.status()
        pool = ((report or {}).get("plugins", {}).get("ticker") or {}).get("pool") or {}
        self.figures.pool = pool
        in_service = pool.get("ready", 0) + pool.get("busy", 0)
        workers = [c for c in children(self.pid) if c[1] != "Z"]
        self.figures.pool_processes = len(workers)
        return bool(
            pool.get("size") == self.workers
            and in_service == self.workers
            and pool.get("state") == "up"
            and len(workers) == self.workers
        )

    # the driver's moves

    def move(self) -> None:
        moves: list[tuple[Callable[[], None], int]] = [
            (self.sighup, 3),
            (self.save_valid, 3),
            (self.save_broken, 1),
            (self.remove_and_restore_ticker, 1),
            (self.scale, 3),
            (self.reset, 1),
            (self.poke, 3),
            (self.read_ledger_move, 2),
            (self.observe, 3),
            (self.poke_http, 1),
            (self.schedule_move, 2),
        ]
        if self.untried is None:  # every move once first, in a random order, then at random
            self.untried = [m for m, _ in moves]
            self.chance.shuffle(self.untried)
        if self.untried:
            self.untried.pop()()
            return
        chosen = self.chance.choices([m for m, _ in moves], [w for _, w in moves])[0]
        chosen()

    def sighup(self) -> None:
        for _ in range(self.chance.choice((1, 1, 2, 5))):
            os.kill(self.pid, signal.SIGHUP)
            self.figures.actions["SIGHUP"] += 1

    def save_valid(self) -> None:
        interval = self.chance.choice(INTERVALS)
        workers = self.chance.randint(1, 6)
        self.save(self.text(interval, workers))
        self.figures.actions["config saved (valid)"] += 1

    def save_broken(self) -> None:
        self.save(self.server_text() + self.chance.choice(BROKEN))
        self.figures.actions["config saved (broken)"] += 1

    def remove_and_restore_ticker(self) -> None:
        self.save(self.server_text())
        self.figures.actions["ticker section removed"] += 1
        time.sleep(self.chance.uniform(0.1, 1.0))
        self.save(self.text(self.chance.choice(INTERVALS), self.chance.randint(1, 6)))
        self.figures.actions["ticker section restored"] += 1

    def scale(self) -> None:
        target = self.chance.choice(("1", "2", "3", "6", "+1", "+2"))
        self.cli("scale", "ticker", target)
        self.figures.actions["rrd scale"] += 1

    def schedule_move(self) -> None:
        """An operator pauses, resumes or runs a named schedule (`rrd ticker ...`)."""
        action = self.chance.choice(("pause", "resume", "run", "list"))
        name = self.chance.choice(("cron-second", "bursty"))
        self.cli("ticker", action, *([] if action == "list" else [name]))
        self.figures.actions[f"rrd ticker {action}"] += 1

    def reset(self) -> None:
        self.cli("reset")
        self.figures.actions["rrd reset"] += 1

    def poke(self) -> None:
        """A hostile control connection, held open beside the driver's own calls."""
        kind = self.chance.choice(HOSTILE_KINDS)
        hold = self.chance.uniform(0.5, 6.0 if kind == "slow" else 2.0)
        chance = random.Random(self.chance.random())

        def run() -> None:
            ended = hostile(self.socket_path, kind, chance, hold)
            self.figures.hostile[f"{kind}: {ended}"] += 1

        thread = threading.Thread(target=run, name=f"hostile-{kind}", daemon=True)
        thread.start()
        self.hostiles.append(thread)
        self.figures.actions["hostile connection"] += 1

    def observe(self) -> None:
        """Probes and a scrape, as a kubelet and Prometheus send them mid-chaos: each must be
        answered, well formed and consistent."""
        figures = self.figures
        for path in ("/health?plugin=ticker", "/ready?plugin=ticker", "/metrics"):
            try:
                code, body = http_get(self.http_port, path)
            except OSError as exc:
                if self.alive():
                    figures.http_failures.append(f"{path}: {exc}")
                continue
            figures.http[f"{path.split('?')[0]} {code}"] += 1
            try:
                if path == "/metrics":
                    values = scraped(body)
                    total = values.get("rr_ticker_total_workers", 0.0)
                    serving = values.get("rr_ticker_workers_ready", 0.0) + values.get(
                        "rr_ticker_workers_working", 0.0
                    )
                    if code != 200 or serving > total:
                        figures.http_failures.append(f"/metrics {code}: {serving} > {total}")
                elif code not in (200, 404, 503) or not isinstance(json.loads(body), list):
                    figures.http_failures.append(f"{path} {code}: {body[:200]!r}")
            except ValueError as exc:
                figures.http_failures.append(f"{path} {code}: {exc}")
        figures.actions["probes and a scrape"] += 1

    def poke_http(self) -> None:
        """A hostile HTTP client beside the probes: garbage, or a head that never ends."""
        kind = self.chance.choice(("garbage", "slow head"))
        hold = self.chance.uniform(0.1, 2.0)

        def run() -> None:
            with (
                suppress(OSError),
                socket.create_connection(("127.0.0.1", self.http_port), timeout=5) as client,
            ):
                if kind == "garbage":
                    client.sendall(random.Random(hold).randbytes(300) + b"\r\n\r\n")
                    self.figures.hostile[f"http {kind}: {client.recv(12)[:12]!r}"] += 1
                    return
                client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                time.sleep(hold)
                self.figures.hostile[f"http {kind}"] += 1

        thread = threading.Thread(target=run, name=f"hostile-http-{kind}", daemon=True)
        thread.start()
        self.hostiles.append(thread)
        self.figures.actions["hostile HTTP connection"] += 1

    def read_ledger_move(self) -> None:
        self.read_ledger()
        self.figures.actions["ledger read"] += 1

    # the run

    def run(self) -> Figures:
        figures = self.figures
        began = time.monotonic()
        try:
            self.start()
            self.warm_up()
            self.say(f"rrd {self.pid}: chaos for {self.seconds:g}s (seed {figures.seed})")
            self.calm.unlink()
            deadline = time.monotonic() + self.seconds
            last_said = time.monotonic()
            while time.monotonic() < deadline:
                if not self.alive():
                    figures.died_early = True
                    break
                self.move()
                time.sleep(self.chance.uniform(0.05, 0.4))
                rss_now = rss(self.pid) if self.alive() else 0
                figures.rss_max = max(figures.rss_max, rss_now)
                if time.monotonic() - last_said > 30:
                    last_said = time.monotonic()
                    left = deadline - time.monotonic()
                    self.say(f"  {left:.0f}s left: {dict(figures.actions)}")
            figures.died_early = not self.alive()
            if not figures.died_early:
                self.settle()
            self.stop()
        finally:
            if self.process is not None and self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        self.judge()
        figures.seconds = time.monotonic() - began
        return figures

    def warm_up(self) -> None:
        """Calm workers until the pool is steady and rrd's figures stop moving; the baseline."""
        wait_for(self.steady, 30, step=0.2)
        time.sleep(min(10.0, max(2.0, self.seconds / 20)))
        self.figures.fds_start = self.stable_fds()
        self.figures.rss_start = rss(self.pid)
        self.figures.rss_max = self.figures.rss_start

    def stable_fds(self) -> int:
        """rrd's fd count, once two readings half a second apart agree (or after 10 s)."""
        previous = fd_count(self.pid)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = fd_count(self.pid)
            if now == previous:
                return now
            previous = now
        return previous

    def settle(self) -> None:
        """End the chaos: hostile clients gone, the configured config back, workers calm."""
        for thread in self.hostiles:
            thread.join(15)
        self.calm.touch()
        self.read_ledger()
        # a change of num_workers in the file ends any `rrd scale`: the configured size is back
        self.save(self.text(BASE_INTERVAL, self.workers + 1))
        self.save(self.text(BASE_INTERVAL, self.workers))
        wait_for(self.steady, 30, step=0.3)
        for _ in range(3):
            self.read_ledger()
        wait_for(lambda: fd_count(self.pid) == self.figures.fds_start, 15, step=0.2)
        self.figures.fds_end = self.stable_fds()
        self.figures.rss_end = rss(self.pid)
        wait_for(lambda: not [c for c in children(self.pid) if c[1] == "Z"], 5)
        self.figures.zombies = [pid for pid, state in children(self.pid) if state == "Z"]

    def stop(self) -> None:
        """SIGTERM, the exit code, then whatever of ours is still there."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.figures.exit_code = self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.figures.exit_code = None
        wait_for(lambda: not tagged(self.tag), 5)
        self.figures.left = tagged(self.tag)
        self.log.poll()

    def judge(self) -> None:
        figures = self.figures
        crashed = self.log.kept["daemon.crashed"]
        figures.check(
            "rrd never died",
            not figures.died_early
            and figures.exit_code == 0
            and not crashed
            and not figures.tracebacks
            and not figures.bad_lines,
            f"exit {figures.exit_code}, died early: {figures.died_early}, daemon.crashed: "
            f"{len(crashed)}, tracebacks: {len(figures.tracebacks)}, non-JSON lines: "
            f"{len(figures.bad_lines)}",
        )
        for record in self.log.kept["ticker.stopped"]:
            ticks = ledger_of(record)
            if ticks is None:
                figures.unbalanced.append(f"ticker.stopped without a ledger: {record}")
                continue
            if not balanced(ticks) or ticks["in_flight"]:
                figures.unbalanced.append(f"ticker.stopped: {json.dumps(ticks)}")
            for key in LEDGER_KEYS:
                figures.ledger[key] += ticks[key]
            figures.failed_by.update(ticks.get("failed_by", {}))
            figures.skipped_by.update(ticks.get("skipped_by", {}))
        figures.check(
            "the tick ledger balances",
            figures.ledger_reads >= 3 and not figures.unbalanced and figures.ledger["due"] > 0,
            f"{figures.ledger_reads} reads and {len(self.log.kept['ticker.stopped'])} stops; "
            f"unbalanced: {figures.unbalanced[:3]}",
        )
        figures.check(
            "every probe and scrape was answered, well formed",
            sum(figures.http.values()) > 0 and not figures.http_failures,
            f"{dict(figures.http)}; failures: {figures.http_failures[:3]}",
        )
        growth = figures.rss_end - figures.rss_start
        figures.check(
            "rrd's RSS grew < 5 MiB",
            bool(figures.rss_start and figures.rss_end) and growth < RSS_GROWTH_LIMIT,
            f"{mib(figures.rss_start)} -> {mib(figures.rss_end)} (max {mib(figures.rss_max)})",
        )
        figures.check(
            "rrd's fds are back to the start",
            bool(figures.fds_start) and figures.fds_end == figures.fds_start,
            f"{figures.fds_start} -> {figures.fds_end}",
        )
        figures.check(
            "the pool has its configured size",
            not figures.died_early
            and figures.pool.get("size") == self.workers
            and figures.pool.get("ready", 0) + figures.pool.get("busy", 0) == self.workers
            and figures.pool_processes == self.workers,
            f"configured {self.workers}; status {figures.pool}; worker processes "
            f"{figures.pool_processes}",
        )
        figures.check(
            "nothing left after stop",
            not figures.left and not figures.zombies,
            f"processes left: {figures.left[:5]}; zombie children before stop: {figures.zombies}",
        )
        figures.check(
            "every operator call answered",
            not figures.cli_failures,
            f"{len(figures.cli_failures)} failed: {figures.cli_failures[:5]}",
        )


def mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def table(figures: Figures, soak: Soak) -> str:
    """The figures as a table a person reads."""
    rows: list[tuple[str, str]] = [
        ("seed", str(figures.seed)),
        ("duration", f"{figures.seconds:.0f}s"),
        ("ticks due", str(figures.ledger["due"])),
        ("ticks delivered", str(figures.ledger["delivered"])),
        ("ticks failed", f"{figures.ledger['failed']} {dict(figures.failed_by)}"),
        ("ticks skipped", f"{figures.ledger['skipped']} {dict(figures.skipped_by)}"),
        ("ticks in flight at stop", str(figures.ledger["in_flight"])),
        ("ledger reads (status)", str(figures.ledger_reads)),
        (
            "rrd RSS start / end / max",
            " / ".join(map(mib, (figures.rss_start, figures.rss_end, figures.rss_max))),
        ),
        ("rrd fds start / end", f"{figures.fds_start} / {figures.fds_end}"),
        ("processes left", str(len(figures.left))),
        (
            "reloads applied / rejected",
            f"{figures.events['config.reloaded']} / {figures.events['config.rejected']}",
        ),
        ("workers started", str(figures.events["worker.started"])),
        ("workers killed", str(figures.events["worker.killed"])),
        ("workers retired", str(figures.events["worker.retired"])),
    ]
    rows += [(name, str(count)) for name, count in sorted(figures.actions.items())]
    rows += [(f"  hostile {kind}", str(n)) for kind, n in sorted(figures.hostile.items())]
    rows += [("exit code", str(figures.exit_code))]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines.append("")
    for name, ok, detail in figures.checks:
        lines.append(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    for failure in figures.cli_failures[:10]:
        lines.append(f"     cli: {failure}")
    for line in (figures.tracebacks + figures.bad_lines)[:5]:
        lines.append(f"     log: {line}")
    lines.append(f"log: {soak.log.path}")
    return "\n".join(lines)


@contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    if keep:
        yield Path(tempfile.mkdtemp(prefix="rrd-soak-"))
        return
    with tempfile.TemporaryDirectory(prefix="rrd-soak-") as folder:
        yield Path(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workers", type=int, default=BASE_WORKERS)
    parser.add_argument("--keep", action="store_true", help="keep the folder with rrd's log")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    with workspace(args.keep) as folder:
        soak = Soak(folder, args.seconds, seed=seed, workers=args.workers, say=print)
        figures = soak.run()
        print(table(figures, soak))
    return 0 if figures.ok else 1


if __name__ == "__main__":
    sys.exit(main())

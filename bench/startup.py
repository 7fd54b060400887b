"""Start-up: `rrd serve` until it tells its service manager READY=1, with 1, 16 and 64 workers,
next to the floor (64 bare runs of the same worker program, no supervisor) and to supervisord
and circus starting 50 processes, all in the same run, interleaved.

    .venv/bin/python bench/startup.py [--runs 3] [--json] [--smoke]

- rrd: the bench binds an AF_UNIX datagram socket and hands it to rrd as NOTIFY_SOCKET, as
  systemd does; the time is from Popen to the datagram holding READY=1 (no polling). Workers
  are tests/workers/echo.py (rrd.sdk); the ticker's interval is an hour, so none is busy.
- floor: the same program started 64 times in parallel by the bench itself, each with the
  pipes and environment rrd gives a worker (stdin/stdout/stderr pipes, RR_RELAY=pipes,
  RR_VERSION, RR_MODE=ticker), each sent the pid handshake frame rrd sends first; the time is
  from the first spawn to the last reply: what any supervisor of these workers must wait for.
- supervisord and circus (bench/peers.py; PyPI, default settings) start 50 processes of
  bench/idle_worker.py (imports rrd.sdk, then waits), from the daemon's launch until they
  report all of them running: supervisord's RUNNING comes after startsecs (1 s); its last
  `spawned:` is shown too. circus calls a process active once it exists, before the program
  has imported anything; rrd's READY=1 waits for every worker's handshake. rrd is started with
  50 workers too, for that row.

Target: 64 workers to READY=1 within 1.2x of the floor. --smoke: 1 and 4 workers, a floor of
4, peers with 4 processes, 1 run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import peers
import psutil
from table import SMOKE_HELP, Figure, Row, report

from rrd import __version__ as RRD_VERSION
from rrd.protocol.control import pid_request
from rrd.protocol.frame import Decoder

ROOT = Path(__file__).resolve().parent.parent
ECHO = ROOT / "tests" / "workers" / "echo.py"
TIMEOUT = 60.0
PEER_PROCESSES = 50
TARGET_RATIO = 1.2

CONFIG = """
version: "3"
server:
  command: ["{python}", "{worker}"]
ticker:
  interval: 1h
  pool:
    num_workers: {workers}
    allocate_timeout: 60s
"""


def rrd_ready(workers: int) -> float:
    """Seconds from Popen of `rrd serve` to its READY=1 datagram."""
    with tempfile.TemporaryDirectory() as folder:
        config, log = Path(folder, "rr.yaml"), Path(folder, "rrd.log")
        config.write_text(CONFIG.format(python=sys.executable, worker=ECHO, workers=workers))
        address = str(Path(folder, "notify.sock"))
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify, log.open("wb") as errors:
            notify.bind(address)
            env = {**os.environ, "NOTIFY_SOCKET": address}
            argv = [sys.executable, "-m", "rrd", "serve", "-c", str(config)]
            began = time.monotonic()
            rrd = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stderr=errors,
                start_new_session=True,
            )  # fmt: skip
            try:
                ready = _ready_datagram(notify, rrd, log) - began
            finally:
                _stop_rrd(rrd)
        return ready


def _ready_datagram(notify: socket.socket, rrd: subprocess.Popen[bytes], log: Path) -> float:
    """Monotonic time at which a datagram holding READY=1 arrived."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SystemExit(f"rrd sent no READY=1 within {TIMEOUT:g}s; see {log}")
        notify.settimeout(min(remaining, 0.5))
        try:
            datagram = notify.recv(4096)
        except TimeoutError:
            if rrd.poll() is not None:
                raise SystemExit(f"rrd exited {rrd.returncode} before READY=1; see {log}") from None
            continue
        arrived = time.monotonic()
        if b"READY=1" in datagram.split(b"\n"):
            return arrived


def _stop_rrd(rrd: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then whatever is left of rrd and its workers is killed."""
    with contextlib.suppress(psutil.Error):
        workers = psutil.Process(rrd.pid).children(recursive=True)
    if rrd.poll() is None:
        rrd.send_signal(signal.SIGTERM)
        try:
            rrd.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(rrd.pid, signal.SIGKILL)
            rrd.wait(10)
    _kill_all(workers)


def floor(workers: int) -> float:
    """Seconds from the first spawn of `workers` bare echo.py to the last handshake reply."""
    env = {key: value for key, value in os.environ.items() if key != "NOTIFY_SOCKET"}
    env.update({"RR_RELAY": "pipes", "RR_VERSION": RRD_VERSION, "RR_MODE": "ticker"})
    handshake = pid_request(os.getpid()).encode()
    argv = [sys.executable, str(ECHO)]
    processes: list[subprocess.Popen[bytes]] = []
    decoders: dict[int, Decoder] = {}
    with selectors.DefaultSelector() as selector:
        try:
            began = time.monotonic()
            for _ in range(workers):
                process = subprocess.Popen(
                    argv, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, start_new_session=True,
                )  # fmt: skip
                processes.append(process)
                assert process.stdin is not None and process.stdout is not None
                process.stdin.write(handshake)
                process.stdin.flush()
                decoders[process.stdout.fileno()] = Decoder()
                selector.register(process.stdout.fileno(), selectors.EVENT_READ)
            waiting = set(decoders)
            deadline = began + TIMEOUT
            while waiting:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SystemExit(f"{len(waiting)} bare workers did not answer the handshake")
                for key, _ in selector.select(remaining):
                    data = os.read(key.fd, 4096)
                    if not data:
                        raise SystemExit("a bare worker closed its stdout before answering")
                    if decoders[key.fd].feed(data):
                        waiting.discard(key.fd)
                        selector.unregister(key.fd)
            done = time.monotonic()
        finally:
            _end_bare(processes)
    return done - began


def _end_bare(processes: list[subprocess.Popen[bytes]]) -> None:
    """EOF on stdin ends an rrd.sdk worker; SIGKILL whatever is still there after 10 s."""
    for process in processes:
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
    deadline = time.monotonic() + 10
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def peer_ready(peer: str, processes: int) -> dict[str, float]:
    """Seconds from the peer's launch until it reports all `processes` running (and, for
    supervisord, until it has spawned them all)."""
    command = [sys.executable, str(peers.IDLE_WORKER)]
    env = {"PYTHONPATH": str(ROOT)}
    with (
        tempfile.TemporaryDirectory() as folder,
        peers.running(peer, command, processes, Path(folder), env) as run,
    ):
        figures = {}
        if peer == "supervisord":
            figures["spawned"] = run.wait_spawned(TIMEOUT) - run.launched
            figures["RUNNING"] = run.wait_running(TIMEOUT) - run.launched
        else:
            figures["active"] = run.wait_running(TIMEOUT) - run.launched
        return figures


def _kill_all(processes: list[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(processes, timeout=10)


def measure(sizes: list[int], floor_size: int, peer_size: int, runs: int) -> dict[str, list]:
    """Every figure's samples in seconds, runs interleaved: rrd at each size (and at the
    peers' size), the floor, the peers, then again."""
    samples: dict[str, list[float]] = {}
    steps: list[tuple[str, Callable[[], dict[str, float]]]] = [
        (f"rrd {size}", lambda size=size: {"": rrd_ready(size)})
        for size in sorted({*sizes, peer_size})
    ]
    steps.append((f"floor {floor_size}", lambda: {"": floor(floor_size)}))
    for peer in peers.available():
        steps.append((f"{peer} {peer_size}", lambda peer=peer: peer_ready(peer, peer_size)))
    for _ in range(runs):
        for name, step in steps:
            for figure, value in step().items():
                samples.setdefault(f"{name} {figure}".strip(), []).append(value)
    return samples


def rows(samples: dict[str, list], sizes: list[int], floor_size: int, peer_size: int) -> list:
    found = []
    for size in sizes:
        rrd = Figure.of(samples[f"rrd {size}"], "s")
        figure = f"rrd serve to READY=1, {_workers(size)}"
        if size != floor_size:
            found.append(Row("startup", figure, rrd))
            continue
        floor_figure = Figure.of(samples[f"floor {floor_size}"], "s")
        value = rrd.median / floor_figure.median
        found.append(
            Row(
                "startup",
                figure,
                rrd,
                versus={f"floor ({floor_size} bare workers, first frame)": floor_figure},
                ratio=f"{value:.2f}x the floor",
                target=f"within {TARGET_RATIO}x of the floor",
                met=value <= TARGET_RATIO,
            )
        )
    versus = {}
    for peer, words in (("supervisord", ("spawned", "RUNNING")), ("circus", ("active",))):
        for word in words:
            key = f"{peer} {peer_size} {word}"
            if key in samples:
                versus[f"{peer} {word}"] = Figure.of(samples[key], "s")
    if versus:
        rrd = Figure.of(samples[f"rrd {peer_size}"], "s")
        found.append(
            Row(
                "startup",
                f"{_workers(peer_size)} to ready: rrd READY=1, peers all running",
                rrd,
                versus=versus,
                ratio="; ".join(
                    f"{name} / rrd = {_times(other.median, rrd.median)}"
                    for name, other in versus.items()
                    if not name.endswith("spawned")
                ),
            )
        )
    return found


def _workers(count: int) -> str:
    return f"{count} worker{'s' if count > 1 else ''}"


def _times(numerator: float, denominator: float) -> str:
    value = numerator / denominator if denominator else float("inf")
    return f"{value:.1f}x" if value < 10 else f"{value:.0f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print rows as JSON lines")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        sizes, floor_size, peer_size, runs = [1, 4], 4, 4, 1
    else:
        sizes, floor_size, peer_size, runs = [1, 16, 64], 64, PEER_PROCESSES, args.runs
    peers.install()
    if not args.json:
        print(peers.banner(f"{runs} runs, interleaved"))
    samples = measure(sizes, floor_size, peer_size, runs)
    report(rows(samples, sizes, floor_size, peer_size), as_json=args.json)


if __name__ == "__main__":
    main()

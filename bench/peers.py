"""supervisord and circus, the peers rrd's benches compare with: installed, started, measured.

    .venv/bin/python bench/peers.py          # installs them if needed, then checks each one

Both come from PyPI into their own virtualenv, bench/.peers (`install()`), never into rrd's,
and run with their default settings: only what a bench must set is set (the program, how many
processes, where the logs and sockets go). A bench script does

    with peers.running("supervisord", [python, worker], 50, folder) as run:
        ready = run.wait_running(60) - run.launched

What "running" means is each peer's own word, read as cheaply as it can be read:

- supervisord: its log (loglevel info, its default). `spawned: 'worker_3' with pid N` is the
  fork; `success: worker_3 entered RUNNING state` comes after `startsecs` (1 s by default).
  The log is followed incrementally, every millisecond.
- circus: a process is `active` as soon as it exists (circus has no startsecs; its
  `Process.status` is psutil's). So: its log's `worker started` (the watcher spawned every
  process) since the last start, restart or reload, and then N live children of circusd running
  the command, read from /proc/PID/task/*/children every millisecond. That is what
  `circusctl list` would answer, without a 300 ms Python client in the middle of the measure.
  circus has no SIGCHLD handler: it reaps and respawns in its periodic check, every
  `check_delay`, 5 s by default when circusd reads an ini file. So its "spawned" and
  "running" after a kill are one moment, anywhere from 0 to 5 s after it.

Reload and restart go through each peer's own client (`supervisorctl update`, `supervisorctl
restart all`, `circusctl reloadconfig --waiting`, `circusctl restart --waiting`), its start-up
included in the time. Without --waiting, a circus reload that only lowers numprocesses left
circusd deaf to SIGTERM afterwards (circus 0.19.0); with it, circusctl returns once done.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
PEERS_VENV = ROOT / "bench" / ".peers"
PACKAGES = ("supervisor", "circus")
PEERS = ("supervisord", "circus")
IDLE_WORKER = ROOT / "bench" / "idle_worker.py"
"""The program peers run: imports rrd.sdk, as every worker does, and waits (no relay)."""

_STAMP = PEERS_VENV / ".installed"
_POLL = 0.001


def install() -> None:
    """Create bench/.peers and pip-install supervisor and circus into it, once (a stamp file
    says it was done). A package that fails to install is said on stderr and left out: the
    benches then compare with what `available()` names. Several benches may ask at once (the
    smoke test starts them together): a lock file lets one install while the others wait."""
    if _STAMP.exists() and _STAMP.read_text().split() == list(PACKAGES):
        return
    PEERS_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(PEERS_VENV.parent / ".peers.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _STAMP.exists() and _STAMP.read_text().split() == list(PACKAGES):
            return
        if not _bin("python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
            (PEERS_VENV / ".gitignore").write_text("*\n")
        failed = []
        for package in PACKAGES:
            pip = subprocess.run(
                [str(_bin("python")), "-m", "pip", "install", "-q", package],
                capture_output=True,
                text=True,
            )
            if pip.returncode != 0:
                failed.append(package)
                print(f"peers: pip install {package} failed:\n{pip.stderr}", file=sys.stderr)
        if not failed:
            _STAMP.write_text("\n".join(PACKAGES) + "\n")
    available.cache_clear()


@cache
def available() -> list[str]:
    """The peers whose executables are installed and start (`--version` exits 0)."""
    probes = {
        "supervisord": ("supervisord", "supervisorctl"),
        "circus": ("circusd", "circusctl"),
    }
    found = []
    for peer, programs in probes.items():
        if not all(_bin(program).exists() for program in programs):
            continue
        try:
            probe = subprocess.run(
                [str(_bin(programs[0])), "--version"], capture_output=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0:
            found.append(peer)
    return found


def banner(detail: str) -> str:
    """The line a bench prints first for a person: Python, the load, the peers, `detail`."""
    found = ", ".join(f"{name} {version}" for name, version in versions().items())
    python = sys.version.split()[0]
    return f"python {python}; load {os.getloadavg()[0]:.1f}; peers: {found}; {detail}"


def versions() -> dict[str, str]:
    """Installed versions of the peers' packages, from their dist-info folders."""
    found = {}
    for info in PEERS_VENV.glob("lib/python*/site-packages/*.dist-info"):
        name, _, version = info.name.removesuffix(".dist-info").partition("-")
        if name.lower() in PACKAGES:
            found[name.lower()] = version
    return found


class PeerRun:
    """One started peer daemon running `processes` copies of `command`."""

    name = ""
    resize_replaces = False
    """Whether a new process count alone restarts every process (supervisord's group)."""

    def __init__(
        self, command: list[str], processes: int, folder: Path, env: dict[str, str] | None
    ) -> None:
        self.command = list(command)
        self.processes = processes
        self.folder = folder
        self.env = dict(env or {})
        self.config = folder / f"{self.name}.conf"
        self.log = folder / f"{self.name}.log"
        self.launched = 0.0
        self.daemon: subprocess.Popen[bytes] | None = None
        self._seen: dict[int, psutil.Process] = {}

    @property
    def pid(self) -> int:
        """The daemon's pid (for psutil footprint measures)."""
        assert self.daemon is not None
        return self.daemon.pid

    def process(self) -> psutil.Process:
        """The daemon as a psutil.Process."""
        return psutil.Process(self.pid)

    def start(self) -> None:
        self.write_config()
        self.log.touch()
        with (self.folder / f"{self.name}.out").open("wb") as output:
            self.launched = time.monotonic()
            self.daemon = subprocess.Popen(
                self.argv(),
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    # what each peer defines

    def argv(self) -> list[str]:
        raise NotImplementedError

    def write_config(self) -> None:
        raise NotImplementedError

    def running_pids(self) -> set[int] | None:
        """The pids the peer reports running now; None while it reports none yet."""
        raise NotImplementedError

    def spawned_pids(self) -> set[int]:
        """Every pid the peer says it spawned so far (its children, for circus)."""
        raise NotImplementedError

    def _reload_command(self) -> list[str]:
        raise NotImplementedError

    def _restart_command(self) -> list[str]:
        raise NotImplementedError

    def _expect_start(self) -> None:
        """What restart or reload must see again before the processes count (circus)."""

    # shared

    def child_pids(self) -> list[int]:
        """The daemon's live children (not zombies), as the kernel has them."""
        pids = []
        for pid in _children(self.pid):
            with contextlib.suppress(psutil.Error):
                if pid not in self._seen:
                    self._seen[pid] = psutil.Process(pid)
                if self._seen[pid].status() != psutil.STATUS_ZOMBIE:
                    pids.append(pid)
        return pids

    def wait_running(
        self, timeout: float = 60, exclude: set[int] | frozenset[int] = frozenset()
    ) -> float:
        """Monotonic time at which all N processes are running as the peer reports, none of
        them in `exclude` (the pids a restart replaces)."""
        return self._until(lambda: self._all_running(exclude), timeout, "all running")

    def wait_spawned(self, timeout: float = 60) -> float:
        """Monotonic time at which the peer has spawned N processes since its launch."""
        return self._until(
            lambda: len(self.spawned_pids()) >= self.processes, timeout, "all spawned"
        )

    def kill_one(self, timeout: float = 30) -> tuple[float, float]:
        """SIGKILL one running process: (ms until its replacement was spawned, ms until the
        peer reports it running)."""
        self.wait_running(timeout)
        before = self.spawned_pids()
        victim = min(self.running_pids() or ())
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        spawned = self._until(lambda: bool(self.spawned_pids() - before), timeout, "a respawn")
        running = self.wait_running(timeout, exclude={victim})
        return (spawned - killed) * 1000, (running - killed) * 1000

    def reload_config(
        self,
        command: list[str] | None = None,
        processes: int | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> float:
        """Rewrite the config with what is given, have the peer load it (`supervisorctl
        update`, `circusctl reloadconfig`): seconds from the call until the change is in
        effect, as the peer reports: all N running, none of the old ones when the command
        or environment changed, the new count when only that changed."""
        old = self.running_pids() or set()
        replace = (
            (command is not None and command != self.command)
            or (env is not None and env != self.env)
            or (processes not in (None, self.processes) and self.resize_replaces)
        )
        self.command = self.command if command is None else list(command)
        self.env = self.env if env is None else dict(env)
        self.processes = self.processes if processes is None else processes
        self.write_config()
        began = time.monotonic()
        if replace:
            self._expect_start()
        self._control(self._reload_command())
        done = self.wait_running(timeout, exclude=old if replace else frozenset())
        return done - began

    def restart_all(self, timeout: float = 60) -> float:
        """Seconds from `supervisorctl restart all` / `circusctl restart` until all N were
        replaced and are running."""
        old = self.running_pids() or set()
        began = time.monotonic()
        self._expect_start()
        self._control(self._restart_command())
        return self.wait_running(timeout, exclude=old) - began

    def stop(self, timeout: float = 60) -> float:
        """Seconds from SIGTERM to the daemon until it and all its children have exited."""
        assert self.daemon is not None
        children = self._descendants()
        began = time.monotonic()
        self.daemon.send_signal(signal.SIGTERM)
        self.daemon.wait(timeout)
        gone = self._until(
            lambda: not any(_alive(p) for p in children), timeout, "children gone", exited=True
        )
        return gone - began

    def close(self) -> None:
        """Stop the daemon if it still runs, then kill whatever of it is left, and check."""
        if self.daemon is None:
            return
        leftovers = self._descendants() if self.daemon.poll() is None else []
        if self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.daemon.pid, signal.SIGKILL)
                self.daemon.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.daemon.pid, signal.SIGKILL)
        leftovers += [p for p in self._seen.values() if p not in leftovers]
        leftovers += _session(self.daemon.pid)
        for process in leftovers:
            with contextlib.suppress(psutil.Error):
                process.kill()
        _gone, alive = psutil.wait_procs(leftovers, timeout=10)
        alive = [p for p in alive if _alive(p)]
        if alive:
            raise RuntimeError(f"{self.name}: processes survived: {[p.pid for p in alive]}")

    def _descendants(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            found = psutil.Process(self.pid).children(recursive=True)
            for process in found:
                self._seen.setdefault(process.pid, process)
            return found
        return []

    def _all_running(self, exclude: set[int] | frozenset[int]) -> bool:
        running = self.running_pids()
        return running is not None and len(running) == self.processes and not running & exclude

    def _until(
        self, condition: Callable[[], bool], timeout: float, what: str, exited: bool = False
    ) -> float:
        """Monotonic time at which `condition` held, polled every ms; fails when the daemon
        exits first (unless it was meant to: `exited`) or at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            if condition():
                return time.monotonic()
            if not exited and self.daemon is not None and self.daemon.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.daemon.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no {what} within {timeout:g}s; see {self.log}")
            time.sleep(_POLL)

    def _control(self, argv: list[str]) -> None:
        result = subprocess.run(argv, cwd=self.folder, capture_output=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)} exited {result.returncode}: {result.stdout!r}")


class SupervisordRun(PeerRun):
    """supervisord with `[program:worker] numprocs=N`, in the foreground, its log followed."""

    name = "supervisord"
    resize_replaces = True
    _LINE = re.compile(
        r"(?:spawned: '(?P<spawned>[^']+)' with pid (?P<pid>\d+))"
        r"|(?:success: (?P<running>\S+) entered RUNNING state)"
        r"|(?:(?:exited|stopped|gave up|killed): (?P<gone>\S+)[ :])"
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._offset = 0
        self._partial = b""
        self._pids: dict[str, int] = {}
        self._running: set[str] = set()
        self._spawned: set[int] = set()

    def argv(self) -> list[str]:
        return [str(_bin("supervisord")), "-c", str(self.config)]

    def write_config(self) -> None:
        environment = ",".join(f'{key}="{value}"' for key, value in self.env.items())
        folder = _escape_percent(str(self.folder))
        self.config.write_text(
            f"""[unix_http_server]
file={folder}/supervisor.sock

[supervisord]
nodaemon=true
logfile={_escape_percent(str(self.log))}
pidfile={folder}/supervisord.pid

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{folder}/supervisor.sock

[program:worker]
command={_escape_percent(shlex.join(self.command))}
numprocs={self.processes}
process_name=%(program_name)s_%(process_num)s
"""
            + (f"environment={_escape_percent(environment)}\n" if environment else "")
        )

    def running_pids(self) -> set[int] | None:
        self._read()
        return {self._pids[name] for name in self._running} if self._running else None

    def spawned_pids(self) -> set[int]:
        self._read()
        return set(self._spawned)

    def _read(self) -> None:
        with self.log.open("rb") as log:
            log.seek(self._offset)
            chunk = log.read()
        if not chunk:
            return
        self._offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            match = self._LINE.search(line.decode("utf-8", "replace"))
            if not match:
                continue
            if match["spawned"]:
                self._pids[match["spawned"]] = int(match["pid"])
                self._spawned.add(int(match["pid"]))
                self._running.discard(match["spawned"])
            elif match["running"]:
                self._running.add(match["running"])
            else:
                self._running.discard(match["gone"])

    def _reload_command(self) -> list[str]:
        return [str(_bin("supervisorctl")), "-c", str(self.config), "update"]

    def _restart_command(self) -> list[str]:
        return [str(_bin("supervisorctl")), "-c", str(self.config), "restart", "all"]


class CircusRun(PeerRun):
    """circusd with `[watcher:worker] numprocesses=N`, its endpoints ipc sockets in the folder."""

    name = "circus"
    _STARTED = b"worker started"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._start_offset = 0
        self._started = False
        self._commands: dict[int, bool] = {}
        self.endpoint = f"ipc://{self.folder}/circus-endpoint.sock"

    def argv(self) -> list[str]:
        return [str(_bin("circusd")), "--log-output", str(self.log), str(self.config)]

    def write_config(self) -> None:
        env = "".join(f"{key} = {value}\n" for key, value in self.env.items())
        self.config.write_text(
            _escape_percent(
                f"""[circus]
endpoint = {self.endpoint}
pubsub_endpoint = ipc://{self.folder}/circus-pubsub.sock

[watcher:worker]
cmd = {shlex.join(self.command)}
numprocesses = {self.processes}
"""
                + (f"\n[env:worker]\n{env}" if env else "")
            )
        )

    def running_pids(self) -> set[int] | None:
        if not self._started:
            with self.log.open("rb") as log:
                log.seek(self._start_offset)
                self._started = self._STARTED in log.read()
            if not self._started:
                return None
        return {pid for pid in self.child_pids() if self._runs_command(pid)} or None

    def spawned_pids(self) -> set[int]:
        return set(self.child_pids())

    def _runs_command(self, pid: int) -> bool:
        """Whether the child has exec'd the command (before, it is circusd's fork)."""
        if self._commands.get(pid):
            return True
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            return False
        runs = [arg.decode() for arg in argv] == self.command
        self._commands[pid] = runs
        return runs

    def _expect_start(self) -> None:
        self._start_offset = self.log.stat().st_size
        self._started = False
        self._commands.clear()

    def _reload_command(self) -> list[str]:
        return [str(_bin("circusctl")), "--endpoint", self.endpoint, "reloadconfig", "--waiting"]

    def _restart_command(self) -> list[str]:
        return [str(_bin("circusctl")), "--endpoint", self.endpoint, "restart", "--waiting"]


_RUNS = {"supervisord": SupervisordRun, "circus": CircusRun}


@contextlib.contextmanager
def running(
    peer: str,
    command: list[str],
    processes: int,
    folder: Path,
    env: dict[str, str] | None = None,
) -> Iterator[PeerRun]:
    """Start `peer` running `processes` copies of `command` (config and logs in `folder`);
    on leaving, stop it and kill whatever of it is left."""
    run = _RUNS[peer](command, processes, Path(folder), env)
    try:
        run.start()
        yield run
    finally:
        run.close()


@contextlib.contextmanager
def serving(peer: str, program: Path, processes: int) -> Iterator[PeerRun]:
    """`processes` copies of a Python `program` that imports rrd, under `peer` in a folder of
    its own, all running: what the footprint and stop benches measure."""
    import tempfile

    with (
        tempfile.TemporaryDirectory() as folder,
        running(
            peer, [sys.executable, str(program)], processes, Path(folder), {"PYTHONPATH": str(ROOT)}
        ) as run,
    ):
        run.wait_running(120)
        yield run


def _bin(program: str) -> Path:
    return PEERS_VENV / "bin" / program


def _escape_percent(text: str) -> str:
    return text.replace("%", "%%")


def _children(pid: int) -> list[int]:
    pids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.scandir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"{task.path}/children", "rb") as children:
                pids.extend(int(child) for child in children.read().split())
    return pids


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _session(sid: int) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getsid(process.pid) == sid:
                found.append(process)
    return found


def main() -> None:
    """Install the peers, then run each with 2 processes through every measure once."""
    import tempfile

    install()
    print(f"peers: {available()} {versions()}")
    command = [sys.executable, str(IDLE_WORKER)]
    for peer in available():
        with (
            tempfile.TemporaryDirectory() as folder,
            running(peer, command, 2, Path(folder)) as run,
        ):
            print(f"{peer}: running after {run.wait_running(60) - run.launched:.3f} s")
            spawned, ready = run.kill_one()
            print(f"{peer}: kill_one spawned {spawned:.1f} ms, running {ready:.1f} ms")
            print(f"{peer}: restart_all {run.restart_all():.3f} s")
            print(f"{peer}: reload_config {run.reload_config([*command, 'x']):.3f} s")
            print(f"{peer}: {len(run.child_pids())} children, daemon rss ", end="")
            print(f"{run.process().memory_info().rss / 2**20:.1f} MiB")
            print(f"{peer}: stop {run.stop():.3f} s")


if __name__ == "__main__":
    main()

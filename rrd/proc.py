"""Operating-system processes: finding a program, process groups, the registry of what rrd
started, orphans rrd adopts as a subreaper, memory of a process tree, exit codes.

Room: with config (below worker). Imports nothing of rrd. Every worker leads its own session,
so its process group holds it and its children; signalling the group reaches them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
_PAGE = os.sysconf("SC_PAGE_SIZE")


def find_program(program: str, path: str | None, cwd: str | os.PathLike[str]) -> str:
    """The file execvp would run for `program` from `cwd`, with `path` as PATH.

    A name with a slash is a path (relative to `cwd`); any other is looked up in each PATH
    directory (the default path when PATH is unset). Raises FileNotFoundError ("command not
    found") or PermissionError ("permission denied": a candidate exists but cannot be run).
    """
    if "/" in program:
        candidates = [Path(cwd, program)]
    else:
        directories = os.get_exec_path({} if path is None else {"PATH": path})
        candidates = [Path(cwd, directory, program) for directory in directories] if program else []
    denied = False
    for candidate in candidates:
        try:
            regular = candidate.is_file()
        except (OSError, ValueError):
            continue
        if regular and os.access(candidate, os.X_OK):
            return os.path.abspath(candidate)
        denied = denied or candidate.exists()
    if denied:
        raise PermissionError(errno.EACCES, "permission denied", program)
    raise FileNotFoundError(errno.ENOENT, "command not found", program)


def kill_group(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    """Signal a worker's whole process group (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def describe_exit(returncode: int | None) -> str:
    """`exit code 3` or `killed by SIGKILL`, for log lines and errors."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def alive(pid: int) -> bool:
    """The process exists and has not exited (a zombie only waits for its parent to reap it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def available_cpus() -> int:
    """CPUs this process may run on (taskset, cgroup cpusets), as Go's runtime.NumCPU counts."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def become_subreaper() -> bool:
    """Adopt the orphans of rrd's descendants (PR_SET_CHILD_SUBREAPER), so that a grandchild
    that double-forks out of its worker's process group is still rrd's to reap and to kill."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def parent_death_launcher() -> tuple[str, ...]:
    """An argv prefix that has the kernel SIGKILL a worker when rrd dies, even by SIGKILL.

    util-linux's `setpriv --pdeathsig` sets the parent-death signal and execs the command in
    the same process: unlike a `preexec_fn`, nothing runs between fork and exec in a process
    that has threads. Empty where setpriv is missing or too old (workers that read stdin still
    see EOF; systemd's cgroup takes the rest).
    """
    try:
        setpriv = find_program("setpriv", os.environ.get("PATH"), "/")
    except OSError:
        return ()
    try:
        probe = subprocess.run([setpriv, "--help"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ()
    return (setpriv, "--pdeathsig", "KILL", "--") if "--pdeathsig" in probe.stdout else ()


_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """What operators see of a process: resident memory, and CPU over its whole life."""

    rss: int
    """Resident bytes."""
    cpu_percent: float
    """CPU time over its lifetime, in percent of one CPU (as `rr workers` shows it)."""


def sample_processes(pids: Iterable[int]) -> dict[int, ProcessSample]:
    """Each live process of `pids`, from one read of its /proc/PID/stat; the gone are left
    out. It reads /proc: the loop runs it in a thread (`sampled`), never itself."""
    now = time.clock_gettime(time.CLOCK_BOOTTIME)  # /proc/uptime's clock, without /proc
    samples = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            used = (int(fields[11]) + int(fields[12])) / _TICKS
            lived = now - int(fields[19]) / _TICKS
            rss = int(fields[21]) * _PAGE
        except (OSError, ValueError, IndexError):
            continue
        samples[pid] = ProcessSample(rss, round(100 * used / lived, 1) if lived > 0 else 0.0)
    return samples


async def sampled(pids: Iterable[int]) -> dict[int, ProcessSample]:
    """`sample_processes` in a thread: a /proc read is a syscall per file, and 256 workers'
    would hold the loop for milliseconds."""
    return await asyncio.to_thread(sample_processes, list(pids))


@dataclass(frozen=True, slots=True)
class ProcessEntry:
    """One line of the process table, as /proc/PID/stat has it."""

    pid: int
    ppid: int
    state: str
    rss: int  # bytes


def process_table() -> Iterator[ProcessEntry]:
    """Every process of the machine (of rrd's pid namespace), read from /proc once."""
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            pid, ppid, state = int(entry.name), int(fields[1]), fields[0].decode()
            yield ProcessEntry(pid, ppid, state, int(fields[21]) * _PAGE)


def tree_memory(
    roots: Iterable[int], table: Iterable[ProcessEntry] | None = None
) -> dict[int, int]:
    """Resident bytes of each root process with all of its descendants."""
    entries = list(process_table() if table is None else table)
    children: dict[int, list[ProcessEntry]] = {}
    by_pid = {e.pid: e for e in entries}
    for entry in entries:
        children.setdefault(entry.ppid, []).append(entry)
    totals: dict[int, int] = {}
    for root in roots:
        first = by_pid.get(root)
        if first is None:
            totals[root] = 0
            continue
        total, todo = 0, [first]
        while todo:
            entry = todo.pop()
            if entry.state != "Z":
                total += entry.rss
            todo.extend(children.get(entry.pid, ()))
        totals[root] = total
    return totals


class ProcessRegistry:
    """The processes this daemon started and has not reaped yet, and how it starts them.

    The daemon core owns one and hands it down to every spawn; whatever way rrd ends, it kills
    what is left, so no worker outlives rrd. As a subreaper rrd also adopts the orphans of its
    workers' children: `reap_orphans` reaps those that died (no zombies), `kill_orphans` ends
    the rest at stop.
    """

    __slots__ = ("_groups", "_spawning", "launcher")

    def __init__(self, *, launcher: tuple[str, ...] = ()) -> None:
        self.launcher = launcher
        """Put before every worker's argv: `parent_death_launcher()`, or nothing."""
        self._groups: set[int] = set()
        self._spawning = 0

    def __len__(self) -> int:
        return len(self._groups)

    def __contains__(self, pid: object) -> bool:
        return pid in self._groups

    @contextlib.contextmanager
    def spawning(self) -> Iterator[None]:
        """While a spawn is under way its child may not be in the registry yet: no orphan is
        reaped meanwhile, so no exit status is taken from asyncio."""
        self._spawning += 1
        try:
            yield
        finally:
            self._spawning -= 1

    def add(self, pid: int) -> None:
        """A process group rrd has just started."""
        self._groups.add(pid)

    def reaped(self, pid: int) -> None:
        """The group's leader was reaped: kill what is left of the group, and forget it.

        Called at once on the reap, while the pid cannot yet belong to anybody else (the kernel
        does not reuse a pid still used as a process group id).
        """
        kill_group(pid)
        self._groups.discard(pid)

    def kill_all(self) -> int:
        """SIGKILL every group not yet reaped: the last resort on the way out. Returns how many."""
        for pid in list(self._groups):
            kill_group(pid)
        return len(self._groups)

    def orphans(self) -> list[ProcessEntry]:
        """rrd's children it did not start: adopted descendants of its workers."""
        me = os.getpid()
        return [e for e in process_table() if e.ppid == me and e.pid not in self._groups]

    @property
    def busy_spawning(self) -> bool:
        """A spawn is under way: reaping orphans must wait (see `spawning`)."""
        return self._spawning > 0

    def reap_orphans(self) -> list[int]:
        """Reap the adopted orphans that have exited; their pids. Nothing while spawning."""
        if self._spawning:
            return []
        reaped = []
        for orphan in self.orphans():
            if orphan.state == "Z":
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(orphan.pid, os.WNOHANG)[0]:
                        reaped.append(orphan.pid)
        return reaped

    def kill_orphans(self) -> list[int]:
        """SIGKILL every adopted orphan still alive (and its group, if it leads one); their pids.

        One still in a group rrd started is not counted: killing that group took it (it may
        just have been adopted as its worker died first), or reaping the group's leader will."""
        killed = []
        for orphan in self.orphans():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(orphan.pid) in self._groups:
                    continue
            if orphan.state != "Z":
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(orphan.pid, signal.SIGKILL)
                    killed.append(orphan.pid)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if os.getpgid(orphan.pid) == orphan.pid:
                        os.killpg(orphan.pid, signal.SIGKILL)
        return killed

"""Operating-system processes: process groups, the registry of what rrd started, exit codes.

Room: with worker (below it). Imports nothing of rrd. Every worker leads its own session, so
its process group holds it and its children; signalling the group reaches them all.
"""

from __future__ import annotations

import contextlib
import os
import signal


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


def available_cpus() -> int:
    """CPUs this process may run on (taskset, cgroup cpusets), as Go's runtime.NumCPU counts."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class ProcessRegistry:
    """The process groups this daemon started and has not reaped yet.

    The daemon core owns one and hands it down to every spawn; whatever way rrd ends, it kills
    what is left, so no worker outlives rrd.
    """

    __slots__ = ("_groups",)

    def __init__(self) -> None:
        self._groups: set[int] = set()

    def __len__(self) -> int:
        return len(self._groups)

    def __contains__(self, pid: object) -> bool:
        return pid in self._groups

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

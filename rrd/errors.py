"""Errors and exit codes: the bottom room, imported by everyone, importing nothing of rrd.

Faults a user or a worker can cause are `RrdError`s: they carry a one-line message and an
exit code from sysexits.h. Anything else that escapes is a bug in rrd and exits 70.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: every worker imports this module
    from collections.abc import Sequence

EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CONFIG = 78


class RrdError(Exception):
    """A fault rrd reports in one line, never as a traceback."""

    exit_code = EX_SOFTWARE


class UsageError(RrdError):
    """The command line itself is wrong."""

    exit_code = EX_USAGE


class ConfigError(RrdError):
    """A config file, override or environment value the user wrote is wrong.

    Renders as `FILE:LINE: KEY: MESSAGE`, leaving out what is not known.
    """

    exit_code = EX_CONFIG

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.key = key
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
            where += ": "
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.message}"


class FrameError(RrdError):
    """Bytes on a relay that are not a valid goridge frame.

    `frames` holds whatever whole frames a decoder read before the bad bytes, and `rest` the
    bytes from the bad one on, as far as they had arrived (for a preview).
    """

    frames: Sequence[object] = ()
    rest: bytes = b""


class FrameTooLarge(FrameError):
    """A frame, or a streamed reply, longer than the configured maximum."""


class ScriptOpenError(FrameError):
    """PHP wrote `Could not open input file: ...` where a frame header was due."""

    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__(text.strip())


class WorkerError(RrdError):
    """A worker process failed; `pid` names it when it is known."""

    exit_code = EX_UNAVAILABLE

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        self.pid = pid
        super().__init__(message if pid is None else f"worker {pid}: {message}")


class BootError(WorkerError):
    """A worker could not be spawned or did not finish its pid handshake in time."""


class ExecTimeout(WorkerError):
    """A worker did not answer a payload within its exec timeout, and was killed."""


class WorkerCrashed(WorkerError):
    """A worker exited, closed its relay, or spoke garbage while it held a payload."""


class DaemonUnavailable(RrdError):
    """No rrd answers on the control socket (a command such as `rrd status`)."""

    exit_code = EX_UNAVAILABLE


class SoftJobError(RrdError):
    """The worker answered with an ERROR frame: the job failed, the worker is fine."""

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        self.pid = pid
        super().__init__(message)


class NoWorkers(RrdError):
    """No worker could take a payload: none free in time, queue full, or the pool closed."""

    exit_code = EX_UNAVAILABLE


class AllocateTimeout(NoWorkers):
    """No worker came free within the time a caller would wait (`allocate_timeout`)."""


class QueueFull(NoWorkers):
    """`max_queue_size` payloads already wait for a worker."""


class PoolClosed(NoWorkers):
    """The pool is being destroyed and takes no new work."""

"""Signals that reach rrd before its event loop runs: recorded at start-up, replayed to the loop.

Room: the daemon tier. Imports nothing of rrd, so that `rrd.__main__` can install it before
the rest of rrd (click, PyYAML, the config) is even imported. Python's default action for
SIGHUP and SIGUSR1 ends the process, and SIGTERM would end it without stopping a worker.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

CAUGHT = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)

_Handler = Callable[[int, FrameType | None], Any] | int | None


class EarlySignals:
    """Records the signals of CAUGHT until the daemon's loop takes them over."""

    def __init__(self) -> None:
        self.pending: list[signal.Signals] = []
        self._previous: dict[signal.Signals, _Handler] = {}

    @classmethod
    def catch(cls) -> EarlySignals:
        """Start recording now; the first thing `rrd` does."""
        early = cls()
        early.hold()
        return early

    def hold(self) -> None:
        """Record signals instead of acting on them (again, after the loop has ended)."""
        for signum in CAUGHT:
            previous = signal.signal(signum, self._record)
            self._previous.setdefault(signum, previous)

    def take(self) -> list[signal.Signals]:
        """The signals recorded so far, oldest first; forgotten once taken."""
        taken, self.pending = self.pending, []
        return taken

    def release(self) -> None:
        """Give the signals back to their old handlers, and deliver what was recorded, for a
        command that is not the daemon (`rrd config check` ends on SIGTERM as it always did)."""
        for signum, previous in self._previous.items():
            with contextlib.suppress(TypeError, ValueError):
                signal.signal(signum, previous)
        for signum in self.take():
            signal.raise_signal(signum)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.pending.append(signal.Signals(signum))

"""Warm spares: workers started and READY outside the rotation (`pool.spares`).

Room: pool. Imports worker and fsm.

A worker that dies or retires leaves a slot; a spare takes it at once, the moment the keeper
learns of it, where a fresh start would cost the worker's whole boot (an interpreter, its
imports, the handshake). The keeper starts a new spare in the background to take its place.
A spare serves no payload until it takes a slot, so it is no part of the pool's size, nor of
its ready count; `rrd status` shows the spares apart.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from rrd.fsm import WorkerState
from rrd.worker import WorkerProcess


class Spares:
    """The spares of one pool, oldest first (the oldest is the one most surely alive), and
    how many more are being started."""

    def __init__(self, wanted: int) -> None:
        self.wanted = wanted
        self.starting = 0
        self.generation = 0
        """Counts resets and new specs: a spare whose start began in an older one is stale."""
        self._ready: deque[WorkerProcess] = deque()

    def __len__(self) -> int:
        return len(self._ready)

    def __iter__(self) -> Iterator[WorkerProcess]:
        return iter(tuple(self._ready))

    @property
    def missing(self) -> int:
        """Spares to start now: wanted, less those ready and those starting."""
        return max(0, self.wanted - len(self._ready) - self.starting)

    @property
    def surplus(self) -> int:
        return max(0, len(self._ready) - self.wanted)

    def take(self) -> WorkerProcess | None:
        """A READY spare, out of the spares, or None."""
        while self._ready:
            worker = self._ready.popleft()
            if worker.state is WorkerState.READY:
                return worker
        return None

    def add(self, worker: WorkerProcess) -> None:
        self._ready.append(worker)

    def forget(self, worker: WorkerProcess) -> bool:
        """Take `worker` out of the spares (it left, or is checked); False if it was none."""
        try:
            self._ready.remove(worker)
        except ValueError:
            return False
        return True

    def take_all(self) -> list[WorkerProcess]:
        """Every spare, out of the spares: to stop them."""
        workers = list(self._ready)
        self._ready.clear()
        return workers

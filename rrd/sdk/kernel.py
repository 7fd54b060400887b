"""A Spiral-style kernel: dispatchers serve the worker's mode, finalizers reset state between jobs.

Room: sdk. Imports only `rrd.protocol`, `rrd.errors` and the standard library.

    kernel = Kernel()
    kernel.add_dispatcher(MyTicker())
    kernel.add_finalizer(cache.clear)
    kernel.run()
"""

from __future__ import annotations

import os
import sys
from abc import ABC, abstractmethod

from rrd.protocol.control import Payload
from rrd.sdk.worker import Worker

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every worker ~4 ms of its start: for the checker only
    from collections.abc import Callable, Mapping
    from typing import Any


class Dispatcher(ABC):
    """Serves one kind of work (one RR_MODE) over a worker."""

    kernel: Kernel | None = None
    """Set by `Kernel.add_dispatcher`; `finalize` runs its finalizers."""

    @abstractmethod
    def can_serve(self, env: Mapping[str, str]) -> bool:
        """True when this dispatcher serves the environment's RR_MODE."""

    @abstractmethod
    def serve(self, worker: Worker) -> None:
        """Serve payloads until the worker's loop ends; call `finalize` after each one."""

    def finalize(self) -> None:
        """Run the kernel's finalizers (no-op outside a kernel)."""
        if self.kernel is not None:
            self.kernel.finalize()


class Kernel:
    """Picks the dispatcher for this worker's RR_MODE and serves with it."""

    def __init__(
        self, worker_factory: Callable[[Mapping[str, str]], Worker] = Worker.create
    ) -> None:
        """`worker_factory` connects the worker once a dispatcher is chosen."""
        self.dispatchers: list[Dispatcher] = []
        self.finalizers: list[Callable[[], object]] = []
        self._worker_factory = worker_factory

    def add_dispatcher(self, dispatcher: Dispatcher) -> Kernel:
        """Offer `dispatcher` for `run` (first added, first asked)."""
        dispatcher.kernel = self
        self.dispatchers.append(dispatcher)
        return self

    def add_finalizer(self, finalizer: Callable[[], object]) -> Kernel:
        """Run `finalizer` after each payload, to reset state between jobs."""
        self.finalizers.append(finalizer)
        return self

    def finalize(self) -> None:
        """Run every finalizer in order.

        An exception propagates and ends the worker: a state that could not be reset must not
        leak into the next job, and the server replaces a worker that exits.
        """
        for finalizer in self.finalizers:
            finalizer()

    def run(self, env: Mapping[str, str] | None = None) -> None:
        """Serve with the first dispatcher that can; exit 1 with a message when none can."""
        if env is None:
            env = os.environ
        for dispatcher in self.dispatchers:
            if dispatcher.can_serve(env):
                break
        else:
            mode = env.get("RR_MODE")
            what = f"RR_MODE={mode!r}" if mode else "RR_MODE is not set"
            sys.stderr.write(f"rrd.sdk: no dispatcher can serve this worker: {what}\n")
            sys.stderr.flush()
            raise SystemExit(1)
        worker = self._worker_factory(env)
        try:
            dispatcher.serve(worker)
        finally:
            worker.close()


class TickerDispatcher(Dispatcher):
    """Serves RR_MODE=ticker: body `{"tick": n}`, context `{"lastTick": unix s, "k": due index}`.

    Override `handle_tick`. A tick that returns is answered with an empty payload; one that
    raises is answered with an ERROR frame `Type: message`, and the worker keeps serving.
    """

    mode = "ticker"

    def can_serve(self, env: Mapping[str, str]) -> bool:
        """True for RR_MODE=ticker."""
        return env.get("RR_MODE") == self.mode

    def serve(self, worker: Worker) -> None:
        """Handle ticks until the server says stop, finalizing after each."""
        for payload in worker:
            try:
                tick, last_tick = parse_tick(payload)
                self.handle_tick(tick, last_tick, payload)
            except Exception as exc:
                worker.error(f"{type(exc).__name__}: {exc}")
            else:
                worker.respond(Payload())
            finally:
                self.finalize()

    def handle_tick(self, tick: int, last_tick: int, payload: Payload) -> None:
        """Do this tick's work; `last_tick` is when the previous tick ran (unix seconds)."""


def parse_tick(payload: Payload) -> tuple[int, int]:
    """The tick number and lastTick of a ticker payload; ValueError when they are missing."""
    return (
        _int_field(payload.json(), "tick", "body"),
        _int_field(payload.context_json(), "lastTick", "context"),
    )


def _int_field(document: Any, key: str, where: str) -> int:
    value = document.get(key) if isinstance(document, dict) else None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not int:
        raise ValueError(f"ticker payload {where} has no integer {key!r}")
    return value

"""The worker state machine: states, why a worker is retired, and the legal transitions as data.

Room: with worker. Imports nothing of rrd; no processes, no clocks, so it is tested alone.
"""

from __future__ import annotations

from enum import Enum


class WorkerState(Enum):
    """Where one worker process is in its life."""

    SPAWNING = "spawning"
    READY = "ready"
    WORKING = "working"
    DRAINING = "draining"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERRORED = "errored"

    @property
    def live(self) -> bool:
        return self not in (WorkerState.STOPPED, WorkerState.ERRORED)


class RetireReason(Enum):
    """Why a healthy worker is being replaced: data on the transition, not a state."""

    TTL = "ttl"
    IDLE_TTL = "idle_ttl"
    MAX_JOBS = "max_jobs"
    MEMORY = "memory"
    RESET = "reset"
    RELOAD = "reload"
    SCALE_DOWN = "scale_down"
    STOP_REQUESTED = "stop_requested"
    DESTROY = "destroy"


_S = WorkerState
TRANSITIONS: dict[WorkerState, frozenset[WorkerState]] = {
    _S.SPAWNING: frozenset({_S.READY, _S.STOPPING, _S.ERRORED}),
    _S.READY: frozenset({_S.WORKING, _S.STOPPING, _S.ERRORED}),
    _S.WORKING: frozenset({_S.READY, _S.DRAINING, _S.ERRORED}),
    _S.DRAINING: frozenset({_S.STOPPING, _S.ERRORED}),
    _S.STOPPING: frozenset({_S.STOPPED, _S.ERRORED}),
    _S.STOPPED: frozenset(),
    _S.ERRORED: frozenset(),
}
"""Every edge a worker may take. READY -> STOPPING retires an idle worker; WORKING -> DRAINING
marks a busy one to be retired after its job."""


class IllegalTransition(RuntimeError):
    """A bug in rrd: code asked a worker to move along an edge the table does not have."""


class WorkerFSM:
    """The current state of one worker, and the reason it is being retired, if it is."""

    __slots__ = ("reason", "state")

    def __init__(self) -> None:
        self.state = WorkerState.SPAWNING
        self.reason: RetireReason | None = None

    def can(self, target: WorkerState) -> bool:
        return target in TRANSITIONS[self.state]

    def to(self, target: WorkerState, reason: RetireReason | None = None) -> None:
        """Move to `target`, recording `reason` (the first reason given sticks)."""
        if target not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"worker cannot go from {self.state.value} to {target.value}")
        self.state = target
        if reason is not None and self.reason is None:
            self.reason = reason

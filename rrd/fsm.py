"""The worker state machine: states, why a worker leaves service, and the legal transitions.

Room: with worker. Imports nothing of rrd; no processes, no clocks, so it is tested alone.

The words: a worker is *in service* while READY, WORKING or DRAINING (finishing its last
job). It *leaves service* when it goes to STOPPING (a graceful stop: stop frame, then
SIGTERM, then SIGKILL) or ERRORED (it exited by itself, or rrd killed it). STOPPED and
ERRORED are final once the process is reaped. Why it left is data on the transition
(`ExitReason`), never a state of its own.
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

    __hash__ = object.__hash__  # members are singletons; Enum's own hash runs in Python

    @property
    def in_service(self) -> bool:
        """True while the worker serves or may serve jobs (DRAINING: its last one)."""
        return self in _IN_SERVICE


_IN_SERVICE = frozenset({WorkerState.READY, WorkerState.WORKING, WorkerState.DRAINING})

ROADRUNNER_STATES: dict[WorkerState, tuple[int, str]] = {
    WorkerState.SPAWNING: (0, "inactive"),
    WorkerState.READY: (1, "ready"),
    WorkerState.WORKING: (2, "working"),
    WorkerState.DRAINING: (3, "invalid"),
    WorkerState.STOPPING: (4, "stopping"),
    WorkerState.STOPPED: (5, "stopped"),
    WorkerState.ERRORED: (8, "errored"),
}
"""Each state as RoadRunner's informer reports it (`rr workers`, PHP's RPC client, its metrics):
its code and name. RoadRunner counts every state but ready and working as invalid."""


class ExitReason(Enum):
    """Why a worker left service: the pool counts its replacements by these."""

    CRASHED = "crashed"  # exited by itself after a good start
    FAILED_START = "failed_start"  # could not boot, or exited before it served or lived min_uptime
    EXEC_TTL = "exec_ttl"  # a job outlived its hard deadline (exec_ttl or the plugin's timeout)
    TTL = "ttl"
    IDLE_TTL = "idle_ttl"
    MEMORY = "memory"
    MAX_JOBS = "max_jobs"
    UNHEALTHY = "unhealthy"  # did not answer a health check in time
    GARBAGE = "garbage"  # wrote bytes out of turn, a bad frame, or a reply over the caps
    RESET = "reset"
    RELOAD = "reload"
    SCALE_DOWN = "scale_down"
    STOP_REQUESTED = "stop_requested"  # the worker asked to be retired (`{"stop":true}`)
    DESTROY = "destroy"  # its pool is stopping


_S = WorkerState
TRANSITIONS: dict[WorkerState, frozenset[WorkerState]] = {
    _S.SPAWNING: frozenset({_S.READY, _S.STOPPING, _S.ERRORED}),
    _S.READY: frozenset({_S.WORKING, _S.STOPPING, _S.ERRORED}),
    _S.WORKING: frozenset({_S.READY, _S.DRAINING, _S.ERRORED}),
    _S.DRAINING: frozenset({_S.STOPPING, _S.ERRORED}),
    _S.STOPPING: frozenset({_S.STOPPED}),
    _S.STOPPED: frozenset(),
    _S.ERRORED: frozenset(),
}
"""Every edge a worker may take. A busy worker is never stopped: WORKING -> DRAINING marks it,
and it goes to STOPPING after its job. Only a kill (ERRORED) ends a job early."""


class IllegalTransition(RuntimeError):
    """A bug in rrd: code asked a worker to move along an edge the table does not have."""


class WorkerFSM:
    """The current state of one worker, and why it is leaving service, once it is."""

    __slots__ = ("reason", "state")

    def __init__(self) -> None:
        self.state = WorkerState.SPAWNING
        self.reason: ExitReason | None = None

    def can(self, target: WorkerState) -> bool:
        return target in TRANSITIONS[self.state]

    def to(self, target: WorkerState, reason: ExitReason | None = None) -> None:
        """Move to `target`, recording `reason` (the first reason given sticks)."""
        if target not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"worker cannot go from {self.state.value} to {target.value}")
        self.state = target
        if reason is not None and self.reason is None:
            self.reason = reason
